"""IPFS through Pinata: pinning with the JWT, gateway reads, retries, and no credential shown."""

from __future__ import annotations

import json
import logging
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosana_magic.network.ipfs import IpfsError, PinataClient
from nosana_magic.protocol import cid_of, cid_to_digest
from nosana_magic.settings import credentials_file, find_pinata_jwt
from nosana_magic.transport import Retry
from tests.fakes.loopback import LoopbackServer
from tests.fakes.pinata import FakePinata

from .conftest import PLACEHOLDER
from .waiting import PATIENCE

JWT = "eyJhbGciOiJIUzI1NiJ9.test-only.signature"


@pytest.fixture
def pinata() -> Iterator[tuple[FakePinata, LoopbackServer]]:
    fake = FakePinata(JWT)
    with LoopbackServer(fake) as server:
        yield fake, server


def client(server: LoopbackServer, jwt: str | None = JWT, *, attempts: int = 3) -> PinataClient:
    return PinataClient(jwt, api_url=server.url, gateway=f"{server.url}/ipfs",
                        retry=Retry(first=0.01, attempts=attempts))


async def test_pin_and_read_back(pinata: tuple[FakePinata, LoopbackServer]) -> None:
    fake, server = pinata
    ipfs = client(server)
    cid = await ipfs.pin_json(PLACEHOLDER)
    assert cid.startswith("Qm") and len(cid_to_digest(cid)) == 32
    # The body is the document itself (not wrapped), compact as JavaScript writes it.
    body = json.dumps(PLACEHOLDER, separators=(",", ":")).encode()
    assert cid == cid_of(body)
    assert fake.auth_headers_seen == [f"Bearer {JWT}"]
    assert await ipfs.get_json(cid) == PLACEHOLDER
    await ipfs.aclose()


async def test_no_credential_is_a_clear_error_before_any_request(
    pinata: tuple[FakePinata, LoopbackServer]
) -> None:
    fake, server = pinata
    ipfs = PinataClient(None, api_url=server.url)
    assert not ipfs.has_credential
    with pytest.raises(IpfsError, match="no IPFS upload credential: set NOSANA_PINATA_JWT"):
        await ipfs.pin_json(PLACEHOLDER)
    with pytest.raises(IpfsError, match="no IPFS upload credential"):
        ipfs.require_credential()
    assert fake.pins == 0 and fake.auth_headers_seen == []


async def test_a_refused_jwt_says_so_without_showing_it(
    pinata: tuple[FakePinata, LoopbackServer],
) -> None:
    _, server = pinata
    wrong = "eyJ-wrong-token-value"
    ipfs = client(server, jwt=wrong)
    with pytest.raises(IpfsError) as err:
        await ipfs.pin_json(PLACEHOLDER)
    assert "refused the upload credential (HTTP 401)" in str(err.value)
    assert wrong not in str(err.value) and wrong not in repr(err.value)
    await ipfs.aclose()


async def test_transient_failures_are_retried_a_bounded_number_of_times(
    pinata: tuple[FakePinata, LoopbackServer],
) -> None:
    fake, server = pinata
    fake.fail(503, times=2)
    ipfs = client(server, attempts=3)
    assert (await ipfs.pin_json(PLACEHOLDER)).startswith("Qm")
    fake.fail(429, times=3)
    with pytest.raises(IpfsError, match=r"HTTP 429 \(after 3 attempts\)"):
        await ipfs.pin_json(PLACEHOLDER)
    await ipfs.aclose()


async def test_nothing_listening_is_a_bounded_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ipfs = PinataClient(JWT, api_url=f"http://127.0.0.1:{port}",
                        retry=Retry(first=0.01, attempts=2), timeout_s=PATIENCE)
    with pytest.raises(IpfsError) as err:
        await ipfs.pin_json(PLACEHOLDER)
    assert "127.0.0.1 cannot connect" in str(err.value) and "2 attempts" in str(err.value)
    assert JWT not in str(err.value)
    await ipfs.aclose()


async def test_a_cid_that_is_not_v0_is_refused(pinata: tuple[FakePinata, LoopbackServer]) -> None:
    fake, server = pinata
    fake.cid_override = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    with pytest.raises(IpfsError, match="not a CIDv0"):
        await client(server).pin_json(PLACEHOLDER)


async def test_gateway_errors(pinata: tuple[FakePinata, LoopbackServer]) -> None:
    _, server = pinata
    ipfs = client(server)
    missing = cid_of(b"never pinned")
    with pytest.raises(IpfsError, match="HTTP 404"):
        await ipfs.get_json(missing)
    with pytest.raises(IpfsError, match="not an IPFS CIDv0"):
        await ipfs.get_json("not-a-cid")
    await ipfs.aclose()


def test_jwt_lookup_order(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"pinata_jwt": "from-file"}))
    env = {"NOSANA_CREDENTIALS_FILE": str(creds)}
    assert find_pinata_jwt(env) == "from-file"
    assert find_pinata_jwt({**env, "PINATA_JWT": "legacy"}) == "legacy"
    assert find_pinata_jwt({**env, "PINATA_JWT": "legacy", "NOSANA_PINATA_JWT": "n"}) == "n"
    assert find_pinata_jwt({"NOSANA_CREDENTIALS_FILE": str(tmp_path / "absent")}) is None
    assert credentials_file(env) == creds


def test_default_credentials_file_is_in_the_user_config_dir() -> None:
    assert credentials_file({}).name == "credentials.json"
    assert "nosana_magic" in str(credentials_file({}))


def test_unreadable_credentials_file_is_ignored_without_echoing_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    creds = tmp_path / "credentials.json"
    creds.write_text("pinata_jwt = eyJ-secret-in-a-broken-file")
    with caplog.at_level(logging.WARNING):
        assert find_pinata_jwt({"NOSANA_CREDENTIALS_FILE": str(creds)}) is None
    assert "eyJ-secret" not in caplog.text and str(creds) in caplog.text


def test_the_jwt_never_shows() -> None:
    ipfs = PinataClient(JWT)
    assert JWT not in repr(ipfs) and JWT not in str(ipfs)
    assert "jwt=set" in repr(ipfs)
    assert "jwt=unset" in repr(PinataClient(None))
    with pytest.raises(TypeError):
        pickle.dumps(ipfs)
