"""Networks that list jobs: the embedded local ledger, and the Solana jobs program."""

from .base import JobInfo, JobState, Listing, Market, Network, NetworkError

__all__ = ["JobInfo", "JobState", "Listing", "Market", "Network", "NetworkError"]
