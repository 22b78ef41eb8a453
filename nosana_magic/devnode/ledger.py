"""The local ledger: markets, job listings and their states, in the Nosana API's JSON shape.

It plays the part of the jobs program and the market matching: a job listed in a market with
an idle host is handed to that host after the pickup delay (that creates the "run": the job
is RUNNING with ``node`` set), and the host completes it with the CID of its result.
Everything here runs on the devnode's event loop; tests may read it from other threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..protocol import AuthError, CidError, JobState, cid_to_digest, verify_auth_header
from .config import MarketConfig

__all__ = ["Ledger", "LedgerError", "LedgerJob", "Market", "ledger_routes"]

#: Expiry of a timestamped ledger ``Authorization`` header (the Nosana API's).
API_AUTH_EXPIRY_S = 300.0


def fresh_address() -> str:
    """A new base58 account address (jobs and runs are fresh keypairs on chain)."""
    return str(Keypair().pubkey())


def _fake_signature() -> str:
    # Looks like a transaction signature (base58 of 64 bytes) and is unique.
    return str(Keypair().sign_message(b"devnode"))


def _now_s() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Market:
    address: str
    slug: str
    name: str
    #: NOS base units per second.
    price: int
    job_timeout: int
    network_fee_percentage: float
    gpu_types: tuple[str, ...] = ()


@dataclass
class LedgerJob:
    """One job account (plus its run, once a host took it)."""

    address: str
    market: str
    project: str
    ipfs_job: str
    timeout: int
    price: int
    listed_at: float
    requested_node: str | None = None
    state: JobState = JobState.QUEUED
    node: str | None = None
    run: str | None = None
    #: Unix seconds, as on chain.
    time_start: int | None = None
    time_end: int | None = None
    #: Precise start (unix seconds): the host's expiry is ``started_at + timeout``.
    started_at: float | None = None
    ipfs_result: str | None = None
    #: The project ended the job while it ran: it completes as STOPPED.
    stop_requested: bool = False
    #: The host quit during the run: it completes as STOPPED.
    host_quit: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "state": self.state.value,
            "node": self.node,
            "market": self.market,
            "project": self.project,
            "timeout": self.timeout,
            "timeStart": self.time_start,
            "timeEnd": self.time_end,
            "ipfsJob": self.ipfs_job,
            "ipfsResult": self.ipfs_result,
            "price": self.price,
            "run": self.run,
        }


class HostSlot(Protocol):
    """What the ledger needs of an emulated host (see ``host.EmulatedHost``)."""

    @property
    def address(self) -> str: ...

    @property
    def market(self) -> Market: ...

    @property
    def busy(self) -> bool: ...

    @property
    def idle_since(self) -> float: ...

    def start_job(self, job: LedgerJob) -> None: ...

    def end_job(self, job: str) -> None: ...

    def job_extended(self, job: str) -> None: ...


class LedgerError(Exception):
    """A refused ledger call: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Ledger:
    """Markets and jobs. Matching queued jobs with idle hosts runs in :meth:`run_matcher`."""

    def __init__(
        self,
        markets: list[MarketConfig],
        *,
        pickup_delay: Callable[[], float | None],
    ) -> None:
        self.markets: dict[str, Market] = {}
        for config in markets:
            market = Market(
                address=fresh_address(),
                slug=config.slug,
                name=config.name,
                price=config.price,
                job_timeout=config.job_timeout,
                network_fee_percentage=config.network_fee_percentage,
                gpu_types=config.gpu_types,
            )
            self.markets[market.address] = market
        self.jobs: dict[str, LedgerJob] = {}
        self.hosts: dict[str, HostSlot] = {}
        self._pickup_delay = pickup_delay
        self._wake: asyncio.Event | None = None

    # ------------------------------------------------------------------ lookups

    def market(self, slug_or_address: str) -> Market:
        market = self.markets.get(slug_or_address)
        if market is None:
            market = next((m for m in self.markets.values() if m.slug == slug_or_address), None)
        if market is None:
            raise LedgerError(404, f"market not found: {slug_or_address[:80]}")
        return market

    def job(self, address: str) -> LedgerJob:
        job = self.jobs.get(address)
        if job is None:
            raise LedgerError(404, f"job not found: {address[:80]}")
        return job

    def market_json(self, market: Market) -> dict[str, Any]:
        idle = [h.address for h in self.hosts.values() if h.market is market and not h.busy]
        queued = sum(
            1
            for j in self.jobs.values()
            if j.market == market.address and j.state is JobState.QUEUED
        )
        return {
            "address": market.address,
            "slug": market.slug,
            "name": market.name,
            "nos_job_price_per_second": market.price / 1e6,
            "job_price": market.price,
            "job_timeout": market.job_timeout,
            "network_fee_percentage": market.network_fee_percentage,
            "gpu_types": list(market.gpu_types),
            "type": "OTHER",
            # The market's queue holds either idle hosts or waiting jobs, as on chain.
            "idle_hosts": len(idle),
            "queue": idle,
            "queued_jobs": queued,
        }

    # ------------------------------------------------------------------ job calls

    def list_job(
        self, *, project: str, ipfs_hash: str, market: str, timeout: int, node: str | None = None
    ) -> LedgerJob:
        the_market = self.market(market)
        if node is not None:
            host = self.hosts.get(node)
            if host is None or host.market is not the_market:
                raise LedgerError(
                    400, f"node {node[:80]} is not a host of market {the_market.slug}"
                )
        if timeout > the_market.job_timeout:
            raise LedgerError(
                400,
                f"timeout {timeout} s exceeds the market's job timeout "
                f"({the_market.job_timeout} s)",
            )
        job = LedgerJob(
            address=fresh_address(),
            market=the_market.address,
            project=project,
            ipfs_job=ipfs_hash,
            timeout=timeout,
            price=the_market.price,
            listed_at=time.time(),
            requested_node=node,
            run=fresh_address(),
        )
        self.jobs[job.address] = job
        self.wake()
        return job

    def stop(self, address: str, project: str) -> dict[str, Any]:
        job = self._own(address, project)
        if job.state is JobState.QUEUED:
            job.state = JobState.STOPPED
            job.time_end = _now_s()
            self.wake()
            return {"tx": _fake_signature(), "job": job.address, "delisted": True}
        if job.state is JobState.RUNNING:
            if not job.stop_requested:
                job.stop_requested = True
                host = self.hosts.get(job.node or "")
                if host is not None:
                    host.end_job(job.address)
            return {"tx": _fake_signature(), "job": job.address, "delisted": False}
        raise LedgerError(400, f"job {address} has already ended ({job.state.value})")

    def extend(self, address: str, project: str, seconds: int) -> dict[str, Any]:
        job = self._own(address, project)
        if job.state.done:
            raise LedgerError(400, f"job {address} has already ended ({job.state.value})")
        job.timeout += seconds
        host = self.hosts.get(job.node or "")
        if host is not None:
            host.job_extended(job.address)
        return {"tx": _fake_signature(), "job": job.address}

    def complete(self, address: str, ipfs_result: str | None) -> None:
        """The host's last step: the result CID goes on the ledger and the job ends."""
        job = self.job(address)
        if job.state.done:
            return
        job.ipfs_result = ipfs_result
        job.time_end = _now_s()
        stopped = job.stop_requested or job.host_quit
        job.state = JobState.STOPPED if stopped else JobState.COMPLETED
        self.wake()

    def _own(self, address: str, project: str) -> LedgerJob:
        job = self.job(address)
        if job.project != project:
            raise LedgerError(403, "only the job's project may do this")
        return job

    # ------------------------------------------------------------------ matching

    def wake(self) -> None:
        """Something changed (a listing, an idle host): match again now."""
        if self._wake is not None:
            self._wake.set()

    def match_once(self, now: float | None = None) -> None:
        delay = self._pickup_delay()
        if delay is None:
            return
        current = time.time() if now is None else now
        claimed: set[str] = set()
        queued = sorted(
            (j for j in self.jobs.values() if j.state is JobState.QUEUED),
            key=lambda j: j.listed_at,
        )
        for job in queued:
            for host in self.hosts.values():
                if host.busy or host.address in claimed or host.market.address != job.market:
                    continue
                if job.requested_node is not None and host.address != job.requested_node:
                    continue
                if max(job.listed_at, host.idle_since) + delay > current:
                    continue
                claimed.add(host.address)
                self._start_run(job, host)
                break

    def _start_run(self, job: LedgerJob, host: HostSlot) -> None:
        job.state = JobState.RUNNING
        job.node = host.address
        job.started_at = time.time()
        job.time_start = int(job.started_at)
        host.start_job(job)

    async def run_matcher(self, closing: asyncio.Event, *, poll: float = 0.05) -> None:
        """Match until ``closing`` is set. Polls too, so a pickup delay changed at run time
        (e.g. from ``None``) takes effect without a new listing."""
        self._wake = asyncio.Event()
        while not closing.is_set():
            self._wake.clear()
            self.match_once()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)


