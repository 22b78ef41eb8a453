"""Program ids, mints and the two clusters the jobs program runs on."""

from __future__ import annotations

from dataclasses import dataclass

from solders.pubkey import Pubkey

JOBS_PROGRAM_MAINNET = Pubkey.from_string("nosJhNRqr2bc9g1nfGDcXXTXvYUmxD4cVwy2pMWhrYM")
JOBS_PROGRAM_DEVNET = Pubkey.from_string("nosJTmGQxvwXy23vng5UjkTbfv91Bzf9jEuro78dAGR")
NOS_MINT_MAINNET = Pubkey.from_string("nosXBVoaCTtYdLvKY6Csb4AC8JCdQKKAaWYtx2ZMoo7")
NOS_MINT_DEVNET = Pubkey.from_string("devr1BGQndEW5k5zfvG5FsLyZv1Ap73vNgAHcQ9sUVP")
# The rewards program (network fee CPI) has the same id on both clusters.
REWARDS_PROGRAM = Pubkey.from_string("nosRB8DUV67oLNrL45bo2pFLrmsWPiewe2Lk2DRNYCp")

TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ASSOCIATED_TOKEN_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")

NOS_DECIMALS = 6


@dataclass(frozen=True)
class Cluster:
    """The addresses that differ between mainnet and devnet."""

    name: str
    jobs_program: Pubkey
    nos_mint: Pubkey
    rewards_program: Pubkey = REWARDS_PROGRAM


MAINNET = Cluster("mainnet", JOBS_PROGRAM_MAINNET, NOS_MINT_MAINNET)
DEVNET = Cluster("devnet", JOBS_PROGRAM_DEVNET, NOS_MINT_DEVNET)
CLUSTERS: dict[str, Cluster] = {c.name: c for c in (MAINNET, DEVNET)}


def cluster(name: str) -> Cluster:
    """The cluster called ``name`` ("mainnet" or "devnet", case-insensitive)."""
    try:
        return CLUSTERS[name.strip().lower()]
    except KeyError:
        known = ", ".join(CLUSTERS)
        raise ValueError(f"unknown Solana cluster {name!r} (known: {known})") from None
