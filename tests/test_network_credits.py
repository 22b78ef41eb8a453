"""``ApiNetwork`` with an API key (docs/protocol.md §24): listing, control and the balance
with ``Bearer``, node headers from the signing service, the refusals as one line each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from nosana_magic.devnode import DevNode, DevNodeConfig
from nosana_magic.host import HostClient, Retry
from nosana_magic.network import JobState, NetworkError
from nosana_magic.network.api import ApiNetwork
from nosana_magic.network.base import InsufficientCreditsError
from nosana_magic.protocol import verify_auth_header
from nosana_magic.signer import PresignedSigner
from nosana_magic.wallet import Wallet

from .conftest import FAST, PLACEHOLDER, definition, list_placeholder, network_for, op
from .waiting import PATIENCE

FAST_RETRY = Retry(first=0.02, cap=0.1, attempts=50, total=PATIENCE)


@pytest.fixture
def devnode_config() -> DevNodeConfig:
    return DevNodeConfig(**{**FAST, "pickup_delay": None})  # type: ignore[arg-type]


def credits_network(node: DevNode, key: str | None = None) -> ApiNetwork:
    return ApiNetwork(node.url, Wallet.generate(), node_url_template=node.node_url_template,
                      api_key=key if key is not None else node.api_key,
                      signing_url=node.client_manager_url, retry=FAST_RETRY)


@pytest.fixture
async def network(devnode: DevNode) -> AsyncIterator[ApiNetwork]:
    net = credits_network(devnode)
    yield net
    await net.aclose()


async def test_markets_carry_the_usd_price(network: ApiNetwork) -> None:
    cpu = await network.market("local-cpu")
    assert cpu.usd_per_hour == 0.05 and cpu.network_fee_pct == 10.0
    assert cpu.cost_usd(3600) == pytest.approx(0.055)
    assert network.pays_with == "credits"


async def test_list_is_paid_with_credits_and_stop_gives_them_back(
        devnode: DevNode, network: ApiNetwork) -> None:
    before = await network.balance()
    assert (before.assigned, before.reserved, before.settled) == (10.0, 0.0, 0.0)
    cid = await network.pin(PLACEHOLDER)
    listing = await network.post(cid, await network.market("local-cpu"), 3600)
    assert listing.cost_usd == 0.055
    info = await network.job(listing.job)
    assert info.state is JobState.QUEUED
    assert info.project == devnode.ledger.credits.account(devnode.api_key).address
    held = await network.balance()
    assert held.reserved == 0.055 and held.available == pytest.approx(10 - 0.055)
    await network.extend(listing.job, 1800)
    assert (await network.job(listing.job)).timeout == 5400
    await network.stop(listing.job)
    after = await network.balance()
    assert (after.reserved, after.settled) == (0.0, 0.0)


async def test_insufficient_credits_is_one_line_and_lists_nothing(devnode: DevNode) -> None:
    net = credits_network(devnode, devnode.issue_api_key(0.01))
    try:
        cid = await net.pin(PLACEHOLDER)
        with pytest.raises(InsufficientCreditsError) as info:
            await net.post(cid, await net.market("local-cpu"), 3600)
        assert str(info.value) == (
            "local network: listing the job (nothing was listed): Insufficient credits: this "
            "needs $0.0550; Available: $0.0100")
        assert not devnode.ledger.jobs
    finally:
        await net.aclose()


async def test_refused_keys_say_what_to_do_and_never_show_the_key(devnode: DevNode) -> None:
    expired = devnode.issue_api_key(1.0, expires_in=0)
    unknown = "nos_" + "u" * 40
    for key, words in ((unknown, "the API key was refused (401 Authentication failed: invalid "
                        "API key); check NOSANA_API_KEY"),
                       (expired, "the API key may no longer be used (403 API key has expired); "
                        "make a new one on the Nosana dashboard")):
        net = credits_network(devnode, key)
        try:
            with pytest.raises(NetworkError) as info:
                await net.balance()
            assert str(info.value).startswith(f"local network: reading the credit balance: {words}")
            with pytest.raises(NetworkError) as listing:
                await net.post(await net.pin(PLACEHOLDER), await net.market("local-cpu"), 60)
            assert "listing the job (nothing was listed)" in str(listing.value)
            for text in (str(info.value), str(listing.value), repr(net)):
                assert key not in text
        finally:
            await net.aclose()
    assert not devnode.ledger.jobs


async def test_another_keys_job_is_not_found(devnode: DevNode, network: ApiNetwork) -> None:
    job = await list_placeholder(network)
    other = credits_network(devnode, devnode.issue_api_key(1.0))
    try:
        with pytest.raises(NetworkError) as info:
            await other.stop(job)
        assert str(info.value) == (
            f"local network: stopping job {job}: 404 Job not found or you do not have "
            "permission")
        # Its signer signs for another project: refused before any host is asked.
        project = (await network.job(job)).project
        with pytest.raises(NetworkError, match=f"belongs to {project}: it was not listed with "
                                               "this API key"):
            await other.signer(job, project)
    finally:
        await other.aclose()


@pytest.mark.parametrize("answer", ["signature", "header"])
async def test_the_signer_comes_from_the_signing_service(
        devnode: DevNode, network: ApiNetwork, answer: str) -> None:
    devnode.config.signing_answer = answer  # type: ignore[assignment]
    job = await list_placeholder(network)
    project = (await network.job(job)).project
    signer = await network.signer(job, project)
    assert isinstance(signer, PresignedSigner) and signer.address == project
    first, second = signer.auth_header("x"), signer.auth_header("y")
    for header in (first, second):
        assert header.startswith(f"{job}:") and header.count(":") == 2
        verify_auth_header(header, project, expiry_s=60)
    assert devnode.api_key not in repr(signer) and first.split(":")[1] not in repr(signer)
    # A wallet network's signer is its wallet.
    wallet_net = network_for(devnode)
    assert await wallet_net.signer(job) is wallet_net.wallet
    await wallet_net.aclose()


async def test_a_bad_signing_answer_is_refused_in_one_line(devnode: DevNode,
                                                           network: ApiNetwork) -> None:
    job = await list_placeholder(network)
    stranger = Wallet.generate()
    original = devnode.ledger.credits.sign
    devnode.ledger.credits.sign = lambda account, message: str(  # type: ignore[method-assign]
        stranger.keypair.sign_message(message.encode()))
    try:
        with pytest.raises(NetworkError, match="signing service: the signing service answered "
                                               "a signature that is not by"):
            await network.signer(job)
    finally:
        devnode.ledger.credits.sign = original  # type: ignore[method-assign]


async def test_a_credit_job_runs_on_its_host_with_the_services_headers(
        devnode: DevNode, network: ApiNetwork) -> None:
    devnode.config.pickup_delay = 0.05
    job = await list_placeholder(network, timeout=600)
    info = await network.job(job)
    while info.node is None:
        await asyncio.sleep(0.02)
        info = await network.job(job)
    signer = await network.signer(job, info.project)
    host = HostClient(network.node_url(info.node), job, signer,
                      retry=FAST_RETRY)
    try:
        body = json.dumps(definition(op("train", "echo 'loss=0.5'",
                                        results={"loss": "loss=([0-9.]+)"}))).encode()
        await host.send_definition(body)
        lines: list[str] = []

        async def follow() -> None:
            async for entry in host.logs():
                lines.append(entry.log)
                if "loss=0.5" in entry.log:
                    return

        await asyncio.wait_for(follow(), PATIENCE)
        flow = await host.results(timeout=PATIENCE)
        assert flow.op_states[0].results == {"loss": ["loss=0.5", "0.5"]}  # as a host keeps it
    finally:
        await host.aclose()
    done = await asyncio.to_thread(devnode.wait_job, job, timeout=PATIENCE)
    assert done.state is JobState.COMPLETED
    balance = await network.balance()
    assert balance.reserved == 0.0 and 0 < balance.settled < 0.055 / 6


async def test_control_refusals_are_one_line_and_change_nothing(
        devnode: DevNode, network: ApiNetwork) -> None:
    job = await list_placeholder(network)
    held = (await network.balance()).reserved
    # An extend the credits cannot cover: 402, the timeout and the reservation as they were.
    with pytest.raises(InsufficientCreditsError) as info:
        await network.extend(job, 10_000_000)
    line = str(info.value)
    assert line.startswith(f"local network: extending job {job} (its timeout is unchanged): "
                           "Insufficient credits") and "\n" not in line
    assert (await network.balance()).reserved == held
    timeout = (await network.job(job)).timeout
    await network.stop(job)
    assert (await network.job(job)).timeout == timeout
    # A job that has ended cannot be stopped or extended: 400, as one line.
    for control, doing in ((network.stop(job), f"stopping job {job}"),
                           (network.extend(job, 60), f"extending job {job}")):
        with pytest.raises(NetworkError) as refused:
            await control
        assert str(refused.value).startswith(f"local network: {doing}")
        assert ": 400 " in str(refused.value) and "\n" not in str(refused.value)


async def test_a_server_that_echoes_the_key_does_not_show_it(
        devnode: DevNode, network: ApiNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    from nosana_magic.devnode.credits import CreditError

    def echoing(header: str) -> None:
        raise CreditError(401, f"Authentication failed for {header}")

    monkeypatch.setattr(devnode.ledger.credits, "authenticate", echoing)
    with pytest.raises(NetworkError) as info:
        await network.balance()
    assert devnode.api_key not in str(info.value)
    assert "Authentication failed for Bearer [API key]" in str(info.value)
