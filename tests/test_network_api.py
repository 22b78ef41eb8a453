"""ApiNetwork over the devnode's ledger and IPFS; the local default; open_network."""

from __future__ import annotations

import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nosana_magic.devnode import DevNode
from nosana_magic.host import HostClient, Retry
from nosana_magic.network import JobState, NetworkError, open_network
from nosana_magic.network.api import API_AUTH_MESSAGE, ApiNetwork
from nosana_magic.network.local import (
    LOCAL_WALLET_FILE,
    LocalNetwork,
    check_local_market,
    local_network,
)
from nosana_magic.network.markets import UnknownMarketError
from nosana_magic.protocol import verify_auth_header
from nosana_magic.settings import Settings
from nosana_magic.wallet import Wallet

from .conftest import PLACEHOLDER, list_placeholder, network_for, serve_app
from .waiting import PATIENCE

FAST_RETRY = Retry(first=0.02, cap=0.1, attempts=50, total=PATIENCE)


@pytest.fixture
async def network(devnode: DevNode) -> AsyncIterator[ApiNetwork]:
    net = network_for(devnode, retry=FAST_RETRY)
    yield net
    await net.aclose()


# --------------------------------------------------------------------------- markets, IPFS


async def test_markets_by_list_slug_and_address(network: ApiNetwork) -> None:
    markets = await network.markets()
    assert [m.slug for m in markets] == ["local-cpu", "local-gpu"]
    gpu = markets[1]
    assert gpu.price_per_second == 115 and gpu.job_timeout == 86_400
    assert gpu.idle_hosts == 1 and gpu.network_fee_pct == 10.0
    assert await network.market("local-gpu") == gpu
    assert await network.market(gpu.address) == gpu


async def test_unknown_market_names_the_known_ones(network: ApiNetwork) -> None:
    with pytest.raises(NetworkError) as info:
        await network.market("nvidia-9090")
    assert str(info.value) == (
        "local network: unknown market 'nvidia-9090' (known: local-cpu, local-gpu)"
    )


@pytest.mark.parametrize("ref", ["local-cpu/../local-gpu", "local-cpu/..%2Flocal-gpu",
                                 "../markets/local-gpu", "local gpu", "local-cpu?x=1",
                                 "local-cpu#frag", "./local-gpu", "local-cpu\\..\\local-gpu"])
async def test_a_market_name_that_is_not_a_name_is_refused(network: ApiNetwork, ref: str,
                                                           ) -> None:
    # Put into the URL path as it was, "local-cpu/../local-gpu" asked for local-gpu.
    with pytest.raises(UnknownMarketError) as info:
        await network.market(ref)
    assert "is not a market name" in str(info.value) and len(str(info.value).splitlines()) == 1
    with pytest.raises(UnknownMarketError):
        check_local_market(ref)
    local = LocalNetwork(network.base_url, Wallet.generate(),
                         node_url_template=network.node_url_template)
    try:
        with pytest.raises(UnknownMarketError):
            await local.market(ref)
    finally:
        await local.aclose()


async def test_every_value_goes_into_a_url_path_as_one_segment() -> None:
    seen: list[str] = []

    async def record(request: Request) -> Response:
        seen.append(request.scope["raw_path"].decode())
        return JSONResponse({"address": "J", "state": "QUEUED"}, status_code=200)

    app = Starlette(routes=[Route("/{rest:path}", record, methods=["GET", "POST"])])
    async with serve_app(app) as url:
        net = ApiNetwork(url, Wallet.generate(), node_url_template=url + "/node/{node}",
                         retry=FAST_RETRY)
        try:
            await net.job("a/../b")
            await net.stop("x/../../api/markets")
            await net.fetch("Qm../../api")
        finally:
            await net.aclose()
        assert net.node_url("n/../x") == url + "/node/n%2F..%2Fx"
        host = HostClient(url, "j/../k", Wallet.generate(), retry=FAST_RETRY)
        try:
            await host.stop(timeout=5)
        finally:
            await host.aclose()
    assert seen == ["/api/jobs/a%2F..%2Fb", "/api/jobs/x%2F..%2F..%2Fapi%2Fmarkets/stop",
                    "/ipfs/Qm..%2F..%2Fapi", "/job/j%2F..%2Fk/stop"]


