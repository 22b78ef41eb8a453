"""SolanaNetwork against the fake cluster: markets, listing, tracking, stop, extend.

The fake (``tests/fakes``) is a real JSON-RPC server and WebSocket on loopback over LiteSVM,
with the jobs program emulated as docs/protocol.md §18 states it; balances are real SPL token
accounts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from nosana_magic import chain
from nosana_magic.network.base import JobInfo, JobState, Network
from nosana_magic.network.markets import MAINNET_MARKETS
from nosana_magic.network.solana import NODE_DOMAINS, SolanaNetwork
from nosana_magic.protocol import digest_to_cid
from nosana_magic.settings import Settings
from tests.fakes.solana_env import NOS, FakeSolana

from .waiting import PATIENCE

CID = "QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51"  # any CIDv0 will do here
A4090 = MAINNET_MARKETS["nvidia-4090"]


@pytest.fixture
def env() -> Iterator[FakeSolana]:
    with FakeSolana() as fake:
        fake.fund(sol=0.1, nos=10)
        yield fake


async def collect(net: SolanaNetwork, job: str, timeout: float = PATIENCE) -> list[JobInfo]:
    seen: list[JobInfo] = []

    async def run() -> None:
        async for info in net.watch(job):
            seen.append(info)

    await asyncio.wait_for(run(), timeout)
    return seen


def later(delay: float, fn: object, *args: object) -> asyncio.Task[None]:
    async def go() -> None:
        await asyncio.sleep(delay)
        fn(*args)  # type: ignore[operator]

    return asyncio.create_task(go())


# --------------------------------------------------------------------------- basics


def test_it_is_a_network() -> None:
    net = SolanaNetwork(FakeSolana().wallet)
    assert isinstance(net, Network)
    assert net.name == "mainnet"
    assert net.service_domain() == NODE_DOMAINS["mainnet"] == "node.k8s.prd.nos.ci"
    assert net.node_url("NodeX") == "https://NodeX.node.k8s.prd.nos.ci"
    devnet = SolanaNetwork(FakeSolana().wallet, cluster="devnet")
    assert devnet.node_url("N") == "https://N.node.k8s.dev.nos.ci"
    assert devnet.rpc_url == "https://api.devnet.solana.com"
    # Knobs reach the network through the settings (the only reader of the environment).
    custom = SolanaNetwork.from_settings(Settings.from_env({
        "NOSANA_NETWORK": "mainnet",
        "NOSANA_NODE_URL_TEMPLATE": "http://127.0.0.1:9/node/{node}",
        "NOSANA_RPC_URL": "http://127.0.0.1:8899",
        "NOSANA_PRIORITY_FEE": "1234",
        "NOSANA_COMMITMENT": "finalized",
    }), FakeSolana().wallet)
    assert custom.node_url("N") == "http://127.0.0.1:9/node/N"
    assert custom.ws_url == "ws://127.0.0.1:8900"
    assert custom.priority_fee_micro_lamports == 1234 and custom.commitment == "finalized"


def test_from_settings(env: FakeSolana, tmp_path: object) -> None:
    settings = Settings.from_env({}, network="devnet", rpc_url=env.rpc_url,
                                 node_url_template="http://127.0.0.1:1/node/{node}")
    net = SolanaNetwork.from_settings(settings, env.wallet)
    assert net.name == "devnet" and net.rpc_url == env.rpc_url
    assert net.cluster.jobs_program == chain.JOBS_PROGRAM_DEVNET
    assert net.node_url("N") == "http://127.0.0.1:1/node/N"


async def test_market_from_chain(env: FakeSolana) -> None:
    nodes = [Keypair().pubkey() for _ in range(2)]
    env.add_market("nvidia-4090", price=115, nodes=nodes, job_timeout=7200)
    env.add_market("nvidia-3090", price=80, nodes=0)
    net = env.network()
    market = await net.market("nvidia-4090")
    assert (market.address, market.slug) == (A4090, "nvidia-4090")
    assert market.price_per_second == 115 and market.job_timeout == 7200
    assert market.idle_hosts == 2
    assert market.network_fee_pct == 10.0  # unknown without the API: assume the old fee
    assert (await net.market(A4090)).slug == "nvidia-4090"
    listed = {m.slug: m for m in await net.markets()}
    assert set(listed) == {"nvidia-4090", "nvidia-3090"}  # the others have no account here
    assert listed["nvidia-3090"].idle_hosts == 0
    await net.aclose()


async def test_estimate_counts_run_rent_only_when_the_poster_creates_it(env: FakeSolana) -> None:
    env.add_market("nvidia-4090", nodes=1)
    env.add_market("nvidia-3090", nodes=0)
    net = env.network(priority_fee_micro_lamports=10_000)
    idle = await net.estimate(await net.market("nvidia-4090"), 3600)
    busy = await net.estimate(await net.market("nvidia-3090"), 3600)
    assert idle.rent_run == 1_726_080 and busy.rent_run == 0
    assert idle.rent_job == busy.rent_job == 2_561_280
    assert idle.signature_fees == 15_000 and idle.priority_fee == 2_030
    assert idle.nos_deposit == 115 * 3600
    await net.aclose()


async def test_dynamic_priority_fee_is_bounded(env: FakeSolana) -> None:
    net = env.network()
    env.rpc.priority_fees = [0, 0, 0]
    assert await net.priority_fee() == 10_000  # the floor
    env.rpc.priority_fees = [50_000, 70_000, 90_000]
    assert await net.priority_fee() == 70_000  # the median
    env.rpc.priority_fees = [10**9]
    assert await net.priority_fee() == 1_000_000  # the cap
    await net.aclose()


# --------------------------------------------------------------------------- posting


async def test_post_in_a_market_with_an_idle_node(env: FakeSolana) -> None:
    node = Keypair().pubkey()
    market_key = env.add_market("nvidia-4090", price=115, nodes=[node])
    net = env.network(priority_fee_micro_lamports=10_000)
    market = await net.market("nvidia-4090")
    sol_before = env.sol()
    listing = await net.post(CID, market, 3600)

    tx = env.chain.transactions[-1]
    assert tx.instructions == ["compute_budget.set_compute_unit_price", "jobs.list"]
    assert tx.compute_unit_price == 10_000
    assert set(tx.signers) == {env.wallet.address, listing.job, listing.run}
    assert tx.fee_payer == env.wallet.address and tx.signature == listing.tx
    accounts = tx.jobs[0]["accounts"]
    assert accounts["user"] == str(chain.nos_ata(env.wallet.public_key))
    assert accounts["vault"] == str(chain.market_vault(market_key))
    assert accounts["authority"] == accounts["payer"] == env.wallet.address

    # NOS escrowed in the vault; SOL: both rents, three signatures and the priority fee.
    vault = chain.market_vault(market_key)
    assert env.chain.nos(vault) == 115 * 3600
    assert env.nos() == 10 * NOS - 115 * 3600
    assert sol_before - env.sol() == 2_561_280 + 1_726_080 + 15_000 + 2_030

    info = await net.job(listing.job)
    assert info.state is JobState.RUNNING and info.node == str(node)
    assert info.project == env.wallet.address and info.timeout == 3600
    assert info.ipfs_job == CID and info.ipfs_result is None and info.price == 115
    assert info.extra["run"] == listing.run
    assert env.rpc.calls["getProgramAccounts"] == 0  # found at our own run address
    # The node left the queue.
    assert (await net.market("nvidia-4090")).idle_hosts == 0
    await net.aclose()


async def test_post_in_a_market_without_idle_nodes_then_a_node_takes_it(env: FakeSolana) -> None:
    market_key = env.add_market("nvidia-3090", price=80, nodes=0)
    net = env.network()
    listing = await net.post(CID, await net.market("nvidia-3090"), 600)
    assert (await net.job(listing.job)).state is JobState.QUEUED
    assert listing.run is not None
    assert env.chain.get(Pubkey.from_string(listing.run)) is None  # no run account yet
    assert env.chain.market(market_key).queue == [Pubkey.from_string(listing.job)]

    node = Keypair().pubkey()
    env.chain.node_work(market_key, node)
    info = await net.job(listing.job)
    assert info.state is JobState.RUNNING and info.node == str(node)
    assert env.rpc.calls["getProgramAccounts"] >= 1  # found through the memcmp lookup
    assert info.extra["run"] != listing.run
    await net.aclose()


async def test_assign_to_a_node(env: FakeSolana) -> None:
    nodes = [Keypair().pubkey() for _ in range(3)]
    env.add_market("nvidia-4090", nodes=nodes)
    net = env.network()
    listing = await net.post(CID, await net.market("nvidia-4090"), 600, node=str(nodes[2]))
    assert env.chain.transactions[-1].instructions[-1] == "jobs.assign"
    assert (await net.job(listing.job)).node == str(nodes[2])
    await net.aclose()


async def test_network_fee_goes_to_the_rewards_vault() -> None:
    with FakeSolana(network_fee_pct=10) as env:
        env.fund(sol=0.1, nos=10)
        env.add_market("nvidia-4090", price=100, nodes=1)
        net = env.network()
        await net.post(CID, await net.market("nvidia-4090"), 1000)
        assert env.chain.nos(env.chain.rewards_vault) == 10_000
        assert env.nos() == 10 * NOS - 100_000 - 10_000
        await net.aclose()


async def test_devnet_uses_the_devnet_program_and_mint() -> None:
    with FakeSolana("devnet") as env:
        env.fund(sol=0.1, nos=1)
        market_key = env.add_market(price=10, nodes=1)
        net = env.network()
        market = await net.market(str(market_key))
        listing = await net.post(CID, market, 60)
        job = env.chain.job(Pubkey.from_string(listing.job))
        assert job is not None
        assert env.chain.get(Pubkey.from_string(listing.job)).owner == chain.JOBS_PROGRAM_DEVNET  # type: ignore[union-attr]
        assert env.chain.nos(env.wallet.public_key) == NOS - 600
        await net.aclose()


# --------------------------------------------------------------------------- watching


async def test_watch_follows_the_job_to_its_result(env: FakeSolana) -> None:
    market_key = env.add_market("nvidia-3090", price=80, nodes=0)
    net = env.network(poll_interval_s=5.0)  # the account subscription must do the work
    listing = await net.post(CID, await net.market("nvidia-3090"), 600)
    job = Pubkey.from_string(listing.job)
    node = Keypair().pubkey()
    result = bytes(range(32))

    async def node_side() -> None:
        await asyncio.sleep(0.3)
        env.chain.node_work(market_key, node)
        await asyncio.sleep(0.3)
        env.chain.node_finish(job, result)

    task = asyncio.create_task(node_side())
    seen = await collect(net, listing.job)
    await task
    states = [info.state for info in seen]
    assert states[0] is JobState.QUEUED and states[-1] is JobState.COMPLETED
    assert seen[-1].ipfs_result == digest_to_cid(result)
    assert seen[-1].node == str(node) and seen[-1].time_end is not None
    assert env.rpc.calls["accountSubscribe"] == 1
    # Node paid for the time used, the rest refunded to the poster.
    assert (env.nos() or 0) + (env.chain.nos(node) or 0) == 10 * NOS
    await net.aclose()


async def test_watch_polls_when_there_is_no_websocket(env: FakeSolana) -> None:
    env.add_market("nvidia-4090", nodes=1)
    net = env.network(use_websocket=False, poll_interval_s=0.05)
    listing = await net.post(CID, await net.market("nvidia-4090"), 600)
    seen: list[JobInfo] = []

    async def follow() -> None:
        async for info in net.watch(listing.job):
            seen.append(info)
            if len(seen) == 1:  # the node finishes once the watch has seen it run
                env.chain.node_finish(Pubkey.from_string(listing.job))

    await asyncio.wait_for(follow(), PATIENCE)
    assert [i.state for i in seen] == [JobState.RUNNING, JobState.COMPLETED]
    assert env.rpc.calls["accountSubscribe"] == 0
    await net.aclose()


async def test_watch_of_a_node_that_quit(env: FakeSolana) -> None:
    env.add_market("nvidia-4090", nodes=1)
    net = env.network()
    listing = await net.post(CID, await net.market("nvidia-4090"), 600)
    later(0.2, env.chain.node_quit, Pubkey.from_string(listing.job))
    seen = await collect(net, listing.job)
    assert seen[-1].state is JobState.STOPPED
    await net.aclose()


async def test_watch_of_a_done_job_returns_at_once(env: FakeSolana) -> None:
    env.add_market("nvidia-4090", nodes=1)
    net = env.network()
    listing = await net.post(CID, await net.market("nvidia-4090"), 600)
    env.chain.node_finish(Pubkey.from_string(listing.job))
    seen = await collect(net, listing.job)
    assert [i.state for i in seen] == [JobState.COMPLETED]
    await net.aclose()


# --------------------------------------------------------------------------- stop / extend


async def test_stop_a_queued_job_delists_and_refunds(env: FakeSolana) -> None:
    market_key = env.add_market("nvidia-3090", price=80, nodes=0)
    net = env.network(priority_fee_micro_lamports=0)
    sol_before = env.sol()
    listing = await net.post(CID, await net.market("nvidia-3090"), 600)
    assert env.nos() == 10 * NOS - 48_000

    watching = asyncio.create_task(collect(net, listing.job))
    await asyncio.sleep(0.3)
    await net.stop(listing.job)
    assert env.chain.transactions[-1].instructions[-1] == "jobs.delist"
    assert env.nos() == 10 * NOS  # full refund
    assert env.chain.get(Pubkey.from_string(listing.job)) is None  # closed: rent back
    assert sol_before - env.sol() == 2 * 15_000 - 10_000  # only the fees are gone
    assert env.chain.market(market_key).queue == []
    seen = await watching
    assert seen[-1].state is JobState.STOPPED and seen[-1].extra.get("closed")
    await net.stop(listing.job)  # a closed job: nothing to do
    await net.aclose()


async def test_stop_a_running_job_ends_it_and_pays_the_node(env: FakeSolana) -> None:
    node = Keypair().pubkey()
    env.add_market("nvidia-4090", price=100, nodes=[node])
    net = env.network(result_grace_s=5.0)
    listing = await net.post(CID, await net.market("nvidia-4090"), 3600)
    assert env.chain.nos(node) is None  # the node has no NOS account yet

    await net.stop(listing.job)
    tx = env.chain.transactions[-1]
    assert tx.instructions == ["compute_budget.set_compute_unit_price",
                               "associated_token.create_idempotent", "jobs.end"]
    info = await net.job(listing.job)
    assert info.state is JobState.COMPLETED and info.ipfs_result is None
    paid = env.chain.nos(node)
    assert paid is not None and paid <= 100 * 2  # at most a second or two of work
    assert (env.nos() or 0) + paid == 10 * NOS
    assert listing.run is not None
    assert env.chain.get(Pubkey.from_string(listing.run)) is None  # run closed

    # Ended by its project: watch waits (bounded) for the node's result.
    result = bytes([7] * 32)
    later(0.3, env.chain.node_complete, Pubkey.from_string(listing.job), result)
    seen = await collect(net, listing.job)
    assert seen[-1].ipfs_result == digest_to_cid(result)
    await net.stop(listing.job)  # done: nothing to do
    assert env.chain.transactions[-1] is tx
    await net.aclose()


async def test_watch_gives_up_on_a_missing_result_after_the_grace(env: FakeSolana) -> None:
    env.add_market("nvidia-4090", nodes=1)
    net = env.network(result_grace_s=0.3)
    listing = await net.post(CID, await net.market("nvidia-4090"), 600)
    await net.stop(listing.job)
    seen = await collect(net, listing.job)
    assert [i.state for i in seen] == [JobState.COMPLETED]
    await net.aclose()


async def test_extend_raises_the_total_timeout_and_charges_the_difference(
    env: FakeSolana,
) -> None:
    market_key = env.add_market("nvidia-4090", price=100, nodes=1)
    net = env.network()
    listing = await net.post(CID, await net.market("nvidia-4090"), 600)
    await net.extend(listing.job, 300)
    info = await net.job(listing.job)
    assert info.timeout == 900
    assert env.chain.transactions[-1].jobs[0]["args"]["timeout"] == 900
    assert env.chain.nos(chain.market_vault(market_key)) == 100 * 900
    assert env.nos() == 10 * NOS - 100 * 900
    await net.aclose()
