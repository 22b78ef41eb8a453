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
    gets one line saying so) or the devnode at ``settings.devnode_url``. ``devnet`` and
    ``mainnet`` are the Solana jobs program.
    """
    if settings.network == "local":
        from .local import local_network

        return local_network(settings, on_notice=on_notice)
    from .solana import SolanaNetwork

    network: Network = SolanaNetwork.from_settings(settings)
    return network
