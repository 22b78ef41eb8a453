"""The local default: the embedded Nosana network on loopback, and its local-only wallet.

With ``network="local"`` and no devnode URL configured, the first job of the process starts
ONE embedded devnode (ledger, IPFS and emulated hosts on an ephemeral 127.0.0.1 port) that
lives until the interpreter exits. Jobs then run as local processes on this machine.

The wallet used on it is kept in the user's data directory (``local-wallet.json``). It signs
requests to the local network only: it holds nothing and is worth nothing, and it is never
used for devnet or mainnet.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..wallet import Wallet, create_wallet_file
from .api import ApiNetwork
from .base import NetworkError

if TYPE_CHECKING:
    from ..devnode import DevNode
    from ..settings import Settings

__all__ = [
    "LOCAL_WALLET_FILE",
    "embedded_devnode",
    "local_network",
    "local_wallet",
    "stop_embedded_devnode",
]

#: File name of the local-only wallet inside the data directory.
LOCAL_WALLET_FILE = "local-wallet.json"

_lock = threading.Lock()
_devnode: DevNode | None = None


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
) -> ApiNetwork:
    """An :class:`ApiNetwork` on the local network.

    Uses ``settings.devnode_url`` when set (a devnode started by hand); otherwise the
    embedded devnode, started on first use. When this call starts it, ``on_notice`` gets the
    one line that tells the user (it may be called from any thread: the caller decides where
    to print it).
    """
    wallet = local_wallet(settings)
    if settings.devnode_url:
        base = settings.devnode_url.rstrip("/")
        template = settings.node_url_template or f"{base}/node/{{node}}"
        return ApiNetwork(base, wallet, node_url_template=template, name="local")
    node, started = _start_devnode()
    if started and on_notice is not None:
        on_notice(
            f"Started the local Nosana network at {node.url} "
            "(jobs run as local processes on this machine)"
        )
    return ApiNetwork(
        node.url,
        wallet,
        node_url_template=settings.node_url_template or node.node_url_template,
        name="local",
    )
