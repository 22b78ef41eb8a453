"""The magics through a real ``InteractiveShell``: ``%%nosana_confidential`` and ``%nosana``.

The shell has an in-memory history and loads the extension the way ``%load_ext`` does. Jobs
run on one in-process shell_devnode for the module, which the magic reaches through its
``devnode_url`` setting (so no local network service is started). Outside a kernel the view is the
plain-text one, written by the main thread: ``capture_output`` sees everything it shows.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets import TraitError
from traitlets.config import Config

from nosana_magic.devnode import DevNode
from nosana_magic.job import ConfidentialJob, JobFailed, JobInterrupted, JobNotFound, jobs
from nosana_magic.jobdef import JobDefinitionError
from nosana_magic.magics import NosanaMagics, SpendNotConfirmed
from nosana_magic.network.base import Market
from nosana_magic.secrets import SecretError

from .conftest import ipython_shell
from .waiting import PATIENCE

MAGIC = "nosana_confidential"


def cell(*ops: dict[str, Any]) -> str:
    return json.dumps({"version": "0.1", "type": "container", "meta": {"trigger": "cli"},
                       "ops": list(ops)}, indent=2)


def op(op_id: str, cmd: str | list[str], **args: Any) -> dict[str, Any]:
    extra = {k: args.pop(k) for k in ("results", "execution") if k in args}
    return {"type": "container/run", "id": op_id,
            "args": {"image": "ubuntu:22.04", "cmd": cmd, **args}, **extra}


HELLO = cell(op("hello", "echo hello; echo 'loss=0.25'; echo oops >&2",
                results={"loss": "loss=([0-9.]+)"}))


@pytest.fixture(scope="module")
def shell(shell_devnode: DevNode) -> Iterator[InteractiveShell]:
    """One shell for the module (each test gets clean settings from ``isolated``)."""
    with ipython_shell() as ip:
        yield ip


@pytest.fixture
def magics(shell: InteractiveShell) -> NosanaMagics:
    return next(m for m in shell.configurables if isinstance(m, NosanaMagics))


@pytest.fixture(autouse=True)
def isolated(shell_devnode: DevNode, shell: InteractiveShell, magics: NosanaMagics,
             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A clean environment and settings per test; the shell_devnode back to its defaults."""
    for var in ("NOSANA_NETWORK", "NOSANA_MARKET", "NOSANA_TIMEOUT", "NOSANA_WALLET",
                "NOSANA_RPC_URL", "NOSANA_NODE_URL_TEMPLATE", "PINATA_JWT", "NOSANA_API_KEY",
                "NOSANA_PAY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NOSANA_DEVNODE_URL", shell_devnode.url)
    monkeypatch.setenv("NOSANA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NOSANA_CREDENTIALS_FILE", str(tmp_path / "no-credentials.json"))
    for name in ("network", "market", "timeout", "devnode_url", "node_url_template", "rpc_url",
                 "pay"):
        setattr(magics, name, None)
    magics.log_tail = 1000
    magics.confirm_spend = True
    shell_devnode.config.pickup_delay = 0.05
    earlier = {id(job) for job in jobs()}
    yield
    # Leave no job of this test running (another module's, on a devnode gone since, is not
    # ours to stop), and let background views print their summaries now.
    for job in jobs():
        if id(job) in earlier:
            continue
        if not job.done:
            job.stop()
        job.wait(30)
    with capture_output():
        shell.run_cell("pass")


