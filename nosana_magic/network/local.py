"""The local default: the local Nosana network as a per-user service, and its local wallet.

With ``network="local"`` and no devnode URL configured, jobs run on the user's local network
service: one devnode in a process of its own (ledger, IPFS and emulated hosts on an ephemeral
127.0.0.1 port; ``devnode/service.py``), started by the first local job of any kernel or
script and shared by all of them. Jobs then run as local processes on this machine.

It is found through its runtime file in the data dir (``devnode/runtime.py``: its URL, pid
and the token it asks for, mode 0600), like a Jupyter server. A file whose process is gone,
or with no such service at its address, is stale: it is replaced by a new service. The start
lock makes two kernels starting at once start one. The service outlives the kernel that
started it (a restarted kernel, another notebook or ``%nosana attach`` from either find it
and its jobs), stops once it had no job and no request for ``local_idle`` seconds, or on
:func:`stop_local_service` (``%nosana local stop``), and kills its jobs' processes when it
stops.

The wallet used on it is kept in the user's data directory (``local-wallet.json``). It signs
requests to the local network only: it holds nothing and is worth nothing, and it is never
used for devnet or mainnet.

Nosana's own market names (``nvidia-3090``, ``nvidia-a100``, …, and their mainnet addresses)
are accepted here and run on the local market of the same kind (a GPU market on
``local-gpu``), so a cell written for mainnet runs locally first with only ``--network``
changed. A market that is neither is refused before the local network is started.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ..protocol import format_duration
from ..wallet import Wallet, create_wallet_file
from .api import ApiNetwork, require_api_key
from .base import Market, NetworkError
from .markets import MAINNET_MARKETS, UnknownMarketError, check_market_ref, close_slugs

if TYPE_CHECKING:
    from ..devnode.runtime import ServiceInfo
    from ..settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "LOCAL_WALLET_FILE",
    "TOKEN_HEADER",
    "LocalNetwork",
    "announce_service",
    "check_local_market",
    "data_dir",
    "ensure_service",
    "local_market_for",
    "local_network",
    "local_wallet",
    "service_info",
    "service_status",
    "stop_local_service",
]

#: File name of the local-only wallet inside the data directory.
LOCAL_WALLET_FILE = "local-wallet.json"

#: The local network's markets for each kind of Nosana market.
LOCAL_GPU_MARKET = "local-gpu"
LOCAL_CPU_MARKET = "local-cpu"
#: Emulated hosts in each market of the local network: enough that a sweep's jobs run side
#: by side (``sweeps.DEFAULT_PARALLEL`` at once), as they would on a market with idle hosts.
LOCAL_HOSTS_PER_MARKET = 4

#: The header that carries the service's token (``devnode/runtime.py``'s, without loading it).
TOKEN_HEADER = "x-nosana-local-token"
#: Where a devnode serves its signing service (the client manager of docs/protocol.md §24).
CLIENT_MANAGER_PATH = "/client-manager"

#: How long starting the service may take (the launcher's own bound is 30 s).
START_TIMEOUT_S = 40.0
#: How long a stop may take: the service stops its jobs first (bounded on its side too).
STOP_TIMEOUT_S = 40.0
#: A service that answered within this many seconds is not asked again (one GET, else, per
#: job started).
_TRUSTED_FOR_S = 5.0

#: (pid, url) of services that answered, with when; the pids already announced.
_verified: dict[tuple[int, str], float] = {}
#: (pid, digest of the key) of API keys a service has been told to serve.
_admitted: set[tuple[int, str]] = set()
_announced_pids: set[int] = set()
_state_lock = threading.Lock()
#: Nosana market names already said to run on a local market (said once per process).
_announced: set[str] = set()
_announced_lock = threading.Lock()


def local_market_for(ref: str) -> str | None:
    """The local market a Nosana market (a known slug or mainnet address) runs on, or None.

    All of Nosana's known markets are GPU markets (``nvidia-…``): they run on ``local-gpu``;
    a CPU market would run on ``local-cpu``.
    """
    text = ref.strip()
    slug = text.lower() if text.lower() in MAINNET_MARKETS else next(
        (name for name, address in MAINNET_MARKETS.items() if address == text), None)
    if slug is None:
        return None
    return LOCAL_CPU_MARKET if "cpu" in slug else LOCAL_GPU_MARKET


def _unknown_local_market(ref: str, slugs: Collection[str]) -> UnknownMarketError:
    close = close_slugs(ref, [*slugs, *MAINNET_MARKETS])
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UnknownMarketError(
        f"unknown market {ref.strip()!r} on the local network{hint} (local markets: "
        f"{', '.join(sorted(slugs))}; Nosana's market names such as nvidia-3090 run on "
        f"{LOCAL_GPU_MARKET})")


def check_local_market(ref: str | None, addresses: Collection[str] = ()) -> None:
    """Refuse, in one line, a market the local network cannot run, without starting it.

    Checked against the markets the local network service starts with (their slugs) and
    ``addresses`` (those of a running service's markets: made at random when it starts).
    ``None`` (the first market) always passes.
    """
    if ref is None:
        return
    from ..devnode.config import DevNodeConfig

    slugs = [m.slug for m in DevNodeConfig().markets]
    text = check_market_ref(ref)
    if text in slugs or text in addresses or local_market_for(text) in slugs:
        return
    raise _unknown_local_market(ref, slugs)


def _check_service_market(ref: str | None, settings: Settings) -> None:
    """:func:`check_local_market`; a market given by address is looked for among the markets
    of the service that runs (none runs: it cannot be one of its markets)."""
    try:
        check_local_market(ref)
    except UnknownMarketError:
        info = service_info(settings)
        if info is None or ref is None:
            raise
        check_local_market(ref, _market_addresses(info))


def _market_addresses(info: ServiceInfo) -> set[str]:
    """The addresses of the service's markets (empty when it does not answer)."""
    try:
        reply = httpx.get(f"{info.url}/api/markets/", headers={TOKEN_HEADER: info.token},
                          timeout=10.0, trust_env=False)
        body = reply.json() if reply.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return set()
    return {m["address"] for m in body if isinstance(m, dict) and isinstance(m.get("address"),
                                                                               str)}


class LocalNetwork(ApiNetwork):
    """The local network: an :class:`ApiNetwork` that also takes Nosana's market names.

    ``on_notice`` gets the line saying which local market a Nosana market runs on (once per
    market name and process). ``token``: what the local network service asks every ledger
    and IPFS request for (sent in :data:`TOKEN_HEADER`; never shown).
    """

    def __init__(self, base_url: str, wallet: Wallet, *,
                 on_notice: Callable[[str], None] | None = None, token: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(base_url, wallet, **kwargs)
        self._on_notice = on_notice
        if token is not None:
            self._http.headers[TOKEN_HEADER] = token

    async def market(self, slug_or_address: str) -> Market:
        """A local market by slug or address, or the one a Nosana market name runs on."""
        text = check_market_ref(slug_or_address)
        markets = await self.markets()
        for market in markets:
            if text in (market.slug, market.address):
                return market
        local = local_market_for(text)
        chosen = next((m for m in markets if m.slug == local), None)
        if chosen is None:
            raise _unknown_local_market(text, [m.slug for m in markets])
        name = text.lower() if text.lower() in MAINNET_MARKETS else text
        with _announced_lock:
            first = name not in _announced
            _announced.add(name)
        if first and self._on_notice is not None:
            self._on_notice(f"market {name} runs on {chosen.slug} on the local network")
        return chosen


def data_dir(settings: Settings) -> Path:
    """Where local state lives: ``settings.data_dir`` or the platform's user data dir."""
    if settings.data_dir:
        return Path(settings.data_dir).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("nosana_magic"))


def local_wallet(settings: Settings) -> Wallet:
    """The local-only wallet (created on first use, mode 600)."""
    wallet = create_wallet_file(data_dir(settings) / LOCAL_WALLET_FILE)
    wallet.source = f"{wallet.source} (local network only)"
    return wallet


# --------------------------------------------------------------------------- the service


def service_info(settings: Settings) -> ServiceInfo | None:
    """The user's running local network service, or ``None`` (nothing is started).

    Its runtime file must name a live process of this user that answers at the file's address
    with that pid and the file's token; otherwise the file is stale (and left for the next
    start to replace).
    """
    from ..devnode.runtime import pid_alive, read_runtime

    info = read_runtime(data_dir(settings))
    if info is None:
        return None
    if not pid_alive(info.pid):
        log.info("stale local network runtime file: pid %d is gone", info.pid)
        return None
    key = (info.pid, info.url)
    with _state_lock:
        trusted = time.monotonic() - _verified.get(key, -_TRUSTED_FOR_S) < _TRUSTED_FOR_S
    if trusted:
        return info
    status = _status(info)
    if status is None or status.get("pid") != info.pid:
        log.info("stale local network runtime file: no service of pid %d at %s",
                 info.pid, info.url)
        return None
    with _state_lock:
        _verified[key] = time.monotonic()
    return info


def _status(info: ServiceInfo, *, timeout: float = 5.0) -> dict[str, Any] | None:
    """The service's ``/_devnode/status``, or ``None`` when it does not answer as one."""
    try:
        reply = httpx.get(f"{info.url}/_devnode/status", headers={TOKEN_HEADER: info.token},
                          timeout=timeout, trust_env=False)
        body = reply.json() if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def service_status(settings: Settings) -> tuple[ServiceInfo, dict[str, Any]] | None:
    """The running service and what it says of itself (jobs, idleness, loop lag), or
    ``None`` when none runs."""
    info = service_info(settings)
    if info is None:
        return None
    status = _status(info)
    return (info, status) if status is not None else None


def ensure_service(settings: Settings) -> tuple[ServiceInfo, bool]:
    """The user's local network service, started now if none runs; ``True`` when started.

    Under the data dir's start lock, so that of several processes starting at once one
    starts it and the others use it. :class:`NetworkError` (one line, naming the service's
    log) when it cannot be started.
    """
    from ..devnode.runtime import start_lock

    info = service_info(settings)
    if info is not None:
        return info, False
    directory = data_dir(settings)
    try:
        with start_lock(directory, timeout=START_TIMEOUT_S + 5):
            info = service_info(settings)  # another process may have started it meanwhile
            if info is not None:
                return info, False
            return _spawn(directory, settings), True
    except TimeoutError:
        raise NetworkError(
            f"the local Nosana network is being started by another process and was not up "
            f"within {START_TIMEOUT_S + 5:g} s (its lock: {directory})") from None
    except OSError as exc:
        raise NetworkError(f"cannot start the local Nosana network in {directory}: "
                           f"{exc.strerror or exc}") from None


def _spawn(directory: Path, settings: Settings) -> ServiceInfo:
    """Start the service and wait (bounded) until it says it is ready."""
    from ..devnode.runtime import LOG_FILE, read_runtime
    from ..settings import service_environment

    env = service_environment()
    # The service runs this very package, whatever put it on this process's path.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    log_path = directory / LOG_FILE
    command = [sys.executable, "-m", "nosana_magic.devnode.service", "--data-dir",
               str(directory), "--idle-timeout", str(settings.local_idle),
               "--hosts-per-market", str(LOCAL_HOSTS_PER_MARKET)]
    try:
        launcher = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=env, cwd=directory,
            start_new_session=True)  # no Ctrl-C or kernel signal of ours reaches it
    except OSError as exc:
        raise NetworkError(f"could not start the local Nosana network: {exc}") from None
    try:
        out, _ = launcher.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        launcher.kill()
        launcher.wait()
        raise NetworkError(f"the local Nosana network did not start within "
                           f"{START_TIMEOUT_S:g} s (see {log_path})") from None
    said = (out or "").strip().splitlines()
    last = said[-1] if said else f"no answer (exit {launcher.returncode})"
    info = read_runtime(directory)
    if launcher.returncode != 0 or not last.startswith("ready ") or info is None:
        reason = last.removeprefix("error: ")
        raise NetworkError(f"could not start the local Nosana network: {reason} "
                           f"(see {log_path})")
    with _state_lock:
        _verified[(info.pid, info.url)] = time.monotonic()
    return info


