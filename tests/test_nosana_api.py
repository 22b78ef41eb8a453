"""The client's reading of the Nosana API (docs/protocol.md §22, §24): the answer models, and
``ApiNetwork`` against a loopback server that answers exactly the official shapes, with a
wallet and with an API key."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nosana_magic.host import Retry
from nosana_magic.network import JobState, NetworkError
from nosana_magic.network.api import ApiNetwork
from nosana_magic.network.nosana_api import (
    CreditBalance,
    JobAnswer,
    ListAnswer,
    MarketAnswer,
    SignAnswer,
    job_state,
    read,
)
from nosana_magic.protocol import verify_auth_header
from nosana_magic.wallet import Wallet

from .conftest import serve_app
from .waiting import PATIENCE

FIXTURES = Path(__file__).parent / "fixtures" / "nosana_api"
FAST_RETRY = Retry(first=0.02, cap=0.1, attempts=5, total=PATIENCE)
JOB = "2iXtA8oeZqUU5pofxK971TCEvFGfems2AcDRaZHKD2pQ"
NODE = "GhFJh9xhWQULf6W1WJLNTViiTWEs4wAj3FevZ616wxL2"
#: The project key the loopback signing service holds for the API key below.
PROJECT = Keypair()
API_KEY = "nos_official-shapes-test-key-0123456789"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# ---------------------------------------------------------------------- the models


def test_official_markets_become_markets() -> None:
    gpu, community = (MarketAnswer.model_validate(m).to_market()
                      for m in fixture("markets.json"))
    assert gpu.slug == "nvidia-4090" and gpu.name == "NVIDIA 4090"
    assert gpu.address == "97G9NnvBDQ2WpKu6fasoMsAKmfj63C9rhysJnkeWodAf"
    assert gpu.price_per_second == 115  # 0.000115 NOS/s in base units
    assert gpu.network_fee_pct == 10.0 and gpu.usd_per_hour == 0.4
    # Not in Nosana's answer (it is on chain): unknown, not invented.
    assert gpu.job_timeout == 0 and gpu.idle_hosts == 0
    assert gpu.cost_usd(3600) == pytest.approx(0.44)
    # ``usd_reward_per_hour`` is typed ``unknown``: numeric text is read too. A market that
    # reports no network fee is priced with the dashboard's 10 %, so estimates err high.
    assert community.usd_per_hour == 0.192 and community.network_fee_pct == 0.0
    assert community.cost_usd(1800) == pytest.approx(0.192 * 1.1 / 2)
    assert MarketAnswer.model_validate({"address": "M", "usd_reward_per_hour": "n/a"}
                                       ).to_market().cost_usd(60) is None


@pytest.mark.parametrize(("name", "state"), [
    ("job_queued.json", JobState.QUEUED), ("job_running.json", JobState.RUNNING),
    ("job_completed.json", JobState.COMPLETED), ("job_stopped.json", JobState.STOPPED),
])
def test_official_jobs_become_job_infos(name: str, state: JobState) -> None:
    info = JobAnswer.model_validate(fixture(name)).to_info(JOB)
    assert info.address == JOB and info.state is state
    assert info.project == "FAe4sisG95oZ42w7buUn5qEE4TAnfTTFPiguZUHmhiF"
    assert info.timeout == 1800 and info.price == 115
    assert info.ipfs_job == "Qmf3TzFrnBUQ6cSG6pJ6ptAariPaaZ9a8Q2enp8YBisNW2"
    if state in (JobState.QUEUED, JobState.STOPPED):
        # The system address and zero times mean "no host, not started".
        assert info.node is None and info.time_start is None and info.expires_at is None
    else:
        assert info.node == NODE and info.time_start == 1767225600
        assert info.expires_at == 1767225600 + 1800
    assert (info.ipfs_result is not None) is (state is JobState.COMPLETED)


def test_states_by_number_or_name_and_nothing_else() -> None:
    assert [job_state(v) for v in (0, 1, 2, 3)] == list(JobState)
    assert job_state("running") is JobState.RUNNING and job_state("COMPLETED").done
    assert job_state(1.0) is JobState.RUNNING and job_state("3") is JobState.STOPPED
    for bad in (4, -1, True, "LOST", None, 1.5):
        with pytest.raises(ValueError, match="unknown job state"):
            job_state(bad)


def test_unknown_fields_are_ignored_and_missing_ones_named() -> None:
    newer = {**fixture("job_running.json"), "state": "RUNNING", "revision": 7,
             "deployment": {"id": "d"}}
    assert JobAnswer.model_validate(newer).state is JobState.RUNNING
    where = "mainnet network: GET /api/jobs/J"
    with pytest.raises(NetworkError) as info:
        read(JobAnswer, {**fixture("job_running.json"), "state": 9}, where)
    assert str(info.value) == (
        "mainnet network: GET /api/jobs/J: the answer's state is not as expected: "
        "unknown job state '9'")
    missing = {k: v for k, v in fixture("job_running.json").items() if k != "state"}
    with pytest.raises(NetworkError, match="the answer's state is not as expected: Field "
                                           "required"):
        read(JobAnswer, missing, where)
    with pytest.raises(NetworkError, match="the answer's body is not as expected"):
        read(JobAnswer, ["not", "a", "job"], where)


def test_list_extend_and_balance_answers() -> None:
    listing = ListAnswer.model_validate(fixture("list.json"))
    assert listing.to_listing().job == JOB and listing.credits is not None
    assert listing.credits.cost_usd == 0.22
    assert listing.credits.project == "FAe4sisG95oZ42w7buUn5qEE4TAnfTTFPiguZUHmhiF"
    # A wallet-paid listing (the local network's wallet path) has no ``credits``.
    assert ListAnswer.model_validate({"tx": "t", "job": JOB, "run": "r"}).credits is None
    balance = CreditBalance.model_validate(fixture("balance.json"))
    assert balance.available == pytest.approx(50 - 0.33 - 12.5)


def test_sign_answers_in_both_forms_make_one_header() -> None:
    answer = SignAnswer.model_validate(fixture("sign.json"))
    header = answer.header("nosana-auth")
    assert header.startswith("nosana-auth:") and header.count(":") == 1
    verify_auth_header(header, answer.user_address, expiry_s=60)
    signature = header.split(":")[1]
    for form in (f"nosana-auth:{signature}", f"nosana-auth:{signature}:1767225600000",
                 f"  {signature}  "):
        again = SignAnswer.model_validate({**fixture("sign.json"), "signature": form})
        assert again.header("nosana-auth") == header
    for bad in ("", ":sig", "message:"):
        with pytest.raises(ValueError):
            SignAnswer.model_validate({**fixture("sign.json"), "signature": bad}).header("m")


# ---------------------------------------------------------------------- ApiNetwork on them


def _official_api(calls: list[dict[str, Any]], states: list[str]) -> Starlette:
    """A loopback Nosana API that answers only the fixtures (exactly the official shapes).

    ``GET /api/jobs/{job}`` answers the fixtures named in ``states`` in turn (the last one
    from then on)."""
    markets = fixture("markets.json")

    async def record(request: Request) -> None:
        body = await request.body()
        calls.append({"route": f"{request.method} {request.url.path}",
                      "headers": dict(request.headers),
                      "body": json.loads(body) if body else None})

    async def list_markets(request: Request) -> Response:
        await record(request)
        return JSONResponse(markets)

    async def one_market(request: Request) -> Response:
        await record(request)
        wanted = request.path_params["id"]
        found = [m for m in markets if wanted in (m["slug"], m["address"])]
        if not found:
            return JSONResponse({"error": "Market not found"}, status_code=404)
        return JSONResponse(found[0])

    async def get_job(request: Request) -> Response:
        await record(request)
        name = states.pop(0) if len(states) > 1 else states[0]
        job = fixture(f"job_{name}.json")
        if job["timeStart"]:
            # Started a minute ago, so that the job is not past its expiry now.
            job["timeStart"] = int(time.time()) - 60
        return JSONResponse(job)

    def answer(name: str) -> Any:
        async def endpoint(request: Request) -> Response:
            await record(request)
            return JSONResponse(fixture(name))
        return endpoint

    async def sign(request: Request) -> Response:
        # The official answer's shape, signed with the key's project (a bare signature).
        await record(request)
        message = (await request.json())["message"]
        return JSONResponse({"message": message, "userAddress": str(PROJECT.pubkey()),
                             "signature": str(PROJECT.sign_message(message.encode()))})

    return Starlette(routes=[
        Route("/api/credits/balance", answer("balance.json"), methods=["GET"]),
        Route("/auth/sign-message/external", sign, methods=["POST"]),
        Route("/api/markets/", list_markets, methods=["GET"]),
        Route("/api/markets/{id}/", one_market, methods=["GET"]),
        Route("/api/jobs/list", answer("list.json"), methods=["POST"]),
        Route("/api/jobs/{job}", get_job, methods=["GET"]),
        Route("/api/jobs/{job}/stop", answer("stop.json"), methods=["POST"]),
        Route("/api/jobs/{job}/extend", answer("extend.json"), methods=["POST"]),
    ])


@pytest.fixture
async def official(request: pytest.FixtureRequest) -> AsyncIterator[
        tuple[ApiNetwork, list[dict[str, Any]]]]:
    calls: list[dict[str, Any]] = []
    states = list(getattr(request, "param", ["queued"]))
    async with serve_app(_official_api(calls, states)) as url:
        net = ApiNetwork(url, Wallet(Keypair()), node_url_template=url + "/node/{node}",
                         name="mainnet", retry=FAST_RETRY)
        try:
            yield net, calls
        finally:
            await net.aclose()


async def test_api_network_reads_official_markets(
        official: tuple[ApiNetwork, list[dict[str, Any]]]) -> None:
    net, calls = official
    markets = await net.markets()
    assert [m.slug for m in markets] == ["nvidia-4090", "nvidia-3090"]
    assert await net.market("nvidia-4090") == markets[0]
    assert calls[-1]["route"] == "GET /api/markets/nvidia-4090/"
    with pytest.raises(NetworkError, match=r"unknown market 'nvidia-9090' \(known: "
                                           r"nvidia-4090, nvidia-3090\)"):
        await net.market("nvidia-9090")


async def test_api_network_lists_stops_and_extends_with_official_answers(
        official: tuple[ApiNetwork, list[dict[str, Any]]]) -> None:
    net, calls = official
    market = await net.market("nvidia-4090")
    listing = await net.post("Qmf3TzFrnBUQ6cSG6pJ6ptAariPaaZ9a8Q2enp8YBisNW2", market, 1800)
    assert listing.job == JOB and listing.run == "5eUm8K9YiCqAxtyZgmmN1NGhmD3D2C9Azp2Za7nxwhiN"
    posted = next(c for c in calls if c["route"] == "POST /api/jobs/list")
    assert posted["body"] == {"ipfsHash": "Qmf3TzFrnBUQ6cSG6pJ6ptAariPaaZ9a8Q2enp8YBisNW2",
                              "market": market.address, "timeout": 1800}
    await net.extend(JOB, 900)
    await net.stop(JOB)
    routes = [c["route"] for c in calls]
    assert f"POST /api/jobs/{JOB}/extend" in routes and f"POST /api/jobs/{JOB}/stop" in routes
    extend = next(c for c in calls if c["route"].endswith("/extend"))
    assert extend["body"] == {"seconds": 900}


@pytest.mark.parametrize("official", [["queued", "queued", "running", "completed"]],
                         indirect=True)
async def test_api_network_watches_numeric_states_to_the_end(
        official: tuple[ApiNetwork, list[dict[str, Any]]]) -> None:
    net, _ = official
    net.poll_interval = 0.01
    seen = [info async for info in net.watch(JOB)]
    assert [i.state for i in seen] == [JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED]
    assert seen[0].node is None and seen[1].node == NODE
    assert all(i.address == JOB for i in seen)
    assert seen[2].ipfs_result == "QmXA7WdExBCQZm9wkx5tMGRkuEt1MH74mbkW4TcwJY26wr"
    assert seen[2].extra["jobStatus"] == "success"


async def test_api_network_with_an_api_key_on_official_answers(
        official: tuple[ApiNetwork, list[dict[str, Any]]]) -> None:
    url = official[0].base_url
    calls = official[1]
    net = ApiNetwork(url, None, node_url_template=url + "/node/{node}", name="mainnet",
                     retry=FAST_RETRY, api_key=API_KEY, signing_url=url)
    try:
        balance = await net.balance()
        assert (balance.assigned, balance.reserved, balance.settled) == (50, 0.33, 12.5)
        listing = await net.post("Qmf3TzFrnBUQ6cSG6pJ6ptAariPaaZ9a8Q2enp8YBisNW2",
                                 await net.market("nvidia-4090"), 1800)
        assert listing.job == JOB and listing.cost_usd == 0.22
        await net.extend(JOB, 900)
        await net.stop(JOB)
        signer = await net.signer(JOB)
        assert signer.address == str(PROJECT.pubkey())
        header = signer.auth_header("ignored")
        assert header.startswith(f"{JOB}:")
        verify_auth_header(header, signer.address, expiry_s=60)
    finally:
        await net.aclose()
    # Every call that spends or signs carries the key as a Bearer token and nothing else of
    # the wallet scheme; the reads carry no key at all.
    paid = ("POST /api/jobs/list", f"POST /api/jobs/{JOB}/extend",
            f"POST /api/jobs/{JOB}/stop", "GET /api/credits/balance",
            "POST /auth/sign-message/external")
    for call in calls:
        if call["route"] in paid:
            assert call["headers"]["authorization"] == f"Bearer {API_KEY}", call["route"]
            assert "x-user-id" not in call["headers"]
        else:
            assert "authorization" not in call["headers"], call["route"]
    assert {c["route"] for c in calls} >= set(paid)
    assert next(c for c in calls if c["route"].startswith("POST /auth"))["body"] == {
        "message": JOB}
