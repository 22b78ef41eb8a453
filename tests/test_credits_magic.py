"""``%%nosana_confidential --pay credits`` end to end on the devnode (docs/protocol.md §24).

With ``NOSANA_API_KEY`` set to a key the devnode issued, a confidential job runs through the
credits path: listed with the key, its host's headers from the signing service, live logs,
private results, a private URL, the cost and the balance shown before listing and the
balance charged and shown after. The key appears nowhere the user or the public sees.
The same path on "mainnet" (Nosana's API, pointed at the devnode), the confirmation rules,
and the refusals (too few credits, a refused key, no key) as one line with nothing listed;
extend and stop with the key, and the credit price in ``%nosana markets``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets import TraitError

from nosana_magic.devnode import DevNode, DevNodeConfig
from nosana_magic.display import summary_text
from nosana_magic.errors import (
    InsufficientCreditsError,
    NetworkError,
    SettingsError,
    SpendNotConfirmed,
)
from nosana_magic.job import ConfidentialJob, JobInterrupted, jobs
from nosana_magic.magics import NosanaMagics
from nosana_magic.network.api import ApiNetwork
from nosana_magic.network.markets import format_usd

from .conftest import FAST, free_port, ipython_shell
from .waiting import PATIENCE, wait_until

MAGIC = "nosana_confidential"


def cell(*ops: dict[str, Any]) -> str:
    return json.dumps({"version": "0.1", "type": "container", "meta": {"trigger": "cli"},
                       "ops": list(ops)}, indent=2)


def op(op_id: str, cmd: str | list[str], **args: Any) -> dict[str, Any]:
    extra = {k: args.pop(k) for k in ("results",) if k in args}
    return {"type": "container/run", "id": op_id,
            "args": {"image": "python:3.11", "cmd": cmd, **args}, **extra}


@pytest.fixture(scope="module")
def node() -> Iterator[DevNode]:
    with DevNode(DevNodeConfig(**FAST)) as devnode:  # type: ignore[arg-type]
        yield devnode


@pytest.fixture(scope="module")
def shell(node: DevNode) -> Iterator[InteractiveShell]:
    with ipython_shell() as ip:
        yield ip


@pytest.fixture
def key(node: DevNode) -> str:
    """A fresh key with $5 of credits (so each test starts from a known balance)."""
    return node.issue_api_key(5.0)


@pytest.fixture(autouse=True)
def isolated(node: DevNode, shell: InteractiveShell, key: str, monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> Iterator[None]:
    for var in ("NOSANA_NETWORK", "NOSANA_MARKET", "NOSANA_TIMEOUT", "NOSANA_WALLET",
                "NOSANA_PAY", "NOSANA_NODE_URL_TEMPLATE", "PINATA_JWT", "NOSANA_PINATA_JWT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NOSANA_DEVNODE_URL", node.url)
    monkeypatch.setenv("NOSANA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NOSANA_CREDENTIALS_FILE", str(tmp_path / "no-credentials.json"))
    monkeypatch.setenv("NOSANA_API_KEY", key)
    magics = next(m for m in shell.configurables if isinstance(m, NosanaMagics))
    magics.pay = None
    magics.confirm_spend = True
    yield
    for job in jobs():
        if not job.done:
            job.stop()
        job.wait(PATIENCE)


def balance(node: DevNode, key: str) -> dict[str, float]:
    return node.ledger.credits.balance(node.ledger.credits.account(key))


def test_a_confidential_job_runs_on_credits_end_to_end(
        node: DevNode, shell: InteractiveShell, key: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    serve_once = ("import http.server as h\n"
                  f"s = h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler)\n"
                  "s.timeout = 60\ns.handle_request()\nprint('served')\n")
    body = cell(op("train", "echo epoch 1; echo 'loss=0.125'", results={"loss": "loss=(.*)"}),
                op("web", ["python3", "-c", serve_once], expose=port, private=True))
    fetched: list[int] = []

    def visit_the_private_url() -> None:
        # The handle is in `run` as soon as the job exists; its private URL once the host
        # serves it. Visiting it lets the op end.
        def private_url() -> str | None:
            job = shell.user_ns.get("run")
            return job.urls[0].url if job is not None and job.urls else None

        url = wait_until(private_url, what="the private URL")
        with httpx.Client(trust_env=False, timeout=PATIENCE) as client:
            def served() -> bool:
                try:
                    fetched.append(client.get(url + "/").status_code)
                except httpx.TransportError:
                    return False
                return fetched[-1] == 200
            wait_until(served, what="the private service")

    visitor = threading.Thread(target=visit_the_private_url, daemon=True)
    visitor.start()
    caplog.set_level(logging.DEBUG)
    with capture_output() as captured:
        shell.run_cell_magic(MAGIC, "--network local --pay credits -m local-cpu -t 10m -o run",
                             body)
    visitor.join(PATIENCE)
    run: ConfidentialJob = shell.user_ns["run"]
    assert run.ok, run._error_line()
    out = captured.stdout
    # Money first: what it can cost and what is there, before anything was listed.
    assert ("local: market local-cpu at $0.055/h in credits, timeout 10m → at most $0.0092; "
            "credits: $5.00 available") in out
    assert out.index("credits: $5.00 available") < out.index("epoch 1")
    # Live logs (two ops run at once: a live line's op is not known until the results say),
    # private results, a private URL.
    assert "loss=0.125" in out
    assert [line.text for line in run.ops["train"].logs] == ["epoch 1", "loss=0.125"]
    assert run.results == {"loss": 0.125}
    [url] = run.urls
    assert url.private and url.op_id == "web" and fetched[-1] == 200
    # Listed with the key: the job's project is the key's, whose headers the host took.
    account = node.ledger.credits.account(key)
    assert node.job(run.address or "").project == account.address
    # Charged for the time it ran, and the balance shown after.
    after = balance(node, key)
    assert after["reservedCredits"] == 0 and 0 < after["settledCredits"] < 0.0092
    spent = after["settledCredits"]
    assert (f"credits: {format_usd(5.0 - spent)} available ({format_usd(spent)} spent since "
            "this job was listed, $0.00 still reserved)") in out
    # The summary and the handle speak of credits in dollars, not of the NOS on chain.
    summary = summary_text(run)
    assert run.cost_usd is not None and 0 <= run.cost_usd < 0.0092
    assert f"cost {format_usd(run.cost_usd)} in credits" in summary and " NOS" not in summary
    assert "$0.055/h in credits, cost " in run._repr_html_() and " NOS" not in run._repr_html_()
    assert summary in out

    # The key appears nowhere the user or the public sees.
    with capture_output() as more:
        config = shell.run_line_magic("nosana", "config")
        shell.run_line_magic("config", "NosanaMagics")
        shell.run_line_magic("nosana", "jobs")
        shell.run_line_magic("nosana", f"status {run.address}")
    places = [out, captured.stderr, more.stdout, more.stderr, repr(config),
              config._repr_html_(), repr(run), run._repr_html_(), caplog.text,
              json.dumps([v.decode("utf-8", "replace") for v in node.ipfs.all().values()])]
    places += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    for place in places:
        assert key not in place
    assert any(row[0] == "api_key" and row[1] == "set" for row in config.rows)


def test_credits_are_the_default_when_a_key_is_set_and_percent_nosana_credits(
        node: DevNode, shell: InteractiveShell, key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    signed: list[str] = []
    sign = node.ledger.credits.sign

    def counted(account: Any, message: str) -> str:
        signed.append(message)
        return sign(account, message)

    monkeypatch.setattr(node.ledger.credits, "sign", counted)
    with capture_output() as captured:
        shell.run_cell_magic(MAGIC, "-t 2m -o run", cell(op("a", "echo hi; sleep 0.5")))
    assert "credits: $5.00 available" in captured.stdout
    # One signature for the whole job (definition, /info, /log, /results), stamped per request.
    assert signed == [shell.user_ns["run"].address]
    run: ConfidentialJob = shell.user_ns["run"]
    assert node.job(run.address or "").project == node.ledger.credits.account(key).address
    table = shell.run_line_magic("nosana", "credits")
    rows = dict((name, value) for name, value in table.rows)
    assert rows["assigned"] == "$5.00" and rows["reserved"] == "$0.00"
    assert rows["settled"] != "$0.00"
    assert key not in repr(table) and key not in table._repr_html_()
    # --pay wallet still pays with the (local) wallet beside it.
    with capture_output() as wallet_run:
        shell.run_cell_magic(MAGIC, "--pay wallet -t 2m -o paid", cell(op("b", "echo hi")))
    assert "credits:" not in wallet_run.stdout
    paid: ConfidentialJob = shell.user_ns["paid"]
    assert paid.ok and node.job(paid.address or "").payer == node.job(paid.address or "").project


def test_too_few_credits_list_nothing(node: DevNode, shell: InteractiveShell,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    poor = node.issue_api_key(0.001)
    monkeypatch.setenv("NOSANA_API_KEY", poor)
    listed, pinned = len(node.ledger.jobs), len(node.ipfs.all())
    with capture_output() as captured, pytest.raises(InsufficientCreditsError) as info:
        shell.run_cell_magic(MAGIC, "-m local-cpu -t 1h", cell(op("a", "echo hi")))
    assert str(info.value) == (
        "local: not listed: this job can cost $0.055 (1h in local-cpu), and the API key has "
        "$0.0010 of credits available; add credits on the Nosana dashboard or shorten --timeout")
    assert "at most $0.055; credits: $0.0010 available" in captured.stdout
    assert (len(node.ledger.jobs), len(node.ipfs.all())) == (listed, pinned)


def test_a_refused_key_is_one_line_and_never_shown(node: DevNode, shell: InteractiveShell,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "nos_" + "w" * 40
    monkeypatch.setenv("NOSANA_API_KEY", wrong)
    listed = len(node.ledger.jobs)
    with capture_output(), pytest.raises(NetworkError) as info:
        shell.run_cell_magic(MAGIC, "--pay credits -t 2m", cell(op("a", "echo hi")))
    text = str(info.value)
    assert text == ("local network: reading the credit balance: the API key was refused (401 "
                    "Authentication failed: invalid API key); check NOSANA_API_KEY")
    assert wrong not in "".join(info.value._render_traceback_())
    assert len(node.ledger.jobs) == listed


# ---------------------------------------------------------------------- "mainnet"


@pytest.fixture
def nosana_api_on_the_devnode(node: DevNode, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nosana's API, its signing service, Pinata and the hosts, all served by the devnode:
    the mainnet credits path as it is, on loopback."""
    monkeypatch.setenv("NOSANA_API_URL", node.url)
    monkeypatch.setenv("NOSANA_SIGNING_URL", node.client_manager_url)
    monkeypatch.setenv("NOSANA_PINATA_API_URL", node.url)
    monkeypatch.setenv("NOSANA_PINATA_JWT", "local-jwt")
    monkeypatch.setenv("NOSANA_IPFS_GATEWAY", f"{node.url}/ipfs")
    monkeypatch.setenv("NOSANA_NODE_URL_TEMPLATE", node.node_url_template)


