"""Where the API key and the way to pay come from (docs/protocol.md §24): the environment or
the credentials file, never shown; ``pay`` defaults to credits when a key is set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nosana_magic.errors import SettingsError
from nosana_magic.network import open_network
from nosana_magic.network.api import ApiNetwork, credits_network
from nosana_magic.settings import Settings

KEY = "nos_settings-test-key-0123456789"


def env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {"NOSANA_CREDENTIALS_FILE": str(tmp_path / "absent.json"), **more}


def test_no_key_pays_with_the_wallet(tmp_path: Path) -> None:
    settings = Settings.from_env(env(tmp_path))
    assert not settings.api_key_set and settings.read_api_key() is None
    assert settings.pays_with == "wallet"
    assert settings.describe()["api_key"] == "unset"


def test_a_key_in_the_environment_pays_with_credits_and_is_never_shown(tmp_path: Path) -> None:
    settings = Settings.from_env(env(tmp_path, NOSANA_API_KEY=f"  {KEY}\n"))
    assert settings.api_key_set and settings.pays_with == "credits"
    assert settings.read_api_key() == KEY
    assert settings.source("api_key_set") == "env NOSANA_API_KEY"
    for shown in (repr(settings), str(settings.describe()), str(settings.explain())):
        assert KEY not in shown
    # The way to pay can still be chosen: a flag (or trait) wins over the default.
    assert settings.with_overrides(pay="wallet").pays_with == "wallet"
    assert Settings.from_env(env(tmp_path, NOSANA_API_KEY=KEY, NOSANA_PAY="Wallet")
                             ).pays_with == "wallet"


def test_a_key_in_the_credentials_file(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.json"
    creds.write_text(json.dumps({"pinata_jwt": "jwt", "nosana_api_key": KEY}))
    settings = Settings.from_env({"NOSANA_CREDENTIALS_FILE": str(creds)})
    assert settings.api_key_set and settings.read_api_key() == KEY
    assert settings.source("api_key_set") == f"credentials file {creds}"
    assert settings.read_pinata_jwt() == "jwt"  # the other credential is still read


def test_pay_and_urls_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="pay: 'cash' is not one of credits, wallet"):
        Settings.from_env(env(tmp_path, NOSANA_PAY="cash"))
    with pytest.raises(SettingsError, match="signing_url: expected an http"):
        Settings.from_env(env(tmp_path, NOSANA_SIGNING_URL="ftp://x"))
    with pytest.raises(SettingsError, match="api_key_set"):
        Settings.from_env(env(tmp_path)).with_overrides(api_key_set=True)  # found, not set


def test_credits_without_a_key_say_how_to_get_one(tmp_path: Path) -> None:
    settings = Settings.from_env(env(tmp_path, NOSANA_NETWORK="mainnet", NOSANA_PAY="credits"))
    with pytest.raises(SettingsError) as info:
        open_network(settings)
    assert str(info.value).startswith("pay: credits need a Nosana API key: set NOSANA_API_KEY")
    assert "Account → API Keys" in str(info.value) and "--pay wallet" in str(info.value)
    spaced = Settings.from_env(env(tmp_path, NOSANA_NETWORK="mainnet",
                                   NOSANA_API_KEY="nos_a b"))
    with pytest.raises(SettingsError, match="holds spaces") as bad:
        open_network(spaced)
    assert "nos_a" not in str(bad.value)


async def test_mainnet_with_a_key_is_nosanas_api_with_no_wallet(tmp_path: Path) -> None:
    settings = Settings.from_env(env(tmp_path, NOSANA_NETWORK="mainnet", NOSANA_API_KEY=KEY,
                                     NOSANA_WALLET=str(tmp_path / "no-such-wallet.json")))
    network = open_network(settings)
    try:
        assert isinstance(network, ApiNetwork) and network.wallet is None
        assert network.pays_with == "credits" and network.name == "mainnet"
        assert network.base_url == "https://dashboard.k8s.prd.nos.ci"
        assert network.signing_url == "https://client-manager.k8s.prd.nosana.com"
        assert network.node_url("N") == "https://N.node.k8s.prd.nos.ci"
        assert network.service_domain() == "node.k8s.prd.nos.ci"
        assert KEY not in repr(network)
    finally:
        await network.aclose()
    devnet = credits_network(settings.with_overrides(network="devnet"))
    assert devnet.base_url == "https://dashboard.k8s.dev.nos.ci"
    assert devnet.signing_url == "https://client-manager.k8s.dev.nosana.com"
    await devnet.aclose()


async def test_pay_wallet_with_a_key_set_is_the_jobs_program(tmp_path: Path) -> None:
    from nosana_magic.network.solana import SolanaNetwork
    from nosana_magic.wallet import Wallet

    wallet = tmp_path / "wallet.json"
    wallet.write_text(json.dumps(list(bytes(Wallet.generate().keypair))))
    wallet.chmod(0o600)
    settings = Settings.from_env(env(tmp_path, NOSANA_NETWORK="mainnet", NOSANA_API_KEY=KEY,
                                     NOSANA_PAY="wallet", NOSANA_WALLET=str(wallet)))
    network = open_network(settings)
    try:
        assert isinstance(network, SolanaNetwork) and network.pays_with == "wallet"
        assert KEY not in repr(network)
    finally:
        await network.aclose()