def _until(check: Any, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# --------------------------------------------------------------------------- the cell magic


def test_cell_runs_the_job_and_puts_the_handle_in_its_variable(shell: InteractiveShell) -> None:
    with capture_output() as captured:
        returned = shell.run_cell_magic(MAGIC, "-o run --timeout 2m", HELLO)
    # With -o the handle is in its variable; returning it too would display it a second time.
    assert returned is None
    job = shell.user_ns["run"]
    assert isinstance(job, ConfidentialJob)
    assert job.ok and job.ops["hello"].exit_code == 0
    assert job.results == {"loss": 0.25}
    assert job.timeout == 120
    assert "[hello] hello" in captured.stdout
    # A host does not say which stream a live line is on: shown with the output; the
    # handle has it on stderr, from the results.
    assert "[hello] oops" in captured.stdout and job.stderr == "oops"
    assert f"nosana job {job.address} on local: succeeded" in captured.stdout
    assert "  op hello: succeeded (exit 0)" in captured.stdout


def test_the_handle_lands_in_out(shell: InteractiveShell) -> None:
    with capture_output():
        result = shell.run_cell(f"%%{MAGIC}\n{HELLO}", store_history=True)
    assert result.success, result.error_in_exec
    assert isinstance(result.result, ConfidentialJob)
    assert shell.user_ns["Out"][result.execution_count] is result.result
    assert shell.user_ns["_"] is result.result


def test_background_returns_at_once_and_prints_the_summary_later(
        shell: InteractiveShell, shell_devnode: DevNode) -> None:
    # The op runs until the test lets it end (or 30 s pass): a cell that waited for the job
    # would return only then.
    slow = cell(op("slow", "i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.05; "
                           "i=$((i+1)); done; echo done"))
    with capture_output() as captured:
        start = time.monotonic()
        result = shell.run_cell(f"%%{MAGIC} -b -o bg\n{slow}", store_history=True)
        returned = time.monotonic() - start
    # One live view and no second display of the job (an Out snapshot would go stale).
    assert result.result is None
    job = shell.user_ns["bg"]
    assert isinstance(job, ConfidentialJob)
    assert returned < PATIENCE / 2 and not job.done
    assert "running in background" in captured.stdout
    assert "done" not in captured.stdout  # the loop thread never prints
    _until(lambda: job.phase == "running")
    workdir = shell_devnode.workdir
    assert workdir is not None and job.address is not None
    _until(lambda: (workdir / (job.address or "")).is_dir())  # the op has started
    (workdir / job.address / "go").touch()
    job.wait(PATIENCE)
    assert job.ops["slow"].logs[-1].text == "done"
    with capture_output() as later:
        shell.run_cell("bg.ok", store_history=True)
    assert f"nosana job {job.address} on local: succeeded" in later.stdout
    assert "QUEUED" not in captured.stdout + later.stdout


def test_quiet_shows_status_only_but_the_handle_has_every_line(
        shell: InteractiveShell) -> None:
    with capture_output() as captured:
        job = shell.run_cell_magic(MAGIC, "-q", HELLO)
    assert "[hello]" not in captured.stdout and "oops" not in captured.stderr
    assert {"hello", "loss=0.25", "oops"} <= {line.text for line in job.logs}
    assert f"nosana job {job.address} on local: succeeded" in captured.stdout


def test_var_references_resolve_against_the_user_namespace(shell: InteractiveShell) -> None:
    shell.user_ns["GREETING"] = "bonjour"
    shell.user_ns["CONFIG"] = {"lr": 0.1}
    job = shell.run_cell_magic(MAGIC, "-q", cell(op(
        "hi", ["python3", "-c", "import sys; print(sys.argv[1], sys.argv[2])",
               "${var:GREETING}", "${var:CONFIG}"])))
    assert job.ok
    assert any(line.text == 'bonjour {"lr": 0.1}' for line in job.logs)


def test_definition_warnings_are_shown_once_before_posting(shell: InteractiveShell) -> None:
    duplicated = HELLO.replace('"type": "container",',
                               '"type": "container", "type": "container",', 1)
    with capture_output() as captured:
        shell.run_cell_magic(MAGIC, "-q", duplicated)
    warnings = [line for line in captured.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "duplicate" in warnings[0].lower()


def test_failing_job_raises_its_one_line_error_and_keeps_the_handle(
        shell: InteractiveShell) -> None:
    failing = cell(op("train", "echo before; exit 3"))
    with capture_output() as captured:
        result = shell.run_cell(f"%%{MAGIC} -o failed\n{failing}")
    err = result.error_in_exec
    assert isinstance(err, JobFailed)
    job = shell.user_ns["failed"]
    assert str(err) == f"job {job.address} failed: op train exited with 3"
    # What the user sees: the one rendered line, no traceback.
    assert captured.stdout.strip().splitlines()[-1] == f"JobFailed: {err}"
    assert "Traceback" not in captured.stdout


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("line", [
    "--bogus",
    "--timeout 5x",
    "--timeout 0",
    "--network moon",
    "--send-only --receive-only",
    "-o 1x",
    "-o class",
    "-m",
])
def test_bad_arguments_raise_the_exact_usage_error(
        shell: InteractiveShell, shell_devnode: DevNode, line: str) -> None:
    before = len(shell_devnode.ledger.jobs)
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic(MAGIC, line, HELLO)
    assert type(info.value) is UsageError  # a subclass would print a full traceback
    assert len(str(info.value).splitlines()) == 1
    assert len(shell_devnode.ledger.jobs) == before


@pytest.mark.parametrize("name", ["get_ipython", "In", "Out", "exit", "quit", "_", "__", "___",
                                  "_i", "_ii", "_i3", "_7", "_oh", "_ih", "_dh", "__name__",
                                  "__builtins__", "open"])
def test_out_may_not_replace_a_name_the_shell_uses(
        shell: InteractiveShell, shell_devnode: DevNode, name: str) -> None:
    # `-o get_ipython` put the handle where IPython calls get_ipython(): the shell broke.
    before = len(shell_devnode.ledger.jobs)
    kept = shell.user_ns.get(name)
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic(MAGIC, f"-o {name}", HELLO)
    assert type(info.value) is UsageError and len(str(info.value).splitlines()) == 1
    assert f"--out: {name!r} is a name IPython uses itself" in str(info.value)
    assert shell.user_ns.get(name) is kept and len(shell_devnode.ledger.jobs) == before
    with capture_output() as captured:
        assert shell.run_cell("print(get_ipython() is not None, len(In) > 0)").success
    assert captured.stdout.strip() == "True True"


def test_the_line_is_not_expanded(shell: InteractiveShell) -> None:
    shell.user_ns["tok"] = "sk-SECRET-VALUE"
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic(MAGIC, "--tokn $tok {tok}", HELLO)
    assert "sk-SECRET-VALUE" not in str(info.value)
    assert "$tok" in str(info.value)


def test_bad_json_is_one_rendered_line(shell: InteractiveShell, shell_devnode: DevNode) -> None:
    before = len(shell_devnode.ledger.jobs)
    with capture_output() as captured:
        result = shell.run_cell(f'%%{MAGIC}\n{{"version": "0.1",\n  "ops": [}}\n')
    assert isinstance(result.error_in_exec, JobDefinitionError)
    shown = captured.stdout.strip().splitlines()
    # Line 1 is the magic line: the bad line is line 3 of the cell, as the editor numbers it.
    assert len(shown) == 1 and shown[0].startswith("JobDefinitionError: line 3, column")
    assert len(shell_devnode.ledger.jobs) == before


def test_missing_env_secret_posts_nothing(shell: InteractiveShell, shell_devnode: DevNode,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_TOKEN", raising=False)
    jobs_before, pinned_before = len(shell_devnode.ledger.jobs), len(shell_devnode.ipfs)
    body = cell(op("a", "echo hi", env={"T": "${env:NOT_SET_TOKEN}"}))
    with capture_output() as captured:
        result = shell.run_cell(f"%%{MAGIC}\n{body}")
    assert isinstance(result.error_in_exec, SecretError)
    assert "environment variable NOT_SET_TOKEN is not set" in captured.stdout
    assert "Traceback" not in captured.stdout
    assert len(shell_devnode.ledger.jobs) == jobs_before
    assert len(shell_devnode.ipfs) == pinned_before


def test_empty_cell_is_a_usage_error(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError):
        shell.run_cell_magic(MAGIC, "", "   \n")


# --------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_stops_the_job_with_one_line(shell: InteractiveShell,
                                            shell_devnode: DevNode) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    body = cell(op("long", "echo started; sleep 300"))

    def interrupt_once_running() -> None:
        _until(lambda: any(j.phase == "running" and j.logs for j in _live_jobs()))
        signal.raise_signal(signal.SIGINT)  # what a kernel interrupt does

    timer = threading.Thread(target=interrupt_once_running, daemon=True)
    timer.start()
    with capture_output() as captured:
        start = time.monotonic()
        result = shell.run_cell(f"%%{MAGIC} -o stopped\n{body}")
    timer.join(PATIENCE)
    job = shell.user_ns["stopped"]
    assert isinstance(result.error_in_exec, JobInterrupted)
    # The stop and the wait for the end (at most 10 s), not the op's 300 s.
    assert time.monotonic() - start < 2 * PATIENCE
    assert captured.stdout.strip().splitlines()[-1] == f"job {job.address} stopped"
    # The cell waited for the end of the job, so its summary is the final one.
    assert job.done and job.status == "stopped"
    assert f"nosana job {job.address} on local: stopped after " in captured.stdout
    # The op was ended by the stop, whatever word the host used for it.
    assert any(line in ("  op long: stopped (exit 143)", "  op long: stopped (exit 137)")
               for line in captured.stdout.splitlines()), captured.stdout
    # Nothing the package says contradicts that (the host's own lines are marked as its).
    ours = [line for line in captured.stdout.splitlines() if not line.startswith("· host: ")]
    assert not any("success" in line or "expired" in line.lower() for line in ours), ours
    assert "the summary replaces this line" not in captured.stdout
    assert "stopping:" not in captured.stdout
    # The host ended it (the ledger records the run as finished, the flow as stopped).
    assert shell_devnode.job(job.address).state.done


def test_a_second_ctrl_c_does_not_cancel_the_stop(
    shell: InteractiveShell, shell_devnode: DevNode
) -> None:
    """The host's /stop fails for a while; a second interrupt comes during the stop: the
    stop still goes through (on the ledger) and the cell ends with one line."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    body = cell(op("long", "echo started; sleep 60"))
    faults = shell_devnode.config.faults

    def interrupt_twice_once_running() -> None:
        _until(lambda: any(j.phase == "running" and j.logs for j in _live_jobs()))
        faults.fail_routes, faults.fail_requests = r"/stop$", 10**6
        signal.raise_signal(signal.SIGINT)
        time.sleep(0.8)
        signal.raise_signal(signal.SIGINT)

    timer = threading.Thread(target=interrupt_twice_once_running, daemon=True)
    timer.start()
    try:
        with capture_output() as captured:
            result = shell.run_cell(f"%%{MAGIC} -o stopped2\n{body}")
        timer.join(PATIENCE)
    finally:
        faults.fail_requests = 0
    job = shell.user_ns["stopped2"]
    assert isinstance(result.error_in_exec, JobInterrupted), repr(result.error_in_exec)
    assert captured.stdout.strip().splitlines()[-1] == f"job {job.address} stopped"
    assert "still stopping it" in captured.stderr
    job.wait(PATIENCE)
    assert job.status == "stopped" and shell_devnode.job(job.address).state.done


def test_a_second_ctrl_c_does_not_cancel_percent_nosana_stop(
    shell: InteractiveShell, shell_devnode: DevNode
) -> None:
    """%nosana stop while the host's /stop fails for a while, and Ctrl-C twice meanwhile:
    the stop goes through (on the ledger) and the magic says how the job ended."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    with capture_output():
        shell.run_cell_magic(MAGIC, "-b -q -o held", cell(op("long", "echo up; sleep 60")))
    job = shell.user_ns["held"]
    _until(lambda: job.phase == "running" and bool(job.logs))
    faults = shell_devnode.config.faults
    faults.fail_routes, faults.fail_requests = r"/stop$", 10**6
    threading.Timer(0.2, signal.raise_signal, args=(signal.SIGINT,)).start()
    threading.Timer(0.8, signal.raise_signal, args=(signal.SIGINT,)).start()
    try:
        with capture_output() as captured:
            shell.run_line_magic("nosana", f"stop {job.address}")
    finally:
        faults.fail_requests = 0
    assert "still stopping it" in captured.stderr
    assert captured.stdout.strip().splitlines()[-1] == f"job {job.address} stopped"
    assert job.status == "stopped" and shell_devnode.job(job.address).state.done


def _live_jobs() -> list[ConfidentialJob]:
    return [job for job in jobs() if not job.done]


# --------------------------------------------------------------------------- %nosana


def test_jobs_status_logs(shell: InteractiveShell) -> None:
    with capture_output():
        job = shell.run_cell_magic(MAGIC, "-q", HELLO)
    table = shell.run_line_magic("nosana", "jobs")
    assert job.address in repr(table) and job.address in table._repr_html_()
    assert shell.run_line_magic("nosana", f"status {job.address[:12]}") is job
    with capture_output() as captured:
        shell.run_line_magic("nosana", f"logs {job.address[:12]}")
    assert "[hello] hello" in captured.stdout and "[hello] oops" in captured.stderr


def test_stop_a_background_job(shell: InteractiveShell) -> None:
    with capture_output() as captured:
        shell.run_cell_magic(MAGIC, "-b -q", cell(op("long", "echo up; sleep 60")))
        job = shell.run_line_magic("nosana", "status")  # -b without -o: the latest job
        _until(lambda: job.phase == "running")
        shell.run_line_magic("nosana", f"stop {job.address[:10]}")
    job.wait(PATIENCE)
    assert job.status == "stopped"
    # %nosana stop waited for the end and said how the job ended.
    assert captured.stdout.strip().splitlines()[-1] == f"job {job.address} stopped"
    with capture_output() as later:
        shell.run_cell("pass")  # the first cell after the end prints the summary
    assert f"nosana job {job.address} on local: stopped" in later.stdout


def test_attach_follows_a_job_started_elsewhere(shell: InteractiveShell) -> None:
    with capture_output():
        shell.run_cell_magic(MAGIC, "-b -q -o w1", cell(op("w", "echo one; sleep 0.5; echo two")))
    job = shell.user_ns["w1"]
    _until(lambda: job.address is not None)
    with capture_output() as captured:
        attached = shell.run_line_magic("nosana", f"attach {job.address}")
    assert attached.done and attached.ok
    assert "[w] two" in captured.stdout


def test_attach_by_address_from_another_kernel(shell: InteractiveShell,
                                               shell_devnode: DevNode) -> None:
    # A job started by someone else with the same wallet: list it with the client, then forget
    # it locally, as a fresh kernel would not know it.
    with capture_output():
        shell.run_cell_magic(MAGIC, "-b -q -o w2", cell(op("w", "echo one; sleep 1; echo two")))
    job = shell.user_ns["w2"]
    _until(lambda: job.phase == "running")
    from nosana_magic import job as job_module

    monkey_jobs = [j for j in job_module.jobs() if j is not job]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job_module, "jobs", lambda: monkey_jobs)
        mp.setattr(job_module, "find_job", _not_found)
        with capture_output() as captured:
            attached = shell.run_line_magic("nosana", f"attach {job.address}")
    assert attached is not job and attached.address == job.address
    assert attached.ok
    assert "[w] one" in captured.stdout and "[w] two" in captured.stdout


def _not_found(prefix: str) -> ConfidentialJob:
    raise JobNotFound(f"no job {prefix} in this kernel")


def test_unknown_job_is_one_line(shell: InteractiveShell) -> None:
    with capture_output() as captured:
        result = shell.run_cell("%nosana status ZZZZnotajob")
    assert result.error_in_exec is not None
    assert len(captured.stdout.strip().splitlines()) == 1


def test_subcommand_needs_a_job(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="needs a JOB"):
        shell.run_line_magic("nosana", "logs")


def test_markets(shell: InteractiveShell) -> None:
    table = shell.run_line_magic("nosana", "markets")
    assert "local-cpu" in repr(table) and "local-gpu" in table._repr_html_()


def test_config_shows_sources_and_credentials_only_as_set(
        shell: InteractiveShell, magics: NosanaMagics, monkeypatch: pytest.MonkeyPatch) -> None:
    from solders.keypair import Keypair

    secret = str(Keypair())
    monkeypatch.setenv("NOSANA_WALLET", secret)
    monkeypatch.setenv("NOSANA_MARKET", "local-gpu")
    monkeypatch.setenv("PINATA_JWT", "jwt-SECRET-123")
    shell.run_line_magic("config", "NosanaMagics.timeout = '45m'")
    table = shell.run_line_magic("nosana", "config")
    text, page = repr(table), table._repr_html_()
    rows = {row[0]: row for row in table.rows}
    assert rows["market"][1:] == ["local-gpu", "env NOSANA_MARKET"]
    assert rows["timeout"][1:] == ["2700", "%config NosanaMagics.timeout"]
    assert rows["network"][1:] == ["local", "default"]
    assert rows["wallet"][1] == "set" and rows["pinata_jwt"][1] == "set"
    for shown in (text, page):
        assert secret not in shown and "jwt-SECRET-123" not in shown


def test_config_renders_every_setting_with_its_source(
        shell: InteractiveShell, magics: NosanaMagics, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOSANA_PRIORITY_FEE", "1234")
    table = shell.run_line_magic("nosana", "config")
    rows = {row[0]: row for row in table.rows}
    assert rows["priority_fee"][1:] == ["1234", "env NOSANA_PRIORITY_FEE"]
    assert rows["devnode_url"][2] == "env NOSANA_DEVNODE_URL"
    assert rows["commitment"][1:] == ["confirmed", "default"]
    assert list(rows) == [name for name, _, _ in magics.settings().explain()] + [
        "log_tail", "confirm_spend"]


# --------------------------------------------------------------------------- settings


def test_precedence_flag_over_trait_over_env_over_default(
        magics: NosanaMagics, monkeypatch: pytest.MonkeyPatch) -> None:
    assert magics.settings().market is None
    monkeypatch.setenv("NOSANA_MARKET", "from-env")
    assert magics.settings().market == "from-env"
    magics.market = "from-trait"
    assert magics.settings().market == "from-trait"
    assert magics.settings(market="from-flag").market == "from-flag"


def test_traits_refuse_bad_and_secret_bearing_values(magics: NosanaMagics) -> None:
    with pytest.raises(TraitError):
        magics.network = "moon"
    with pytest.raises(TraitError):
        magics.timeout = "soon"
    for keyed in ("https://rpc.example/?api-key=SECRET", "https://u:SECRET@rpc.example/",
                  "https://x.g.alchemy.com/v2/AbCdEfSECRETKEY123"):
        with pytest.raises(TraitError, match="credentials"):
            magics.rpc_url = keyed
    magics.rpc_url = "https://api.mainnet-beta.solana.com/rpc"  # a route, not a key
    with pytest.raises(TraitError):
        magics.log_tail = 0


def test_config_traits_through_percent_config(shell: InteractiveShell,
                                             magics: NosanaMagics) -> None:
    shell.run_line_magic("config", "NosanaMagics.log_tail = 50")
    assert magics.log_tail == 50
    with capture_output() as captured:
        shell.run_line_magic("config", "NosanaMagics")
    assert "log_tail" in captured.stdout and "confirm_spend" in captured.stdout


# --------------------------------------------------------------------------- spending


@pytest.fixture
def paid_market(magics: NosanaMagics, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """devnet with a known market, and a record of what reached the job client."""
    market = Market("Mkt111", "nvidia-3090", price_per_second=100, network_fee_pct=10.0)
    monkeypatch.setattr(NosanaMagics, "_market_info",
                        lambda self, settings, node=None: (market, None))
    posted: list[str] = []

    def fake_run(definition: Any, **kw: Any) -> Any:
        posted.append(kw["settings"].network)
        raise SpendNotConfirmed("(test) stopped before listing")

    import nosana_magic.job as job_module

    monkeypatch.setattr(job_module, "run_confidential", fake_run)
    return posted


def test_paid_network_headless_refuses_without_yes(
        shell: InteractiveShell, paid_market: list[str]) -> None:
    with capture_output() as captured, pytest.raises(SpendNotConfirmed) as info:
        shell.run_cell_magic(MAGIC, "--network devnet -m nvidia-3090 -t 30m", HELLO)
    assert "--yes" in str(info.value) and paid_market == []
    statement = captured.stdout
    assert "devnet: market nvidia-3090 at 0.36 NOS/h" in statement
    assert "at most 0.198 NOS" in statement  # 100e-6 * 1800 * 1.1


def test_paid_network_with_yes_goes_ahead(shell: InteractiveShell,
                                          paid_market: list[str]) -> None:
    with capture_output(), pytest.raises(SpendNotConfirmed, match=r"\(test\)"):
        shell.run_cell_magic(MAGIC, "--network devnet -m nvidia-3090 --yes", HELLO)
    assert paid_market == ["devnet"]


def test_paid_network_asks_when_someone_can_answer(
        shell: InteractiveShell, paid_market: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter(["n", "y"])
    monkeypatch.setattr(NosanaMagics, "_ask", lambda self, prompt: next(answers))
    with capture_output(), pytest.raises(SpendNotConfirmed, match="not confirmed"):
        shell.run_cell_magic(MAGIC, "--network mainnet -m nvidia-3090", HELLO)
    assert paid_market == []
    with capture_output(), pytest.raises(SpendNotConfirmed, match=r"\(test\)"):
        shell.run_cell_magic(MAGIC, "--network mainnet -m nvidia-3090", HELLO)
    assert paid_market == ["mainnet"]


def test_paid_network_needs_a_market(shell: InteractiveShell, paid_market: list[str]) -> None:
    with pytest.raises(UsageError, match="--market is required on devnet"):
        shell.run_cell_magic(MAGIC, "--network devnet --yes", HELLO)


def test_unload_removes_the_magics(shell_devnode: DevNode) -> None:
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    other = InteractiveShell(config=config)
    try:
        other.extension_manager.load_extension("nosana_magic")
        assert "nosana_confidential" in other.magics_manager.magics["cell"]
        other.extension_manager.unload_extension("nosana_magic")
        assert "nosana_confidential" not in other.magics_manager.magics["cell"]
        assert "nosana" not in other.magics_manager.magics["line"]
    finally:
        other.history_manager.end_session()


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("line", ["", "--help", "-h", "help"])
def test_nosana_alone_or_with_help_prints_the_whole_usage(shell: InteractiveShell,
                                                           line: str) -> None:
    with capture_output() as captured:
        result = shell.run_line_magic("nosana", line)
    assert result is None
    text = captured.stdout
    assert text.startswith("usage: %nosana ")
    for command in ("jobs", "status", "logs", "stop", "attach", "markets", "config", "help"):
        assert f"  %nosana {command}" in text
    assert "--network" in text and "Example:" in text and "run = %nosana status" in text
    assert "the following arguments are required" not in text + captured.stderr


@pytest.mark.parametrize("line", ["help stop", "stop -h", "stop --help"])
def test_help_of_one_command(shell: InteractiveShell, line: str) -> None:
    with capture_output() as captured:
        shell.run_line_magic("nosana", line)
    assert captured.stdout.startswith("usage: %nosana stop JOB\n")
    assert "delists it while it is queued" in " ".join(captured.stdout.split())


def test_every_command_is_routed_through_the_table_and_documented(
        shell: InteractiveShell) -> None:
    from nosana_magic.magics import _COMMANDS

    assert list(_COMMANDS) == ["jobs", "status", "show", "logs", "forget", "stop", "attach",
                               "markets", "credits", "config", "local", "help"]
    with capture_output() as whole:
        shell.run_line_magic("nosana", "help")
    for name, command in _COMMANDS.items():
        assert command.run.__doc__, name  # a command's help is its function's docstring
        assert f"  {command.usage}" in whole.stdout and command.summary in whole.stdout
        with capture_output() as one:
            shell.run_line_magic("nosana", f"help {name}")
        assert one.stdout.startswith(f"usage: {command.usage}\n\n")
        assert " ".join(one.stdout.split()[1 + len(command.usage.split()):]) == command.help


def test_help_of_an_unknown_command_is_a_usage_error(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match=r"unknown command 'bogus' \(commands: jobs, "):
        shell.run_line_magic("nosana", "help bogus")


@pytest.mark.parametrize("line", ["--help", "-h", "-o run --help"])
def test_cell_magic_help_prints_usage_and_runs_nothing(
        shell: InteractiveShell, shell_devnode: DevNode, line: str) -> None:
    before = len(shell_devnode.ledger.jobs)
    with capture_output() as captured:
        result = shell.run_cell(f"%%{MAGIC} {line}\n{HELLO}")
    assert result.success and result.result is None
    text = captured.stdout
    assert text.startswith("usage: %%nosana_confidential [-m MARKET]")
    for flag in ("--market", "--timeout", "--network", "--out", "--background", "--quiet",
                 "--node", "--send-only", "--receive-only", "--yes"):
        assert flag in text
    assert "Example" in text and '"results": {"loss"' in text
    assert "without -o, `run = %nosana status` gets it" in " ".join(text.split())
    assert len(shell_devnode.ledger.jobs) == before and "[hello]" not in text  # the body never ran


# --------------------------------------------------------------------------- locations


def test_a_located_error_names_the_line_the_notebook_shows(shell: InteractiveShell) -> None:
    body = cell(op("a", "true")).replace('"image": "ubuntu:22.04"', '"image": 7')
    lines = f"%%{MAGIC}\n{body}".splitlines()
    editor_line = next(i for i, text in enumerate(lines, start=1) if '"image": 7' in text)
    with capture_output() as captured:
        result = shell.run_cell("\n".join(lines))
    assert isinstance(result.error_in_exec, JobDefinitionError)
    assert result.error_in_exec.line == editor_line
    assert captured.stdout.startswith(f"JobDefinitionError: line {editor_line}, column ")


# --------------------------------------------------------------------------- markets


def test_a_nosana_market_name_runs_on_the_local_market_of_its_kind(
        shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    from nosana_magic.network import local

    monkeypatch.setattr(local, "_announced", set())
    with capture_output() as captured:
        first = shell.run_cell_magic(MAGIC, "-q --market nvidia-3090", HELLO)
        second = shell.run_cell_magic(MAGIC, "-q --market nvidia-3090", HELLO)
    assert first.ok and second.ok
    assert first.market.slug == second.market.slug == "local-gpu"
    notice = "market nvidia-3090 runs on local-gpu on the local network"
    assert captured.stdout.count(notice) == 1  # said once


def test_an_unknown_market_on_a_running_devnode_is_one_line_and_posts_nothing(
        shell: InteractiveShell, shell_devnode: DevNode) -> None:
    before, pinned = len(shell_devnode.ledger.jobs), len(shell_devnode.ipfs)
    with capture_output() as captured:
        result = shell.run_cell(f"%%{MAGIC} --market nvidia-9999\n{HELLO}")
    assert result.error_in_exec is not None
    shown = captured.stdout.strip().splitlines()
    assert len(shown) == 1 and "unknown market 'nvidia-9999' on the local network" in shown[0]
    assert len(shell_devnode.ledger.jobs) == before and len(shell_devnode.ipfs) == pinned


def test_an_unknown_market_is_refused_before_the_local_network_starts(
        shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    from nosana_magic.network import local

    started: list[str] = []

    def no_start(*args: Any) -> Any:
        started.append("shell_devnode")
        raise AssertionError("the local network must not be started for this cell")

    monkeypatch.delenv("NOSANA_DEVNODE_URL")
    monkeypatch.setattr(local, "ensure_service", no_start)
    with capture_output() as captured:
        result = shell.run_cell(f"%%{MAGIC} --market nvidia-3091\n{HELLO}")
    assert started == []
    error = result.error_in_exec
    assert error is not None and type(error).__name__ == "UnknownMarketError"
    message = "unknown market 'nvidia-3091' on the local network; did you mean nvidia-3090"
    assert (captured.stdout + captured.stderr).count(message) == 1  # once
    assert captured.stdout.strip().splitlines() == [f"UnknownMarketError: {error}"]


# --------------------------------------------------------------------------- honest words


def test_a_failed_op_reads_failed_everywhere_and_the_host_lines_are_the_hosts(
        shell: InteractiveShell) -> None:
    failing = cell(op("train", "echo before; exit 3"))
    with capture_output() as captured:
        result = shell.run_cell(f"%%{MAGIC} -o failed2\n{failing}")
    job = shell.user_ns["failed2"]
    assert isinstance(result.error_in_exec, JobFailed)
    assert job.status == "failed" and not job.ok
    shown = captured.stdout.splitlines()
    # The host writes its own words ("finished with status success"): shown as the host's.
    host_lines = [line for line in shown if "finished with status" in line]
    assert host_lines and all(line.startswith("· host: ") for line in host_lines)
    assert f"nosana job {job.address} on local: failed after " in captured.stdout
    assert "  op train: failed (exit 3)" in shown and "  why: op train exited with 3" in shown
    assert repr(job).startswith(f"<ConfidentialJob {job.address[:4]}") and " failed " in repr(job)
    assert "<td style='text-align:left'>failed</td>" in job._repr_html_()
    table = shell.run_line_magic("nosana", "jobs")
    assert [job.address, "local", "local-cpu", "failed"] == next(
        row for row in table.rows if row[0] == job.address)[:4]
    with pytest.raises(KeyError) as missing:
        job.results["loss"]
    assert str(missing.value) == (f"no result 'loss' in job {job.address}: it has no results; "
                                  "the job failed: op train exited with 3")


def test_a_missing_result_while_the_job_runs_says_so(shell: InteractiveShell) -> None:
    with capture_output():
        shell.run_cell_magic(MAGIC, "-b -q -o slow", cell(op("slow", "sleep 2; echo loss=1",
                                                      results={"loss": "loss=([0-9]+)"})))
    job = shell.user_ns["slow"]
    with pytest.raises(KeyError, match=r"^no result 'loss' yet: job .* is (queued|running|"
                                        r"validating|pinning|listing|sending-definition)"):
        job.results["loss"]
    job.wait(30)
    assert job.results["loss"] == 1


# --------------------------------------------------------------------------- warnings


def test_a_literal_credential_is_warned_about_by_field_never_by_value(
        shell: InteractiveShell, shell_devnode: DevNode, monkeypatch: pytest.MonkeyPatch) -> None:
    password, token = "hunter2-registry-pw", "hf_" + "Ab3" * 10
    monkeypatch.delenv("NOT_SET_EITHER", raising=False)
    body = cell(op("a", "echo hi", env={"HF_TOKEN": token, "MISSING": "${env:NOT_SET_EITHER}"},
                   authentication={"docker": {"username": "me", "password": password}}))
    before = len(shell_devnode.ledger.jobs)
    with capture_output() as captured:
        result = shell.run_cell(f"%%{MAGIC}\n{body}")
    assert result.error_in_exec is not None  # the missing variable: nothing is posted
    assert len(shell_devnode.ledger.jobs) == before
    shown = captured.stdout + captured.stderr
    assert password not in shown and token not in shown
    warnings = [line for line in captured.stderr.splitlines() if line.startswith("warning: ")]
    lines = f"%%{MAGIC}\n{body}".splitlines()
    pw_line = next(i for i, text in enumerate(lines, start=1) if password in text)
    assert any(w.startswith(f"warning: line {pw_line}, column ")
               and "ops[0].args.authentication.docker.password: a registry password" in w
               and "${env:DOCKER_PASSWORD}" in w for w in warnings), warnings
    assert any("ops[0].args.env.HF_TOKEN: a value that looks like a token" in w
               and "${env:HF_TOKEN}" in w for w in warnings), warnings
    assert len(warnings) == 2  # once each, and nothing for the ${env:…} reference


def test_a_public_expose_gets_a_note_and_a_private_one_does_not(
        shell: InteractiveShell) -> None:
    public = cell(op("web", "true", expose=8080))
    private = cell(op("web", "true", expose=8080, private=True))
    with capture_output() as captured:
        shell.run_cell_magic(MAGIC, "-q", public)
    notes = [line for line in captured.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "ops[0].args.expose: this service's URL is public and " \
        "predictable" in notes[0] and '"private": true' in notes[0]
    with capture_output() as captured:
        shell.run_cell_magic(MAGIC, "-q", private)
    assert "note: " not in captured.stderr


def test_attach_in_the_background_shows_one_view_and_returns_nothing(
        shell: InteractiveShell) -> None:
    with capture_output():
        shell.run_cell_magic(MAGIC, "-b -q -o w3", cell(op("w", "echo one; sleep 0.5")))
    job = shell.user_ns["w3"]
    _until(lambda: job.address is not None)
    with capture_output():
        result = shell.run_cell(f"%nosana attach {job.address} -b -q", store_history=True)
    assert result.success and result.result is None  # no second, stale display of the job
    job.wait(30)
    assert shell.run_line_magic("nosana", f"status {job.address}") is job
