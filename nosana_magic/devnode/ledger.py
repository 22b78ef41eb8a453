"""The local ledger: markets, job listings and their states, in the Nosana API's JSON shape.

It plays the part of the jobs program and the market matching: a job listed in a market with
an idle host is handed to that host after the pickup delay (that creates the "run": the job
is RUNNING with ``node`` set), and the host completes it with the CID of its result.
Jobs are listed with a wallet (signed ``x-user-id``) or with an API key (``Bearer nos_…``),
whose credits pay for them (``credits.py``); the answers have the shapes of Nosana's API
(docs/protocol.md §22, §24), plus a few fields of the devnode's own, named in docs/devnode.md.
Everything here runs on the devnode's event loop; tests may read it from other threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..protocol import AuthError, CidError, JobState, cid_to_digest, now_ms, verify_auth_header
from .config import MarketConfig
from .credits import MICRO, ApiKey, CreditError, Credits
from .faults import Faults
from .ipfs import IpfsStore

__all__ = ["Ledger", "LedgerError", "LedgerJob", "Market", "ledger_routes"]

#: Expiry of a timestamped ledger ``Authorization`` header (the Nosana API's).
API_AUTH_EXPIRY_S = 300.0
#: The node of a job no host has taken (the system program's address; docs/protocol.md §22).
SYSTEM_ADDRESS = "11111111111111111111111111111111"
#: The API's numeric job states (docs/protocol.md §22).
STATE_CODES = {JobState.QUEUED: 0, JobState.RUNNING: 1, JobState.COMPLETED: 2,
               JobState.STOPPED: 3}
#: Where the signing service's routes live below the devnode's URL (Nosana serves them from
#: a host of their own, the client manager).
CLIENT_MANAGER_PREFIX = "/client-manager"


def fresh_address() -> str:
    """A new base58 account address (jobs and runs are fresh keypairs on chain)."""
    return str(Keypair().pubkey())


def _fake_signature() -> str:
    # Looks like a transaction signature (base58 of 64 bytes) and is unique.
    return str(Keypair().sign_message(b"devnode"))


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
    #: What a host earns per hour, in USD.
    usd_per_hour: float = 0.0
    #: The market's access-key collection (an address, as on Nosana).
    sft: str = SYSTEM_ADDRESS

    @property
    def credit_rate(self) -> float:
        """What a credit job costs per second, in micro-dollars: the hosts' hourly USD plus
        the network fee (docs/protocol.md §24)."""
        return self.usd_per_hour * (1 + self.network_fee_percentage / 100) * MICRO / 3600


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
    #: Who paid on chain: the project for a wallet job, the credit system for a credit job.
    payer: str = ""
    usd_per_hour: float | None = None
    requested_node: str | None = None
    state: JobState = JobState.QUEUED
    node: str | None = None
    run: str | None = None
    #: Unix seconds, as on chain.
    time_start: int | None = None
    time_end: int | None = None
    #: Precise start (unix seconds): the host's expiry is ``started_at + timeout``.
    started_at: float | None = None
    #: Precise end (unix seconds): credits pay for ``ended_at - started_at``.
    ended_at: float | None = None
    ipfs_result: str | None = None
    #: The project ended the job while it ran: it completes as STOPPED.
    stop_requested: bool = False
    #: The host quit during the run: it completes as STOPPED.
    host_quit: bool = False

    def to_json(self) -> dict[str, Any]:
        """``GET /api/jobs/{job}`` (docs/protocol.md §22): numeric ``state``, the system
        address as ``node`` and 0 as times until they happen, no ``address``. The indexed
        documents (``jobDefinition``, ``jobResult``) are filled in by :meth:`Ledger.job_json`.
        """
        return {
            "ipfsJob": self.ipfs_job,
            "ipfsResult": self.ipfs_result,
            "market": self.market,
            "node": self.node or SYSTEM_ADDRESS,
            "payer": self.payer or self.project,
            "price": self.price,
            "project": self.project,
            "state": STATE_CODES[self.state],
            "type": None,
            "jobDefinition": None,
            "jobResult": None,
            "jobStatus": None,
            "timeEnd": self.time_end or 0,
            "timeStart": self.time_start or 0,
            "benchmarkProcessedAt": None,
            "timeout": self.timeout,
            "usdRewardPerHour": self.usd_per_hour,
            "listedAt": int(self.listed_at),
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
        ipfs: IpfsStore | None = None,
        signing_answer: Callable[[], str] = lambda: "signature",
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
                usd_per_hour=config.usd_per_hour,
                sft=fresh_address(),
            )
            self.markets[market.address] = market
        self.jobs: dict[str, LedgerJob] = {}
        self.hosts: dict[str, HostSlot] = {}
        self.credits = Credits()
        #: The account that pays the chain's side of credit jobs (Nosana's, on the network).
        self.credits_payer = fresh_address()
        self._ipfs = ipfs
        self._pickup_delay = pickup_delay
        self.signing_answer = signing_answer
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
            # The fields of Nosana's markets API (docs/protocol.md §22)...
            "address": market.address,
            "slug": market.slug,
            "name": market.name,
            "sft": market.sft,
            "type": "OTHER",
            "usd_reward_per_hour": market.usd_per_hour,
            "nos_reward_per_second": market.price / 1e6,
            "nos_job_price_per_second": market.price / 1e6,
            "network_fee_percentage": market.network_fee_percentage,
            "premium_community_relation": None,
            "gpu_types": list(market.gpu_types),
            "required_images": [],
            "required_remote_resources": [],
            "client": True,
            # ...and the devnode's own: what Nosana keeps on chain, and the market's queue
            # (idle hosts or waiting jobs, as on chain).
            "job_price": market.price,
            "job_timeout": market.job_timeout,
            "idle_hosts": len(idle),
            "queue": idle,
            "queued_jobs": queued,
        }

    def job_json(self, job: LedgerJob) -> dict[str, Any]:
        """A job as ``GET /api/jobs/{job}`` answers it, with the documents Nosana's indexer
        reads from IPFS (for a confidential job: the placeholder and the blank result)."""
        answer = job.to_json()
        answer["jobDefinition"] = self._document(job.ipfs_job)
        answer["jobResult"] = self._document(job.ipfs_result)
        return answer

    def _document(self, cid: str | None) -> Any:
        if cid is None or self._ipfs is None:
            return None
        try:
            return self._ipfs.get_json(cid)
        except (KeyError, ValueError):
            return None

    # ------------------------------------------------------------------ job calls

    def list_job(
        self,
        *,
        project: str,
        ipfs_hash: str,
        market: str,
        timeout: int,
        node: str | None = None,
        account: ApiKey | None = None,
    ) -> tuple[LedgerJob, dict[str, Any] | None]:
        """List a job; with ``account``, its credits pay (reserved now, 402 before anything
        is listed when they cannot). Returns the job and the ``credits`` of the answer."""
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
            project=account.address if account is not None else project,
            ipfs_job=ipfs_hash,
            timeout=timeout,
            price=the_market.price,
            listed_at=time.time(),
            payer=self.credits_payer if account is not None else project,
            usd_per_hour=the_market.usd_per_hour,
            requested_node=node,
            run=fresh_address(),
        )
        charge: dict[str, Any] | None = None
        if account is not None:
            reservation = self.credits.reserve(
                account, job.address, timeout, the_market.credit_rate
            )
            charge = {**_charge(reservation.amount, reservation.id), "project": account.address}
        self.jobs[job.address] = job
        self.wake()
        return job, charge

    def stop(self, address: str, project: str, account: ApiKey | None = None) -> dict[str, Any]:
        job = self._own(address, project, account)
        if job.state is JobState.QUEUED:
            job.state = JobState.STOPPED
            job.ended_at = time.time()
            job.time_end = int(job.ended_at)
            self.credits.settle(job.address, 0.0)  # never ran: every credit comes back
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

    def extend(
        self, address: str, project: str, seconds: int, account: ApiKey | None = None
    ) -> dict[str, Any]:
        job = self._own(address, project, account)
        if job.state.done:
            raise LedgerError(400, f"job {address} has already ended ({job.state.value})")
        answer: dict[str, Any] = {"tx": _fake_signature(), "job": job.address}
        if account is not None:
            rate = self.market(job.market).credit_rate
            reservation = self.credits.reserve(account, job.address, seconds, rate)
            answer["credits"] = _charge(reservation.amount, reservation.id)
        job.timeout += seconds
        host = self.hosts.get(job.node or "")
        if host is not None:
            host.job_extended(job.address)
        return answer

    def complete(self, address: str, ipfs_result: str | None) -> None:
        """The host's last step: the result CID goes on the ledger and the job ends."""
        job = self.job(address)
        if job.state.done:
            return
        job.ipfs_result = ipfs_result
        job.ended_at = time.time()
        job.time_end = int(job.ended_at)
        stopped = job.stop_requested or job.host_quit
        job.state = JobState.STOPPED if stopped else JobState.COMPLETED
        self.credits.settle(job.address, self.run_seconds(job))
        self.wake()

    @staticmethod
    def run_seconds(job: LedgerJob) -> float:
        """How long the job ran (so far, if it has not ended), capped at its timeout: what
        its credits pay for."""
        if job.started_at is None:
            return 0.0
        end = job.ended_at if job.ended_at is not None else time.time()
        return min(float(job.timeout), max(0.0, end - job.started_at))

    def _own(self, address: str, project: str, account: ApiKey | None) -> LedgerJob:
        if account is not None:
            # The credit routes do not tell another user's job from a missing one.
            job = self.jobs.get(address)
            if job is None or self.credits.owner_of(address) is not account:
                raise LedgerError(404, "Job not found or you do not have permission")
            return job
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


