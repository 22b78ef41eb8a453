"""Borsh codecs of the jobs program's accounts: JobAccount, RunAccount, MarketAccount.

Layouts are hard-coded (an IDL fetch buys nothing for three small structs). Decoders ignore
trailing bytes, because the program allocates more space than Borsh uses (zero padding).
Encoders exist so tests and the devnode can write accounts with the real layouts.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from solders.pubkey import Pubkey

from ..errors import NosanaError
from ..protocol import digest_to_cid

__all__ = [
    "ACCOUNT_DISCRIMINATORS",
    "JOB_ACCOUNT_SIZE",
    "JOB_ACCOUNT_SPACE",
    "JOB_MARKET_OFFSET",
    "JOB_NODE_OFFSET",
    "JOB_PAYER_OFFSET",
    "JOB_PROJECT_OFFSET",
    "JOB_STATE_OFFSET",
    "MARKET_ACCOUNT_BASE_SIZE",
    "MARKET_ACCOUNT_SPACE",
    "MARKET_QUEUE_CAPACITY",
    "RUN_ACCOUNT_SIZE",
    "RUN_ACCOUNT_SPACE",
    "RUN_JOB_OFFSET",
    "RUN_NODE_OFFSET",
    "AccountDecodeError",
    "JobAccount",
    "JobState",
    "JobType",
    "MarketAccount",
    "QueueType",
    "RunAccount",
    "account_discriminator",
    "decode_account",
    "job_state",
]


class AccountDecodeError(NosanaError, ValueError):
    """Bytes that are not the expected jobs program account (wrong discriminator, too short)."""


def account_discriminator(struct_name: str) -> bytes:
    """Anchor's account discriminator: the first 8 bytes of ``sha256("account:<Name>")``."""
    return hashlib.sha256(f"account:{struct_name}".encode()).digest()[:8]


ACCOUNT_DISCRIMINATORS: dict[str, bytes] = {
    name: account_discriminator(name) for name in ("JobAccount", "RunAccount", "MarketAccount")
}

# Sizes: Borsh bytes (with discriminator) and the space the program allocates (8 +
# size_of::<T>() by Rust layout: computed, not observed on chain).
JOB_ACCOUNT_SIZE = 233
JOB_ACCOUNT_SPACE = 240
RUN_ACCOUNT_SIZE = 113
RUN_ACCOUNT_SPACE = 120
MARKET_ACCOUNT_BASE_SIZE = 151  # with an empty queue; each queued key adds 32
MARKET_QUEUE_CAPACITY = 314
MARKET_ACCOUNT_SPACE = MARKET_ACCOUNT_BASE_SIZE + 32 * MARKET_QUEUE_CAPACITY

# memcmp offsets for getProgramAccounts filters (the same ones the official SDKs use).
RUN_JOB_OFFSET = 8
RUN_NODE_OFFSET = 40
JOB_MARKET_OFFSET = 72
JOB_NODE_OFFSET = 104
JOB_PAYER_OFFSET = 136
JOB_PROJECT_OFFSET = 176
JOB_STATE_OFFSET = 208


class JobState(IntEnum):
    """The state clients report. RUNNING is never stored: it is QUEUED plus a RunAccount."""

    QUEUED = 0
    RUNNING = 1
    COMPLETED = 2
    STOPPED = 3


class QueueType(IntEnum):
    """What a market's queue holds: waiting jobs, idle nodes, or nothing."""

    JOB = 0
    NODE = 1
    EMPTY = 255


class JobType(IntEnum):
    DEFAULT = 0
    SMALL = 1
    MEDIUM = 2
    LARGE = 3
    GPU = 4
    UNKNOWN = 255


_JOB = struct.Struct("<8s32s32s32s32s32sQ32sBqqq")
_RUN = struct.Struct("<8s32s32s32sBq")
_MARKET = struct.Struct("<8s32sqQqB32sB32s16sBI")
assert (_JOB.size, _RUN.size, _MARKET.size) == (
    JOB_ACCOUNT_SIZE, RUN_ACCOUNT_SIZE, MARKET_ACCOUNT_BASE_SIZE
)

_RANGES = {
    "u8": (0, 2**8 - 1),
    "u64": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
    "u128": (0, 2**128 - 1),
}


