"""Instruction builders and decoders for the client side of the Nosana jobs program.

Each builder returns a ``solders`` ``Instruction`` whose account metas are exactly those of
``@nosana/jobs-program`` (order, signer and writable flags; a key passed twice stays two metas).
Data is the Anchor discriminator ``sha256("global:<name>")[:8]`` followed by the Borsh args.

The builder named ``list`` shadows the builtin inside this module on purpose: the names are
the program's.  Use ``builtins.list`` here when the type is meant.
"""

from __future__ import annotations

import builtins
import hashlib
import struct
from typing import NamedTuple

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

from ..errors import NosanaError
from ..protocol import cid_to_digest
from .addresses import PubkeyLike, as_pubkey
from .program import JOBS_PROGRAM_MAINNET, REWARDS_PROGRAM, SYSTEM_PROGRAM, TOKEN_PROGRAM

__all__ = [
    "INSTRUCTION_ACCOUNTS",
    "INSTRUCTION_DISCRIMINATORS",
    "DecodedInstruction",
    "InstructionArgError",
    "InstructionDecodeError",
    "account_map",
    "assign",
    "decode_instruction",
    "delist",
    "end",
    "extend",
    "instruction_discriminator",
    "list",
    "recover",
]

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


class InstructionArgError(NosanaError, ValueError):
    """An argument that cannot be encoded into a jobs program instruction."""


class InstructionDecodeError(NosanaError, ValueError):
    """Instruction data that is not one of the client instructions this module knows."""


def instruction_discriminator(name: str) -> bytes:
    """Anchor's instruction discriminator: the first 8 bytes of ``sha256("global:<name>")``."""
    return hashlib.sha256(f"global:{name}".encode()).digest()[:8]


# (name, signer, writable) per account, in the program's order.
_W, _S, _WS, _R = (False, True), (True, False), (True, True), (False, False)
_LAYOUTS: dict[str, tuple[tuple[str, tuple[bool, bool]], ...]] = {
    "list": (
        ("job", _WS), ("market", _W), ("run", _WS), ("user", _W), ("vault", _W),
        ("payer", _WS), ("rewards_reflection", _W), ("rewards_vault", _W), ("authority", _S),
        ("rewards_program", _R), ("token_program", _R), ("system_program", _R),
    ),
    "assign": (
        ("job", _WS), ("market", _W), ("run", _WS), ("node", _R), ("user", _W), ("vault", _W),
        ("payer", _WS), ("rewards_reflection", _W), ("rewards_vault", _W), ("authority", _S),
        ("rewards_program", _R), ("token_program", _R), ("system_program", _R),
    ),
    "end": (
        ("job", _W), ("market", _R), ("run", _W), ("deposit", _W), ("user", _W), ("vault", _W),
        ("payer", _W), ("authority", _WS), ("token_program", _R),
    ),
    "extend": (
        ("job", _W), ("market", _R), ("user", _W), ("vault", _W), ("rewards_reflection", _W),
        ("rewards_vault", _W), ("authority", _S), ("payer", _S), ("rewards_program", _R),
        ("token_program", _R),
    ),
    "delist": (
        ("job", _W), ("market", _W), ("deposit", _W), ("payer", _W), ("vault", _W),
        ("token_program", _R), ("authority", _WS),
    ),
    "recover": (
        ("job", _W), ("market", _R), ("vault", _W), ("user", _W), ("payer", _W),
        ("authority", _S), ("token_program", _R),
    ),
}

#: Account names (snake_case) of each instruction, in meta order; lets an emulator name metas.
INSTRUCTION_ACCOUNTS: dict[str, tuple[str, ...]] = {
    ix: tuple(name for name, _ in layout) for ix, layout in _LAYOUTS.items()
}
#: Discriminator of each client instruction.
INSTRUCTION_DISCRIMINATORS: dict[str, bytes] = {
    ix: instruction_discriminator(ix) for ix in _LAYOUTS
}
_BY_DISCRIMINATOR = {disc: ix for ix, disc in INSTRUCTION_DISCRIMINATORS.items()}


def _build(ix: str, program_id: PubkeyLike, args: bytes, **accounts: PubkeyLike) -> Instruction:
    metas = [
        AccountMeta(as_pubkey(accounts[name], name), is_signer=signer, is_writable=writable)
        for name, (signer, writable) in _LAYOUTS[ix]
    ]
    data = INSTRUCTION_DISCRIMINATORS[ix] + args
    return Instruction(as_pubkey(program_id, "program_id"), data, metas)