def _charge(micro: int, reservation: str) -> dict[str, Any]:
    """The ``credits`` of a list or extend answer."""
    return {"costUSD": micro / MICRO, "creditsUsed": micro / MICRO, "reservationId": reservation}


# ---------------------------------------------------------------------- HTTP routes


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _is_bearer(request: Request) -> bool:
    return request.headers.get("authorization", "").strip()[:7].lower() == "bearer "


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


def _guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """A route whose refusals become ``{"error": …}`` with their status."""

    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request)
        except (LedgerError, CreditError) as exc:
            return _error(exc.status, exc.message)
        return result if isinstance(result, Response) else JSONResponse(result)

    return endpoint


def _caller(ledger: Ledger, request: Request) -> tuple[str, ApiKey | None]:
    """Who calls: an API key's account (``Bearer``), else a wallet's signed headers."""
    if _is_bearer(request):
        account = ledger.credits.authenticate(request.headers["authorization"])
        return account.address, account
    return _authenticate(request), None


async def _after_listing(faults: Faults) -> None:
    """The listing faults: the job is listed, and then its answer comes late, or is a 500."""
    if faults.list_answer_delay > 0:
        await asyncio.sleep(faults.list_answer_delay)
    if faults.take_list_failure():
        raise LedgerError(500, "internal error after listing (devnode fault)")


