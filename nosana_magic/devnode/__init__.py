"""The embedded local Nosana network: a ledger, IPFS and emulated hosts on 127.0.0.1.

>>> from nosana_magic.devnode import DevNode
>>> with DevNode(results_window=5) as net:          # doctest: +SKIP
...     print(net.url, net.node_url_template)

The emulated hosts run each job's commands **as local processes on this machine** (the
image is recorded, not pulled). See ``docs/devnode.md``.
"""

from __future__ import annotations

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
