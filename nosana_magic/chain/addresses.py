"""Derived addresses (PDAs and associated token accounts) the client instructions need."""

from __future__ import annotations

from solders.pubkey import Pubkey

from .program import (
    ASSOCIATED_TOKEN_PROGRAM,
    JOBS_PROGRAM_MAINNET,
    NOS_MINT_MAINNET,
    REWARDS_PROGRAM,
    TOKEN_PROGRAM,
)

PubkeyLike = Pubkey | str


def as_pubkey(value: PubkeyLike, what: str = "address") -> Pubkey:
    """A ``Pubkey`` from a ``Pubkey`` or its base58 text, with a readable error."""
    if isinstance(value, Pubkey):
        return value
    if isinstance(value, str):
        try:
            return Pubkey.from_string(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{what} is not a Solana address: {str(value)[:60]!r}")


def market_vault(
    market: PubkeyLike,
    mint: PubkeyLike = NOS_MINT_MAINNET,
    program_id: PubkeyLike = JOBS_PROGRAM_MAINNET,
) -> Pubkey:
    """The market's NOS escrow: PDA([market, mint]) under the jobs program."""
    seeds = [bytes(as_pubkey(market, "market")), bytes(as_pubkey(mint, "mint"))]
    return Pubkey.find_program_address(seeds, as_pubkey(program_id, "program_id"))[0]


def nos_ata(owner: PubkeyLike, mint: PubkeyLike = NOS_MINT_MAINNET) -> Pubkey:
    """``owner``'s associated token account for ``mint`` (classic Tokenkeg program)."""
    seeds = [bytes(as_pubkey(owner, "owner")), bytes(TOKEN_PROGRAM), bytes(as_pubkey(mint, "mint"))]
    return Pubkey.find_program_address(seeds, ASSOCIATED_TOKEN_PROGRAM)[0]


def rewards_reflection(rewards_program: PubkeyLike = REWARDS_PROGRAM) -> Pubkey:
    """The rewards program's reflection account: PDA(["reflection"])."""
    program = as_pubkey(rewards_program, "rewards_program")
    return Pubkey.find_program_address([b"reflection"], program)[0]


def rewards_vault(
    mint: PubkeyLike = NOS_MINT_MAINNET, rewards_program: PubkeyLike = REWARDS_PROGRAM
) -> Pubkey:
    """The rewards program's fee vault: PDA([mint])."""
    program = as_pubkey(rewards_program, "rewards_program")
    return Pubkey.find_program_address([bytes(as_pubkey(mint, "mint"))], program)[0]