@pytest.mark.usefixtures("nosana_api_on_the_devnode")
def test_mainnet_on_credits_needs_no_wallet_and_confirms_like_a_wallet(
        node: DevNode, shell: InteractiveShell, key: str) -> None:
    listed = len(node.ledger.jobs)
    line = "--network mainnet -m local-cpu -t 5m"
    with capture_output() as refused, pytest.raises(SpendNotConfirmed, match="--yes"):
        shell.run_cell_magic(MAGIC, line, cell(op("a", "echo hi")))
    assert ("mainnet: market local-cpu at $0.055/h in credits, timeout 5m → at most $0.0046; "
            "credits: $5.00 available") in refused.stdout
    assert len(node.ledger.jobs) == listed  # headless and not confirmed: nothing listed
    with capture_output() as captured:
        shell.run_cell_magic(MAGIC, f"{line} --yes -o run",
                             cell(op("a", "echo from mainnet; echo 'acc=0.5'",
                                     results={"acc": "acc=(.*)"})))
    run: ConfidentialJob = shell.user_ns["run"]
    assert run.ok, run._error_line()
    assert run.network_name == "mainnet" and run.results == {"acc": 0.5}
    assert "[a] from mainnet" in captured.stdout
    assert node.job(run.address or "").project == node.ledger.credits.account(key).address
    assert "spent since this job was listed" in captured.stdout
    assert key not in captured.stdout + captured.stderr
    # %nosana credits on mainnet: Nosana's balance route, with the key.
    table = shell.run_line_magic("nosana", "credits --network mainnet")
    rows = dict((name, value) for name, value in table.rows)
    assert table.title == "nosana credits on mainnet" and rows["assigned"] == "$5.00"
    spent = balance(node, key)["settledCredits"]
    assert spent > 0 and rows["available"] == format_usd(5.0 - spent)


