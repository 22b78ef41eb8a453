"""Jobs program instructions and derived addresses against the official vectors."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from nosana_magic import chain
from nosana_magic.chain import instructions as ix
from nosana_magic.errors import NosanaError
from nosana_magic.protocol import CidError

from .vectors import load

VECTORS = load("instructions")


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def metas(instruction: Instruction) -> list[tuple[str, bool, bool]]:
    return [(str(m.pubkey), m.is_signer, m.is_writable) for m in instruction.accounts]


def expected_metas(expected: dict[str, Any]) -> list[tuple[str, bool, bool]]:
    return [(a["pubkey"], a["is_signer"], a["is_writable"]) for a in expected["accounts"]]


def case_kwargs(case: dict[str, Any], *, cid: bool = False) -> dict[str, Any]:
    inputs = case["inputs"]
    kwargs: dict[str, Any] = {snake(k): v for k, v in inputs["accounts"].items()}
    args = inputs["args"]
    if "ipfs_job_hex" in args:
        kwargs["ipfs_job"] = args["ipfs_job_cid"] if cid else bytes.fromhex(args["ipfs_job_hex"])
    if "timeout" in args:
        kwargs["timeout"] = int(args["timeout"])  # above 2^53 it is a decimal string
    if inputs["program_address_override"] is not None:
        kwargs["program_id"] = Pubkey.from_string(inputs["program_address_override"])
    return kwargs


def check(instruction: Instruction, expected: dict[str, Any]) -> None:
    assert str(instruction.program_id) == expected["program_id"]
    assert metas(instruction) == expected_metas(expected)
    assert bytes(instruction.data).hex() == expected["data_hex"]
    assert len(instruction.data) == expected["data_length"]


CASES = VECTORS["cases"]


def test_vector_counts_are_all_covered() -> None:
    counts = VECTORS["counts"]
    for name in ("list", "assign", "end", "extend", "delist", "recover"):
        assert sum(c["instruction"] == name for c in CASES) == counts[name]
    assert len(VECTORS["kit_client"]) == counts["kit_client"]
    assert len(VECTORS["derived_addresses"]) == counts["derived_addresses"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_builder_matches_vector(case: dict[str, Any]) -> None:
    builder = getattr(ix, case["instruction"])
    check(builder(**case_kwargs(case)), case["expected"])


@pytest.mark.parametrize(
    "case", [c for c in CASES if "ipfs_job_cid" in c["inputs"]["args"]],
    ids=lambda c: c["name"],
)
def test_builder_accepts_cid_string(case: dict[str, Any]) -> None:
    builder = getattr(ix, case["instruction"])
    check(builder(**case_kwargs(case, cid=True)), case["expected"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_builder_accepts_pubkey_objects(case: dict[str, Any]) -> None:
    kwargs = {
        k: Pubkey.from_string(v) if isinstance(v, str) and k != "ipfs_job" else v
        for k, v in case_kwargs(case).items()
    }
    check(getattr(ix, case["instruction"])(**kwargs), case["expected"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_decode_instruction_round_trip(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["expected"]["data_hex"])
    name, args = chain.decode_instruction(data)
    assert name == case["instruction"]
    want = case["inputs"]["args"]
    expected_args: dict[str, Any] = {}
    if "ipfs_job_hex" in want:
        expected_args["ipfs_job"] = bytes.fromhex(want["ipfs_job_hex"])
    if "timeout" in want:
        expected_args["timeout"] = int(want["timeout"])
    assert args == expected_args
    keys = [Pubkey.from_string(a["pubkey"]) for a in case["expected"]["accounts"]]
    named = chain.account_map(name, keys)
    assert {snake(a["name"]): a["pubkey"] for a in case["expected"]["accounts"]} == {
        k: str(v) for k, v in named.items()
    }


def test_account_order_and_signer_inputs() -> None:
    for name, order in VECTORS["account_order"].items():
        assert chain.INSTRUCTION_ACCOUNTS[name] == tuple(snake(a["name"]) for a in order)
    # Every signer input is a signer meta in the builder output.
    for case in CASES:
        order = VECTORS["account_order"][case["instruction"]]
        signers = [a["is_signer"] for a in case["expected"]["accounts"]]
        assert signers == [a["signer_input"] for a in order]


def test_discriminators_follow_the_anchor_rule() -> None:
    for name, hexed in VECTORS["discriminators"].items():
        rule = hashlib.sha256(f"global:{name}".encode()).digest()[:8]
        assert rule.hex() == hexed
        assert chain.instruction_discriminator(name) == rule
        assert chain.INSTRUCTION_DISCRIMINATORS[name] == rule
    assert set(chain.INSTRUCTION_DISCRIMINATORS) == set(VECTORS["discriminators"])


def test_duplicate_payer_authority_stay_separate_metas() -> None:
    case = next(c for c in CASES if c["name"] == "list_random_3_payer_is_authority")
    instruction = ix.list(**case_kwargs(case))
    keys = [str(m.pubkey) for m in instruction.accounts]
    assert keys[5] == keys[8] and len(keys) == 12


# --------------------------------------------------------------------------- kit whole-path


@pytest.mark.parametrize(
    "case", VECTORS["kit_client"], ids=[c["name"] for c in VECTORS["kit_client"]]
)
def test_kit_client_whole_path(case: dict[str, Any]) -> None:
    inputs = case["inputs"]
    wallet = Keypair.from_seed(bytes.fromhex(inputs["wallet_seed_hex"])).pubkey()
    assert str(wallet) == inputs["wallet"]
    cluster = chain.cluster(inputs["network"])
    market = Pubkey.from_string(inputs["market"])
    kwargs: dict[str, Any] = {
        "job": case["generated_inside_kit"]["job"],
        "run": case["generated_inside_kit"]["run"],
        "market": market,
        "user": chain.nos_ata(wallet, cluster.nos_mint),
        "vault": chain.market_vault(market, cluster.nos_mint, cluster.jobs_program),
        "payer": wallet,
        "authority": wallet,
        "rewards_reflection": chain.rewards_reflection(cluster.rewards_program),
        "rewards_vault": chain.rewards_vault(cluster.nos_mint, cluster.rewards_program),
        "rewards_program": cluster.rewards_program,
        "ipfs_job": inputs["ipfs_hash"],
        "timeout": inputs["timeout"],
        "program_id": cluster.jobs_program,
    }
    if case["instruction"] == "assign":
        kwargs["node"] = inputs["node"]
    builder = getattr(ix, case["instruction"])
    check(builder(**kwargs), case["expected"])


# --------------------------------------------------------------------------- derived addresses

DERIVED = VECTORS["derived_addresses"]


@pytest.mark.parametrize("case", DERIVED, ids=[f"{i}-{c['label']}" for i, c in enumerate(DERIVED)])
def test_derived_address(case: dict[str, Any]) -> None:
    if case["kind"] == "ata":
        assert case["token_program"] == str(chain.TOKEN_PROGRAM)
        got = chain.nos_ata(case["owner"], case["mint"])
    else:
        seeds = case["seeds"]
        program = Pubkey.from_string(case["program_id"])
        if seeds == [{"utf8": "reflection"}]:
            got = chain.rewards_reflection(program)
        elif len(seeds) == 1:
            assert program == chain.REWARDS_PROGRAM
            got = chain.rewards_vault(seeds[0]["address"], program)
        else:
            market, mint = (s["address"] for s in seeds)
            got = chain.market_vault(market, mint, program)
    assert str(got) == case["address"]


def test_static_addresses_match_the_known_values() -> None:
    assert str(chain.rewards_reflection()) == "6tjbAfNHnUusWLZqFznMKyBrjs1ZX92eyKwiUi2Bsg3x"
    assert str(chain.rewards_vault()) == "37xZ4jY3bSMBgxwekwdALRZK1kAUCh7YkkPabA4P2tq8"
    assert str(chain.market_vault("CA5pMpqkYFKtme7K31pNB1s62X2SdhEv1nN9RdxKCpuQ")) == (
        "Dqx5MbcAGQo2vgWaUau81joSJwDTaMzdRt1CEX8xzxUj"
    )


def test_clusters() -> None:
    assert chain.MAINNET.jobs_program == chain.JOBS_PROGRAM_MAINNET
    assert str(chain.MAINNET.jobs_program) == "nosJhNRqr2bc9g1nfGDcXXTXvYUmxD4cVwy2pMWhrYM"
    assert str(chain.DEVNET.jobs_program) == "nosJTmGQxvwXy23vng5UjkTbfv91Bzf9jEuro78dAGR"
    assert str(chain.MAINNET.nos_mint) == "nosXBVoaCTtYdLvKY6Csb4AC8JCdQKKAaWYtx2ZMoo7"
    assert str(chain.DEVNET.nos_mint) == "devr1BGQndEW5k5zfvG5FsLyZv1Ap73vNgAHcQ9sUVP"
    assert chain.DEVNET.rewards_program == chain.MAINNET.rewards_program == chain.REWARDS_PROGRAM
    assert chain.cluster(" Devnet ") is chain.DEVNET
    with pytest.raises(ValueError, match="unknown Solana cluster"):
        chain.cluster("testnet")
    with pytest.raises(AttributeError):
        chain.MAINNET.name = "x"  # type: ignore[misc]


def test_module_aliases() -> None:
    assert chain.list_instruction is ix.list
    assert chain.assign_instruction is ix.assign
    assert chain.end_instruction is ix.end
    assert chain.extend_instruction is ix.extend
    assert chain.delist_instruction is ix.delist
    assert chain.recover_instruction is ix.recover


# --------------------------------------------------------------------------- validation

LIST_CASE = CASES[0]


def list_with(**overrides: Any) -> Instruction:
    return ix.list(**{**case_kwargs(LIST_CASE), **overrides})


@pytest.mark.parametrize("digest", [b"", bytes(31), bytes(33)])
def test_list_rejects_wrong_digest_length(digest: bytes) -> None:
    with pytest.raises(chain.InstructionArgError, match="32-byte digest"):
        list_with(ipfs_job=digest)


def test_list_rejects_bad_cid_and_type() -> None:
    with pytest.raises(CidError):
        list_with(ipfs_job="not-a-cid")
    with pytest.raises(ValueError, match="CIDv0"):
        list_with(ipfs_job="bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi")
    with pytest.raises(chain.InstructionArgError, match="not int"):
        list_with(ipfs_job=12)


@pytest.mark.parametrize("timeout", [2**63, -(2**63) - 1, 10**30])
def test_timeout_must_fit_i64(timeout: int) -> None:
    with pytest.raises(chain.InstructionArgError, match="i64"):
        list_with(timeout=timeout)
    with pytest.raises(ValueError, match="i64"):
        ix.extend(**{**case_kwargs(next(c for c in CASES if c["instruction"] == "extend")),
                     "timeout": timeout})


@pytest.mark.parametrize("timeout", [True, 1.5, "60", None])
def test_timeout_must_be_int(timeout: Any) -> None:
    with pytest.raises(chain.InstructionArgError, match="integer"):
        list_with(timeout=timeout)


def test_i64_bounds_encode() -> None:
    assert bytes(list_with(timeout=2**63 - 1).data)[-8:] == b"\xff" * 7 + b"\x7f"
    assert bytes(list_with(timeout=-(2**63)).data)[-8:] == b"\x00" * 7 + b"\x80"


def test_bad_account_is_named() -> None:
    with pytest.raises(ValueError, match="market is not a Solana address"):
        list_with(market="nope")
    with pytest.raises(TypeError):
        ix.list(**{k: v for k, v in case_kwargs(LIST_CASE).items() if k != "run"})


def test_errors_are_nosana_errors() -> None:
    assert issubclass(chain.InstructionArgError, NosanaError)
    assert issubclass(chain.InstructionDecodeError, NosanaError)
    assert issubclass(chain.InstructionDecodeError, ValueError)


# --------------------------------------------------------------------------- decoding


def test_decode_rejects_unknown_and_short() -> None:
    with pytest.raises(chain.InstructionDecodeError, match="discriminator missing"):
        chain.decode_instruction(b"")
    with pytest.raises(chain.InstructionDecodeError, match="not a Nosana jobs"):
        chain.decode_instruction(chain.instruction_discriminator("finish") + bytes(32))
    data = bytes(list_with().data)
    with pytest.raises(chain.InstructionDecodeError, match="too short"):
        chain.decode_instruction(data[:-1])
    extend_disc = chain.INSTRUCTION_DISCRIMINATORS["extend"]
    with pytest.raises(chain.InstructionDecodeError, match="too short"):
        chain.decode_instruction(extend_disc + bytes(7))


def test_decode_ignores_trailing_bytes_like_anchor() -> None:
    data = bytes(list_with(timeout=77).data) + b"\x01\x02"
    assert chain.decode_instruction(data) == ("list", {
        "ipfs_job": bytes.fromhex(LIST_CASE["inputs"]["args"]["ipfs_job_hex"]), "timeout": 77,
    })
    assert chain.decode_instruction(chain.INSTRUCTION_DISCRIMINATORS["end"] + b"x") == ("end", {})


def test_account_map_requires_enough_keys() -> None:
    with pytest.raises(chain.InstructionDecodeError, match="needs 7 accounts"):
        chain.account_map("delist", [Pubkey.default()] * 6)
    extra = [Keypair().pubkey() for _ in range(8)]
    assert list(chain.account_map("delist", extra).values()) == extra[:7]


@given(digest=st.binary(min_size=32, max_size=32),
       timeout=st.integers(min_value=-(2**63), max_value=2**63 - 1),
       name=st.sampled_from(["list", "assign"]))
def test_decode_round_trip_property(digest: bytes, timeout: int, name: str) -> None:
    case = next(c for c in CASES if c["instruction"] == name)
    built = getattr(ix, name)(**{**case_kwargs(case), "ipfs_job": digest, "timeout": timeout})
    assert chain.decode_instruction(bytes(built.data)) == (
        name, {"ipfs_job": digest, "timeout": timeout}
    )


# --------------------------------------------------------------------------- logs


def test_log_anchor_error() -> None:
    logs = [
        "Program nosJhNRqr2bc9g1nfGDcXXTXvYUmxD4cVwy2pMWhrYM invoke [1]",
        "Program log: Instruction: Delist",
        "Program log: AnchorError thrown in programs/nosana-jobs/src/instructions/delist.rs:41. "
        "Error Code: NotInMarketQueue. Error Number: 6021. Error Message: "
        "This job is not in the queue.",
        "Program nosJhNRqr2bc9g1nfGDcXXTXvYUmxD4cVwy2pMWhrYM consumed 5000 of 200000 units",
        "Program nosJhNRqr2bc9g1nfGDcXXTXvYUmxD4cVwy2pMWhrYM failed: custom program error: 0x1785",
    ]
    assert chain.program_error_message(logs) == (
        "NotInMarketQueue (6021): This job is not in the queue"
    )


def test_log_anchor_account_error() -> None:
    logs = [
        "Program log: AnchorError caused by account: job. Error Code: ConstraintHasOne. "
        "Error Number: 2001. Error Message: A has one constraint was violated.",
        "Program log: Left:",
        "Program log: 11111111111111111111111111111111",
    ]
    assert chain.program_error_message(logs) == (
        "ConstraintHasOne (2001): A has one constraint was violated (account: job)"
    )
    occurred = ["Program log: AnchorError occurred. Error Code: JobInWrongState. "
                "Error Number: 6012. Error Message: This job does not have the right status."]
    assert chain.program_error_message(occurred) == (
        "JobInWrongState (6012): This job does not have the right status"
    )


def test_log_token_and_runtime_errors() -> None:
    token = [
        "Program TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA invoke [2]",
        "Program log: Instruction: Transfer",
        "Program log: Error: insufficient funds",
        "Program TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA failed: custom program error: 0x1",
    ]
    assert chain.program_error_message(token) == "insufficient funds"
    system = ["Transfer: insufficient lamports 0, need 2561280",
              "Program 11111111111111111111111111111111 failed: custom program error: 0x1"]
    assert chain.program_error_message(system) == "Transfer: insufficient lamports 0, need 2561280"
    bare = ["Program nosJhNRqr2bc9g1nfGDcXXTXvYUmxD4cVwy2pMWhrYM invoke [1]",
            "Program nosJhNRqr2bc9g1nfGDcXXTXvYUmxD4cVwy2pMWhrYM failed: "
            "invalid program argument"]
    assert chain.program_error_message(bare) == (
        "program nosJhNRqr2bc9g1nfGDcXXTXvYUmxD4cVwy2pMWhrYM failed: invalid program argument"
    )
    assert chain.program_error_message([]) is None
    assert chain.program_error_message(["Program log: hello"]) is None
    long = chain.program_error_message(["Program log: Error: " + "x" * 1000])
    assert long is not None and len(long) == 300 and "\n" not in long