def _digest(ipfs_job: bytes | str) -> bytes:
    """The 32-byte digest from raw bytes or a CIDv0 string (``Qm…``)."""
    if isinstance(ipfs_job, str):
        return cid_to_digest(ipfs_job)  # CidError is a ValueError with a clear message
    if isinstance(ipfs_job, (bytes, bytearray, memoryview)):
        raw = bytes(ipfs_job)
        if len(raw) == 32:
            return raw
        raise InstructionArgError(f"ipfs_job must be a 32-byte digest, got {len(raw)} bytes")
    raise InstructionArgError(
        f"ipfs_job must be a 32-byte digest or a CIDv0 string, not {type(ipfs_job).__name__}"
    )


def _i64(value: int, what: str) -> bytes:
    # bool is an int subclass; a True timeout is always a bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InstructionArgError(f"{what} must be an integer, not {type(value).__name__}")
    if not I64_MIN <= value <= I64_MAX:
        raise InstructionArgError(f"{what} {value} does not fit in an i64")
    return struct.pack("<q", value)


def list(  # the program's instruction name is the public contract
    *,
    job: PubkeyLike,
    market: PubkeyLike,
    run: PubkeyLike,
    user: PubkeyLike,
    vault: PubkeyLike,
    payer: PubkeyLike,
    rewards_reflection: PubkeyLike,
    rewards_vault: PubkeyLike,
    authority: PubkeyLike,
    ipfs_job: bytes | str,
    timeout: int,
    rewards_program: PubkeyLike = REWARDS_PROGRAM,
    token_program: PubkeyLike = TOKEN_PROGRAM,
    system_program: PubkeyLike = SYSTEM_PROGRAM,
    program_id: PubkeyLike = JOBS_PROGRAM_MAINNET,
) -> Instruction:
    """Post a job to ``market``; ``timeout`` is in seconds. Signers: job, run, payer, authority."""
    return _build(
        "list", program_id, _digest(ipfs_job) + _i64(timeout, "timeout"),
        job=job, market=market, run=run, user=user, vault=vault, payer=payer,
        rewards_reflection=rewards_reflection, rewards_vault=rewards_vault,
        authority=authority, rewards_program=rewards_program, token_program=token_program,
        system_program=system_program,
    )


def assign(
    *,
    job: PubkeyLike,
    market: PubkeyLike,
    run: PubkeyLike,
    node: PubkeyLike,
    user: PubkeyLike,
    vault: PubkeyLike,
    payer: PubkeyLike,
    rewards_reflection: PubkeyLike,
    rewards_vault: PubkeyLike,
    authority: PubkeyLike,
    ipfs_job: bytes | str,
    timeout: int,
    rewards_program: PubkeyLike = REWARDS_PROGRAM,
    token_program: PubkeyLike = TOKEN_PROGRAM,
    system_program: PubkeyLike = SYSTEM_PROGRAM,
    program_id: PubkeyLike = JOBS_PROGRAM_MAINNET,
) -> Instruction:
    """Post a job straight to ``node``, which must be waiting in the market's node queue."""
    return _build(
        "assign", program_id, _digest(ipfs_job) + _i64(timeout, "timeout"),
        job=job, market=market, run=run, node=node, user=user, vault=vault, payer=payer,
        rewards_reflection=rewards_reflection, rewards_vault=rewards_vault,
        authority=authority, rewards_program=rewards_program, token_program=token_program,
        system_program=system_program,
    )


def end(
    *,
    job: PubkeyLike,
    market: PubkeyLike,
    run: PubkeyLike,
    deposit: PubkeyLike,
    user: PubkeyLike,
    vault: PubkeyLike,
    payer: PubkeyLike,
    authority: PubkeyLike,
    token_program: PubkeyLike = TOKEN_PROGRAM,
    program_id: PubkeyLike = JOBS_PROGRAM_MAINNET,
) -> Instruction:
    """Stop a running job: ``deposit`` = ATA(job.payer), ``user`` = ATA(run.node), ``payer`` =
    run.payer, ``authority`` = job.project."""
    return _build(
        "end", program_id, b"",
        job=job, market=market, run=run, deposit=deposit, user=user, vault=vault,
        payer=payer, authority=authority, token_program=token_program,
    )