def test_a_running_credit_job_is_extended_and_stopped_with_the_key(
        node: DevNode, shell: InteractiveShell, key: str) -> None:
    with capture_output() as captured:
        shell.run_cell_magic(MAGIC, "-b -q -m local-cpu -t 10m -o long",
                             cell(op("long", "echo up; sleep 120")))
        run: ConfidentialJob = shell.user_ns["long"]
        wait_until(lambda: run.phase == "running" and bool(run.logs), what="the job running")
        account = node.ledger.credits.account(key)
        held = balance(node, key)["reservedCredits"]
        assert held == pytest.approx(0.055 * 600 / 3600, abs=1e-6)
        # Extended through Nosana's API with the key: its timeout and its reservation grow.
        run.extend("5m")
        assert node.job(run.address or "").timeout == 900
        assert balance(node, key)["reservedCredits"] == pytest.approx(0.055 * 900 / 3600,
                                                                      abs=2e-6)
        shell.run_line_magic("nosana", f"stop {run.address}")
    run.wait(PATIENCE)
    assert run.status == "stopped"
    assert f"job {run.address} stopped" in captured.stdout.splitlines()
    # Charged for the seconds it ran, not the 15 minutes it held; nothing still held.
    after = balance(node, key)
    assert after["reservedCredits"] == 0
    assert 0 < after["settledCredits"] < 0.055 * 120 / 3600
    assert node.job(run.address or "").project == account.address
    assert key not in captured.stdout + captured.stderr


