"""The local default: the embedded Nosana network on loopback, and its local-only wallet.

With ``network="local"`` and no devnode URL configured, the first job of the process starts
ONE embedded devnode (ledger, IPFS and emulated hosts on an ephemeral 127.0.0.1 port) that
lives until the interpreter exits. Jobs then run as local processes on this machine.

The wallet used on it is kept in the user's data directory (``local-wallet.json``). It signs
requests to the local network only: it holds nothing and is worth nothing, and it is never
used for devnet or mainnet.

Nosana's own market names (``nvidia-3090``, ``nvidia-a100``, …, and their mainnet addresses)
are accepted here and run on the local market of the same kind (a GPU market on
``local-gpu``), so a cell written for mainnet runs locally first with only ``--network``
changed. A market that is neither is refused before the local network is started.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..wallet import Wallet, create_wallet_file
from .api import ApiNetwork
from .base import Market, NetworkError
from .markets import MAINNET_MARKETS, UnknownMarketError, close_slugs

if TYPE_CHECKING:
    from ..devnode import DevNode
    from ..settings import Settings

__all__ = [
    "LOCAL_WALLET_FILE",
    "LocalNetwork",
    "check_local_market",
    "embedded_devnode",
    "local_market_for",
    "local_network",
    "local_wallet",
    "stop_embedded_devnode",
]

#: File name of the local-only wallet inside the data directory.
LOCAL_WALLET_FILE = "local-wallet.json"

#: The embedded network's markets for each kind of Nosana market.
LOCAL_GPU_MARKET = "local-gpu"
LOCAL_CPU_MARKET = "local-cpu"

_lock = threading.Lock()
_devnode: DevNode | None = None
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


def check_local_market(ref: str | None, node: DevNode | None = None) -> None:
    """Refuse, in one line, a market the embedded network cannot run, without starting it.

    Checked against the markets of ``node`` (the running embedded devnode), else against the
    markets an embedded devnode starts with. ``None`` (the first market) always passes.
    """
    if ref is None:
        return
    if node is not None:
        markets = list(node.ledger.markets.values())
        slugs = [m.slug for m in markets]
        addresses = {m.address for m in markets}
    else:
        from ..devnode.config import DevNodeConfig

        slugs = [m.slug for m in DevNodeConfig().markets]
        addresses = set()
    text = ref.strip()
    if text in slugs or text in addresses or local_market_for(text) in slugs:
        return
    raise _unknown_local_market(ref, slugs)


class LocalNetwork(ApiNetwork):
    """The local network: an :class:`ApiNetwork` that also takes Nosana's market names.

    ``on_notice`` gets the line saying which local market a Nosana market runs on (once per
    market name and process).
    """

    def __init__(self, base_url: str, wallet: Wallet, *,
                 on_notice: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, wallet, **kwargs)
        self._on_notice = on_notice

    async def market(self, slug_or_address: str) -> Market:
        """A local market by slug or address, or the one a Nosana market name runs on."""
        markets = await self.markets()
        text = slug_or_address.strip()
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


def embedded_devnode() -> DevNode | None:
    """The devnode this process started, if any."""
    return _devnode


def _start_devnode() -> tuple[DevNode, bool]:
    """The process's embedded devnode, started on first call; ``True`` when started now."""
    global _devnode
    with _lock:
        if _devnode is not None:
            return _devnode, False
        try:
            from ..devnode import DevNode
        except ImportError as exc:  # pragma: no cover - the devnode ships with the package
            raise NetworkError(f"the local network is not available: {exc}") from None
        node = DevNode()
        try:
            node.start()
        except Exception as exc:
            raise NetworkError(
                f"could not start the local Nosana network: {type(exc).__name__}: {exc}"
            ) from None
        _devnode = node
        return node, True


def stop_embedded_devnode() -> None:
    """Stop the embedded devnode (at interpreter exit; tests may call it)."""
    global _devnode
    with _lock:
        node, _devnode = _devnode, None
    if node is not None:
        node.stop()


def _at_exit() -> None:
    # Jobs first (the runner cancels them and each stops its job on the ledger, which needs
    # the devnode still up), then the devnode (which kills whatever still runs).
    from .. import runner

    runner.shutdown()
    stop_embedded_devnode()


atexit.register(_at_exit)


def local_network(
    settings: Settings, *, on_notice: Callable[[str], None] | None = None
) -> LocalNetwork:
    """A :class:`LocalNetwork` on the local network.

    Uses ``settings.devnode_url`` when set (a devnode started by hand); otherwise the
    embedded devnode, started on first use, once ``settings.market`` is known to be one it
    can run (:class:`UnknownMarketError` otherwise, and nothing is started). When this call
    starts it, ``on_notice`` gets the one line that tells the user (it may be called from any
    thread: the caller decides where to print it).
    """
    wallet = local_wallet(settings)
    if settings.devnode_url:
        base = settings.devnode_url.rstrip("/")
        template = settings.node_url_template or f"{base}/node/{{node}}"
        return LocalNetwork(base, wallet, node_url_template=template, name="local",
                            on_notice=on_notice)
    check_local_market(settings.market, embedded_devnode())
    node, started = _start_devnode()
    if started and on_notice is not None:
        on_notice(
            f"Started the local Nosana network at {node.url} "
            "(jobs run as local processes on this machine)"
        )
    return LocalNetwork(
        node.url,
        wallet,
        node_url_template=settings.node_url_template or node.node_url_template,
        name="local",
        on_notice=on_notice,
    )
