"""The embedded local Nosana network: a ledger, IPFS and emulated hosts on 127.0.0.1.

>>> from nosana_magic.devnode import DevNode
>>> with DevNode(results_window=5) as net:          # doctest: +SKIP
...     print(net.url, net.node_url_template)

The emulated hosts run each job's commands **as local processes on this machine** (the
image is recorded, not pulled). See ``docs/devnode.md``.

The names below are imported on first use: a client that only reads the local network
service's runtime file (:mod:`.runtime`) does not load the server (uvicorn, starlette).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import DevNode
    from .config import DevNodeConfig, MarketConfig
    from .faults import Faults
    from .host import EmulatedHost
    from .ipfs import IpfsStore
    from .ledger import Ledger, LedgerJob, Market

__all__ = [
    "DevNode",
    "DevNodeConfig",
    "EmulatedHost",
    "Faults",
    "IpfsStore",
    "Ledger",
    "LedgerJob",
    "Market",
    "MarketConfig",
]

#: Where each public name lives.
_HOMES = {
    "DevNode": "app",
    "DevNodeConfig": "config",
    "MarketConfig": "config",
    "Faults": "faults",
    "EmulatedHost": "host",
    "IpfsStore": "ipfs",
    "Ledger": "ledger",
    "LedgerJob": "ledger",
    "Market": "ledger",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