def _unfinished_jobs(ledger: Ledger, query: Mapping[str, str]) -> list[dict[str, Any]]:
    """``GET /api/jobs?project=…&ipfsJob=…&market=…``. Not a route of the Nosana API: the
    devnode's own, for a client that lost the answer to a listing and looks for the job it
    may have made (docs/devnode.md)."""
    project, cid, market = query.get("project"), query.get("ipfsJob"), query.get("market")
    if not project or not cid:
        raise LedgerError(400, "project and ipfsJob are required")
    address = ledger.market(market).address if market else None
    # With the address: the official job answer has none, and a search must say which.
    return [{**job.to_json(), "address": job.address} for job in ledger.jobs.values()
            if job.project == project and job.ipfs_job == cid and not job.state.done
            and address in (None, job.market)]


def ledger_routes(ledger: Ledger, faults: Callable[[], Faults] = Faults) -> list[BaseRoute]:
    """The Nosana-API-shaped routes under ``/api``, and the signing service's; ``faults``
    gives the devnode's faults."""

    def caller(request: Request) -> tuple[str, ApiKey | None]:
        return _caller(ledger, request)

    async def markets(request: Request) -> Any:
        return [ledger.market_json(m) for m in ledger.markets.values()]

    async def market(request: Request) -> Any:
        return ledger.market_json(ledger.market(request.path_params["market"]))

    async def list_job(request: Request) -> Any:
        project, account = caller(request)
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
        job, charge = ledger.list_job(
            project=project, ipfs_hash=ipfs_hash, market=market_id, timeout=timeout, node=node,
            account=account,
        )
        await _after_listing(faults())
        answer = {"tx": _fake_signature(), "job": job.address, "run": job.run}
        return answer if charge is None else {**answer, "credits": charge}

    async def search_jobs(request: Request) -> Any:
        return _unfinished_jobs(ledger, request.query_params)

    async def get_job(request: Request) -> Any:
        return ledger.job_json(ledger.job(request.path_params["job"]))

    async def stop_job(request: Request) -> Any:
        project, account = caller(request)
        return ledger.stop(request.path_params["job"], project, account)

    async def extend_job(request: Request) -> Any:
        project, account = caller(request)
        body = await _json_body(request)
        if "seconds" not in body:
            raise LedgerError(400, "seconds is required")
        seconds = _positive_int(body.get("seconds"), "seconds")
        return ledger.extend(request.path_params["job"], project, seconds, account)

    async def not_found(request: Request) -> Any:
        raise LedgerError(404, f"no such API route: {request.method} {request.url.path[:120]}")

    return [
        Route("/api/markets", _guarded(markets), methods=["GET"]),
        Route("/api/markets/", _guarded(markets), methods=["GET"]),
        Route("/api/markets/{market}", _guarded(market), methods=["GET"]),
        Route("/api/markets/{market}/", _guarded(market), methods=["GET"]),
        Route("/api/jobs/list", _guarded(list_job), methods=["POST"]),
        Route("/api/jobs", _guarded(search_jobs), methods=["GET"]),
        Route("/api/jobs/{job}", _guarded(get_job), methods=["GET"]),
        Route("/api/jobs/{job}/", _guarded(get_job), methods=["GET"]),
        Route("/api/jobs/{job}/stop", _guarded(stop_job), methods=["POST"]),
        Route("/api/jobs/{job}/extend", _guarded(extend_job), methods=["POST"]),
        *_credit_routes(ledger),
        Route(
            "/api/{rest:path}",
            _guarded(not_found),
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        ),
    ]