async def test_pin_and_fetch_round_trip(devnode: DevNode, network: ApiNetwork) -> None:
    cid = await network.pin(PLACEHOLDER)
    assert cid.startswith("Qm") and cid in devnode.ipfs
    assert await network.fetch(cid) == PLACEHOLDER


# --------------------------------------------------------------------------- jobs


async def test_post_job_and_watch_react_within_the_poll_interval(
    devnode: DevNode, network: ApiNetwork
) -> None:
    devnode.config.pickup_delay = None  # a host takes it once the watch has seen it queued
    devnode.config.results_window = 1.0  # the stopped job's: nobody collects it
    job = await list_placeholder(network, timeout=60)
    seen: list[tuple[JobState, float]] = []
    async for info in network.watch(job):
        seen.append((info.state, time.time()))
        if info.state is JobState.QUEUED:
            devnode.config.pickup_delay = 0.05
        if info.state is JobState.RUNNING:
            assert info.node in {h.address for h in devnode.hosts}
            assert info.project == network.wallet.address and info.timeout == 60
            assert info.ipfs_job and info.time_start
            await network.stop(job)
    states = [state for state, _ in seen]
    assert states == [JobState.QUEUED, JobState.RUNNING, JobState.STOPPED]
    started = devnode.job(job).started_at
    assert started is not None
    # The RUNNING observation follows the ledger change by about one poll interval (0.1 s);
    # polling every few seconds would show as seconds.
    assert seen[1][1] - started < 2.0


async def test_stop_while_queued_delists(devnode: DevNode, network: ApiNetwork) -> None:
    devnode.config.pickup_delay = None
    job = await list_placeholder(network)
    assert (await network.job(job)).state is JobState.QUEUED
    await network.stop(job)
    info = await network.job(job)
    assert info.state is JobState.STOPPED and info.node is None
    with pytest.raises(NetworkError, match=r"POST /api/jobs/.*/stop: 400 .*already ended"):
        await network.stop(job)


async def test_extend_raises_the_timeout(devnode: DevNode, network: ApiNetwork) -> None:
    devnode.config.pickup_delay = None
    job = await list_placeholder(network, timeout=60)
    await network.extend(job, 90)
    assert (await network.job(job)).timeout == 150
    await network.stop(job)


async def test_ledger_errors_name_the_route_and_the_message(network: ApiNetwork) -> None:
    cid = await network.pin(PLACEHOLDER)
    market = await network.market("local-cpu")
    with pytest.raises(NetworkError) as info:
        await network.post(cid, market, 10**7)
    assert str(info.value) == (
        "local network: POST /api/jobs/list: 400 timeout 10000000 s exceeds the market's "
        "job timeout (86400 s)"
    )
    with pytest.raises(NetworkError, match=r"GET /api/jobs/nope: 404 job not found: nope"):
        await network.job("nope")


async def test_only_the_project_may_stop_a_job(devnode: DevNode, network: ApiNetwork) -> None:
    devnode.config.pickup_delay = None
    job = await list_placeholder(network)
    other = network_for(devnode)
    with pytest.raises(NetworkError, match="403 only the job's project may do this"):
        await other.stop(job)
    await other.aclose()
    await network.stop(job)


# --------------------------------------------------------------------------- a tiny ledger


def _tiny_ledger(calls: list[dict[str, Any]], *, markets_fail: int = 0) -> Starlette:
    state = {"markets_fail": markets_fail}
    market = {"address": "M1", "slug": "m", "name": "M", "nos_job_price_per_second": 0.0001,
              "job_timeout": 3600, "network_fee_percentage": 0}

    async def markets(request: Request) -> Response:
        calls.append({"route": "markets"})
        if state["markets_fail"] > 0:
            state["markets_fail"] -= 1
            return Response("<html>bad gateway</html>", status_code=503)
        return JSONResponse([market])

    async def post(request: Request) -> Response:
        calls.append({"route": "list", "headers": dict(request.headers),
                      "body": await request.json()})
        return JSONResponse({"error": "ledger on fire"}, status_code=500)

    async def job(request: Request) -> Response:
        # Started long ago and never ending: watch must give up.
        return JSONResponse({"address": "J", "state": "RUNNING", "node": "N", "market": "M1",
                             "project": "P", "timeout": 10, "timeStart": int(time.time()) - 900,
                             "timeEnd": None, "ipfsJob": None, "ipfsResult": None,
                             "price": 100})

    return Starlette(routes=[
        Route("/api/markets/", markets, methods=["GET"]),
        Route("/api/jobs/list", post, methods=["POST"]),
        Route("/api/jobs/{job}", job, methods=["GET"]),
    ])


