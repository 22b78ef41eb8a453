"""Sweeps and the local store through the magics: ``%%nosana_confidential --sweep/--params``,
and ``%nosana jobs``, ``show``, ``forget``, ``attach`` reading what the store holds.

Outside a kernel the sweep view is the text one (a line per job, then the table), written by
the main thread: ``capture_output`` sees it all. Each test has a data dir, so a store, of its
own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nosana_magic.devnode import DevNode
from nosana_magic.errors import ParamError, StoreError
from nosana_magic.history import LoadedJob
from nosana_magic.magics import NosanaMagics, SpendNotConfirmed
from nosana_magic.network.base import Market
from nosana_magic.store import open_store
from nosana_magic.sweeps import Runs

from .conftest import ipython_shell
from .waiting import PATIENCE, wait_until

MAGIC = "nosana_confidential"


def cell(cmd: str, **extra: Any) -> str:
    return json.dumps({"version": "0.1", "type": "container", "meta": {"trigger": "cli"},
                       "ops": [{"type": "container/run", "id": "train",
                                "args": {"image": "ubuntu:22.04", "cmd": ["sh", "-c", cmd]},
                                **extra}]}, indent=2)


TRAIN = cell("echo lr=${param:lr} batch=${param:batch}; "
             "python3 -c \"print('loss=%g' % (${param:lr} * ${param:batch}))\"",
             results={"loss": "loss=([0-9.e-]+)"})


@pytest.fixture(scope="module")
def shell_devnode() -> Iterator[DevNode]:
    """Three hosts a market, so that a sweep's jobs run side by side."""
    with DevNode(pickup_delay=0.05, results_window=10, sse_interval=0.05,
                 hosts_per_market=3) as node:
        yield node


@pytest.fixture(scope="module")
def shell(shell_devnode: DevNode) -> Iterator[InteractiveShell]:
    with ipython_shell() as ip:
        yield ip


@pytest.fixture
def magics(shell: InteractiveShell) -> NosanaMagics:
    return next(m for m in shell.configurables if isinstance(m, NosanaMagics))


@pytest.fixture(autouse=True)
def isolated(shell_devnode: DevNode, magics: NosanaMagics, monkeypatch: pytest.MonkeyPatch,
             tmp_path: Path) -> None:
    for var in ("NOSANA_NETWORK", "NOSANA_MARKET", "NOSANA_TIMEOUT", "NOSANA_WALLET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NOSANA_DEVNODE_URL", shell_devnode.url)
    monkeypatch.setenv("NOSANA_DATA_DIR", str(tmp_path))
    for name in ("network", "market", "timeout", "devnode_url"):
        setattr(magics, name, None)
    magics.confirm_spend = True


def _sweep(shell: InteractiveShell, line: str, body: str = TRAIN) -> tuple[Runs, str]:
    with capture_output() as captured:
        result = shell.run_cell_magic(MAGIC, line, body)
    assert result is None  # with -o the sweep is in its variable
    return shell.user_ns["runs"], captured.stdout


# --------------------------------------------------------------------------- the cell magic


def test_a_grid_from_the_cell_runs_every_combination_with_one_table(
        shell: InteractiveShell) -> None:
    runs, out = _sweep(shell, "--sweep lr=0.5,0.25,0.125 --sweep batch=2,4 --parallel 3 "
                              "-o runs")
    assert isinstance(runs, Runs) and runs.ok and len(runs) == 6 and runs.name == "runs"
    assert runs.parallel == 3
    assert [job.params for job in runs] == [
        {"lr": 0.5, "batch": 2}, {"lr": 0.5, "batch": 4}, {"lr": 0.25, "batch": 2},
        {"lr": 0.25, "batch": 4}, {"lr": 0.125, "batch": 2}, {"lr": 0.125, "batch": 4}]
    assert [job.results["loss"] for job in runs] == [1, 2, 0.5, 1, 0.25, 0.5]
    assert "lr=0.125 batch=4" in runs[5].stdout
    lines = out.splitlines()
    assert lines[0] == "sweep runs: 6 jobs on local, at most 3 at once"
    assert "  #5 lr=0.125 batch=4: succeeded (loss=0.5)" in lines
    header = next(line for line in lines if line.startswith("#"))
    assert header.split() == ["#", "lr", "batch", "status", "elapsed", "cost", "(NOS)", "loss",
                              "job"]
    assert runs.best("loss") is runs[4]


