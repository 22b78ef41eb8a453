"""Sweeps on the local network: grids and lists of jobs, bounded concurrency, the table and
the DataFrame, failures, Ctrl-C, the live views, and the store read back by a new process."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from comm import base_comm as comm_base
from comm.base_comm import BaseComm

import nosana_magic
from nosana_magic.devnode import DevNode
from nosana_magic.devnode.config import DevNodeConfig
from nosana_magic.errors import JobInterrupted, MissingResult, ParamError
from nosana_magic.settings import Settings
from nosana_magic.store import open_store
from nosana_magic.sweeps import Runs, sweep
from nosana_magic.sweepview import SweepView, follow_sweep

from .conftest import FAST, SECRET, definition, op, processes_of_jobs
from .waiting import PATIENCE, wait_until

LOSS = "python3 -c \"print('loss=%g' % (${param:lr} * ${param:batch}))\""
TRAIN = definition(op("train", ["sh", "-c", f"echo lr=${{param:lr}}; {LOSS}"],
                      results={"loss": "loss=([0-9.e-]+)"}))
GRID = {"lr": [1e-3, 3e-4, 1e-4], "batch": [32, 64]}


@pytest.fixture
def devnode_config() -> DevNodeConfig:
    """Three hosts a market, so that jobs of a sweep can run side by side."""
    return DevNodeConfig(**FAST, hosts_per_market=3)  # type: ignore[arg-type]


@pytest.fixture
def settings(devnode: DevNode, tmp_path: Path) -> Settings:
    """The devnode fixture as the local network, and a store of this test's own."""
    return Settings.from_env({}, devnode_url=devnode.url, data_dir=str(tmp_path), timeout=120)


def _overlap(runs: Runs) -> int:
    """The most jobs of the sweep that were between listed and done at one moment."""
    events = sorted([(job.timings["listed"], 1) for job in runs if "listed" in job.timings]
                    + [(job.timings["done"], -1) for job in runs if "listed" in job.timings])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


#: Run by a fresh interpreter: a sweep's runs listed, one job loaded, all with no network.
READ_BACK = textwrap.dedent("""
    import json, socket, sys
    def refuse(*args, **kwargs):
        raise OSError("no network in this process")
    socket.socket.connect = refuse  # a load that talked to anything would fail
    import nosana_magic
    from nosana_magic.store import open_store
    jobs = open_store().jobs(sweep=sys.argv[1])
    job = nosana_magic.load(jobs[int(sys.argv[2])].address)
    print(json.dumps({
        "listed": [[j.sweep_index, j.params, j.status, j.results] for j in jobs],
        "results": dict(job.results), "status": job.status, "params": job.params,
        "stdout": job.stdout, "lines": len(job.logs), "ops": list(job.ops),
        "exit": job.ops["train"].exit_code,
    }))
""")


def _read_back(data_dir: Path, sweep_name: str, index: int) -> dict[str, Any]:
    """What a new Python process reads from the store in ``data_dir``."""
    env = {"NOSANA_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", READ_BACK, sweep_name, str(index)],
                          capture_output=True, text=True, timeout=PATIENCE * 2, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    back: dict[str, Any] = json.loads(done.stdout)
    return back


# --------------------------------------------------------------------------- running


def test_a_grid_sweep_returns_a_row_per_job_with_parameters_and_results(
        settings: Settings) -> None:
    runs = sweep(TRAIN, GRID, parallel=3, name="grid", settings=settings)
    assert runs.ok and runs.status == "succeeded" and len(runs) == 6
    assert [job.params for job in runs] == [
        {"lr": 0.001, "batch": 32}, {"lr": 0.001, "batch": 64}, {"lr": 0.0003, "batch": 32},
        {"lr": 0.0003, "batch": 64}, {"lr": 0.0001, "batch": 32}, {"lr": 0.0001, "batch": 64}]
    frame = runs.to_pandas()
    assert list(frame.columns) == ["lr", "batch", "status", "elapsed", "cost", "loss",
                                   "address"]
    assert frame.index.tolist() == [0, 1, 2, 3, 4, 5]
    assert frame["loss"].tolist() == pytest.approx([0.032, 0.064, 0.0096, 0.0192, 0.0032,
                                                    0.0064])
    assert set(frame["status"]) == {"succeeded"}
    assert frame["address"].tolist() == [job.address for job in runs]
    assert "lr=0.0003" in runs[2].stdout  # each job got its own value
    assert runs.best("loss") is runs[4] and runs.best("loss", mode="max") is runs[1]
    assert _overlap(runs) <= 3


