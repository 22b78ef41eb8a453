from __future__ import annotations

import pytest
from solders.keypair import Keypair

from nosana_magic.protocol import (
    AuthError,
    CidError,
    DurationError,
    auth_header,
    cid_of,
    cid_to_digest,
    create_hash,
    deployment_hash,
    digest_to_cid,
    expose_id,
    exposed_services,
    format_duration,
    has_private_ops,
    is_private_expose_id,
    parse_duration,
    service_url,
    short_address,
    verify_auth_header,
)

from .vectors import load

AUTH = load("auth")
EXPOSE = load("expose")
CID = load("cid")


def _keypair(case: dict) -> Keypair:
    return Keypair.from_bytes(bytes.fromhex(case["secret_key_hex"]))


@pytest.mark.parametrize("case", AUTH["cases"], ids=lambda c: c["name"])
def test_auth_header_matches_official_generate(case: dict) -> None:
    keypair = _keypair(case)
    assert str(keypair.pubkey()) == case["public_key"]
    assert Keypair.from_seed(bytes.fromhex(case["seed_hex"])).pubkey() == keypair.pubkey()
    assert auth_header(keypair, case["message"], include_time=False) == case["header_no_time"]
    with_time = auth_header(keypair, case["message"], timestamp_ms=case["time_ms"])
    assert with_time == case["header_with_time"]


@pytest.mark.parametrize("case", AUTH["cases"], ids=lambda c: c["name"])
def test_generated_headers_verify(case: dict) -> None:
    now = case["time_ms"] + 5000
    for header in (case["header_no_time"], case["header_with_time"]):
        if case["verify_ok"]:
            verify_auth_header(header, case["public_key"], expiry_s=300, now_ms=now)
        else:
            with pytest.raises(AuthError):
                verify_auth_header(header, case["public_key"], expiry_s=300, now_ms=now)


@pytest.mark.parametrize("case", AUTH["validate_cases"], ids=lambda c: c["name"])
def test_verify_agrees_with_official_validate(case: dict) -> None:
    call = lambda: verify_auth_header(  # noqa: E731
        case["header"], case["public_key"], expiry_s=case["expiry_s"], now_ms=case["now_ms"]
    )
    if case["expect"] == "valid":
        call()
    else:
        with pytest.raises(AuthError) as info:
            call()
        assert info.value.reason == case["expect"]


def test_auth_header_defaults_to_a_fresh_timestamp() -> None:
    keypair = Keypair.from_seed(bytes(32))
    message, _, stamp = auth_header(keypair, "nosana-auth").split(":")
    assert message == "nosana-auth"
    header = auth_header(keypair, "nosana-auth")
    verify_auth_header(header, keypair.pubkey(), expiry_s=5)
    assert int(stamp) > 1_700_000_000_000


def test_auth_header_refuses_messages_that_cannot_verify() -> None:
    keypair = Keypair.from_seed(bytes(32))
    with pytest.raises(ValueError, match="':'"):
        auth_header(keypair, "a:b")
    with pytest.raises(ValueError, match="empty"):
        auth_header(keypair, "")


def test_auth_error_is_one_clean_line() -> None:
    with pytest.raises(AuthError) as info:
        verify_auth_header("x", "FAe4sisG95oZ42w7buUn5qEE4TAnfTTFPiguZUHmhiF", expiry_s=1)
    assert info.value._render_traceback_() == ["AuthError: Invalid signature."]


@pytest.mark.parametrize("case", EXPOSE["cases"], ids=lambda c: c["name"])
def test_expose_id(case: dict) -> None:
    assert expose_id(case["job_address"], case["op_index"], case["port"]) == case["expose_id"]


@pytest.mark.parametrize("case", EXPOSE["create_hash"], ids=lambda c: c["input_string"] or "empty")
def test_create_hash(case: dict) -> None:
    assert create_hash(case["input_string"], case["length"]) == case["hash"]


