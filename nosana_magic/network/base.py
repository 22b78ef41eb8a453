"""The Network boundary: who lists a job, and what state it is in on the ledger.

Two implementations share this contract: ``ApiNetwork`` (a Nosana-API-shaped ledger such as
the embedded devnode) and ``SolanaNetwork`` (the jobs program on mainnet/devnet). Everything
above it (the job state machine, the view, the magics) is the same code for both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import InsufficientCreditsError, NetworkError
from ..protocol import JobState
from ..signer import Signer

__all__ = [
    "InsufficientCreditsError",
    "JobInfo",
    "JobState",
    "Listing",
    "Market",
    "Network",
    "NetworkError",
]


#: The network fee (percent) added to a credit job's price when a market reports none.
CREDIT_FEE_PCT = 10.0


@dataclass(frozen=True)
class Market:
    """A GPU market: where jobs are listed and what a second of GPU time costs there."""

    address: str
    slug: str
    name: str = ""
    #: NOS base units (1e-6 NOS) per second, as on chain.
    price_per_second: int = 0
    #: The market's longest job, in seconds.
    job_timeout: int = 0
    #: Hosts waiting for work (a job listed now starts at once when > 0).
    idle_hosts: int = 0
    network_fee_pct: float = 0.0
    #: What a host earns per hour in USD (Nosana's markets API), when known.
    usd_per_hour: float | None = None

    @property
    def nos_per_hour(self) -> float:
        return self.price_per_second * 3600 / 1e6

    def cost(self, seconds: float) -> float:
        """The most a job of ``seconds`` can cost, in NOS, fee included."""
        return self.price_per_second * seconds / 1e6 * (1 + self.network_fee_pct / 100)

    @property
    def usd_per_hour_with_fee(self) -> float | None:
        """What an hour costs in credits (USD): the hosts' rate plus the network fee, or the
        10 % Nosana's dashboard adds when the market reports none (docs/protocol.md §24)."""
        if self.usd_per_hour is None:
            return None
        return self.usd_per_hour * (1 + (self.network_fee_pct or CREDIT_FEE_PCT) / 100)

    def cost_usd(self, seconds: float) -> float | None:
        """The most a job of ``seconds`` can cost in credits (USD, fee included), if known."""
        per_hour = self.usd_per_hour_with_fee
        return None if per_hour is None else per_hour * seconds / 3600


@dataclass(frozen=True)
class Listing:
    """What posting a job returned."""

    job: str
    run: str | None = None
    tx: str | None = None
    #: What the credits paid for the listing (USD, held until the job ends), when they paid.
    cost_usd: float | None = None


@dataclass(frozen=True)
class JobInfo:
    """A job as the ledger sees it."""

    address: str
    state: JobState
    market: str = ""
    node: str | None = None
    project: str = ""
    #: Seconds.
    timeout: int = 0
    #: Unix seconds when a node started it / when it ended.
    time_start: int | None = None
    time_end: int | None = None
    ipfs_job: str | None = None
    ipfs_result: str | None = None
    #: NOS base units per second.
    price: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def expires_at(self) -> float | None:
        """Unix seconds at which the host ends the job (start + timeout)."""
        return None if self.time_start is None else self.time_start + self.timeout


@runtime_checkable
class Network(Protocol):
    """A Nosana network as a job client needs it. Every call is bounded in time."""

    #: ``local``, ``devnet``, ``mainnet`` (shown to the user).
    name: str

    @property
    def pays_with(self) -> str:
        """``wallet`` (the wallet lists and pays) or ``credits`` (an API key's credits)."""
        ...

    async def signer(self, job: str, project: str | None = None) -> Signer:
        """Who signs the requests to ``job``'s host: the job's project (docs/protocol.md §3).

        A wallet, or for a credit job a header from the signing service (asked once).
        ``project`` (the job's, from the ledger) is checked: a job this network's wallet or
        key did not list is refused here in one line, as its host would not answer.
        """
        ...

    def node_url(self, node: str) -> str:
        """The base URL of a host's node API (``https://{node}.node.k8s.prd.nos.ci``)."""
        ...

    def service_domain(self) -> str | None:
        """The domain under which public service ids are served, if URLs are predictable."""
        ...

    async def pin(self, document: dict[str, Any]) -> str:
        """Pin a JSON document to IPFS; returns its CIDv0."""
        ...

    async def markets(self) -> list[Market]:
        ...

    async def market(self, slug_or_address: str) -> Market:
        """One market, by slug or address; :class:`NetworkError` naming it if unknown."""
        ...

    async def post(
        self, cid: str, market: Market, timeout_s: int, *, node: str | None = None
    ) -> Listing:
        """List a job whose definition is the pinned ``cid``. This is where money is spent."""
        ...

    async def job(self, address: str) -> JobInfo:
        ...

    def watch(self, address: str) -> AsyncIterator[JobInfo]:
        """Yield the job's info at once, then each time it changes, until it is done."""
        ...

    async def stop(self, address: str) -> None:
        """Delist a queued job or end a running one."""
        ...

    async def extend(self, address: str, seconds: int) -> None:
        """Add ``seconds`` to the job's timeout."""
        ...

    async def aclose(self) -> None:
        ...