def test_a_list_sweep_runs_one_job_per_row_at_most_parallel_at_once(
        settings: Settings) -> None:
    rows = [{"lr": 0.5, "batch": 2, "nap": 0.3}, {"lr": 0.25, "batch": 4, "nap": 0.3},
            {"lr": 1, "batch": 1, "nap": 0.3}, {"lr": 2, "batch": 3, "nap": 0.3}]
    slow = definition(op("train", ["sh", "-c", f"sleep ${{param:nap}}; {LOSS}"],
                         results={"loss": "loss=([0-9.e-]+)"}))
    runs = sweep(slow, rows, parallel=2, settings=settings)
    assert runs.ok and [job.results["loss"] for job in runs] == [1, 1, 1, 6]
    assert _overlap(runs) <= 2
    assert runs.name.startswith("sweep-")


def test_some_jobs_fail_the_table_says_which_and_the_others_are_kept(
        settings: Settings) -> None:
    code = definition(op("train", ["sh", "-c", "echo loss=${param:loss}; exit ${param:code}"],
                         results={"loss": "loss=([0-9.]+)"}))
    rows = [{"loss": 0.5, "code": 0}, {"loss": 0.7, "code": 3}, {"loss": 0.2, "code": 0}]
    out = io.StringIO()
    runs = sweep(code, rows, settings=settings, wait=False)
    view = SweepView(runs, mode="text", stdout=out).show()
    follow_sweep(runs, view)
    assert runs.done and runs.status == "failed" and not runs.ok
    assert runs.failed == [runs[1]]
    assert runs[1].status == "failed" and runs[1].reason == "op train exited with 3"
    assert [runs[0].results["loss"], runs[2].results["loss"]] == [0.5, 0.2]
    assert runs.best("loss") is runs[2]  # the failed job is not a candidate
    table = runs.table().text().splitlines()
    assert table[2].split()[:4] == ["1", "0.7", "3", "failed"]
    assert table[-1] == "3 jobs: 2 succeeded, 1 failed · cost " + table[-1].split("cost ")[1]
    printed = out.getvalue()
    assert "  #1 loss=0.7 code=3: failed: op train exited with 3" in printed
    assert "sweep " + runs.name + ": 3 jobs, failed (did not succeed: #1)" in printed


def test_ctrl_c_stops_every_job_of_the_sweep(devnode: DevNode, settings: Settings) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    long = definition(op("train", ["sh", "-c", "echo started ${param:n}; sleep 300"]))
    runs = sweep(long, {"n": [0, 1, 2, 3, 4]}, parallel=2, settings=settings, wait=False)
    wait_until(lambda: sum(job.phase == "running" for job in runs) == 2,
               what="two jobs running")
    threading.Timer(0.2, signal.raise_signal, args=(signal.SIGINT,)).start()
    with pytest.raises(JobInterrupted) as info:
        runs.wait()
    assert isinstance(info.value, KeyboardInterrupt)
    assert str(info.value).startswith(f"sweep {runs.name} stopped: ")
    runs.wait(PATIENCE)
    assert runs.status == "stopped"
    assert [job.status for job in runs] == ["stopped"] * 5
    listed = [job.address for job in runs if job.address]
    assert len(listed) >= 2  # the running ones were listed; the rest never started
    assert all(job.address is None for job in runs[len(listed):])
    wait_until(lambda: not processes_of_jobs(set(listed)), what="no job process left")
    # Ended on the ledger: a host that stops a job completes it; a queued one is delisted.
    assert all(devnode.job(address).state.done for address in listed)