def extend(
    *,
    job: PubkeyLike,
    market: PubkeyLike,
    user: PubkeyLike,
    vault: PubkeyLike,
    rewards_reflection: PubkeyLike,
    rewards_vault: PubkeyLike,
    authority: PubkeyLike,
    payer: PubkeyLike,
    timeout: int,
    rewards_program: PubkeyLike = REWARDS_PROGRAM,
    token_program: PubkeyLike = TOKEN_PROGRAM,
    program_id: PubkeyLike = JOBS_PROGRAM_MAINNET,
) -> Instruction:
    """Raise a job's timeout to ``timeout`` seconds: the new total, not the extra seconds."""
    return _build(
        "extend", program_id, _i64(timeout, "timeout"),
        job=job, market=market, user=user, vault=vault, rewards_reflection=rewards_reflection,
        rewards_vault=rewards_vault, authority=authority, payer=payer,
        rewards_program=rewards_program, token_program=token_program,
    )


def delist(
    *,
    job: PubkeyLike,
    market: PubkeyLike,
    deposit: PubkeyLike,
    payer: PubkeyLike,
    vault: PubkeyLike,
    authority: PubkeyLike,
    token_program: PubkeyLike = TOKEN_PROGRAM,
    program_id: PubkeyLike = JOBS_PROGRAM_MAINNET,
) -> Instruction:
    """Cancel a job still waiting in the market queue; refunds the deposit, closes the job."""
    return _build(
        "delist", program_id, b"",
        job=job, market=market, deposit=deposit, payer=payer, vault=vault,
        token_program=token_program, authority=authority,
    )


def recover(
    *,
    job: PubkeyLike,
    market: PubkeyLike,
    vault: PubkeyLike,
    user: PubkeyLike,
    payer: PubkeyLike,
    authority: PubkeyLike,
    token_program: PubkeyLike = TOKEN_PROGRAM,
    program_id: PubkeyLike = JOBS_PROGRAM_MAINNET,
) -> Instruction:
    """Get the deposit of a job its node quit (state STOPPED) back; closes the job."""
    return _build(
        "recover", program_id, b"",
        job=job, market=market, vault=vault, user=user, payer=payer, authority=authority,
        token_program=token_program,
    )


# --------------------------------------------------------------------------- decoding


class DecodedInstruction(NamedTuple):
    """``(name, args)``: args holds ``ipfs_job`` (32 bytes) and/or ``timeout`` (int)."""

    name: str
    args: dict[str, int | bytes]


_ARG_BYTES = {"list": 40, "assign": 40, "extend": 8}


def decode_instruction(ix_data: bytes) -> DecodedInstruction:
    """Name and args of a client instruction's data (what the program would deserialize).

    Trailing bytes after the args are ignored, as Anchor's deserializer does.
    """
    data = bytes(ix_data)
    name = _BY_DISCRIMINATOR.get(data[:8])
    if name is None:
        raise InstructionDecodeError(
            f"not a Nosana jobs client instruction (discriminator {data[:8].hex() or 'missing'})"
        )
    body = data[8:]
    need = _ARG_BYTES.get(name, 0)
    if len(body) < need:
        raise InstructionDecodeError(
            f"{name} instruction data too short: {need} argument bytes expected, got {len(body)}"
        )
    args: dict[str, int | bytes] = {}
    if name in ("list", "assign"):
        args["ipfs_job"] = body[:32]
        args["timeout"] = struct.unpack_from("<q", body, 32)[0]
    elif name == "extend":
        args["timeout"] = struct.unpack_from("<q", body, 0)[0]
    return DecodedInstruction(name, args)


def account_map(name: str, keys: builtins.list[Pubkey]) -> dict[str, Pubkey]:
    """Name the ordered account keys of instruction ``name`` (for emulators and logs).

    Extra keys (Anchor's "remaining accounts") are ignored.
    """
    names = INSTRUCTION_ACCOUNTS[name]
    if len(keys) < len(names):
        raise InstructionDecodeError(
            f"{name} needs {len(names)} accounts, the instruction has {len(keys)}"
        )
    return dict(zip(names, keys[: len(names)], strict=True))
