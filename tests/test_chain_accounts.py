"""Jobs program account codecs against the official vectors."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.pubkey import Pubkey

from nosana_magic import chain
from nosana_magic.chain import (
    AccountDecodeError,
    JobAccount,
    JobState,
    MarketAccount,
    RunAccount,
    job_state,
)
from nosana_magic.errors import NosanaError

from .vectors import load

VECTORS = load("accounts")
ZERO_CID = "QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51"


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def plain(value: Any) -> Any:
    """A decoded value in the vectors' JSON shape (base58, hex, plain ints)."""
    if isinstance(value, Pubkey):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


INT_FIELDS = {
    "price", "state", "time_end", "time_start", "timeout", "time", "job_expiration", "job_price",
    "job_timeout", "job_type", "vault_bump", "node_xnos_minimum", "queue_type",
}


def expected_fields(fields: dict[str, Any]) -> dict[str, Any]:
    # Integers beyond 2^53 are decimal strings in the vectors; pubkeys and hex stay text.
    named = {snake(key): value for key, value in fields.items()}
    return {k: int(v) if k in INT_FIELDS else v for k, v in named.items()}


def actual_fields(account: Any) -> dict[str, Any]:
    return {f.name: plain(getattr(account, f.name)) for f in dataclasses.fields(account)}


KINDS = [
    ("job_accounts", JobAccount, chain.JOB_ACCOUNT_SPACE),
    ("run_accounts", RunAccount, chain.RUN_ACCOUNT_SPACE),
    ("market_accounts", MarketAccount, chain.MARKET_ACCOUNT_SPACE),
]
ALL = [(kind, cls, space, case) for kind, cls, space in KINDS for case in VECTORS[kind]]
IDS = [case["name"] for *_, case in ALL]


def test_vector_counts() -> None:
    counts = VECTORS["counts"]
    assert len(VECTORS["job_accounts"]) == counts["job"]
    assert len(VECTORS["run_accounts"]) == counts["run"]
    assert len(VECTORS["market_accounts"]) == counts["market"]


@pytest.mark.parametrize(("kind", "cls", "space", "case"), ALL, ids=IDS)
def test_decode_fields(kind: str, cls: Any, space: int, case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["data_hex"])
    assert len(data) == case["data_length"]
    account = cls.from_bytes(data)
    assert actual_fields(account) == expected_fields(case["fields"])
    assert chain.decode_account(data) == account


@pytest.mark.parametrize(("kind", "cls", "space", "case"), ALL, ids=IDS)
def test_reencode_is_byte_identical(kind: str, cls: Any, space: int, case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["data_hex"])
    account = cls.from_bytes(data)
    assert account.to_bytes() == data
    padded = account.to_bytes(pad_to=space)
    assert len(padded) == space and padded == data + bytes(space - len(data))


@pytest.mark.parametrize(("kind", "cls", "space", "case"), ALL, ids=IDS)
def test_decodes_same_with_zero_padding(
    kind: str, cls: Any, space: int, case: dict[str, Any]
) -> None:
    data = bytes.fromhex(case["data_hex"])
    flag = next((v for k, v in case.items() if k.startswith("decodes_same_with_zero")), True)
    assert flag is True
    padded = data + bytes(space - len(data))
    assert cls.from_bytes(padded) == cls.from_bytes(data)
    assert cls.from_bytes(data + b"\xaa" * 5) == cls.from_bytes(data)  # trailing bytes ignored