def _validate(obj: object, schema: dict[str, str]) -> None:
    """Check every field against its Borsh type, so whatever exists can be encoded."""
    cls = type(obj).__name__
    for name, kind in schema.items():
        value = getattr(obj, name)
        if kind in _RANGES:
            low, high = _RANGES[kind]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{cls}.{name} must be an int ({kind})")
            if not low <= value <= high:
                raise ValueError(f"{cls}.{name} = {value} does not fit in a {kind}")
        elif kind == "bytes32":
            if not isinstance(value, bytes) or len(value) != 32:
                raise ValueError(f"{cls}.{name} must be 32 bytes")
        elif kind == "pubkey" and not isinstance(value, Pubkey):
            raise ValueError(f"{cls}.{name} must be a solders Pubkey")



def _check_header(data: bytes, name: str, size: int) -> None:
    disc = ACCOUNT_DISCRIMINATORS[name]
    if len(data) < 8:
        raise AccountDecodeError(f"{name} data too short: {len(data)} bytes, no discriminator")
    if data[:8] != disc:
        raise AccountDecodeError(
            f"not a {name}: discriminator {data[:8].hex()}, expected {disc.hex()}"
        )
    if len(data) < size:
        raise AccountDecodeError(f"{name} data too short: {size} bytes needed, got {len(data)}")


def _pad(raw: bytes, pad_to: int | None, name: str) -> bytes:
    if pad_to is None:
        return raw
    if pad_to < len(raw):
        raise ValueError(f"{name} needs {len(raw)} bytes, cannot pad to {pad_to}")
    return raw + bytes(pad_to - len(raw))


_ZERO32 = bytes(32)
_K, _B, _U8, _U64, _I64 = "pubkey", "bytes32", "u8", "u64", "i64"
_JOB_SCHEMA = {
    "ipfs_job": _B, "ipfs_result": _B, "market": _K, "node": _K, "payer": _K, "price": _U64,
    "project": _K, "state": _U8, "time_end": _I64, "time_start": _I64, "timeout": _I64,
}
_RUN_SCHEMA = {"job": _K, "node": _K, "payer": _K, "state": _U8, "time": _I64}
_MARKET_SCHEMA = {
    "authority": _K, "job_expiration": _I64, "job_price": _U64, "job_timeout": _I64,
    "job_type": _U8, "vault": _K, "vault_bump": _U8, "node_access_key": _K,
    "node_xnos_minimum": "u128", "queue_type": _U8,
}


@dataclass(frozen=True)
class JobAccount:
    """A job as stored on chain. ``state`` is the raw u8 (see :func:`job_state`)."""

    ipfs_job: bytes
    ipfs_result: bytes
    market: Pubkey
    node: Pubkey
    payer: Pubkey
    price: int
    project: Pubkey
    state: int
    time_end: int
    time_start: int
    timeout: int

    def __post_init__(self) -> None:
        _validate(self, _JOB_SCHEMA)

    @classmethod
    def from_bytes(cls, data: bytes) -> JobAccount:
        data = bytes(data)
        _check_header(data, "JobAccount", JOB_ACCOUNT_SIZE)
        (_, ipfs_job, ipfs_result, market, node, payer, price, project, state,
         time_end, time_start, timeout) = _JOB.unpack_from(data)
        return cls(
            ipfs_job=ipfs_job, ipfs_result=ipfs_result, market=Pubkey(market),
            node=Pubkey(node), payer=Pubkey(payer), price=price, project=Pubkey(project),
            state=state, time_end=time_end, time_start=time_start, timeout=timeout,
        )

    def to_bytes(self, pad_to: int | None = None) -> bytes:
        raw = _JOB.pack(
            ACCOUNT_DISCRIMINATORS["JobAccount"], self.ipfs_job, self.ipfs_result,
            bytes(self.market), bytes(self.node), bytes(self.payer), self.price,
            bytes(self.project), self.state, self.time_end, self.time_start, self.timeout,
        )
        return _pad(raw, pad_to, "JobAccount")

    @property
    def ipfs_job_cid(self) -> str:
        """The job definition's CIDv0."""
        return digest_to_cid(self.ipfs_job)

    @property
    def ipfs_result_cid(self) -> str | None:
        """The result's CIDv0, or None while no result was posted (all-zero field)."""
        return None if self.ipfs_result == _ZERO32 else digest_to_cid(self.ipfs_result)


