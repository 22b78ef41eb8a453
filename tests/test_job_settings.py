"""Settings: environment, overrides, validation, and no credential value ever held."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nosana_magic.settings import SETTINGS, WALLET_FROM_ENV, Settings, SettingsError, mask_url
from nosana_magic.wallet import WalletError, configured_wallet

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


# --------------------------------------------------------------------------- sources


def test_each_value_says_where_it_came_from(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.json"
    creds.write_text('{"pinata_jwt": "eyJ-from-file"}')
    env = {"NOSANA_MARKET": "nvidia-3090", "NOSANA_TIMEOUT": "2h",
           "NOSANA_CREDENTIALS_FILE": str(creds)}
    s = (Settings.from_env(env, source="%config NosanaMagics.{name}", timeout="45m")
         .with_overrides(source="flag --{name}", network="devnet", market=None))
    assert (s.network, s.source("network")) == ("devnet", "flag --network")
    assert (s.timeout, s.source("timeout")) == (2700, "%config NosanaMagics.timeout")
    assert (s.market, s.source("market")) == ("nvidia-3090", "env NOSANA_MARKET")
    assert (s.commitment, s.source("commitment")) == ("confirmed", "default")
    assert s.source("pinata_jwt_set") == f"credentials file {creds}"
    assert Settings.from_env(env, timeout=60).source("timeout") == "code"
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        s.source("colour")


def test_explain_has_one_row_per_setting_and_no_credential(tmp_path: Path) -> None:
    env = {"NOSANA_WALLET": SECRET_B58, "NOSANA_PINATA_JWT": "eyJ-secret",
           "NOSANA_RPC_URL": "https://rpc.example/?api-key=abc",
           "NOSANA_API_KEY": "nos_api-key-secret",
           "NOSANA_CREDENTIALS_FILE": str(tmp_path / "absent.json")}
    rows = {name: (value, source) for name, value, source in Settings.from_env(env).explain()}
    assert list(rows) == [name.removesuffix("_set") for name in SETTINGS]
    assert rows["wallet"] == ("set", "env NOSANA_WALLET")
    assert rows["pinata_jwt"] == ("set", "env NOSANA_PINATA_JWT")
    assert rows["api_key"] == ("set", "env NOSANA_API_KEY")
    assert rows["pay"] == ("credits when an API key is set, else the wallet", "default")
    assert rows["rpc_url"] == ("https://rpc.example/?***", "env NOSANA_RPC_URL")
    assert rows["market"] == ("the first local market (required on devnet/mainnet)", "default")
    assert rows["credentials_file"] == (str(tmp_path / "absent.json"),
                                        "env NOSANA_CREDENTIALS_FILE")
    shown = str(rows)
    assert SECRET_B58 not in shown and "eyJ-secret" not in shown and "abc" not in shown
    assert "nos_api-key-secret" not in shown


def test_the_solana_knobs_come_from_the_environment_too() -> None:
    s = Settings.from_env({
        "NOSANA_WS_URL": "wss://rpc.example/ws", "NOSANA_COMMITMENT": "Finalized",
        "NOSANA_PRIORITY_FEE": "1234", "NOSANA_NODE_DOMAIN": "node.example",
        "NOSANA_MARKETS_API": "OFF", "NOSANA_PINATA_API_URL": "http://127.0.0.1:1",
        "NOSANA_IPFS_GATEWAY": "http://127.0.0.1:1/ipfs"})
    assert (s.ws_url, s.commitment, s.priority_fee) == ("wss://rpc.example/ws", "finalized", 1234)
    assert (s.node_domain, s.markets_api) == ("node.example", "off")
    assert (s.pinata_api_url, s.ipfs_gateway) == ("http://127.0.0.1:1", "http://127.0.0.1:1/ipfs")
    auto = Settings.from_env({"NOSANA_PRIORITY_FEE": "auto"})
    assert auto.priority_fee is None and auto.describe()["priority_fee"] == "auto"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOSANA_PRIORITY_FEE": "lots"}, "NOSANA_PRIORITY_FEE: expected a whole number or auto"),
        ({"NOSANA_PRIORITY_FEE": "-1"}, "priority_fee: expected whole micro-lamports >= 0"),
        ({"NOSANA_COMMITMENT": "max"}, "commitment: 'max' is not one of processed, confirmed"),
        ({"NOSANA_WS_URL": "https://x"}, "ws_url: expected a ws(s) URL"),
        ({"NOSANA_MARKETS_API": "ftp://x"}, "markets_api: expected an http(s) URL or off"),
        ({"NOSANA_IPFS_GATEWAY": "x"}, "ipfs_gateway: expected an http(s) URL"),
    ],
)
def test_bad_solana_knobs_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)) as info:
        Settings.from_env(env)
    assert "\n" not in str(info.value)


def test_found_settings_cannot_be_overridden() -> None:
    for name in ("pinata_jwt_set", "credentials_file"):
        with pytest.raises(SettingsError, match=f"unknown setting '{name}'"):
            Settings.from_env({}, **{name: "x"})


def test_credentials_are_read_when_used_from_where_the_settings_were_read(
        tmp_path: Path) -> None:
    creds = tmp_path / "credentials.json"
    creds.write_text('{"pinata_jwt": "eyJ-from-file"}')
    s = Settings.from_env({"NOSANA_CREDENTIALS_FILE": str(creds), "NOSANA_WALLET": SECRET_B58})
    assert s.read_pinata_jwt() == "eyJ-from-file"
    assert s.read_wallet_secret() == SECRET_B58
    assert configured_wallet(s).source == "NOSANA_WALLET"
    with pytest.raises(SettingsError, match="not a secret in NOSANA_WALLET"):
        Settings.from_env({}, wallet=str(tmp_path / "k.json")).read_wallet_secret()


def test_the_wallet_is_decided_once(tmp_path: Path) -> None:
    # A value that is a file is a path even without a slash or a .json suffix.
    key = tmp_path / "mykey"
    key.write_text("[]")
    key.chmod(0o600)
    s = Settings.from_env({"NOSANA_WALLET": str(key)})
    assert s.wallet == str(key) and s.describe()["wallet"] == str(key)
    with pytest.raises(WalletError, match="64 integers"):
        configured_wallet(s)  # loaded as the key file it was decided to be
