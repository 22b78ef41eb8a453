from __future__ import annotations

import json
import os
import pickle
import stat
import warnings
from pathlib import Path

import pytest
from solders.keypair import Keypair

from nosana_magic.protocol import b58encode, verify_auth_header
from nosana_magic.wallet import Wallet, WalletError, create_wallet_file, load_wallet

SEED = bytes(range(32))
KEYPAIR = Keypair.from_seed(SEED)
SECRET_B58 = b58encode(KEYPAIR.to_bytes())


def _key_file(tmp_path: Path, *, mode: int = 0o600, values: object = None) -> Path:
    path = tmp_path / "nosana_key.json"
    path.write_text(json.dumps(list(KEYPAIR.to_bytes()) if values is None else values))
    path.chmod(mode)
    return path


def _assert_no_secret(text: str) -> None:
    assert SECRET_B58 not in text
    assert b58encode(SEED) not in text
    assert str(list(KEYPAIR.to_bytes())[:8])[1:-1] not in text


def test_key_file_of_the_nosana_cli(tmp_path: Path) -> None:
    wallet = load_wallet(_key_file(tmp_path))
    assert wallet.address == "FAe4sisG95oZ42w7buUn5qEE4TAnfTTFPiguZUHmhiF"
    assert wallet.public_key == KEYPAIR.pubkey()


def test_nosana_wallet_env_path_then_base58(tmp_path: Path) -> None:
    path = _key_file(tmp_path)
    assert load_wallet(env={"NOSANA_WALLET": str(path)}).address == str(KEYPAIR.pubkey())
    from_secret = load_wallet(env={"NOSANA_WALLET": SECRET_B58})
    assert from_secret.address == str(KEYPAIR.pubkey())
    assert from_secret.source == "NOSANA_WALLET"
    from_seed = load_wallet(env={"NOSANA_WALLET": b58encode(SEED)})
    assert from_seed.address == str(KEYPAIR.pubkey())


def test_default_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".nosana").mkdir()
    _key_file(tmp_path / ".nosana")
    assert load_wallet(env={}).address == str(KEYPAIR.pubkey())


def test_no_wallet_says_where_to_put_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(WalletError, match="NOSANA_WALLET") as info:
        load_wallet(env={})
    assert "nosana_key.json" in str(info.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1, 2, 3], "64 integers"),
        ("not a list", "64 integers"),
        ([256] * 64, "64 integers"),
        ([True] * 64, "64 integers"),
    ],
)
def test_bad_key_file_errors_show_no_bytes(tmp_path: Path, values: object, message: str) -> None:
    path = _key_file(tmp_path, values=values)
    with pytest.raises(WalletError, match=message) as info:
        load_wallet(path)
    assert str(path) in str(info.value)
    assert "256" not in str(info.value)


def test_mismatched_keypair_bytes_are_refused(tmp_path: Path) -> None:
    raw = list(KEYPAIR.to_bytes())
    raw[40] ^= 1  # the public half no longer matches the seed
    path = _key_file(tmp_path, values=raw)
    with pytest.raises(WalletError, match="not a valid ed25519 keypair") as info:
        load_wallet(path)
    _assert_no_secret(str(info.value))


def test_bad_base58_secret_is_not_echoed() -> None:
    bogus = "0OIl" + SECRET_B58[4:]
    with pytest.raises(WalletError) as info:
        load_wallet(env={"NOSANA_WALLET": bogus})
    assert bogus not in str(info.value)
    assert "NOSANA_WALLET" in str(info.value)


def test_not_json_key_file(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text(SECRET_B58)
    path.chmod(0o600)
    with pytest.raises(WalletError, match="not JSON") as info:
        load_wallet(path)
    _assert_no_secret(str(info.value))


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(WalletError, match="does not exist"):
        load_wallet(tmp_path / "nope.json")


def test_repr_shows_the_public_key_only(tmp_path: Path) -> None:
    wallet = load_wallet(_key_file(tmp_path))
    for text in (repr(wallet), str(wallet), f"{wallet}"):
        assert wallet.address in text
        _assert_no_secret(text)
    with pytest.raises(TypeError):
        pickle.dumps(wallet)


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_key_file_readable_by_others_warns(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="chmod 600"):
        load_wallet(_key_file(tmp_path, mode=0o644))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_wallet(_key_file(tmp_path, mode=0o600))


def test_auth_header_verifies_against_the_wallet() -> None:
    wallet = Wallet(KEYPAIR)
    header = wallet.auth_header("nosana-auth")
    verify_auth_header(header, wallet.address, expiry_s=60)
    _assert_no_secret(header)


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_create_wallet_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "data" / "local-wallet.json"
    first = create_wallet_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert create_wallet_file(path).address == first.address
    assert load_wallet(path).address == first.address
