"""Settings: environment, overrides, validation, and no credential value ever held."""

from __future__ import annotations

from pathlib import Path

import pytest

from nosana_magic.settings import WALLET_FROM_ENV, Settings, SettingsError, mask_url

SECRET_B58 = (
    "4Z7cXSyeFR8wNGMVXUE1TwtKn5D5Vu7FzEv69dokLv7K"
    "rQk7h6pu4LF8ZRR9yQBhc7uSM6RTTZtU1fmaxiNrxXrs"
)


def test_defaults(tmp_path: Path) -> None:
    s = Settings.from_env({"NOSANA_CREDENTIALS_FILE": str(tmp_path / "absent.json")})
    assert s.network == "local" and s.market is None and s.timeout == 1800
    assert s.wallet is None and not s.pinata_jwt_set


def test_environment_then_overrides() -> None:
    env = {
        "NOSANA_NETWORK": "Mainnet",
        "NOSANA_MARKET": "nvidia-3090",
        "NOSANA_TIMEOUT": "2h",
        "NOSANA_RPC_URL": "https://rpc.example/?api-key=abc",
        "NOSANA_DEVNODE_URL": "http://127.0.0.1:9000",
        "NOSANA_NODE_URL_TEMPLATE": "http://127.0.0.1:9000/node/{node}",
        "NOSANA_WALLET": "~/keys/k.json",
        "PINATA_JWT": "eyJ-very-secret",
    }
    s = Settings.from_env(env)
    assert s.network == "mainnet" and s.market == "nvidia-3090" and s.timeout == 7200
    assert s.wallet is not None and s.wallet.endswith("keys/k.json") and "~" not in s.wallet
    assert s.pinata_jwt_set
    o = Settings.from_env(env, market="nvidia-4090", timeout="90s", network=None)
    assert o.market == "nvidia-4090" and o.timeout == 90 and o.network == "mainnet"
    assert Settings.from_env(env, timeout=45).timeout == 45  # ints are seconds
    assert s.with_overrides(network="local").network == "local"


def test_pinata_credential_is_seen_under_every_name_but_never_kept(tmp_path: Path) -> None:
    absent = {"NOSANA_CREDENTIALS_FILE": str(tmp_path / "absent.json")}
    assert Settings.from_env({**absent, "NOSANA_PINATA_JWT": "eyJ-secret"}).pinata_jwt_set
    creds = tmp_path / "credentials.json"
    creds.write_text('{"pinata_jwt": "eyJ-from-file"}')
    from_file = Settings.from_env({"NOSANA_CREDENTIALS_FILE": str(creds)})
    assert from_file.pinata_jwt_set
    assert "eyJ" not in repr(from_file) and "eyJ" not in str(from_file.describe())


def test_a_secret_wallet_is_kept_by_reference_only() -> None:
    s = Settings.from_env({"NOSANA_WALLET": SECRET_B58, "PINATA_JWT": "jwt-value"})
    assert s.wallet == WALLET_FROM_ENV
    shown = repr(s) + str(s.describe())
    assert SECRET_B58 not in shown and "jwt-value" not in shown
    assert "pinata_jwt='set'" in repr(s)


def test_rpc_url_is_masked_when_shown() -> None:
    s = Settings.from_env({"NOSANA_RPC_URL": "https://user:pw@rpc.example:8899/x?api-key=abc"})
    assert "abc" not in repr(s) and "pw" not in repr(s)
    assert mask_url(s.rpc_url) == "https://***@rpc.example:8899/***?***"
    assert mask_url("http://127.0.0.1:8899") == "http://127.0.0.1:8899"
    assert mask_url("http://127.0.0.1:8899/") == "http://127.0.0.1:8899/"
    # Providers that put the key in the path (``/v2/<key>``, ``/<token>/``).
    keyed = Settings.from_env({"NOSANA_RPC_URL": "https://x.g.alchemy.com/v2/AbCdEfSECRETKEY123"})
    assert mask_url(keyed.rpc_url) == "https://x.g.alchemy.com/***"
    assert "SECRETKEY" not in repr(keyed) and "SECRETKEY" not in str(keyed.describe())


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        (
            {"NOSANA_NETWORK": "testnet"},
            {},
            "network: 'testnet' is not one of local, devnet, mainnet",
        ),
        ({"NOSANA_TIMEOUT": "soon"}, {}, "NOSANA_TIMEOUT: not a duration: 'soon'"),
        ({}, {"timeout": 0}, "timeout: must be at least 1 second, got 0"),
        ({}, {"devnode_url": "ftp://x"}, "devnode_url: expected an http(s) URL"),
        (
            {},
            {"node_url_template": "http://x/node"},
            "node_url_template: expected an http(s) URL containing {node}",
        ),
        ({}, {"node_url_template": "http://x/{node}/{port}"}, "only {node} may be substituted"),
        ({}, {"colour": "red"}, "unknown setting 'colour'"),
        ({}, {"market": "a:b"}, "market: 'a:b' is not a market slug or address"),
    ],
)
def test_invalid_settings_are_one_line_errors(
    env: dict[str, str], overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env, **overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert info.value._render_traceback_() == [f"SettingsError: {info.value}"]


def test_rpc_url_in_an_error_is_masked() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({}, rpc_url="ws://h/?api-key=abc")
    assert "abc" not in str(info.value)