def test_params_rows_from_the_namespace_and_failures_do_not_fail_the_cell(
        shell: InteractiveShell) -> None:
    shell.user_ns["rows"] = [{"loss": 0.5, "code": 0}, {"loss": 0.7, "code": 4}]
    body = cell("echo loss=${param:loss}; exit ${param:code}",
                results={"loss": "loss=([0-9.]+)"})
    runs, out = _sweep(shell, "--params rows -o runs", body)
    assert runs.done and runs.status == "failed" and runs.failed == [runs[1]]
    assert runs[0].results["loss"] == 0.5
    assert "  #1 loss=0.7 code=4: failed: op train exited with 4" in out.splitlines()


def test_params_rows_may_be_a_dataframe(shell: InteractiveShell) -> None:
    pandas = pytest.importorskip("pandas")
    shell.user_ns["frame"] = pandas.DataFrame({"lr": [0.5, 0.25], "batch": [2, 8]})
    runs, _ = _sweep(shell, "--params frame -o runs")
    assert runs.ok and [job.params for job in runs] == [{"lr": 0.5, "batch": 2},
                                                        {"lr": 0.25, "batch": 8}]
    assert type(runs[1].params["batch"]) is int  # numpy's int64, unwrapped
    assert [job.results["loss"] for job in runs] == [1, 2]


def test_a_background_sweep_returns_at_once_and_is_waited_for_later(
        shell: InteractiveShell) -> None:
    with capture_output() as captured:
        result = shell.run_cell_magic(MAGIC, "--sweep lr=1,2 --sweep batch=3 -b -o runs",
                                      cell("sleep 0.5; echo loss=${param:lr}${param:batch}",
                                           results={"loss": "loss=([0-9]+)"}))
    runs = shell.user_ns["runs"]
    assert result is None and isinstance(runs, Runs) and not runs.done
    assert runs.wait(PATIENCE).ok and [job.results["loss"] for job in runs] == [13, 23]
    assert "sweep runs: 2 jobs on local" in captured.stdout


def test_bad_sweep_lines_are_one_line_and_post_nothing(shell: InteractiveShell,
                                                       shell_devnode: DevNode) -> None:
    before = len(shell_devnode.ledger.jobs)
    with pytest.raises(UsageError, match=r"^--parallel is for a sweep"):
        shell.run_cell_magic(MAGIC, "--parallel 2", TRAIN)
    with pytest.raises(UsageError, match=r"^--parallel: at least 1 job at a time, got 0"):
        shell.run_cell_magic(MAGIC, "--sweep lr=1 --sweep batch=1 --parallel 0", TRAIN)
    with pytest.raises(UsageError, match=r"^--params nowhere: no notebook variable"):
        shell.run_cell_magic(MAGIC, "--params nowhere", TRAIN)
    with pytest.raises(ParamError, match=r"batch"):  # the definition needs it
        shell.run_cell_magic(MAGIC, "--sweep lr=1,2", TRAIN)
    assert len(shell_devnode.ledger.jobs) == before