def stop_local_service(settings: Settings, *, timeout: float = STOP_TIMEOUT_S
                       ) -> ServiceInfo | None:
    """Stop the user's local network service (its jobs' processes are killed); the service
    that was stopped, or ``None`` when none ran. :class:`NetworkError` if it outlives
    ``timeout``."""
    from ..devnode.runtime import pid_alive, read_runtime

    info = read_runtime(data_dir(settings))
    if info is None or not pid_alive(info.pid):
        return None
    try:
        asked = httpx.post(f"{info.url}/_devnode/stop", headers={TOKEN_HEADER: info.token},
                           timeout=5.0, trust_env=False).status_code == 202
    except httpx.HTTPError:
        asked = False
    if not asked:
        if not _is_service(info.pid):
            return None  # the file was stale: its pid is something else now
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)  # it stops the same way on SIGTERM
    deadline = time.monotonic() + timeout
    while pid_alive(info.pid):
        if time.monotonic() >= deadline:
            raise NetworkError(f"the local Nosana network (pid {info.pid}) did not stop within "
                               f"{timeout:g} s")
        time.sleep(0.05)
    with _state_lock:
        _verified.pop((info.pid, info.url), None)
    return info


def _is_service(pid: int) -> bool:
    """Whether ``pid`` runs the local network service (Linux: its command line)."""
    try:
        return b"nosana_magic.devnode.service" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def announce_service(info: ServiceInfo, started: bool, on_notice: Callable[[str], None]) -> None:
    """One line when this process starts the service, or first uses one already running."""
    with _state_lock:
        first = info.pid not in _announced_pids
        _announced_pids.add(info.pid)
    if started:
        idle = (f"stops after {format_duration(info.idle_timeout)} idle or on "
                "%nosana local stop" if info.idle_timeout else "stops on %nosana local stop")
        on_notice(f"Started the local Nosana network at {info.url} (pid {info.pid}, shared by "
                  f"your kernels; {idle}; jobs run as local processes on this machine)")
    elif first:
        from ..devnode.runtime import package_version

        up = format_duration(max(0.0, time.time() - info.started))
        mine = package_version()
        other = (f"; it runs nosana_magic {info.version}, this is {mine}: "
                 "%nosana local stop, and the next job starts this one's"
                 if info.version and mine and info.version != mine else "")
        on_notice(f"Using the local Nosana network at {info.url} (pid {info.pid}, up {up}"
                  f"{other})")


