"""The whole mainnet path, offline: ``%%nosana_confidential --network mainnet --yes``.

What runs for real: the magic, the job client, ``SolanaNetwork`` over ``solana`` 0.41 against a
JSON-RPC server and account WebSocket on loopback (LiteSVM underneath, the jobs program
emulated as docs/protocol.md §18 states it), Pinata's API (a loopback fake) and devnode hosts
that take their jobs from that chain (``tests/fakes/bridge.py``): they see the job's project,
definition CID and timeout as written by the client's ``list`` transaction, and check the
client's signatures against that on-chain project.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from solders.pubkey import Pubkey

from nosana_magic import chain, runner
from nosana_magic.devnode import DevNode, DevNodeConfig, MarketConfig
from nosana_magic.job import ConfidentialJob, run_confidential
from nosana_magic.magics import NosanaMagics, SpendNotConfirmed
from nosana_magic.network.base import JobState
from nosana_magic.network.markets import MAINNET_MARKETS
from nosana_magic.network.solana import SolanaNetwork
from nosana_magic.protocol import cid_to_digest
from tests.fakes.bridge import ChainBridge
from tests.fakes.solana_env import NOS, PINATA_JWT, FakeSolana
from tests.waiting import PATIENCE

SECRET = "s3cr3t-HF-token-on-mainnet"
PRICE = 115  # NOS base units per second, as nvidia-4090 in the docs' example


def cell(*ops: dict[str, Any]) -> str:
    return json.dumps({"version": "0.1", "type": "container", "meta": {"trigger": "cli"},
                       "ops": list(ops)}, indent=2)


def op(op_id: str, cmd: str | list[str], **args: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {k: args.pop(k) for k in ("results", "execution") if k in args}
    return {"type": "container/run", "id": op_id,
            "args": {"image": "pytorch/pytorch", "cmd": cmd, **args}, **extra}


TRAIN = cell(op(
    "train",
    "echo loading; echo token=$HF_TOKEN; echo 'loss=0.25'; echo warn >&2",
    env={"HF_TOKEN": "${env:HF_TOKEN}"},
    results={"loss": "loss=([0-9.]+)", "tok": "token=(.*)"},
))


@pytest.fixture
def mainnet(tmp_path: Path) -> Iterator[tuple[FakeSolana, DevNode, ChainBridge]]:
    """A fake mainnet whose nvidia-4090 market is served by two devnode hosts."""
    config = DevNodeConfig(
        hosts=2, pickup_delay=None, results_window=10, sse_interval=0.05, stop_timeout=30,
        markets=[MarketConfig("nvidia-4090", "NVIDIA 4090", price=PRICE, job_timeout=86_400)],
        stop_grace=0.5,
    )
    with DevNode(config) as devnode, FakeSolana(pinata_store=devnode.ipfs) as env:
        env.fund(sol=0.1, nos=10)
        market = env.add_market("nvidia-4090", price=PRICE, nodes=[])
        with ChainBridge(env.chain, devnode, market) as bridge:
            yield env, devnode, bridge
        assert not bridge.errors, bridge.errors


def _check_on_chain(env: FakeSolana, devnode: DevNode, job: ConfidentialJob) -> None:
    """What the chain and IPFS hold after the job: only public facts, money where it belongs."""
    assert job.address is not None
    listing = next(tx for tx in env.chain.transactions if tx.jobs and tx.jobs[0]["name"] ==
                   "list" and tx.jobs[0]["accounts"]["job"] == job.address)
    assert listing.instructions == ["compute_budget.set_compute_unit_price", "jobs.list"]
    assert env.wallet.address in listing.signers and job.address in listing.signers
    account = env.chain.job(Pubkey.from_string(job.address))
    assert account is not None and account.state == 2
    assert account.project == env.wallet.public_key
    # The definition on chain is the public placeholder: no op, no secret.
    placeholder = env.pinata.get(account.ipfs_job_cid)
    assert placeholder["ops"] == []
    assert placeholder["logistics"]["receive"]["type"] == "api-listen"
    for cid, blob in devnode.ipfs.all().items():
        assert SECRET.encode() not in blob, f"the secret reached IPFS ({cid})"
    # Escrow settled: the node was paid for what it ran, the rest came back.
    node_paid = env.chain.nos(account.node) or 0
    assert node_paid == PRICE * (account.time_end - account.time_start)
    assert env.nos() == 10 * NOS - node_paid
    assert env.chain.nos(chain.market_vault(MAINNET_MARKETS["nvidia-4090"])) == 0
    assert account.ipfs_result_cid is not None
    assert cid_to_digest(account.ipfs_result_cid) == account.ipfs_result


def test_run_confidential_on_the_fake_mainnet(
    mainnet: tuple[FakeSolana, DevNode, ChainBridge],
) -> None:
    env, devnode, _ = mainnet
    network = env.network(node_url_template=devnode.node_url_template,
                          node_domain="service.invalid", poll_interval_s=0.5)
    try:
        job = run_confidential(TRAIN, market="nvidia-4090", timeout="10m", network=network,
                               env={"HF_TOKEN": SECRET})
    finally:
        runner.run_sync(network.aclose(), timeout=10)
    assert job.ok, job.error
    assert job.network_name == "mainnet"
    assert job.state is JobState.COMPLETED and job.status == "succeeded"
    assert job.node in {h.address for h in devnode.hosts}
    assert job.market is not None and job.market.address == MAINNET_MARKETS["nvidia-4090"]
    assert job.price == pytest.approx(PRICE / 1e6)
    train = job.ops["train"]
    assert [line.text for line in train.logs if line.stream == "stdout"] == [
        "loading", "token=[secret:HF_TOKEN]", "loss=0.25"]
    assert job.results == {"loss": 0.25, "tok": "[secret:HF_TOKEN]"}
    assert any(line.text == "Job definition received" for line in job.node_logs)
    _check_on_chain(env, devnode, job)


def test_send_only_reads_the_public_result_through_the_gateway(
    mainnet: tuple[FakeSolana, DevNode, ChainBridge],
) -> None:
    env, devnode, _ = mainnet
    network = env.network(node_url_template=devnode.node_url_template)
    try:
        job = run_confidential(cell(op("a", "echo public-out", results={"o": "(public-.*)"})),
                               market="nvidia-4090", timeout=120, network=network,
                               private="input", env={})
    finally:
        runner.run_sync(network.aclose(), timeout=10)
    assert job.ok, job.error
    assert job.results == {"o": "public-out"}
    assert job.ledger is not None and job.ledger.ipfs_result is not None
    assert env.pinata.get(job.ledger.ipfs_result)["opStates"][0]["operationId"] == "a"


def test_queued_job_waits_for_a_host_then_runs(
    mainnet: tuple[FakeSolana, DevNode, ChainBridge],
) -> None:
    """Both hosts busy: the third job queues on chain and starts when a host comes back."""
    env, devnode, _ = mainnet
    network = env.network(node_url_template=devnode.node_url_template, poll_interval_s=0.2)
    slow = cell(op("sleep", "sleep 1; echo done"))
    try:
        jobs = [run_confidential(slow, market="nvidia-4090", timeout=120, network=network,
                                 wait=False, env={}) for _ in range(3)]
        for job in jobs:
            job.wait(60)
    finally:
        runner.run_sync(network.aclose(), timeout=10)
    assert all(job.ok for job in jobs), [job.error for job in jobs]
    assert all(job.ops["sleep"].logs[-1].text == "done" for job in jobs)
    assert len({job.node for job in jobs}) == 2
    assert env.rpc.calls["getProgramAccounts"] >= 1  # the queued one was found via its run


# --------------------------------------------------------------------------- the magic


@pytest.fixture
def mainnet_env(mainnet: tuple[FakeSolana, DevNode, ChainBridge], tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> tuple[FakeSolana, DevNode]:
    """The process environment a user with a wallet sets, pointed at the fakes."""
    env, devnode, _ = mainnet
    for var in ("NOSANA_MARKET", "NOSANA_TIMEOUT", "NOSANA_DEVNODE_URL", "PINATA_JWT",
                "NOSANA_NODE_DOMAIN", "NOSANA_WS_URL", "NOSANA_COMMITMENT"):
        monkeypatch.delenv(var, raising=False)
    for name, value in env.environment(
            tmp_path, node_url_template=devnode.node_url_template).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NOSANA_NETWORK", "local")  # mainnet must be chosen explicitly
    monkeypatch.setenv("NOSANA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return env, devnode


def test_the_magic_on_mainnet(shell: InteractiveShell,
                              mainnet_env: tuple[FakeSolana, DevNode]) -> None:
    env, devnode = mainnet_env
    port = _free_port()
    serve = (
        "import http.server as h\n"
        f"s = h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler)\n"
        "s.timeout = 120\n"
        "s.handle_request()\n"
        "print('served')\n"
    )
    body = cell(
        op("train", "echo loading; echo token=$HF_TOKEN; echo 'loss=0.25'",
           env={"HF_TOKEN": "${env:HF_TOKEN}"},
           results={"loss": "loss=([0-9.]+)"}),
        op("web", ["python3", "-c", serve], expose=port, private=True,
           execution={"depends_on": ["train"]}),
    )
    fetched: list[int] = []

    def fetch_private_url(job: ConfidentialJob) -> None:
        deadline = time.monotonic() + 30
        while not job.urls and not job.done and time.monotonic() < deadline:
            time.sleep(0.05)
        with httpx.Client(trust_env=False, timeout=PATIENCE) as client:
            while time.monotonic() < deadline and not job.done:
                try:
                    response = client.get(job.urls[0].url + "/")
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 200:
                    fetched.append(response.status_code)
                    return
                time.sleep(0.05)  # the service is not listening yet (502 from the proxy)

    # The magic blocks until the job is done; a helper thread visits the private URL meanwhile.
    def visitor() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job = shell.user_ns.get("job")
            if isinstance(job, ConfidentialJob):
                fetch_private_url(job)
                return
            time.sleep(0.05)

    helper = threading.Thread(target=visitor, daemon=True)
    helper.start()
    with capture_output() as captured:
        result = shell.run_cell_magic(
            "nosana_confidential",
            "--network mainnet --market nvidia-4090 --timeout 10m --yes -o job", body)
    helper.join(PATIENCE)
    job = shell.user_ns["job"]
    assert result is None and isinstance(job, ConfidentialJob)  # -o: the handle is in `job`
    assert job.ok, job.error
    assert job.network_name == "mainnet"
    # The statement before signing: network, market, price per hour, the most it can cost.
    assert "mainnet: market nvidia-4090 at 0.414 NOS/h, timeout 10m" in captured.stdout
    # ... and the SOL it needs: rent (refunded) and fees, from the network's own estimate.
    assert "SOL (rent" in captured.stdout and "refunded; fees" in captured.stdout
    # Logs, results and the private URL, as on the local network.
    assert [line.text for line in job.ops["train"].logs if line.stream == "stdout"] == [
        "loading", "token=[secret:HF_TOKEN]", "loss=0.25"]
    assert job.ops["web"].logs[-1].text == "served"
    assert job.results == {"loss": 0.25}
    [url] = job.urls
    assert url.private and url.op_id == "web" and url.port == port
    assert fetched == [200]
    assert "loading" in captured.stdout and SECRET not in captured.stdout
    assert SECRET not in captured.stderr
    _check_on_chain(env, devnode, job)
    assert env.pinata.auth_headers_seen == [f"Bearer {PINATA_JWT}"]
    # Nothing secret in the shell's history or the wallet anywhere it printed.
    secret_key = json.dumps(list(env.wallet.keypair.to_bytes()))
    assert secret_key not in captured.stdout and PINATA_JWT not in captured.stdout


def test_the_magic_refuses_mainnet_headless_without_yes(
    shell: InteractiveShell, mainnet_env: tuple[FakeSolana, DevNode]
) -> None:
    env, _ = mainnet_env
    magics = next(m for m in shell.configurables if isinstance(m, NosanaMagics))
    magics.confirm_spend = True
    with capture_output(), pytest.raises(SpendNotConfirmed, match="--yes"):
        shell.run_cell_magic("nosana_confidential",
                             "--network mainnet --market nvidia-4090 --timeout 10m", TRAIN)
    assert not env.chain.transactions and env.pinata.pins == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_settings_reach_the_network(mainnet_env: tuple[FakeSolana, DevNode]) -> None:
    from nosana_magic.network import open_network
    from nosana_magic.settings import Settings

    env, devnode = mainnet_env
    network = open_network(Settings.from_env(network="mainnet"))
    assert isinstance(network, SolanaNetwork)
    assert network.rpc_url == env.rpc_url and network.wallet.address == env.wallet.address
    assert network.node_url("N") == devnode.node_url("N")
    assert network.pinata.has_credential
