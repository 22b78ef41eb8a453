"""A listing whose answer is lost (the ledger made the job, then answered 500, or answered too
late): the job may exist, running and paid for until its timeout. The client finds it and stops
it, or says plainly that it may exist and how to stop it; it never lists a second time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nosana_magic import machine, runner
from nosana_magic.devnode import DevNode
from nosana_magic.errors import OutcomeUnknown
from nosana_magic.job import run_confidential
from nosana_magic.network.api import ApiNetwork
from nosana_magic.network.base import Listing, Market
from nosana_magic.transport import Retry
from nosana_magic.wallet import Wallet

from .conftest import definition, network_for, op, processes_of_jobs, serve_app, text
from .waiting import PATIENCE, wait_until


@pytest.fixture
def net(devnode: DevNode) -> Iterator[ApiNetwork]:
    network = network_for(devnode)
    yield network
    runner.run_sync(network.aclose(), timeout=10)


def _only_job(devnode: DevNode) -> Any:
    assert len(devnode.ledger.jobs) == 1, "listed once, never twice"
    return next(iter(devnode.ledger.jobs.values()))


def test_a_500_after_the_listing_finds_the_job_and_stops_it(devnode: DevNode,
                                                             net: ApiNetwork) -> None:
    devnode.config.faults.list_fails_after_listing = 1
    job = run_confidential(text(definition(op("a", "echo up; sleep 300"))), network=net,
                           env={}, timeout=600)
    assert job.done and job.status == "failed"
    made = _only_job(devnode)
    assert job.address == made.address
    assert str(job.error).endswith(
        f"it may have taken effect. The job was listed all the same ({made.address}): "
        "it was stopped")
    assert "POST /api/jobs/list: 500" in str(job.error)
    assert len(str(job.error).splitlines()) == 1
    assert made.state.done  # not left running (and paid for) until its 10 minutes are up
    wait_until(lambda: not processes_of_jobs({made.address}), what="its processes gone")


def test_an_answer_later_than_the_request_timeout_is_a_lost_answer_too(
        devnode: DevNode) -> None:
    devnode.config.faults.list_answer_delay = 3.0
    network = network_for(devnode)
    network.request_timeout = 1.0
    try:
        job = run_confidential(text(definition(op("a", "sleep 300"))), network=network,
                               env={}, timeout=600)
    finally:
        runner.run_sync(network.aclose(), timeout=10)
        devnode.config.faults.list_answer_delay = 0.0
    made = _only_job(devnode)
    assert job.status == "failed" and job.address == made.address
    assert "no answer after the request was sent (ReadTimeout)" in str(job.error)
    assert str(job.error).endswith("it was stopped")
    wait_until(lambda: made.state.done, what="the job stopped")


def _ledger_that_lists_then_fails(searchable: bool) -> Starlette:
    """A Nosana-API-shaped ledger whose listing answers 500; with ``searchable``, its job
    search shows nothing (the 500 came before anything was made), else it has no search."""

    market = {"address": "M1", "slug": "m1", "job_price": 1, "job_timeout": 3600,
              "idle_hosts": 1}

    async def markets(request: Request) -> Response:
        return JSONResponse([market])

    async def one_market(request: Request) -> Response:
        return JSONResponse(market)

    async def pin(request: Request) -> Response:
        return JSONResponse({"IpfsHash": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"})

    async def listing(request: Request) -> Response:
        return JSONResponse({"error": "backend on fire"}, status_code=502)

    async def search(request: Request) -> Response:
        return JSONResponse([]) if searchable else JSONResponse({"error": "no"}, status_code=404)

    return Starlette(routes=[
        Route("/api/markets/", markets), Route("/api/markets/{m}/", one_market),
        Route("/pinning/pinJSONToIPFS", pin, methods=["POST"]),
        Route("/api/jobs/list", listing, methods=["POST"]), Route("/api/jobs", search),
    ])


@pytest.mark.parametrize("searchable", [True, False])
async def test_where_no_job_is_found_it_says_so_plainly(searchable: bool,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "LOST_LISTING_WAIT_S", 1.0)
    async with serve_app(_ledger_that_lists_then_fails(searchable)) as url:
        wallet = Wallet.generate()
        network = ApiNetwork(url, wallet, node_url_template=url + "/node/{node}",
                             retry=Retry(first=0.05, cap=0.2, attempts=1000, total=PATIENCE))
        job = run_confidential(text(definition(op("a", "true"))), network=network, env={},
                               timeout=600, market="m1", wait=False)
        await job.wait_async(PATIENCE)
        await network.aclose()
    message = str(job.error)
    assert job.status == "failed" and job.address is None
    assert message.startswith("local network: POST /api/jobs/list: 502 backend on fire: it may "
                              "have taken effect. ")
    if searchable:
        assert message.endswith("No new job of this wallet appeared on the ledger within 1 s: "
                                "most likely nothing was listed")
    else:
        assert message.endswith(
            "This network cannot be searched for it: if it was listed, it runs until its "
            f"timeout (10m); look for a job of wallet {wallet.address} and stop it with "
            "%nosana stop ADDRESS")


class _ChainLike(ApiNetwork):
    """A network that, as on chain, knows the job's address before sending, and whose
    confirmation never came: ``lands`` says whether the listing went through."""

    lands = True

    async def post(self, cid: str, market: Market, timeout_s: int, *,
                   node: str | None = None) -> Listing:
        job = (await super().post(cid, market, timeout_s, node=node)).job if self.lands else (
            Wallet.generate().address)
        raise OutcomeUnknown(f"listing the job: transaction not confirmed within 60 s; job {job}",
                             job=job)


@pytest.mark.parametrize("lands", [True, False])
def test_a_listing_whose_address_is_known_is_looked_up(devnode: DevNode, lands: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "LOST_LISTING_WAIT_S", 1.0)
    network = _ChainLike(devnode.url, Wallet.generate(),
                         node_url_template=devnode.node_url_template)
    network.lands = lands
    try:
        job = run_confidential(text(definition(op("a", "sleep 300"))), network=network,
                               env={}, timeout=600)
    finally:
        runner.run_sync(network.aclose(), timeout=10)
    message = str(job.error)
    assert job.status == "failed"
    if lands:
        made = _only_job(devnode)
        assert message.endswith(f"The job was listed all the same ({made.address}): it was "
                                "stopped")
        wait_until(lambda: made.state.done, what="the job stopped")
    else:
        assert devnode.ledger.jobs == {}
        assert "was not on the ledger after 1 s: most likely not listed; if it appears later, " \
               "stop it with %nosana stop " in message