def _credit_routes(ledger: Ledger) -> list[BaseRoute]:
    """The credit balance, and the signing service (docs/protocol.md §24)."""

    async def balance(request: Request) -> Any:
        account = ledger.credits.authenticate(request.headers.get("authorization", ""))
        return ledger.credits.balance(account)

    async def sign_message(request: Request) -> Any:
        """Sign ``message`` with the key's project key."""
        account = ledger.credits.authenticate(request.headers.get("authorization", ""))
        body = await _json_body(request)
        message = body.get("message")
        if not isinstance(message, str) or not message or len(message) > 1000:
            raise LedgerError(400, "message (a non-empty string) is required")
        if ":" in message:
            # A node splits its header on ":"; no header could be made of this message.
            raise LedgerError(400, "message may not contain ':'")
        signature = ledger.credits.sign(account, message)
        if ledger.signing_answer() == "header":
            signature = f"{message}:{signature}"
            if body.get("includeTime") is True:
                signature += f":{now_ms()}"
        return {"message": message, "userAddress": account.address, "signature": signature}

    return [
        Route("/api/credits/balance", _guarded(balance), methods=["GET"]),
        Route(f"{CLIENT_MANAGER_PREFIX}/auth/sign-message/external", _guarded(sign_message),
              methods=["POST"]),
    ]