def test_stop_ends_every_job_and_those_not_started_never_start(
        devnode: DevNode, settings: Settings) -> None:
    long = definition(op("train", ["sh", "-c", "echo started ${param:n}; sleep 300"]))
    runs = sweep(long, {"n": [0, 1, 2, 3]}, parallel=2, settings=settings, wait=False)
    wait_until(lambda: sum(job.phase == "running" for job in runs) == 2,
               what="two jobs running")
    assert runs.status == "running" and runs.status_of(3) == "waiting"
    runs.stop()
    runs.wait(PATIENCE)
    assert runs.status == "stopped" and [job.status for job in runs] == ["stopped"] * 4
    assert [job.address is not None for job in runs] == [True, True, False, False]
    stored = open_store(settings).jobs(sweep=runs.name)
    wait_until(lambda: open_store(settings).flush() and all(
        j.status == "stopped" for j in open_store(settings).jobs(sweep=runs.name)),
        what="the stops recorded")
    assert len(stored) == 4
    assert open_store(settings).sweep(runs.name).status == "stopped"
    with pytest.raises(TimeoutError, match=r"^sweep .* still running after 0.01 s"):
        sweep(long, {"n": [9]}, settings=settings, wait=False).wait(0.01)


def test_bad_sweeps_are_refused_before_anything_is_posted(devnode: DevNode,
                                                          settings: Settings) -> None:
    before = len(devnode.ledger.jobs)
    with pytest.raises(ParamError, match=r"^parameter seed is set, but the definition has no"):
        sweep(TRAIN, {**GRID, "seed": [1, 2]}, settings=settings)
    with pytest.raises(ParamError, match=r"^job 0 \(lr=1\) has no parameter batch"):
        sweep(TRAIN, [{"lr": 1}], settings=settings)
    with pytest.raises(ParamError, match=r"^parallel: expected a whole number of jobs"):
        sweep(TRAIN, GRID, parallel=0, settings=settings)
    assert len(devnode.ledger.jobs) == before


def test_tables_without_pandas_and_best_of_nothing(settings: Settings,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runs = sweep(TRAIN, {"lr": [1, 2], "batch": [1]}, settings=settings)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    rows = runs.to_dataframe()
    assert rows == runs.rows() and [r["loss"] for r in rows] == [1, 2]
    assert list(rows[0]) == ["index", "lr", "batch", "status", "elapsed", "cost", "loss",
                             "address"]
    with pytest.raises(ImportError, match=r"pip install 'nosana_magic\[pandas\]'"):
        runs.to_pandas()
    with pytest.raises(MissingResult) as info:
        runs.best("acc")
    assert str(info.value) == (f"no succeeded job of sweep {runs.name} has a numeric result "
                               "'acc' (results: loss; 2 succeeded)")
    assert runs[-1] is runs[1] and runs[0:1] == [runs[0]] and list(runs) == runs[:]
    assert repr(runs).startswith(f"<Runs {runs.name}: 2 jobs, succeeded>\n#  lr  batch")
    assert "<table" in runs._repr_html_()


# --------------------------------------------------------------------------- the store


def test_a_new_process_reads_a_finished_sweep_back_without_the_network(
        settings: Settings, tmp_path: Path) -> None:
    runs = sweep(TRAIN, GRID, name="readback", settings=settings)
    assert runs.ok
    assert open_store(settings).flush()
    back = _read_back(tmp_path, "readback", 4)
    assert back["listed"] == [[i, job.params, "succeeded", dict(job.results)]
                              for i, job in enumerate(runs)]
    assert back["results"] == dict(runs[4].results) and back["status"] == "succeeded"
    assert back["params"] == {"lr": 0.0001, "batch": 32}
    assert back["stdout"] == runs[4].stdout and back["lines"] == len(runs[4].logs)
    assert back["ops"] == ["train"] and back["exit"] == 0


def test_no_secret_value_reaches_the_database(settings: Settings, tmp_path: Path) -> None:
    leaky = definition(op("train", ["sh", "-c", "echo token=$TOKEN n=${param:n}; "
                                                "echo \"tok=$TOKEN\" >&2"],
                          env={"TOKEN": "${env:TOKEN}"}, results={"tok": "token=(\\S+)"}))
    runs = sweep(leaky, {"n": [1, 2]}, settings=settings, env={"TOKEN": SECRET})
    assert runs.ok and runs[0].results["tok"] == "[secret:TOKEN]"
    store = open_store(settings)
    assert store.flush()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("runs.sqlite3*"))
    with sqlite3.connect(store.path) as conn:
        logs = b"".join(zlib.decompress(d) for (d,) in conn.execute("SELECT data FROM log_chunks"))
    assert b"token=[secret:TOKEN]" in logs  # the lines are there, redacted
    for haystack in (blob, logs):
        assert SECRET.encode() not in haystack
    assert store.sweep(runs.name).definition == leaky  # the references, unresolved
    assert b"${env:TOKEN}" in blob