# ---------------------------------------------------------------------- HTTP routes


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _authenticate(request: Request) -> str:
    """The public key that signed the request (``x-user-id`` + ``Authorization``)."""
    user = request.headers.get("x-user-id", "").strip()
    header = request.headers.get("authorization", "").strip()
    if not user or not header:
        raise LedgerError(401, "authentication required: send Authorization and x-user-id")
    try:
        Pubkey.from_string(user)
    except ValueError:
        raise LedgerError(401, "x-user-id is not a public key") from None
    try:
        verify_auth_header(header, user, expiry_s=API_AUTH_EXPIRY_S)
    except AuthError as exc:
        raise LedgerError(401, f"invalid authorization: {exc}") from None
    return user


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise LedgerError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise LedgerError(400, "the body must be a JSON object")
    return body


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LedgerError(400, f"{name} must be a positive integer number of seconds")
    if isinstance(value, float) and not value.is_integer():
        raise LedgerError(400, f"{name} must be a whole number of seconds")
    if value <= 0:
        raise LedgerError(400, f"{name} must be a positive integer number of seconds")
    return int(value)


def ledger_routes(ledger: Ledger) -> list[BaseRoute]:
    """The Nosana-API-shaped routes under ``/api``."""

    def guarded(
        handler: Callable[[Request], Any],
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                result = await handler(request)
            except LedgerError as exc:
                return _error(exc.status, exc.message)
            return result if isinstance(result, Response) else JSONResponse(result)

        return endpoint

    async def markets(request: Request) -> Any:
        return [ledger.market_json(m) for m in ledger.markets.values()]

    async def market(request: Request) -> Any:
        return ledger.market_json(ledger.market(request.path_params["market"]))

    async def list_job(request: Request) -> Any:
        project = _authenticate(request)
        body = await _json_body(request)
        ipfs_hash = body.get("ipfsHash")
        if not isinstance(ipfs_hash, str):
            raise LedgerError(400, "ipfsHash (a CIDv0 string) is required")
        try:
            cid_to_digest(ipfs_hash)
        except CidError as exc:
            raise LedgerError(400, str(exc)) from None
        market_id = body.get("market")
        if not isinstance(market_id, str) or not market_id:
            raise LedgerError(400, "market (a slug or address) is required")
        if "timeout" not in body:
            raise LedgerError(400, "timeout (seconds) is required")
        timeout = _positive_int(body.get("timeout"), "timeout")
        node = body.get("node")
        if node is not None and not isinstance(node, str):
            raise LedgerError(400, "node must be a host address")
        job = ledger.list_job(
            project=project, ipfs_hash=ipfs_hash, market=market_id, timeout=timeout, node=node
        )
        return {"tx": _fake_signature(), "job": job.address, "run": job.run}

    async def get_job(request: Request) -> Any:
        return ledger.job(request.path_params["job"]).to_json()

    async def stop_job(request: Request) -> Any:
        project = _authenticate(request)
        return ledger.stop(request.path_params["job"], project)

    async def extend_job(request: Request) -> Any:
        project = _authenticate(request)
        body = await _json_body(request)
        if "seconds" not in body:
            raise LedgerError(400, "seconds is required")
        seconds = _positive_int(body.get("seconds"), "seconds")
        return ledger.extend(request.path_params["job"], project, seconds)

    async def not_found(request: Request) -> Any:
        raise LedgerError(404, f"no such API route: {request.method} {request.url.path[:120]}")

    return [
        Route("/api/markets", guarded(markets), methods=["GET"]),
        Route("/api/markets/", guarded(markets), methods=["GET"]),
        Route("/api/markets/{market}", guarded(market), methods=["GET"]),
        Route("/api/markets/{market}/", guarded(market), methods=["GET"]),
        Route("/api/jobs/list", guarded(list_job), methods=["POST"]),
        Route("/api/jobs/{job}", guarded(get_job), methods=["GET"]),
        Route("/api/jobs/{job}/", guarded(get_job), methods=["GET"]),
        Route("/api/jobs/{job}/stop", guarded(stop_job), methods=["POST"]),
        Route("/api/jobs/{job}/extend", guarded(extend_job), methods=["POST"]),
        Route(
            "/api/{rest:path}",
            guarded(not_found),
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        ),
    ]
