"""``ApiNetwork``: a :class:`~nosana_magic.network.base.Network` over a Nosana-API-shaped ledger.

The embedded devnode serves this shape (``GET /api/markets/``, ``POST /api/jobs/list``,
``GET /api/jobs/{job}``, ``POST /api/jobs/{job}/stop|extend``) and Pinata's
``POST /pinning/pinJSONToIPFS``; it is also the shape of Nosana's credits API.

Calls that change something are signed by the wallet (``Authorization:
NosanaApiAuthentication:<sig>:<ms>`` and ``x-user-id: <public key>``), with a fresh header per
request. Reads and idempotent calls are retried with the package's bounded backoff; listing a
job is retried only when the request cannot have reached the ledger (connecting failed), since
a second listing would be a second job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..protocol import EXPIRY_MARGIN_S
from ..transport import Retry, http_client_for, server_message
from ..wallet import Wallet
from .base import JobInfo, JobState, Listing, Market, NetworkError

__all__ = ["API_AUTH_MESSAGE", "ApiNetwork"]

#: The message Nosana's API expects to be signed.
API_AUTH_MESSAGE = "NosanaApiAuthentication"


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class ApiNetwork:
    """A Nosana network reached through its JSON API (the local devnode by default).

    ``node_url_template`` holds ``{node}`` (``http://127.0.0.1:P/node/{node}`` locally).
    ``poll_interval`` is how often :meth:`watch` asks the ledger (loopback is cheap: 0.1 s
    gives the ~100 ms reaction the job client wants). ``pin_token`` is the bearer token of the
    pinning route (any string for the devnode; a Pinata JWT elsewhere).
    """

    #: Seconds one request may take.
    request_timeout: float = 15.0
    #: How long :meth:`watch` waits for a queued job to be taken before giving up.
    queue_timeout: float = 24 * 3600.0

    def __init__(
        self,
        base_url: str,
        wallet: Wallet,
        *,
        node_url_template: str,
        name: str = "local",
        poll_interval: float = 0.1,
        http: httpx.AsyncClient | None = None,
        pin_url: str | None = None,
        pin_token: str = "local",
        gateway_url: str | None = None,
        domain: str | None = None,
        retry: Retry | None = None,
    ) -> None:
        if "{node}" not in node_url_template:
            raise NetworkError(f"node URL template {node_url_template!r} has no {{node}}")
        self.base_url = base_url.rstrip("/")
        self.wallet = wallet
        self.name = name
        self.node_url_template = node_url_template
        self.poll_interval = poll_interval
        self.retry = retry or Retry()
        self._pin_url = pin_url or f"{self.base_url}/pinning/pinJSONToIPFS"
        self._gateway = (gateway_url or f"{self.base_url}/ipfs").rstrip("/")
        # Kept private and out of the repr: a Pinata JWT is a credential.
        self._pin_token = pin_token
        self._domain = domain
        self._http = http or http_client_for(self.base_url)
        self._owns_http = http is None

    def __repr__(self) -> str:
        return f"ApiNetwork({self.name!r}, {self.base_url!r}, wallet={self.wallet.address})"

    # ------------------------------------------------------------------ Network: sync parts

    def node_url(self, node: str) -> str:
        return self.node_url_template.format(node=node)

    def service_domain(self) -> str | None:
        return self._domain

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> ApiNetwork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ plumbing

    def _signed(self) -> dict[str, str]:
        return {
            "Authorization": self.wallet.auth_header(API_AUTH_MESSAGE),
            "x-user-id": self.wallet.address,
        }

    async def _call(
        self,
        method: str,
        url: str,
        *,
        route: str,
        signed: bool = False,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        retry_sent: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """One API call, retried with backoff on 5xx and network errors; returns its JSON.

        ``retry_sent=False``: retry only failures that cannot have reached the server
        (connecting), for calls that must not happen twice. 4xx raise at once.
        """
        backoff = self.retry.backoff(timeout)
        last = "no attempt"
        while True:
            request_headers = dict(headers or {})
            if signed:
                request_headers.update(self._signed())  # fresh timestamp per attempt
            try:
                response = await self._http.request(
                    method,
                    url,
                    json=json_body,
                    headers=request_headers,
                    timeout=min(self.request_timeout, max(0.5, backoff.remaining)),
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = type(exc).__name__
            except httpx.TransportError as exc:
                if not retry_sent:
                    raise NetworkError(
                        f"{self.name} network: {route}: the request may or may not have been "
                        f"received ({type(exc).__name__}); check before trying again"
                    ) from None
                last = type(exc).__name__
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise NetworkError(
                            f"{self.name} network: {route}: the answer is not JSON"
                        ) from None
                if response.status_code < 500 or not retry_sent:
                    raise NetworkError(
                        f"{self.name} network: {route}: {response.status_code} "
                        f"{server_message(response)}"
                    )
                last = f"{response.status_code} {server_message(response)}"
            if not await backoff.wait():
                raise NetworkError(
                    f"{self.name} network: {route}: gave up after {backoff.attempt} attempts "
                    f"in {backoff.elapsed:.1f} s: {last}"
                )

    # ------------------------------------------------------------------ IPFS

    async def pin(self, document: dict[str, Any]) -> str:
        """Pin ``document`` (sent as it is, not wrapped) and return its CIDv0."""
        body = await self._call(
            "POST",
            self._pin_url,
            route="POST /pinning/pinJSONToIPFS",
            json_body=document,
            headers={"Authorization": f"Bearer {self._pin_token}"},
        )
        cid = body.get("IpfsHash") if isinstance(body, dict) else None
        if not isinstance(cid, str) or not cid:
            raise NetworkError(f"{self.name} network: pinning answered without an IpfsHash")
        return cid

    async def fetch(self, cid: str) -> Any:
        """A pinned JSON document (e.g. a job's public result) from the gateway."""
        return await self._call("GET", f"{self._gateway}/{cid}", route=f"GET /ipfs/{cid}")

    # ------------------------------------------------------------------ markets

    @staticmethod
    def _market(data: Any) -> Market:
        if not isinstance(data, dict) or not isinstance(data.get("address"), str):
            raise NetworkError("a market in the ledger's answer has no address")
        price = data.get("job_price")
        if not isinstance(price, int) or isinstance(price, bool):
            per_second = data.get("nos_job_price_per_second") or 0
            price = round(float(per_second) * 1e6)
        idle = data.get("idle_hosts")
        if not isinstance(idle, int):
            queue = data.get("queue")
            idle = len(queue) if isinstance(queue, list) else 0
        return Market(
            address=data["address"],
            slug=str(data.get("slug") or data["address"]),
            name=str(data.get("name") or ""),
            price_per_second=price,
            job_timeout=_int_or_none(data.get("job_timeout")) or 0,
            idle_hosts=idle,
            network_fee_pct=float(data.get("network_fee_percentage") or 0.0),
        )

    async def markets(self) -> list[Market]:
        body = await self._call("GET", f"{self.base_url}/api/markets/", route="GET /api/markets/")
        if not isinstance(body, list):
            raise NetworkError(f"{self.name} network: GET /api/markets/ did not answer a list")
        return [self._market(item) for item in body]

    async def market(self, slug_or_address: str) -> Market:
        try:
            body = await self._call(
                "GET",
                f"{self.base_url}/api/markets/{slug_or_address}/",
                route=f"GET /api/markets/{slug_or_address}/",
            )
        except NetworkError as exc:
            if ": 404 " not in str(exc):
                raise
            known = ", ".join(m.slug for m in await self.markets())
            raise NetworkError(
                f"{self.name} network: unknown market {slug_or_address!r} (known: {known})"
            ) from None
        return self._market(body)

    # ------------------------------------------------------------------ jobs

    async def post(
        self, cid: str, market: Market, timeout_s: int, *, node: str | None = None
    ) -> Listing:
        body: dict[str, Any] = {"ipfsHash": cid, "market": market.address, "timeout": timeout_s}
        if node is not None:
            body["node"] = node
        answer = await self._call(
            "POST",
            f"{self.base_url}/api/jobs/list",
            route="POST /api/jobs/list",
            signed=True,
            json_body=body,
            retry_sent=False,
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("job"), str):
            raise NetworkError(f"{self.name} network: POST /api/jobs/list answered no job")
        return Listing(job=answer["job"], run=answer.get("run"), tx=answer.get("tx"))

    @staticmethod
    def _job_info(data: Any) -> JobInfo:
        if not isinstance(data, dict) or not isinstance(data.get("address"), str):
            raise NetworkError("the ledger's job answer has no address")
        try:
            state = JobState(str(data.get("state", "")).upper())
        except ValueError:
            raise NetworkError(
                f"the ledger reports an unknown job state {data.get('state')!r}"
            ) from None
        node = data.get("node")
        known = {
            "address", "state", "node", "market", "project", "timeout", "timeStart", "timeEnd",
            "ipfsJob", "ipfsResult", "price",
        }
        return JobInfo(
            address=data["address"],
            state=state,
            market=str(data.get("market") or ""),
            node=node if isinstance(node, str) and node else None,
            project=str(data.get("project") or ""),
            timeout=_int_or_none(data.get("timeout")) or 0,
            time_start=_int_or_none(data.get("timeStart")) or None,
            time_end=_int_or_none(data.get("timeEnd")) or None,
            ipfs_job=data.get("ipfsJob") or None,
            ipfs_result=data.get("ipfsResult") or None,
            price=_int_or_none(data.get("price")) or 0,
            extra={k: v for k, v in data.items() if k not in known},
        )

    async def job(self, address: str) -> JobInfo:
        body = await self._call(
            "GET", f"{self.base_url}/api/jobs/{address}", route=f"GET /api/jobs/{address}"
        )
        return self._job_info(body)

    async def watch(self, address: str) -> AsyncIterator[JobInfo]:
        """Yield the job's info at once, then on every change, until it is done.

        Polls every :attr:`poll_interval` (each poll has the bounded retries of any call).
        Bounded in time: a running job by its expiry plus :data:`EXPIRY_MARGIN_S`, a queued
        one by :attr:`queue_timeout`; past that, :class:`NetworkError`.
        """
        previous: JobInfo | None = None
        first_seen = time.time()
        while True:
            info = await self.job(address)
            if info != previous:
                previous = info
                yield info
            if info.state.done:
                return
            now = time.time()
            expires = info.expires_at
            if expires is not None and now > expires + EXPIRY_MARGIN_S:
                raise NetworkError(
                    f"{self.name} network: job {address} is still {info.state} "
                    f"{now - expires:.0f} s after its expiry"
                )
            if info.state is JobState.QUEUED and now - first_seen > self.queue_timeout:
                raise NetworkError(
                    f"{self.name} network: job {address} was not taken by a host within "
                    f"{self.queue_timeout:.0f} s"
                )
            await asyncio.sleep(self.poll_interval)

    async def stop(self, address: str) -> None:
        await self._call(
            "POST",
            f"{self.base_url}/api/jobs/{address}/stop",
            route=f"POST /api/jobs/{address}/stop",
            signed=True,
        )

    async def extend(self, address: str, seconds: int) -> None:
        await self._call(
            "POST",
            f"{self.base_url}/api/jobs/{address}/extend",
            route=f"POST /api/jobs/{address}/extend",
            signed=True,
            json_body={"seconds": int(seconds)},
            retry_sent=False,
        )
