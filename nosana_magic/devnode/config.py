"""Configuration of an embedded local Nosana network: markets, hosts, timings, faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
    #: What a host earns per hour, in USD; a credit job costs this plus the network fee.
    usd_per_hour: float = 0.1


def _default_markets() -> list[MarketConfig]:
    return [
        MarketConfig("local-cpu", "Local CPU", price=20, job_timeout=86_400, usd_per_hour=0.05),
        MarketConfig(
            "local-gpu", "Local GPU", price=115, job_timeout=86_400, gpu_types=("local",),
            usd_per_hour=0.4,
        ),
    ]


@dataclass
class DevNodeConfig:
    """How a :class:`~nosana_magic.devnode.DevNode` behaves. Times are in seconds.

    By default the hosts behave as Nosana's own host does (docs/devnode.md says where they
    still differ, and why). The settings under "older devnode behaviours" bring back what
    devnodes did before they followed the real host, for tests written against it.
    """

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
    #: Docker's stop grace (``docker stop`` waits 10 s): on a stop, an op's main process gets
    #: SIGTERM only if it handles it (a container's PID 1 ignores the signals it does not
    #: handle), and whatever of the op still runs this many seconds later is killed (exit
    #: 137). The flow's ``endTime`` comes after that, as on a Nosana host.
    stop_grace: float = 10.0
    #: How long stopping a job's processes may take beyond ``stop_grace`` before the devnode
    #: gives up on them.
    stop_timeout: float = 10.0
    #: What the last ``/info`` event of a job says. A Nosana host sets the final status with
    #: ``endTime``, then overwrites it with ``waiting-for-result`` when it opens the results
    #: window, and its stream polls once a second: which of the two the last event shows is a
    #: race (docs/protocol.md §6). ``"waiting-for-result"`` is how it usually goes;
    #: ``"final-status"`` gives the other order.
    info_last_event: Literal["waiting-for-result", "final-status"] = "waiting-for-result"
    #: Node log lines (not container output) carry ANSI colour codes, as a host run in a
    #: terminal writes them.
    node_log_colors: bool = False
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
    #: The API key the devnode makes at start (``None``: a fresh random ``nos_…`` key)...
    api_key: str | None = None
    #: ...and the USD credits it holds.
    credits_usd: float = 10.0
    #: What the signing service answers in ``signature``: the bare base58 signature (as
    #: ``@nosana/api`` 2.1.8 returns it) or a whole ``message:signature`` header (as older
    #: services did). Clients must take both (docs/protocol.md §24).
    signing_answer: Literal["signature", "header"] = "signature"

    #: The token a client must present (header ``x-nosana-local-token``) on the ledger, IPFS
    #: and control routes; the node API and services are open as on a host (``None``: no
    #: token asked). Kept out of the repr.
    token: str | None = field(default=None, repr=False)
    #: Seconds with no job and no request after which :attr:`DevNode.stop_requested` is set
    #: (``None``: never).
    idle_timeout: float | None = None

    # -- older devnode behaviours (each differs from a Nosana host) ---------------------------
    #: ``/log`` entries carry ``payload: {opId, stream}`` (which op and stream a container line
    #: came from, ``{opId}`` on an op's progress lines); Nosana hosts send no payload.
    log_payload: bool = False
    #: Results values are the first group of each match (else the whole match): a string for
    #: one match, a list for several, no key when nothing matched; Nosana hosts keep every
    #: match array (docs/protocol.md §14).
    results_values: bool = False
    #: A finished job's ``/log`` and ``/status`` history is still replayed to new subscribers;
    #: a Nosana host clears it once the job is done.
    keep_log_history: bool = False
    #: After an uncollected results window the flow's status goes back to the final one, so a
    #: late ``GET /results`` answers 400; on a Nosana host it stays ``waiting-for-result``
    #: and the late GET still answers 200.
    close_results_window: bool = False
    #: A stop sends SIGTERM to every process of an op at once and keeps what they print
    #: meanwhile (exit 143 within ``stop_grace``); on a Nosana host ``docker stop`` signals
    #: only the container's PID 1 and the op's log stream ends at the stop.
    term_process_group: bool = False