def test_percent_nosana_credits_without_a_key_says_how_to_get_one(
        shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOSANA_API_KEY")
    with pytest.raises(SettingsError) as info:
        shell.run_line_magic("nosana", "credits")
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith("pay: credits need a Nosana API key: set NOSANA_API_KEY")


def test_percent_nosana_markets_shows_the_credit_price(shell: InteractiveShell) -> None:
    table = shell.run_line_magic("nosana", "markets")
    assert table.columns == ["market", "address", "NOS/h", "credits/h", "idle hosts"]
    rows = {row[0]: row for row in table.rows}
    assert rows["local-cpu"][3] == "$0.055"  # $0.05/h and the 10 % network fee


@pytest.mark.usefixtures("nosana_api_on_the_devnode")
def test_mainnet_on_credits_asks_when_someone_can_answer(
        node: DevNode, shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    prompts: list[str] = []
    answers = iter(["n", "yes"])

    def ask(self: NosanaMagics, prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(NosanaMagics, "_ask", ask)
    listed, pinned = len(node.ledger.jobs), len(node.ipfs.all())
    line = "--network mainnet -m local-cpu -t 2m"
    with capture_output(), pytest.raises(SpendNotConfirmed, match="not confirmed"):
        shell.run_cell_magic(MAGIC, line, cell(op("a", "echo hi")))
    assert prompts == ["List the job and spend these credits? [y/N] "]
    assert (len(node.ledger.jobs), len(node.ipfs.all())) == (listed, pinned)
    with capture_output():
        shell.run_cell_magic(MAGIC, f"{line} -o run", cell(op("a", "echo hi")))
    assert len(prompts) == 2 and shell.user_ns["run"].ok
    # confirm_spend = False: no question at all.
    magics = next(m for m in shell.configurables if isinstance(m, NosanaMagics))
    magics.confirm_spend = False
    with capture_output():
        shell.run_cell_magic(MAGIC, f"{line} -o again", cell(op("a", "echo hi")))
    assert len(prompts) == 2 and shell.user_ns["again"].ok


def test_attach_with_the_key_from_another_kernel_and_not_with_another_key(
        node: DevNode, shell: InteractiveShell, key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    script = "for i in 1 2 3; do echo line$i; done; sleep 1; echo 'acc=0.75'"
    with capture_output():
        shell.run_cell_magic(MAGIC, "-b -q -t 2m -o original",
                             cell(op("a", script, results={"acc": "acc=(.*)"})))
    original: ConfidentialJob = shell.user_ns["original"]
    wait_until(lambda: any(line.text == "line3" for line in original.logs), what="line3")
    address = original.address or ""
    magics = next(m for m in shell.configurables if isinstance(m, NosanaMagics))
    # Another kernel with the same key: a new network from the settings, the job's host
    # answering the signing service's headers; the private results still collected.
    attached = ConfidentialJob.attach(address, magics.settings())
    attached.wait(PATIENCE)
    original.wait(PATIENCE)
    assert attached is not original and attached.ok, attached._error_line()
    assert attached.results == {"acc": 0.75} and "line1" in attached.stdout
    # Another key's job: refused in one line before its host is asked, naming no key.
    other = node.issue_api_key(1.0)
    monkeypatch.setenv("NOSANA_API_KEY", other)
    with capture_output():
        shell.run_cell_magic(MAGIC, "-b -q -t 2m -o mine", cell(op("b", "sleep 30")))
    mine: ConfidentialJob = shell.user_ns["mine"]
    wait_until(lambda: mine.address is not None, what="the job listed")
    monkeypatch.setenv("NOSANA_API_KEY", key)
    stranger = ConfidentialJob.attach(mine.address or "", magics.settings())
    stranger.wait(PATIENCE)
    assert stranger.status == "failed"
    error = str(stranger.error)
    assert "it was not listed with this API key" in error and "\n" not in error
    assert key not in error and other not in error


def test_a_queued_credit_job_stopped_is_delisted_and_costs_nothing(
        node: DevNode, shell: InteractiveShell, key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.config, "pickup_delay", None)  # no host takes it
    with capture_output() as captured:
        shell.run_cell_magic(MAGIC, "-b -q -m local-cpu -t 1h -o queued",
                             cell(op("a", "echo never")))
        run: ConfidentialJob = shell.user_ns["queued"]
        wait_until(lambda: run.phase == "queued", what="the job queued")
        assert balance(node, key)["reservedCredits"] == pytest.approx(0.055)
        shell.run_line_magic("nosana", f"stop {run.address}")
    run.wait(PATIENCE)
    assert run.status == "stopped" and not run.logs
    assert f"job {run.address} stopped" in captured.stdout.splitlines()
    # Delisted through Nosana's API with the key: the whole reservation comes back.
    after = balance(node, key)
    assert (after["reservedCredits"], after["settledCredits"]) == (0, 0)


def test_the_job_is_listed_in_the_market_its_cost_was_shown_for(
        node: DevNode, shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without -m the local network picks a market; if its markets changed order between the
    # estimate and the listing, the job must still go where the cost was stated.
    original = ApiNetwork.markets
    calls = [0]

    async def shuffled(self: ApiNetwork) -> list[Any]:
        calls[0] += 1
        markets = [dataclasses.replace(m, idle_hosts=1) for m in await original(self)]
        return markets if calls[0] % 2 else markets[::-1]

    monkeypatch.setattr(ApiNetwork, "markets", shuffled)
    with capture_output() as captured:
        shell.run_cell_magic(MAGIC, "-t 2m -o run", cell(op("a", "echo hi")))
    run: ConfidentialJob = shell.user_ns["run"]
    assert run.ok, run._error_line()
    listed_in = node.ledger.market(node.job(run.address or "").market)
    assert f"local: market {listed_in.slug} at " in captured.stdout


def test_the_pay_trait_chooses_and_the_flag_wins(
        node: DevNode, shell: InteractiveShell, key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    magics = next(m for m in shell.configurables if isinstance(m, NosanaMagics))
    with pytest.raises(TraitError, match="pay must be one of credits, wallet, got 'cash'"):
        magics.pay = "cash"
    shell.run_line_magic("config", "NosanaMagics.pay = 'Wallet'")
    assert magics.pay == "wallet"
    with capture_output() as by_trait:
        shell.run_cell_magic(MAGIC, "-t 2m -o paid", cell(op("a", "echo hi")))
    paid: ConfidentialJob = shell.user_ns["paid"]
    assert paid.ok and "credits:" not in by_trait.stdout
    assert node.job(paid.address or "").project != node.ledger.credits.account(key).address
    # The environment does not override the trait; the flag does.
    monkeypatch.setenv("NOSANA_PAY", "credits")
    assert magics.settings().pays_with == "wallet"
    with capture_output() as by_flag:
        shell.run_cell_magic(MAGIC, "--pay credits -t 2m -o run", cell(op("a", "echo hi")))
    run: ConfidentialJob = shell.user_ns["run"]
    assert run.ok and "credits: $5.00 available" in by_flag.stdout
    assert node.job(run.address or "").project == node.ledger.credits.account(key).address


def test_ctrl_c_stops_a_credit_job_and_says_what_it_cost(
        node: DevNode, shell: InteractiveShell, key: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    shell.user_ns.pop("stopped", None)

    def interrupt_once_running() -> None:
        def running() -> bool:
            job = shell.user_ns.get("stopped")
            return job is not None and job.phase == "running" and bool(job.logs)
        wait_until(running, what="the job running")
        signal.raise_signal(signal.SIGINT)  # what a kernel interrupt does

    timer = threading.Thread(target=interrupt_once_running, daemon=True)
    timer.start()
    with capture_output() as captured:
        result = shell.run_cell(
            f"%%{MAGIC} -m local-cpu -t 10m -o stopped\n{cell(op('long', 'echo up; sleep 300'))}")
    timer.join(PATIENCE)
    run: ConfidentialJob = shell.user_ns["stopped"]
    assert isinstance(result.error_in_exec, JobInterrupted)
    assert run.done and run.status == "stopped"
    # Stopped by its host with the signing service's header, and charged for the seconds run.
    after = balance(node, key)
    assert after["reservedCredits"] == 0 and 0 < after["settledCredits"] < 0.0092
    spent = after["settledCredits"]
    assert (f"credits: {format_usd(5.0 - spent)} available ({format_usd(spent)} spent since "
            "this job was listed, $0.00 still reserved)") in captured.stdout
    assert f"job {run.address} stopped" in captured.stdout.splitlines()