@pytest.mark.parametrize("case", VECTORS["job_accounts"], ids=lambda c: c["name"])
def test_job_cids_and_offsets(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["data_hex"])
    job = JobAccount.from_bytes(data)
    assert job.ipfs_job_cid == case["ipfs_job_cid"]
    want_result = None if case["ipfs_result_cid"] == ZERO_CID else case["ipfs_result_cid"]
    assert job.ipfs_result_cid == want_result
    # The memcmp offsets the tracker filters on point at the right bytes.
    assert data[chain.JOB_STATE_OFFSET] == job.state
    assert data[chain.JOB_PROJECT_OFFSET:][:32] == bytes(job.project)
    assert data[chain.JOB_NODE_OFFSET:][:32] == bytes(job.node)
    assert data[chain.JOB_MARKET_OFFSET:][:32] == bytes(job.market)
    assert data[chain.JOB_PAYER_OFFSET:][:32] == bytes(job.payer)


@pytest.mark.parametrize("case", VECTORS["run_accounts"], ids=lambda c: c["name"])
def test_run_offsets(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["data_hex"])
    run = RunAccount.from_bytes(data)
    assert data[chain.RUN_JOB_OFFSET:][:32] == bytes(run.job)
    assert data[chain.RUN_NODE_OFFSET:][:32] == bytes(run.node)


@pytest.mark.parametrize("case", VECTORS["market_accounts"], ids=lambda c: c["name"])
def test_market_queue(case: dict[str, Any]) -> None:
    market = MarketAccount.from_bytes(bytes.fromhex(case["data_hex"]))
    assert len(market.queue) == case["queue_length"]
    assert case["data_length"] == chain.MARKET_ACCOUNT_BASE_SIZE + 32 * case["queue_length"]
    idle = len(market.queue) if market.queue_type == chain.QueueType.NODE else 0
    assert market.idle_nodes == idle


def test_discriminators_and_sizes() -> None:
    for name, hexed in VECTORS["discriminators"].items():
        rule = hashlib.sha256(f"account:{name}".encode()).digest()[:8]
        assert rule.hex() == hexed
        assert chain.account_discriminator(name) == rule == chain.ACCOUNT_DISCRIMINATORS[name]
    assert VECTORS["sizes"]["getJobAccountSize"] == chain.JOB_ACCOUNT_SIZE == 233
    assert VECTORS["sizes"]["getRunAccountSize"] == chain.RUN_ACCOUNT_SIZE == 113
    assert (chain.JOB_ACCOUNT_SPACE, chain.RUN_ACCOUNT_SPACE) == (240, 120)
    assert chain.MARKET_ACCOUNT_SPACE == 151 + 32 * 314


# --------------------------------------------------------------------------- errors

JOB_DATA = bytes.fromhex(VECTORS["job_accounts"][0]["data_hex"])
RUN_DATA = bytes.fromhex(VECTORS["run_accounts"][0]["data_hex"])
MARKET_DATA = bytes.fromhex(
    next(c for c in VECTORS["market_accounts"] if c["queue_length"] >= 3)["data_hex"]
)


@pytest.mark.parametrize(
    ("cls", "data"),
    [(JobAccount, RUN_DATA), (RunAccount, JOB_DATA), (MarketAccount, JOB_DATA),
     (JobAccount, bytes(240))],
)
def test_wrong_discriminator(cls: Any, data: bytes) -> None:
    with pytest.raises(AccountDecodeError, match=f"not a {cls.__name__}: discriminator"):
        cls.from_bytes(data)


@pytest.mark.parametrize(
    ("cls", "data"),
    [(JobAccount, JOB_DATA[:232]), (RunAccount, RUN_DATA[:112]), (JobAccount, JOB_DATA[:5]),
     (MarketAccount, MARKET_DATA[:150]), (MarketAccount, MARKET_DATA[:-1]), (RunAccount, b"")],
)
def test_short_data(cls: Any, data: bytes) -> None:
    with pytest.raises(AccountDecodeError, match="too short"):
        cls.from_bytes(data)


def test_decode_account_unknown() -> None:
    with pytest.raises(AccountDecodeError, match="not a Nosana jobs account"):
        chain.decode_account(b"\x00" * 8)
    with pytest.raises(AccountDecodeError, match="missing"):
        chain.decode_account(b"")