async def test_reads_retry_through_5xx_with_backoff() -> None:
    calls: list[dict[str, Any]] = []
    async with serve_app(_tiny_ledger(calls, markets_fail=2)) as url:
        net = ApiNetwork(url, Wallet.generate(), node_url_template=url + "/node/{node}",
                         retry=FAST_RETRY)
        [market] = await net.markets()
        assert len(calls) == 3
        assert market.price_per_second == 100  # 0.0001 NOS/s in base units
        await net.aclose()


async def test_listing_is_signed_and_never_sent_twice() -> None:
    calls: list[dict[str, Any]] = []
    async with serve_app(_tiny_ledger(calls)) as url:
        wallet = Wallet.generate()
        net = ApiNetwork(url, wallet, node_url_template=url + "/node/{node}", retry=FAST_RETRY)
        [market] = await net.markets()
        with pytest.raises(NetworkError, match="POST /api/jobs/list: 500 ledger on fire"):
            await net.post("QmCid", market, 60, node="N1")
        posts = [c for c in calls if c["route"] == "list"]
        assert len(posts) == 1  # a second listing would be a second job
        headers = posts[0]["headers"]
        assert headers["x-user-id"] == wallet.address
        assert headers["authorization"].startswith(API_AUTH_MESSAGE + ":")
        verify_auth_header(headers["authorization"], wallet.address, expiry_s=60)
        assert posts[0]["body"] == {"ipfsHash": "QmCid", "market": "M1", "timeout": 60,
                                    "node": "N1"}
        await net.aclose()


async def test_watch_is_bounded_by_the_jobs_expiry() -> None:
    async with serve_app(_tiny_ledger([])) as url:
        net = ApiNetwork(url, Wallet.generate(), node_url_template=url + "/node/{node}")
        with pytest.raises(NetworkError, match=r"job J is still RUNNING .* after its expiry"):
            async for _info in net.watch("J"):
                pass
        await net.aclose()


def test_repr_and_node_urls_hold_no_credential() -> None:
    net = ApiNetwork("http://127.0.0.1:1", Wallet.generate(), pin_token="jwt-secret-value",
                     node_url_template="http://127.0.0.1:1/node/{node}")
    assert "jwt-secret-value" not in repr(net)
    assert net.node_url("ABC") == "http://127.0.0.1:1/node/ABC"
    assert net.service_domain() is None
    with pytest.raises(NetworkError, match=r"has no \{node\}"):
        ApiNetwork("http://x", Wallet.generate(), node_url_template="http://x/node")


# --------------------------------------------------------------------------- the local default


def test_local_network_with_a_configured_devnode(devnode: DevNode, tmp_path: Path) -> None:
    settings = Settings.from_env({}, devnode_url=devnode.url, data_dir=str(tmp_path))
    notices: list[str] = []
    net = local_network(settings, on_notice=notices.append)
    assert net.base_url == devnode.url and net.name == "local"
    assert net.node_url("N") == f"{devnode.url}/node/N"
    assert notices == []  # nothing was started
    key = tmp_path / LOCAL_WALLET_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "local network only" in net.wallet.source
    # The same wallet next time.
    assert local_network(settings).wallet.address == net.wallet.address


def test_open_network(devnode: DevNode, tmp_path: Path) -> None:
    settings = Settings.from_env({}, devnode_url=devnode.url, data_dir=str(tmp_path))
    assert isinstance(open_network(settings), ApiNetwork)