def local_network(
    settings: Settings, *, on_notice: Callable[[str], None] | None = None
) -> LocalNetwork:
    """A :class:`LocalNetwork` on the local network.

    Uses ``settings.devnode_url`` when set (a devnode started by hand); otherwise the user's
    local network service, started now if none runs, once ``settings.market`` is known to be
    one it can run (:class:`UnknownMarketError` otherwise, and nothing is started).
    ``on_notice`` gets one line when this call starts the service or first uses it in this
    process (it may be called from any thread: the caller decides where to print it).

    Paid with credits (``settings.pays_with``), it lists with the API key and its hosts'
    headers come from the devnode's signing service. A devnode started by hand knows only the
    key it printed; the service pays with its own key (from its runtime file) when none is
    set, and gives a key it does not know yet its starting credits (local credits: nothing
    leaves this machine).
    """
    wallet = local_wallet(settings)
    credits = settings.pays_with == "credits"
    if settings.devnode_url:
        base = settings.devnode_url.rstrip("/")
        template = settings.node_url_template or f"{base}/node/{{node}}"
        return LocalNetwork(base, wallet, node_url_template=template, name="local",
                            on_notice=on_notice,
                            api_key=require_api_key(settings) if credits else None,
                            signing_url=settings.signing_url or f"{base}{CLIENT_MANAGER_PATH}")
    _check_service_market(settings.market, settings)
    info, started = ensure_service(settings)
    if on_notice is not None:
        announce_service(info, started, on_notice)
    api_key = _service_api_key(info, settings) if credits else None
    return LocalNetwork(
        info.url,
        wallet,
        node_url_template=settings.node_url_template or info.node_url_template,
        name="local",
        on_notice=on_notice,
        token=info.token,
        api_key=api_key,
        signing_url=settings.signing_url or f"{info.url}{CLIENT_MANAGER_PATH}",
    )