@pytest.mark.parametrize("case", EXPOSE["deployments"], ids=lambda c: c["name"])
def test_deployment_ids(case: dict) -> None:
    hashed = deployment_hash(case["deployment_id"], case["project"])
    assert hashed == case["deployment_hash"]
    assert expose_id(hashed, case["op_id"], 0) == case["deployment_expose_id"]


@pytest.mark.parametrize("case", EXPOSE["job_level"], ids=lambda c: c["name"])
def test_exposed_services_of_a_definition(case: dict) -> None:
    definition = case["job_definition"]
    if case["expose_ids"] == ["private"]:
        assert has_private_ops(definition)
        assert exposed_services(definition, case["job_address"]) == []
        return
    assert not has_private_ops(definition)
    services = exposed_services(definition, case["job_address"])
    assert [s.expose_id for s in services] == case["expose_ids"]
    expected = case["exposed_services"]
    assert [(s.op_index, s.op_id, s.port, s.has_health_check) for s in services] == [
        (e["opIndex"], e["opId"], e["port"], e["hasHealthCheck"]) for e in expected
    ]


def test_service_url() -> None:
    url = service_url("Tmon98D69SZaygg3C3SNQFGxQLio7VoxKrCbG2MA2br3", "node.k8s.prd.nos.ci")
    assert url == "https://Tmon98D69SZaygg3C3SNQFGxQLio7VoxKrCbG2MA2br3.node.k8s.prd.nos.ci"


def test_a_private_service_id_is_told_apart_by_its_length() -> None:
    public = expose_id("FAe4sisG95oZ42w7buUn5qEE4TAnfTTFPiguZUHmhiF", 0, 8080)
    private = create_hash("any random bytes", 45)
    assert not is_private_expose_id(public) and is_private_expose_id(private)


def test_short_address_keeps_four_characters_each_side() -> None:
    assert short_address("FAe4sisG95oZ42w7buUn5qEE4TAnfTTFPiguZUHmhiF") == "FAe4…mhiF"
    assert short_address("123456789") == "123456789"  # nothing to gain from cutting it
    assert short_address("1234567890") == "1234…7890"


@pytest.mark.parametrize("case", CID["cases"], ids=lambda c: c["name"])
def test_cid_round_trip(case: dict) -> None:
    digest = bytes.fromhex(case["digest_hex"])
    assert digest_to_cid(digest) == case["cid"]
    assert cid_to_digest(case["cid"]) == digest


@pytest.mark.parametrize("case", CID["invalid"], ids=lambda c: c["name"])
def test_cid_refuses_what_the_official_package_refuses(case: dict) -> None:
    with pytest.raises(CidError):
        if case["function"] == "ipfsHashToSolBytesArray":
            cid_to_digest(case["input"])
        else:
            digest_to_cid(bytes.fromhex(case["input_hex"]))


def test_cid_of_content_is_sha256() -> None:
    import hashlib

    content = b'{"ops":[]}'
    assert cid_to_digest(cid_of(content)) == hashlib.sha256(content).digest()
    assert cid_of(content).startswith("Qm")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("45", 2700), ("1d", 86400), ("1.5h", 5400),
     (" 10 min ", 600), ("5S", 5), (10, 600), (0.5, 30)],
)
def test_parse_duration(text: str | int | float, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5m", "10 parsecs", "0s", "m", "1h30", True])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(DurationError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (45, 1800, 7500, 3600, 95, 0, 0.4)] == [
        "45s", "30m", "2h 5m", "1h", "1m 35s", "0s", "0s"
    ]


@pytest.mark.parametrize(("seconds", "shown"), [
    (86_401, "24h 1s"), (86_460, "24h 1m"), (3_661, "1h 1m 1s"), (7_201, "2h 1s"),
    (90_000, "25h"),
])
def test_format_duration_drops_no_second(seconds: int, shown: str) -> None:
    # A limit and what it refuses must never print alike ("24h exceeds … (24h)").
    assert format_duration(seconds) == shown
    assert format_duration(seconds) != format_duration(seconds - 1)