# --------------------------------------------------------------------------- the live views


class CountingComm(BaseComm):
    """A comm that counts what would be sent to the frontend."""

    sent: ClassVar[list[str]] = []

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        CountingComm.sent.append(msg_type)


@pytest.fixture
def counting_comm(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    CountingComm.sent = []
    monkeypatch.setattr(comm_base, "BaseComm", CountingComm, raising=False)
    import comm

    monkeypatch.setattr(comm, "create_comm", CountingComm)
    yield CountingComm.sent


def test_the_widget_table_is_coalesced_and_each_fold_holds_its_log(
        settings: Settings, counting_comm: list[str]) -> None:
    noisy = definition(op("train", ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo "
                                                "\"step $i of ${param:n}\"; i=$((i+1)); "
                                                "done; echo loss=0.${param:n}"],
                          results={"loss": "loss=([0-9.]+)"}))
    runs = sweep(noisy, {"n": [1, 2, 3, 4]}, settings=settings, wait=False)
    start = time.monotonic()
    view = SweepView(runs, mode="widget", stdout=io.StringIO()).show()
    follow_sweep(runs, view)
    elapsed = time.monotonic() - start
    assert runs.ok
    # The table and titles at most 4 times a second, each of the 4 folds once a second.
    assert view.writes <= (4 + 4 + 4) * elapsed + 12, (view.writes, elapsed)
    assert len(counting_comm) <= 3 * view.writes + 40  # opening, then one message a write
    for index, pane in enumerate(view._logs_w):
        text = "".join(o["text"] for o in pane.outputs)
        assert f"step 2999 of {index + 1}" in text and text.count("\n") <= view.tail
    assert view._panes_w.titles[3].startswith("#3 n=4 · succeeded · loss=0.4")
    assert "0.4" in view._table_w.value and "succeeded" in view._table_w.value


# --------------------------------------------------------------------------- the default network


def test_a_two_by_three_grid_on_the_default_network(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Done when: 6 rows, parameters and results as columns, on the embedded local network,
    its jobs side by side; a fresh process lists the 6 runs and loads one, with no network."""
    monkeypatch.setenv("NOSANA_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("NOSANA_DEVNODE_URL", raising=False)
    monkeypatch.delenv("NOSANA_NETWORK", raising=False)
    slow = definition(op("train", ["sh", "-c", f"sleep 2; {LOSS}"],
                         results={"loss": "loss=([0-9.e-]+)"}))
    runs = nosana_magic.sweep(slow, {"lr": [0.1, 0.2], "batch": [1, 2, 3]}, name="done-when")
    frame = runs.to_pandas()
    assert frame.shape == (6, 7) and runs.network.name == "local"
    assert frame[["lr", "batch"]].values.tolist() == [[0.1, 1], [0.1, 2], [0.1, 3], [0.2, 1],
                                                      [0.2, 2], [0.2, 3]]
    assert frame["loss"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.2, 0.4, 0.6])
    # The embedded network has hosts enough for the default parallelism: the jobs listed at
    # once were taken by several hosts (one host would have run them in turn).
    assert len({job.node for job in runs}) >= 3 and _overlap(runs) <= 4
    assert open_store().flush()
    back = _read_back(tmp_path, "done-when", 5)
    assert [row[:3] for row in back["listed"]] == [[i, job.params, "succeeded"]
                                                   for i, job in enumerate(runs)]
    assert back["results"] == {"loss": 0.6} and back["stdout"] == runs[5].stdout