def _service_api_key(info: ServiceInfo, settings: Settings) -> str:
    """The API key to pay with on the service: the user's own (the service is told to serve
    it, with its starting credits, once per service and process), else the service's."""
    key = settings.read_api_key()
    if not key:
        if not info.api_key:
            raise NetworkError(
                f"the local Nosana network at {info.url} (pid {info.pid}) issues no API key "
                "(it was started by an older nosana_magic): %nosana local stop, and the next "
                "job starts a new one")
        return info.api_key
    digest = hashlib.sha256(key.encode()).hexdigest()
    with _state_lock:
        if (info.pid, digest) in _admitted:
            return key
    try:
        reply = httpx.post(f"{info.url}/_devnode/credits", json={"api_key": key},
                           headers={TOKEN_HEADER: info.token}, timeout=10.0, trust_env=False)
    except httpx.HTTPError as exc:
        raise NetworkError(f"the local Nosana network at {info.url} did not take the API key: "
                           f"{type(exc).__name__}") from None
    if reply.status_code != 200:
        said = reply.text.replace(key, "[API key]")[:200]
        raise NetworkError(f"the local Nosana network at {info.url} refused the API key "
                           f"(HTTP {reply.status_code}: {said})")
    with _state_lock:
        _admitted.add((info.pid, digest))
    return key


