"""Configuration of an embedded local Nosana network: markets, hosts, timings, faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .faults import Faults

__all__ = ["DevNodeConfig", "MarketConfig"]


@dataclass(frozen=True)
class MarketConfig:
    """One local market. Prices are NOS base units (1e-6 NOS) per second, as on chain."""

    slug: str
    name: str
    price: int
    #: The longest job the market accepts, in seconds.
    job_timeout: int
    network_fee_percentage: float = 10.0
    gpu_types: tuple[str, ...] = ()


def _default_markets() -> list[MarketConfig]:
    return [
        MarketConfig("local-cpu", "Local CPU", price=20, job_timeout=86_400),
        MarketConfig(
            "local-gpu", "Local GPU", price=115, job_timeout=86_400, gpu_types=("local",)
        ),
    ]


@dataclass
class DevNodeConfig:
    """How a :class:`~nosana_magic.devnode.DevNode` behaves. Times are in seconds."""

    #: Emulated hosts, spread round-robin over the markets (every market gets one first).
    hosts: int = 2
    #: When set, every market gets this many hosts instead (``hosts`` is then ignored).
    hosts_per_market: int | None = None
    markets: list[MarketConfig] = field(default_factory=_default_markets)
    #: How long a queued job waits before an idle host takes it; ``None``: never.
    pickup_delay: float | None = 0.2
    #: How long a host waits for ``GET /job/{id}/results`` after the run (Nosana: 60 s).
    results_window: float = 60.0
    #: The least time between two ``/job/{id}/info`` events (the node polls every 1 s).
    sse_interval: float = 0.1
    #: Time between two ``: keep-alive`` comments on an idle ``/info`` stream.
    sse_keepalive: float = 15.0
    #: Expiry of a timestamped ``/log`` / ``/status`` WebSocket header (the node's default).
    ws_auth_expiry: float = 300.0
    #: How long a WebSocket may stay open without sending its first message.
    ws_first_message_timeout: float = 120.0
    #: How long stopping a job's processes may take before the devnode gives up on them.
    stop_timeout: float = 10.0
    #: Serve the pre-2025-10 node routes (``/job-definition/:id``, ``/job-result/:id`` …).
    legacy_routes: bool = False
    faults: Faults = field(default_factory=Faults)
    #: Where job working directories are made (a temporary directory when ``None``).
    workdir: Path | None = None
    #: 0: an ephemeral port.
    port: int = 0
    #: Flows a host keeps after their job (for late ``GET /results``), oldest dropped first;
    #: a dropped flow's job directory is removed with it.
    keep_flows: int = 100
    #: Node log entries kept per job for ``/log`` replay (and task log entries)...
    log_history: int = 20_000
    #: ...and at most this many bytes of them (their JSON text), oldest dropped first.
    log_history_bytes: int = 64 * 1024 * 1024
    #: Log entries kept per op in ``opStates[].logs`` (the node's cap).
    op_log_cap: int = 24_999
    #: The token a client must present (header ``x-nosana-local-token``) on the ledger, IPFS
    #: and control routes; the node API and services are open as on a host (``None``: no
    #: token asked). Kept out of the repr.
    token: str | None = field(default=None, repr=False)
    #: Seconds with no job and no request after which :attr:`DevNode.stop_requested` is set
    #: (``None``: never).
    idle_timeout: float | None = None
