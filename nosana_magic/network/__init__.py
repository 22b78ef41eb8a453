"""Networks that list jobs: the local network's ledger, and the Solana jobs program."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import JobInfo, JobState, Listing, Market, Network, NetworkError

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "JobInfo",
    "JobState",
    "Listing",
    "Market",
    "Network",
    "NetworkError",
    "open_network",
]


def open_network(
    settings: Settings, *, on_notice: Callable[[str], None] | None = None
) -> Network:
    """The network ``settings`` name, ready to use (close it with ``await network.aclose()``).

    ``local`` is the user's local network service (started on first use; ``on_notice`` then
    gets one line saying so) or the devnode at ``settings.devnode_url``. ``devnet``/``mainnet``
    are the Solana jobs program paid by the wallet, or Nosana's API paid with an API key's
    credits (``settings.pays_with``; docs/protocol.md §24).
    """
    if settings.network == "local":
        from .local import local_network

        return local_network(settings, on_notice=on_notice)
    if settings.pays_with == "credits":
        from .api import credits_network

        return credits_network(settings)
    from .solana import SolanaNetwork

    network: Network = SolanaNetwork.from_settings(settings)
    return network