def describe_service(settings: Settings) -> list[tuple[str, str]]:
    """``(what, value)`` rows saying whether the user's local network service runs, and if so
    where, since when, with how many jobs, how idle, and how late its loop wakes."""
    from ..devnode.runtime import LOG_FILE, RUNTIME_FILE

    directory = data_dir(settings)
    rows: list[tuple[str, str]] = []
    if settings.devnode_url:
        rows.append(("note", f"jobs go to the devnode at {settings.devnode_url} "
                             f"({settings.source('devnode_url')}), not to this service"))
    found = service_status(settings)
    if found is None:
        return [("state", "not running (the first local job starts it)"), *rows,
                ("runtime file", str(directory / RUNTIME_FILE))]
    info, status = found
    jobs = status.get("jobs", {})
    lag = status.get("loop_lag", {})
    idle = float(status.get("idle_s", 0))
    stops = (f"stops after {format_duration(info.idle_timeout)} idle" if info.idle_timeout
             else "no idle stop")
    rows = [("state", "running"), *rows,
            ("url", info.url),
            ("pid", str(info.pid)),
            ("up", format_duration(max(0.0, time.time() - info.started))),
            ("jobs", f"{jobs.get('active', 0)} queued or running, {jobs.get('listed', 0)} "
                     "listed since it started"),
            ("idle", f"{format_duration(idle)} ({stops})"),
            ("loop lag, last minute", f"p99 {lag.get('p99_ms')} ms, max {lag.get('max_ms')} ms"),
            ("runtime file", str(directory / RUNTIME_FILE)),
            ("log", str(directory / LOG_FILE))]
    return rows
