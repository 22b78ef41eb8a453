"""Every way listing on the real network can fail says what is wrong, and spends nothing.

No wallet, not enough SOL, not enough NOS, no NOS token account, an unknown market, the RPC
down, a transaction the program rejects (its log text shown), no Pinata JWT, and secrets
(the RPC URL's key, the wallet) never in a message.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from nosana_magic import chain
from nosana_magic.network.base import Market, NetworkError
from nosana_magic.network.ipfs import IpfsError, PinataClient
from nosana_magic.network.markets import MAINNET_MARKETS, UnknownMarketError
from nosana_magic.network.solana import (
    InsufficientFundsError,
    SolanaNetwork,
    TransactionFailedError,
)
from nosana_magic.settings import Settings
from nosana_magic.transport import Retry
from nosana_magic.wallet import WalletError
from tests.fakes.solana_env import NOS, FakeSolana

from .waiting import PATIENCE

CID = "QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51"


@pytest.fixture
def env() -> Iterator[FakeSolana]:
    with FakeSolana() as fake:
        fake.add_market("nvidia-4090", price=115, nodes=1, job_timeout=7200)
        yield fake


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nothing_sent(env: FakeSolana) -> bool:
    return env.rpc.calls["sendTransaction"] == 0 and not env.chain.transactions


# --------------------------------------------------------------------------- wallet


def test_no_wallet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.nosana/nosana_key.json
    monkeypatch.delenv("NOSANA_WALLET", raising=False)
    settings = Settings.from_env({}, network="mainnet")
    with pytest.raises(WalletError, match="no wallet: set NOSANA_WALLET"):
        SolanaNetwork.from_settings(settings)


def test_a_missing_wallet_file(tmp_path: Path) -> None:
    settings = Settings.from_env({}, network="mainnet", wallet=str(tmp_path / "key.json"))
    with pytest.raises(WalletError, match="does not exist"):
        SolanaNetwork.from_settings(settings)


def test_wallet_from_settings_file(tmp_path: Path, env: FakeSolana) -> None:
    environ = env.environment(tmp_path)
    settings = Settings.from_env(environ)
    net = SolanaNetwork.from_settings(settings)
    assert net.wallet.address == env.wallet.address
    assert net.name == "mainnet" and net.rpc_url == env.rpc_url
    assert net.pinata.has_credential and net.pinata.api_url == env.pinata_url


def test_local_is_not_a_solana_network() -> None:
    with pytest.raises(NetworkError, match="not a Solana cluster"):
        SolanaNetwork.from_settings(Settings.from_env({}), FakeSolana().wallet)


# --------------------------------------------------------------------------- funds


async def test_not_enough_sol(env: FakeSolana) -> None:
    env.fund(sol=0.002, nos=10)
    net = env.network(priority_fee_micro_lamports=1_000_000)
    with pytest.raises(InsufficientFundsError) as err:
        await net.post(CID, await net.market("nvidia-4090"), 3600)
    message = str(err.value)
    short = f"{env.wallet.address[:4]}…{env.wallet.address[-4:]}"
    # rent 2 561 280 + 1 726 080, fees 15 000 + 203 000, reserve 890 880 lamports
    assert message == (
        f"wallet {short} has 0.002 SOL; listing a 1h job in nvidia-4090 needs about 0.0054 SOL "
        "(rent 0.00429 SOL, refunded; fees 0.000218 SOL; keep 0.000891 SOL in the wallet). "
        f"Send at least 0.0034 SOL to {env.wallet.address} on mainnet"
    )
    assert nothing_sent(env)
    await net.aclose()


async def test_not_enough_nos(env: FakeSolana) -> None:
    env.fund(sol=0.1, nos=0.2)
    net = env.network()
    market = await net.market("nvidia-4090")
    with pytest.raises(InsufficientFundsError) as err:
        await net.post(CID, market, 3600)
    # 115 units/s x 3600 s = 0.414 NOS, + the assumed 10 % fee = 0.4554 NOS
    assert "has 0.2 NOS; listing a 1h job in nvidia-4090 needs 0.4554 NOS" in str(err.value)
    assert "Send at least 0.2554 NOS" in str(err.value)
    assert nothing_sent(env) and env.nos() == int(0.2 * NOS)
    await net.aclose()


async def test_no_nos_token_account(env: FakeSolana) -> None:
    env.fund(sol=0.1, nos=None)
    net = env.network()
    with pytest.raises(InsufficientFundsError) as err:
        await net.post(CID, await net.market("nvidia-4090"), 600)
    ata = chain.nos_ata(env.wallet.public_key)
    assert "has no NOS token account" in str(err.value)
    assert str(ata) in str(err.value) and str(chain.NOS_MINT_MAINNET) in str(err.value)
    assert nothing_sent(env)
    await net.aclose()


async def test_extend_checks_nos_too(env: FakeSolana) -> None:
    env.fund(sol=0.1, nos=0.1)
    net = env.network()
    listing = await net.post(CID, await net.market("nvidia-4090"), 60)
    with pytest.raises(InsufficientFundsError, match=r"extending the job by 1h needs 0\.4554 NOS"):
        await net.extend(listing.job, 3600)
    await net.aclose()


# --------------------------------------------------------------------------- markets


async def test_unknown_market_slug(env: FakeSolana) -> None:
    net = env.network()
    with pytest.raises(UnknownMarketError) as err:
        await net.market("nvidia-490")
    assert "did you mean nvidia-4090" in str(err.value)
    await net.aclose()


async def test_market_without_an_account(env: FakeSolana) -> None:
    net = env.network()
    with pytest.raises(NetworkError, match=r"market nvidia-h100 \(Crop49.*\) does not exist on "
                                           "mainnet"):
        await net.market("nvidia-h100")
    await net.aclose()


async def test_an_address_that_is_not_a_market(env: FakeSolana) -> None:
    env.fund(sol=0.1, nos=1)
    net = env.network()
    with pytest.raises(NetworkError, match="is not a Nosana market on mainnet"):
        await net.market(env.wallet.address)
    await net.aclose()


async def test_timeout_longer_than_the_market_allows(env: FakeSolana) -> None:
    env.fund()
    net = env.network()
    with pytest.raises(NetworkError, match="longer than market nvidia-4090's maximum of 2h"):
        await net.post(CID, await net.market("nvidia-4090"), 3 * 3600)
    assert nothing_sent(env)
    await net.aclose()


async def test_assign_to_a_node_that_is_not_waiting(env: FakeSolana) -> None:
    env.fund()
    net = env.network()
    with pytest.raises(NetworkError, match="is not waiting in market nvidia-4090's queue"):
        await net.post(CID, await net.market("nvidia-4090"), 60, node=str(Keypair().pubkey()))
    await net.aclose()


# --------------------------------------------------------------------------- the RPC


async def test_rpc_down_names_the_host_not_the_key() -> None:
    port = free_port()
    key = "sk-live-0123456789"
    wallet = FakeSolana().wallet
    net = SolanaNetwork(wallet, rpc_url=f"http://127.0.0.1:{port}/rpc?api-key={key}",
                        markets_api="off", retry=Retry(first=0.01, attempts=3),
                        request_timeout_s=PATIENCE)
    start = time.monotonic()
    with pytest.raises(NetworkError) as err:
        await net.market("nvidia-4090")
    message = str(err.value)
    assert f"Solana RPC 127.0.0.1:{port} is not answering (reading market nvidia-4090" in message
    assert "connection refused or unreachable, 3 attempts" in message
    assert key not in message and key not in repr(net) and "api-key" not in message
    assert err.value.__cause__ is None and err.value.__context__ is None
    assert time.monotonic() - start < PATIENCE  # 3 attempts 0.01 s apart, not more
    await net.aclose()


async def test_transient_rpc_failures_are_retried(env: FakeSolana) -> None:
    net = env.network()
    env.rpc.fail("getMultipleAccounts", 503, times=2)
    assert (await net.market("nvidia-4090")).price_per_second == 115
    env.rpc.fail("getMultipleAccounts", 429, times=3)
    with pytest.raises(NetworkError, match=r"is not answering .*HTTP 429, 3 attempts"):
        await net.market("nvidia-4090")
    await net.aclose()


async def test_an_rpc_that_refuses_its_key(env: FakeSolana) -> None:
    net = env.network()
    env.rpc.fail("*", 401, times=5)
    with pytest.raises(NetworkError, match=r"HTTP 401 \(the RPC URL's key is missing or wrong\)"):
        await net.market("nvidia-4090")
    assert env.rpc.faults_left("*") == 4  # refused at once: no retry with a wrong key
    await net.aclose()


async def test_an_rpc_without_get_program_accounts(env: FakeSolana) -> None:
    env.fund()
    env.add_market("nvidia-3090", nodes=0)
    net = env.network()
    listing = await net.post(CID, await net.market("nvidia-3090"), 60)
    env.rpc.disabled.add("getProgramAccounts")
    with pytest.raises(NetworkError, match="does not serve getProgramAccounts"):
        await net.job(listing.job)
    await net.aclose()


async def test_a_confirmation_that_never_comes_is_bounded(env: FakeSolana) -> None:
    env.fund()
    net = env.network(confirm_timeout_s=0.5)
    env.rpc.unconfirmed = True
    start = time.monotonic()
    with pytest.raises(NetworkError) as err:
        await net.post(CID, await net.market("nvidia-4090"), 60)
    assert "not confirmed within 0.5 s; job " in str(err.value)
    assert "It may still land" in str(err.value)
    assert time.monotonic() - start < PATIENCE  # the 0.5-s bound, not an endless wait
    await net.aclose()


async def test_an_unknown_job(env: FakeSolana) -> None:
    net = env.network()
    with pytest.raises(NetworkError, match=r"no job \w+ on mainnet"):
        await net.job(str(Keypair().pubkey()))
    with pytest.raises(NetworkError, match="is not a Solana address"):
        await net.job("nope")
    await net.aclose()


# --------------------------------------------------------------------------- transactions


async def test_a_rejected_transaction_carries_the_program_log(
    env: FakeSolana, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.fund(sol=0.1, nos=0.01)
    net = env.network()

    async def skip_check(**kwargs: object) -> None:
        return None

    monkeypatch.setattr(net, "check_funds", skip_check)  # let the program find out
    sol = env.sol()
    with pytest.raises(TransactionFailedError) as err:
        await net.post(CID, await net.market("nvidia-4090"), 3600)
    assert str(err.value) == ("listing the job in nvidia-4090 failed on mainnet: "
                              "insufficient funds")
    assert "Program log: Error: insufficient funds" in err.value.logs
    assert env.sol() == sol and env.nos() == int(0.01 * NOS)  # all or nothing
    await net.aclose()


async def test_an_anchor_error_is_shown_by_name(env: FakeSolana) -> None:
    env.fund()
    net = env.network()
    listing = await net.post(CID, await net.market("nvidia-4090"), 600)  # running at once
    market = env.chain.market(Pubkey.from_string(MAINNET_MARKETS["nvidia-4090"]))
    delist = chain.delist_instruction(
        job=listing.job, market=MAINNET_MARKETS["nvidia-4090"],
        deposit=chain.nos_ata(env.wallet.public_key), payer=env.wallet.public_key,
        vault=market.vault, authority=env.wallet.public_key,
    )
    with pytest.raises(TransactionFailedError) as err:
        await net.rpc.send([delist], [env.wallet.keypair], "delisting the job",
                           payer=env.wallet.public_key, fee=0)
    assert str(err.value) == (
        "delisting the job failed on mainnet: MarketInWrongState (6015): "
        "This market does not have the right status (account: market)"
    )
    assert err.value.signature is not None
    await net.aclose()


async def test_a_job_of_another_project_cannot_be_stopped(env: FakeSolana) -> None:
    env.fund()
    owner = env.network()
    listing = await owner.post(CID, await owner.market("nvidia-4090"), 600)
    other = FakeSolana().wallet
    env.fund(owner=other.public_key)
    stranger = env.network(wallet=other)
    with pytest.raises(NetworkError, match="belongs to project"):
        await stranger.stop(listing.job)
    with pytest.raises(NetworkError, match="belongs to project"):
        await stranger.extend(listing.job, 60)
    await owner.aclose()
    await stranger.aclose()


async def test_a_done_job_cannot_be_extended(env: FakeSolana) -> None:
    env.fund()
    net = env.network()
    listing = await net.post(CID, await net.market("nvidia-4090"), 600)
    env.chain.node_finish(Pubkey.from_string(listing.job))
    with pytest.raises(NetworkError, match=r"cannot extend job \w+: it is COMPLETED"):
        await net.extend(listing.job, 60)
    await net.aclose()


# --------------------------------------------------------------------------- IPFS


async def test_no_pinata_jwt(env: FakeSolana) -> None:
    pinata = PinataClient(None, api_url=env.pinata_url)
    net = env.network(pinata=pinata)
    with pytest.raises(IpfsError, match="no IPFS upload credential: set NOSANA_PINATA_JWT"):
        await net.pin({"version": "0.1"})
    assert env.pinata.pins == 0
    await net.aclose()


def test_no_secret_in_reprs(env: FakeSolana) -> None:
    net = env.network(rpc_url=f"{env.rpc_url}/?api-key=hunter2")
    text = repr(net)
    assert "hunter2" not in text and env.wallet.address in text
    assert str(list(env.wallet.keypair.to_bytes())) not in text
    assert str(env.wallet.keypair) not in text


def test_market_cost_agrees_with_the_estimate() -> None:
    market = Market(address="x", slug="x", price_per_second=115, network_fee_pct=10)
    from nosana_magic.network.markets import estimate

    assert market.cost(7200) == pytest.approx(estimate(115, 7200, network_fee_pct=10).nos)


@pytest.mark.parametrize(("where", "request_line"), [
    ("/?api-key={key}", "> GET /?*** HTTP/1.1"),  # the key in the query
    ("/v2/{key}", "> GET /v2/*** HTTP/1.1"),  # the key in the path
])
async def test_the_rpc_key_is_masked_in_http_library_logs(
    env: FakeSolana, caplog: pytest.LogCaptureFixture, where: str, request_line: str
) -> None:
    key = "key-0f9e8d7c6b5a"
    env.fund()
    net = env.network(rpc_url=env.rpc_url + where.format(key=key))
    with caplog.at_level(logging.DEBUG):
        listing = await net.post(CID, await net.market("nvidia-4090"), 60)
        async for info in net.watch(listing.job):  # opens the WebSocket, with the key
            if env.rpc.calls["accountSubscribe"] and not info.state.done:
                env.chain.node_finish(Pubkey.from_string(listing.job))
            elif not info.state.done:
                await asyncio.sleep(0.2)
                env.chain.node_finish(Pubkey.from_string(listing.job))
    assert env.rpc.calls["accountSubscribe"] == 1
    assert "HTTP Request: POST" in caplog.text  # the libraries do log each request
    assert request_line in caplog.text
    assert key not in caplog.text
    await net.aclose()


async def test_watch_of_a_job_its_node_abandoned_is_bounded(env: FakeSolana) -> None:
    env.fund()
    net = env.network(overdue_grace_s=0.5, poll_interval_s=0.1)
    listing = await net.post(CID, await net.market("nvidia-4090"), 1)
    start = time.monotonic()
    with pytest.raises(NetworkError, match=r"still RUNNING on mainnet \w+ after its timeout"):
        async for _info in net.watch(listing.job):
            pass
    assert time.monotonic() - start < PATIENCE  # the 1-s timeout and 0.5-s grace, no more
    await net.aclose()