def test_error_hierarchy() -> None:
    assert issubclass(AccountDecodeError, NosanaError)
    assert issubclass(AccountDecodeError, ValueError)


def test_pad_to_smaller_than_data() -> None:
    with pytest.raises(ValueError, match="cannot pad"):
        JobAccount.from_bytes(JOB_DATA).to_bytes(pad_to=200)


def test_constructor_validates_ranges() -> None:
    job = JobAccount.from_bytes(JOB_DATA)
    for change in ({"price": -1}, {"price": 2**64}, {"state": 256}, {"timeout": 2**63},
                   {"ipfs_job": bytes(31)}, {"market": "not a key"}, {"state": True}):
        with pytest.raises(ValueError):
            dataclasses.replace(job, **change)
    market = MarketAccount.from_bytes(MARKET_DATA)
    with pytest.raises(ValueError, match="u128"):
        dataclasses.replace(market, node_xnos_minimum=2**128)
    with pytest.raises(ValueError, match="Pubkeys"):
        dataclasses.replace(market, queue=["x"])  # type: ignore[list-item]


def test_market_queue_is_copied() -> None:
    nodes = [Pubkey.new_unique() for _ in range(3)]
    market = dataclasses.replace(MarketAccount.from_bytes(MARKET_DATA), queue=nodes,
                                 queue_type=chain.QueueType.NODE)
    nodes.clear()
    assert len(market.queue) == 3 and market.idle_nodes == 3
    full = market.to_bytes(pad_to=chain.MARKET_ACCOUNT_SPACE)
    assert MarketAccount.from_bytes(full) == market


# --------------------------------------------------------------------------- job state


def job_with(state: int) -> JobAccount:
    return dataclasses.replace(JobAccount.from_bytes(JOB_DATA), state=state)


RUN = RunAccount.from_bytes(RUN_DATA)


@pytest.mark.parametrize(
    ("raw", "run", "expected"),
    [(0, None, JobState.QUEUED), (0, RUN, JobState.RUNNING), (1, None, JobState.RUNNING),
     (2, None, JobState.COMPLETED), (2, RUN, JobState.COMPLETED), (3, None, JobState.STOPPED),
     (3, RUN, JobState.STOPPED)],
)
def test_job_state_mapping(raw: int, run: RunAccount | None, expected: JobState) -> None:
    assert job_state(job_with(raw), run) is expected


def test_job_state_values() -> None:
    assert [(s.name, int(s)) for s in JobState] == [
        ("QUEUED", 0), ("RUNNING", 1), ("COMPLETED", 2), ("STOPPED", 3)
    ]
    with pytest.raises(AccountDecodeError, match="unknown state 255"):
        job_state(job_with(255), None)


# --------------------------------------------------------------------------- properties

keys = st.binary(min_size=32, max_size=32).map(Pubkey)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
u8 = st.integers(0, 255)


@given(st.builds(JobAccount, ipfs_job=st.binary(min_size=32, max_size=32),
                 ipfs_result=st.binary(min_size=32, max_size=32), market=keys, node=keys,
                 payer=keys, price=u64, project=keys, state=u8, time_end=i64, time_start=i64,
                 timeout=i64))
def test_job_round_trip(job: JobAccount) -> None:
    data = job.to_bytes(pad_to=chain.JOB_ACCOUNT_SPACE)
    assert JobAccount.from_bytes(data) == job
    assert data[chain.JOB_STATE_OFFSET] == job.state


@given(st.builds(MarketAccount, authority=keys, job_expiration=i64, job_price=u64,
                 job_timeout=i64, job_type=u8, vault=keys, vault_bump=u8, node_access_key=keys,
                 node_xnos_minimum=st.integers(0, 2**128 - 1), queue_type=u8,
                 queue=st.lists(keys, max_size=20)))
def test_market_round_trip(market: MarketAccount) -> None:
    assert MarketAccount.from_bytes(market.to_bytes()) == market