@dataclass(frozen=True)
class RunAccount:
    """A node working on a job; exists from pick-up until finish/end/quit closes it."""

    job: Pubkey
    node: Pubkey
    payer: Pubkey
    state: int
    time: int

    def __post_init__(self) -> None:
        _validate(self, _RUN_SCHEMA)

    @classmethod
    def from_bytes(cls, data: bytes) -> RunAccount:
        data = bytes(data)
        _check_header(data, "RunAccount", RUN_ACCOUNT_SIZE)
        _, job, node, payer, state, time = _RUN.unpack_from(data)
        return cls(job=Pubkey(job), node=Pubkey(node), payer=Pubkey(payer), state=state,
                   time=time)

    def to_bytes(self, pad_to: int | None = None) -> bytes:
        raw = _RUN.pack(ACCOUNT_DISCRIMINATORS["RunAccount"], bytes(self.job), bytes(self.node),
                        bytes(self.payer), self.state, self.time)
        return _pad(raw, pad_to, "RunAccount")


@dataclass(frozen=True)
class MarketAccount:
    """A market: price per second, max timeout, and a queue of waiting jobs or idle nodes."""

    authority: Pubkey
    job_expiration: int
    job_price: int
    job_timeout: int
    job_type: int
    vault: Pubkey
    vault_bump: int
    node_access_key: Pubkey
    node_xnos_minimum: int
    queue_type: int
    queue: list[Pubkey] = field(default_factory=list)

    def __post_init__(self) -> None:
        _validate(self, _MARKET_SCHEMA)
        # Frozen but holding a list: keep a private copy so the caller's list cannot alias it.
        object.__setattr__(self, "queue", list(self.queue))
        if not all(isinstance(key, Pubkey) for key in self.queue):
            raise ValueError("MarketAccount.queue must hold solders Pubkeys")

    @classmethod
    def from_bytes(cls, data: bytes) -> MarketAccount:
        data = bytes(data)
        _check_header(data, "MarketAccount", MARKET_ACCOUNT_BASE_SIZE)
        (_, authority, job_expiration, job_price, job_timeout, job_type, vault, vault_bump,
         node_access_key, xnos, queue_type, count) = _MARKET.unpack_from(data)
        end = MARKET_ACCOUNT_BASE_SIZE + 32 * count
        if len(data) < end:
            raise AccountDecodeError(
                f"MarketAccount data too short: queue of {count} needs {end} bytes, "
                f"got {len(data)}"
            )
        queue = [Pubkey(data[i:i + 32]) for i in range(MARKET_ACCOUNT_BASE_SIZE, end, 32)]
        return cls(
            authority=Pubkey(authority), job_expiration=job_expiration, job_price=job_price,
            job_timeout=job_timeout, job_type=job_type, vault=Pubkey(vault),
            vault_bump=vault_bump, node_access_key=Pubkey(node_access_key),
            node_xnos_minimum=int.from_bytes(xnos, "little"), queue_type=queue_type, queue=queue,
        )

    def to_bytes(self, pad_to: int | None = None) -> bytes:
        head = _MARKET.pack(
            ACCOUNT_DISCRIMINATORS["MarketAccount"], bytes(self.authority), self.job_expiration,
            self.job_price, self.job_timeout, self.job_type, bytes(self.vault), self.vault_bump,
            bytes(self.node_access_key), self.node_xnos_minimum.to_bytes(16, "little"),
            self.queue_type, len(self.queue),
        )
        return _pad(head + b"".join(bytes(k) for k in self.queue), pad_to, "MarketAccount")

    @property
    def idle_nodes(self) -> int:
        """How many nodes wait in the queue: a job posted now starts at once when > 0."""
        return len(self.queue) if self.queue_type == QueueType.NODE else 0


def decode_account(data: bytes) -> JobAccount | RunAccount | MarketAccount:
    """Decode any jobs program account by its discriminator."""
    head = bytes(data[:8])
    if head == ACCOUNT_DISCRIMINATORS["JobAccount"]:
        return JobAccount.from_bytes(data)
    if head == ACCOUNT_DISCRIMINATORS["RunAccount"]:
        return RunAccount.from_bytes(data)
    if head == ACCOUNT_DISCRIMINATORS["MarketAccount"]:
        return MarketAccount.from_bytes(data)
    raise AccountDecodeError(f"not a Nosana jobs account: discriminator {head.hex() or 'missing'}")


def job_state(job: JobAccount, run: RunAccount | None) -> JobState:
    """The state the official SDKs report: a queued job with a RunAccount is RUNNING."""
    if job.state == JobState.QUEUED:
        return JobState.RUNNING if run is not None else JobState.QUEUED
    try:
        return JobState(job.state)
    except ValueError:
        raise AccountDecodeError(f"JobAccount has an unknown state {job.state}") from None