def test_a_paid_sweep_states_one_total_and_asks_once(
        shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    market = Market("Mkt111", "nvidia-3090", price_per_second=100, network_fee_pct=10.0)
    monkeypatch.setattr(NosanaMagics, "_market_info",
                        lambda self, settings, node=None: (market, None))
    asked: list[str] = []

    def ask(self: NosanaMagics, prompt: str) -> str:
        asked.append(prompt)
        return "n"

    monkeypatch.setattr(NosanaMagics, "_ask", ask)
    import nosana_magic.sweeps as sweeps_module

    monkeypatch.setattr(sweeps_module, "sweep", lambda *a, **k: pytest.fail("swept anyway"))
    with capture_output() as captured, pytest.raises(SpendNotConfirmed, match="not confirmed"):
        shell.run_cell_magic(MAGIC, "--network devnet -m nvidia-3090 -t 30m "
                                    "--sweep lr=1,2,3 --sweep batch=1,2", TRAIN)
    assert asked == ["List the 6 jobs and spend this? [y/N] "]
    # 100e-6 NOS/s * 1800 s * 1.1 = 0.198 NOS a job.
    assert "6 jobs × at most 0.198 NOS = at most 1.188 NOS (0.5 h each, fees included)" in (
        captured.stdout)


# --------------------------------------------------------------------------- the store


def test_jobs_lists_every_run_with_its_filters(shell: InteractiveShell) -> None:
    with capture_output():
        shell.run_cell_magic(MAGIC, "-o single", cell("echo loss=0.5",
                                                      results={"loss": "loss=([0-9.]+)"}))
    single = shell.user_ns["single"]
    body = cell("echo loss=${param:loss}; exit ${param:code}", results={"loss": "loss=(.*)"})
    shell.user_ns["rows"] = [{"loss": 1, "code": 0}, {"loss": 2, "code": 5},
                             {"loss": 3, "code": 0}]
    runs, _ = _sweep(shell, "--params rows -o runs", body)
    assert runs.failed == [runs[1]]
    every = shell.run_line_magic("nosana", "jobs")
    assert [row[0] for row in every.rows] == [j.address for j in [*reversed(runs), single]]
    swept = shell.run_line_magic("nosana", "jobs --sweep runs")
    assert [row[0] for row in swept.rows] == [job.address for job in runs]
    assert [row[6] for row in swept.rows] == ["runs #0", "runs #1", "runs #2"]
    assert [row[7] for row in swept.rows] == ["loss=1 code=0", "loss=2 code=5",
                                              "loss=3 code=0"]
    failed = shell.run_line_magic("nosana", "jobs --status failed")
    assert [(row[0], row[3]) for row in failed.rows] == [(runs[1].address, "failed")]
    last = shell.run_line_magic("nosana", "jobs --last 2")
    assert [row[0] for row in last.rows] == [runs[2].address, runs[1].address]
    assert "no recorded jobs with status stopped" in repr(
        shell.run_line_magic("nosana", "jobs --status stopped"))


def test_show_brings_back_a_finished_job_from_the_store(shell: InteractiveShell,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    with capture_output():
        shell.run_cell_magic(MAGIC, "-o single", cell("echo hello; echo loss=0.25",
                                                      results={"loss": "loss=([0-9.]+)"}))
    job = shell.user_ns["single"]
    assert job.ok and open_store().flush()
    # As after a restart: this kernel no longer knows the job.
    import nosana_magic.job as job_module

    monkeypatch.setattr(job_module, "_registry", [], raising=False)
    monkeypatch.setattr(job_module, "jobs", lambda: [])
    with capture_output() as captured:
        shown = shell.run_line_magic("nosana", f"show {job.address[:10]}")
    assert isinstance(shown, LoadedJob) and shown.address == job.address
    assert shown.status == "succeeded" and shown.results["loss"] == 0.25
    assert shown.stdout == job.stdout and "hello" in shown.stdout
    assert f"nosana job {job.address} on local: succeeded" in captured.stdout
    with capture_output() as logs:
        shell.run_line_magic("nosana", f"logs {job.address}")
    assert "[train] hello" in logs.stdout


def test_forget_removes_records_and_says_how_many(shell: InteractiveShell) -> None:
    runs, _ = _sweep(shell, "--sweep lr=1,2 --sweep batch=1 -o runs")
    with capture_output():
        shell.run_cell_magic(MAGIC, "-o single", cell("echo one"))
    single = shell.user_ns["single"]
    assert open_store().flush()
    with capture_output() as captured:
        shell.run_line_magic("nosana", "forget --sweep runs")
    assert captured.stdout.startswith("forgot 2 jobs (")
    assert [row[0] for row in shell.run_line_magic("nosana", "jobs").rows] == [single.address]
    with pytest.raises(StoreError):
        open_store().job(runs[0].address)
    with pytest.raises(UsageError, match=r"needs a JOB, --sweep NAME"):
        shell.run_line_magic("nosana", "forget")
    with capture_output() as captured:
        shell.run_line_magic("nosana", f"forget {single.address}")
    assert captured.stdout.startswith("forgot 1 job (")
    assert shell.run_line_magic("nosana", "jobs").rows == []


#: A kernel that posts a job, waits for its first line, and is then killed (by the test).
POSTER = """
import sys, time
import nosana_magic
from nosana_magic.store import open_store
job = nosana_magic.run_confidential(sys.argv[1], wait=False)
deadline = time.monotonic() + 60
while not any(line.text == "one" for line in job.logs) and time.monotonic() < deadline:
    time.sleep(0.02)
assert open_store().flush()
print(job.address, flush=True)
time.sleep(600)
"""


def test_attach_after_a_restart_finds_the_job_and_its_network_in_the_store(
        shell: InteractiveShell, shell_devnode: DevNode, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "NOSANA_DEVNODE_URL": shell_devnode.url,
           "NOSANA_DATA_DIR": str(tmp_path)}
    poster = subprocess.Popen([sys.executable, "-c", POSTER, cell("echo one; sleep 2; "
                                                                   "echo two")],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert poster.stdout is not None
        address = poster.stdout.readline().strip()
    finally:
        poster.kill()  # the kernel dies; its job goes on
        poster.wait(PATIENCE)
    assert address, "the poster printed no address"
    assert not open_store().job(address).finished
    with pytest.raises(StoreError, match=rf"^job {address} has not finished .*; %nosana "
                                         rf"attach {address} follows it$"):
        shell.run_line_magic("nosana", f"show {address}")
    # This kernel never knew the job, and its configured network is another.
    monkeypatch.setenv("NOSANA_NETWORK", "devnet")
    with capture_output() as captured:
        attached = shell.run_line_magic("nosana", f"attach {address[:12]}")
    assert attached.address == address and attached.network.name == "local" and attached.ok
    assert "[train] one" in captured.stdout and "[train] two" in captured.stdout
    # The record goes on from the attaching kernel: finished, the log once.
    store = open_store()
    assert store.flush()
    record = store.job(address)
    assert record.finished and record.status == "succeeded"
    texts = [line.text for line in store.iter_logs(record.key)
             if line.op_id == "train" and line.stream == "stdout"]
    assert texts == ["one", "two"], texts


def test_ctrl_c_in_a_sweep_cell_stops_every_job(shell: InteractiveShell,
                                                shell_devnode: DevNode) -> None:
    import signal
    import threading

    from nosana_magic.errors import JobInterrupted

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    before = set(shell_devnode.ledger.jobs)

    def interrupt_once_two_run() -> None:
        wait_until(lambda: sum(shell_devnode.job(a).state.name == "RUNNING"
                               for a in set(shell_devnode.ledger.jobs) - before) >= 2,
                   what="two jobs running")
        signal.raise_signal(signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_once_two_run, daemon=True)
    interrupter.start()
    with capture_output() as captured, pytest.raises(JobInterrupted) as info:
        shell.run_cell_magic(MAGIC, "--sweep n=1,2,3,4 --parallel 2 -o runs",
                             cell("echo started ${param:n}; sleep 300"))
    interrupter.join(PATIENCE)
    runs = shell.user_ns["runs"]
    assert str(info.value).startswith("sweep runs stopped: ")
    runs.wait(PATIENCE)
    assert [job.status for job in runs] == ["stopped"] * 4
    listed = set(shell_devnode.ledger.jobs) - before
    assert len(listed) == 2 and {job.address for job in runs[:2]} == listed
    wait_until(lambda: all(shell_devnode.job(a).state.done for a in listed),
               what="the listed jobs ended on the ledger")
    assert "sweep runs" in captured.stdout


def test_a_second_handle_of_one_kernel_takes_the_record_over_without_doubling_it(
        shell: InteractiveShell) -> None:
    from nosana_magic.job import ConfidentialJob
    from nosana_magic.settings import Settings

    with capture_output():
        shell.run_cell_magic(MAGIC, "-b -q -o bg", cell("echo one; sleep 1; echo two"))
    job = shell.user_ns["bg"]
    wait_until(lambda: any(line.text == "one" for line in job.logs), what="the first line")
    assert open_store().flush()
    again = ConfidentialJob.attach(job.address, Settings.from_env())
    assert again.wait(PATIENCE).ok and job.wait(PATIENCE).ok
    store = open_store()
    assert store.flush()
    record = store.job(job.address)
    assert record.finished and record.status == "succeeded"
    texts = [line.text for line in store.iter_logs(record.key)
             if line.op_id == "train" and line.stream == "stdout"]
    assert texts == ["one", "two"], texts


def test_a_job_attached_after_a_restart_redacts_the_secrets_its_record_names(
        shell: InteractiveShell, shell_devnode: DevNode, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from .conftest import SECRET

    monkeypatch.setenv("TOKEN", SECRET)  # this kernel's environment, as the poster's
    env = {**os.environ, "NOSANA_DEVNODE_URL": shell_devnode.url,
           "NOSANA_DATA_DIR": str(tmp_path)}
    definition = json.loads(cell("echo one; sleep 1; echo tok=$TOKEN"))
    definition["ops"][0]["args"]["env"] = {"TOKEN": "${env:TOKEN}"}
    poster = subprocess.Popen([sys.executable, "-c", POSTER, json.dumps(definition)],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert poster.stdout is not None
        address = poster.stdout.readline().strip()
    finally:
        poster.kill()
        poster.wait(PATIENCE)
    assert address, "the poster printed no address"
    with capture_output() as captured:
        attached = shell.run_line_magic("nosana", f"attach {address}")
    assert attached.ok and "tok=[secret:TOKEN]" in attached.stdout
    assert SECRET not in captured.stdout + captured.stderr
    store = open_store()
    assert store.flush()
    texts = [line.text for line in store.iter_logs(store.job(address).key)
             if line.stream == "stdout"]
    assert texts == ["one", "tok=[secret:TOKEN]"], texts
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("runs.sqlite3*"))
    assert SECRET.encode() not in blob
