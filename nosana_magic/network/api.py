"""``ApiNetwork``: a :class:`~nosana_magic.network.base.Network` over a Nosana-API-shaped ledger.

The embedded devnode serves this shape (``GET /api/markets/``, ``POST /api/jobs/list``,
``GET /api/jobs/{job}``, ``POST /api/jobs/{job}/stop|extend``) and Pinata's
``POST /pinning/pinJSONToIPFS``; it is also the shape of Nosana's credits API.

Calls that change something are signed by the wallet (``Authorization:
NosanaApiAuthentication:<sig>:<ms>`` and ``x-user-id: <public key>``), with a fresh header per
request, or, when an API key is given, carry ``Authorization: Bearer <key>`` and are paid with
its credits (docs/protocol.md §24). Reads and idempotent calls are retried with the package's
bounded backoff; listing a job is retried only when the request cannot have reached the
ledger (connecting failed), since a second listing would be a second job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from ..errors import OutcomeUnknown, SettingsError
from ..protocol import EXPIRY_MARGIN_S, AuthError
from ..settings import Settings, credentials_file
from ..signer import PresignedSigner, Signer
from ..transport import Retry, http_client_for, server_message
from ..wallet import Wallet
from .base import InsufficientCreditsError, JobInfo, JobState, Listing, Market, NetworkError
from .ipfs import DEFAULT_GATEWAY, DEFAULT_PINATA_API, PinataClient
from .markets import check_market_ref
from .nosana_api import (
    JOB_FIELDS,
    CreditBalance,
    JobAnswer,
    ListAnswer,
    MarketAnswer,
    SignAnswer,
    read,
)

__all__ = ["API_AUTH_MESSAGE", "SIGNING_URLS", "ApiNetwork", "credits_network",
           "require_api_key"]

#: The message Nosana's API expects to be signed.
API_AUTH_MESSAGE = "NosanaApiAuthentication"
#: Nosana's signing service (the client manager) per cluster (docs/protocol.md §24).
SIGNING_URLS = {
    "mainnet": "https://client-manager.k8s.prd.nosana.com",
    "devnet": "https://client-manager.k8s.dev.nosana.com",
}
#: How often a credits network on Nosana asks its API about a job (the host's own stream
#: says when a run ends; the poll only has to notice that a host took the job).
REMOTE_POLL_S = 2.0


def _segment(value: str) -> str:
    """``value`` as one URL path segment: a ``/`` or ``..`` in it cannot reach another route."""
    return quote(value, safe="")


class ApiNetwork:
    """A Nosana network reached through its JSON API (the local devnode by default).

    ``node_url_template`` holds ``{node}`` (``http://127.0.0.1:P/node/{node}`` locally).
    ``poll_interval`` is how often :meth:`watch` asks the ledger (loopback is cheap: 0.1 s
    gives the ~100 ms reaction the job client wants). ``pin_token`` is the bearer token of the
    pinning route (any string for the devnode; a Pinata JWT elsewhere).

    ``api_key`` (``nos_…``) makes it a credits network: jobs are listed, extended and stopped
    with the key and paid with its credits, and the headers for a job's host come from the
    signing service at ``signing_url`` (Nosana's client manager; docs/protocol.md §24).
    The key is kept out of every repr and message.
    """

    #: Seconds one request may take.
    request_timeout: float = 15.0
    #: How long :meth:`watch` waits for a queued job to be taken before giving up.
    queue_timeout: float = 24 * 3600.0

    def __init__(
        self,
        base_url: str,
        wallet: Wallet | None,
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
        api_key: str | None = None,
        signing_url: str | None = None,
        pinata: PinataClient | None = None,
    ) -> None:
        if "{node}" not in node_url_template:
            raise NetworkError(f"node URL template {node_url_template!r} has no {{node}}")
        if wallet is None and not api_key:
            raise NetworkError(f"{name} network: a wallet or an API key is needed to list jobs")
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
        # Kept private and out of the repr: an API key spends the user's credits.
        self._api_key = api_key or None
        self.signing_url = (signing_url or self.base_url).rstrip("/")
        # Nosana's API does not pin: on Nosana, placeholders go through Pinata.
        self._pinata = pinata
        self._searchable = True
        #: ``time.monotonic()`` of the ledger's last answer (``None`` before the first).
        self.last_answer: float | None = None

    def __repr__(self) -> str:
        pays = "credits" if self.wallet is None or self._api_key else (
            f"wallet={self.wallet.address}")
        return f"ApiNetwork({self.name!r}, {self.base_url!r}, {pays})"

    @property
    def pays_with(self) -> str:
        """``credits`` (an API key pays) or ``wallet``."""
        return "credits" if self._api_key else "wallet"

    # ------------------------------------------------------------------ Network: sync parts

    def node_url(self, node: str) -> str:
        return self.node_url_template.format(node=_segment(node))

    def service_domain(self) -> str | None:
        return self._domain

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
        if self._pinata is not None:
            await self._pinata.aclose()

    async def __aenter__(self) -> ApiNetwork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ plumbing

    def _signed(self) -> dict[str, str]:
        if self._api_key is not None or self.wallet is None:
            return {"Authorization": f"Bearer {self._api_key}"}
        return {
            "Authorization": self.wallet.auth_header(API_AUTH_MESSAGE),
            "x-user-id": self.wallet.address,
        }

    def _safe(self, text: str) -> str:
        """Server text without the API key (a server may echo what it was sent)."""
        return text.replace(self._api_key, "[API key]") if self._api_key else text

    def _refused(self, status: int, text: str, route: str, doing: str | None) -> NetworkError:
        """A 4xx as one line; the credit routes' answers say what to do (docs/protocol.md §24)."""
        text = self._safe(text)
        plain = f"{self.name} network: {route}: {status} {text}"
        if self._api_key is None or doing is None:
            return NetworkError(plain)
        if status == 402:
            said = text if "insufficient" in text.lower() else f"insufficient credits ({text})"
            return InsufficientCreditsError(f"{self.name} network: {doing}: {said}")
        if status == 401:
            return NetworkError(
                f"{self.name} network: {doing}: the API key was refused ({status} {text}); "
                "check NOSANA_API_KEY")
        if status == 403:
            return NetworkError(
                f"{self.name} network: {doing}: the API key may no longer be used ({status} "
                f"{text}); make a new one on the Nosana dashboard (Account → API Keys)")
        return NetworkError(f"{self.name} network: {doing}: {status} {text}")

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
        doing: str | None = None,
    ) -> Any:
        """One API call, retried with backoff on 5xx and network errors; returns its JSON.

        ``retry_sent=False``: retry only failures that cannot have reached the server
        (connecting), for calls that must not happen twice. 4xx raise at once; ``doing``
        (``"listing the job"``) names the action in the line a credit refusal becomes.
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
                    raise OutcomeUnknown(
                        f"{self.name} network: {route}: no answer after the request was sent "
                        f"({type(exc).__name__}): it may have taken effect"
                    ) from None
                last = type(exc).__name__
            else:
                self.last_answer = time.monotonic()
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise NetworkError(
                            f"{self.name} network: {route}: the answer is not JSON"
                        ) from None
                if response.status_code < 500:
                    raise self._refused(
                        response.status_code, server_message(response), route, doing
                    )
                if not retry_sent:
                    # A server error may come after the work was done (the job listed).
                    raise OutcomeUnknown(
                        f"{self.name} network: {route}: {response.status_code} "
                        f"{self._safe(server_message(response))}: it may have taken effect"
                    )
                last = f"{response.status_code} {self._safe(server_message(response))}"
            if not await backoff.wait():
                raise NetworkError(
                    f"{self.name} network: {route}: gave up after {backoff.attempt} attempts "
                    f"in {backoff.elapsed:.1f} s: {last}"
                )

    # ------------------------------------------------------------------ IPFS

    async def pin(self, document: dict[str, Any]) -> str:
        """Pin ``document`` (sent as it is, not wrapped) and return its CIDv0."""
        if self._pinata is not None:
            return await self._pinata.pin_json(document)
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
        if self._pinata is not None:
            return await self._pinata.get_json(cid)
        return await self._call("GET", f"{self._gateway}/{_segment(cid)}",
                                route=f"GET /ipfs/{cid}")

    # ------------------------------------------------------------------ markets

    def _market(self, data: Any, route: str) -> Market:
        return read(MarketAnswer, data, f"{self.name} network: {route}").to_market()

    async def markets(self) -> list[Market]:
        route = "GET /api/markets/"
        body = await self._call("GET", f"{self.base_url}/api/markets/", route=route)
        if not isinstance(body, list):
            raise NetworkError(f"{self.name} network: {route} did not answer a list")
        return [self._market(item, route) for item in body]

    async def market(self, slug_or_address: str) -> Market:
        slug_or_address = check_market_ref(slug_or_address)
        try:
            body = await self._call(
                "GET",
                f"{self.base_url}/api/markets/{_segment(slug_or_address)}/",
                route=f"GET /api/markets/{slug_or_address}/",
            )
        except NetworkError as exc:
            if ": 404 " not in str(exc):
                raise
            # The route may know markets by address only: look the slug up in the list.
            markets = await self.markets()
            text = slug_or_address.strip()
            for found in markets:
                if text in (found.slug, found.address):
                    return found
            known = ", ".join(m.slug for m in markets)
            raise NetworkError(
                f"{self.name} network: unknown market {slug_or_address!r} (known: {known})"
            ) from None
        return self._market(body, f"GET /api/markets/{slug_or_address}/")

    # ------------------------------------------------------------------ jobs

    async def post(
        self, cid: str, market: Market, timeout_s: int, *, node: str | None = None
    ) -> Listing:
        body: dict[str, Any] = {"ipfsHash": cid, "market": market.address, "timeout": timeout_s}
        if node is not None:
            body["node"] = node
        route = "POST /api/jobs/list"
        answer = await self._call(
            "POST",
            f"{self.base_url}/api/jobs/list",
            route=route,
            signed=True,
            json_body=body,
            retry_sent=False,
            doing="listing the job (nothing was listed)",
        )
        return read(ListAnswer, answer, f"{self.name} network: {route}").to_listing()

    def _job_info(self, data: Any, address: str, route: str) -> JobInfo:
        """A job answer (numeric or named ``state``, no ``address``) as a :class:`JobInfo`."""
        job = read(JobAnswer, data, f"{self.name} network: {route}")
        extra = {k: v for k, v in data.items() if k not in JOB_FIELDS}
        return job.to_info(address, extra)

    async def listed_jobs(self, cid: str, market: Market) -> list[JobInfo]:
        """This wallet's jobs that are not done, listed with the pinned ``cid`` in ``market``:
        what a listing whose answer was lost may have made. The devnode serves this search
        (``GET /api/jobs?project=…&ipfsJob=…&market=…``); the Nosana API has no such route, so
        there :class:`NetworkError` says the network cannot be searched."""
        if not self._searchable or self.wallet is None or self._api_key is not None:
            raise NetworkError(f"{self.name} network cannot be searched for jobs")
        query = urlencode({"project": self.wallet.address, "ipfsJob": cid,
                           "market": market.address})
        route = "GET /api/jobs"
        try:
            body = await self._call("GET", f"{self.base_url}/api/jobs?{query}", route=route)
        except NetworkError as exc:
            if ": 404 " in str(exc) or ": 405 " in str(exc):
                self._searchable = False  # asked once per network, not before each listing
                raise NetworkError(f"{self.name} network cannot be searched for jobs") from None
            raise
        if not isinstance(body, list):
            raise NetworkError(f"{self.name} network: {route} did not answer a list")
        return [self._job_info(item, str(item.get("address")), route) for item in body
                if isinstance(item, dict)]

    async def job(self, address: str) -> JobInfo:
        route = f"GET /api/jobs/{address}"
        body = await self._call("GET", f"{self.base_url}/api/jobs/{_segment(address)}",
                                route=route)
        return self._job_info(body, address, route)

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
            f"{self.base_url}/api/jobs/{_segment(address)}/stop",
            route=f"POST /api/jobs/{address}/stop",
            signed=True,
            doing=f"stopping job {address}",
        )

    async def extend(self, address: str, seconds: int) -> None:
        await self._call(
            "POST",
            f"{self.base_url}/api/jobs/{_segment(address)}/extend",
            route=f"POST /api/jobs/{address}/extend",
            signed=True,
            json_body={"seconds": int(seconds)},
            retry_sent=False,
            doing=f"extending job {address} (its timeout is unchanged)",
        )

    # ------------------------------------------------------------------ credits

    async def balance(self) -> CreditBalance:
        """The API key's credits (USD). :class:`NetworkError` without an API key."""
        if self._api_key is None:
            raise NetworkError(f"{self.name} network: no API key, so no credit balance")
        route = "GET /api/credits/balance"
        body = await self._call(
            "GET", f"{self.base_url}/api/credits/balance", route=route, signed=True,
            doing="reading the credit balance",
        )
        return read(CreditBalance, body, f"{self.name} network: {route}")

    async def signer(self, job: str, project: str | None = None) -> Signer:
        """Who signs the requests to ``job``'s host: the wallet, or with an API key a header
        from the signing service (asked once; each request then gets a fresh time).

        ``project`` (the job's, from the ledger) is checked against the address the service
        signs for, so a job the key did not list fails here in one line.
        """
        if self._api_key is None and self.wallet is not None:
            if project and project != self.wallet.address:
                raise NetworkError(
                    f"job {job} was posted by {project}, not by this wallet "
                    f"({self.wallet.address}): its host will not answer us")
            return self.wallet
        route = "POST /auth/sign-message/external"
        where = f"{self.name} network: signing service"
        body = await self._call(
            "POST", f"{self.signing_url}/auth/sign-message/external", route=route, signed=True,
            json_body={"message": job}, doing=f"signing for the host of job {job}",
        )
        answer = read(SignAnswer, body, f"{where}: {route}")
        if project and answer.user_address != project:
            raise NetworkError(
                f"{where} signs for {answer.user_address}, but job {job} belongs to {project}: "
                "it was not listed with this API key, so its host will not answer"
            )
        try:
            return PresignedSigner(answer.user_address, answer.header(job))
        except (ValueError, AuthError) as exc:
            raise NetworkError(f"{where}: {exc}") from None


def require_api_key(settings: Settings) -> str:
    """The API key the settings point at, read now; one line saying how to set one if none."""
    key = settings.read_api_key()
    if not key:
        raise SettingsError(
            "pay: credits need a Nosana API key: set NOSANA_API_KEY (make one on the Nosana "
            "dashboard, Account → API Keys) or put \"nosana_api_key\" in the credentials file "
            f"({settings.credentials_file or credentials_file({})}); or pass --pay wallet")
    if any(char.isspace() for char in key):
        raise SettingsError(f"the Nosana API key ({settings.source('api_key_set')}) holds "
                            "spaces or line breaks: copy the key alone")
    return key


def credits_network(settings: Settings) -> ApiNetwork:
    """Nosana's API on ``settings.network`` (devnet, mainnet), paid with the API key.

    No wallet is needed: the API lists, the key's credits pay, and the signing service signs
    for the hosts. Placeholders are pinned with the Pinata JWT, as on the wallet path.
    """
    from .markets import DEFAULT_MARKETS_API
    from .solana import NODE_DOMAINS

    cluster = settings.network
    if cluster not in SIGNING_URLS:
        raise NetworkError(f"network {cluster!r} has no Nosana API (mainnet, devnet)")
    key = require_api_key(settings)
    domain = settings.node_domain or NODE_DOMAINS[cluster]
    return ApiNetwork(
        settings.api_url or DEFAULT_MARKETS_API[cluster],
        None,
        name=cluster,
        node_url_template=settings.node_url_template or f"https://{{node}}.{domain}",
        domain=domain,
        poll_interval=REMOTE_POLL_S,
        api_key=key,
        signing_url=settings.signing_url or SIGNING_URLS[cluster],
        pinata=PinataClient(
            settings.read_pinata_jwt(),
            api_url=settings.pinata_api_url or DEFAULT_PINATA_API,
            gateway=settings.ipfs_gateway or DEFAULT_GATEWAY,
        ),
    )
