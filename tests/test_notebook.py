"""notebooks/quickstart.ipynb executed headless by nbclient, and ``python -m nosana_magic demo``.

The notebook runs in a real ipykernel with ipywidgets, so this is the path a notebook user
takes: the local network service started by the first job, the widget view, the display
handle summary. Assertions are on the outputs of tagged cells. The secret is a known value
injected through the kernel's environment (the notebook keeps a value already set), so the
test can prove it appears nowhere in the executed notebook: outputs, metadata, widget state.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from nosana_magic.__main__ import QUICKSTART_DEFINITION, SERVE_PY, TRAIN_PY

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
pytestmark = pytest.mark.slow


def _environment(tmp: Path, token: str) -> dict[str, str]:
    """The environment of the kernel / demo process: isolated state, this checkout first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOSANA_")}
    env["DEMO_API_TOKEN"] = token
    env["NOSANA_DATA_DIR"] = str(tmp / "data")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # A kernelspec for this interpreter, found before any other "python3" one.
    spec = tmp / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python"}))
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(tmp / "jupyter"),
                                                        env.get("JUPYTER_PATH")]))
    return env


#: The port the quickstart's service used to listen on, always.
OLD_FIXED_PORT = 48731


@contextlib.contextmanager
def _port_taken(port: int) -> Iterator[None]:
    """``port`` on 127.0.0.1 is taken while this lasts (by us, or already by someone)."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            holder.bind(("127.0.0.1", port))
            holder.listen()
        except OSError:
            pass  # taken already: all the better
        yield
    finally:
        holder.close()


def _cells(nb: Any, tag: str) -> list[Any]:
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def _cell(nb: Any, tag: str) -> Any:
    [found] = _cells(nb, tag)
    return found


def _text(cell: Any, *, stream: str | None = None) -> str:
    """Everything a cell shows as text (streams, plain-text results and displays)."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream" and stream in (None, out["name"]):
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data") and stream is None:
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    tmp = tmp_path_factory.mktemp("notebook")
    token = "tok-" + secrets.token_hex(12)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("NOSANA_")]:
            mp.delenv(key)
        for key, value in _environment(tmp, token).items():
            mp.setenv(key, value)
        client = NotebookClient(nb, timeout=180, startup_timeout=180, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO)}})
        with _port_taken(OLD_FIXED_PORT):  # a fixed port must not be what the job needs
            client.execute()
    yield nb, token


def test_every_code_cell_ran_without_error(executed: tuple[Any, str]) -> None:
    nb, _ = executed
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None
            assert not [o for o in cell.outputs if o["output_type"] == "error"], cell.source


def test_the_job_cell_shows_one_live_view_and_no_stale_snapshot(
        executed: tuple[Any, str]) -> None:
    nb, _ = executed
    job = _cell(nb, "job")
    kinds = [o["output_type"] for o in job.outputs]
    # The -b cell's handle is in `run`, not in Out: a table of it there would say "queued"
    # forever beside the live view.
    assert "execute_result" not in kinds
    views = [o for o in job.outputs
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1  # the live view, once
    assert not any("text/html" in o.get("data", {}) for o in job.outputs)
    assert "QUEUED" not in json.dumps(job.outputs)
    assert "Started the local Nosana network" in _text(job, stream="stdout")


def test_the_summary_survives_without_widget_state(executed: tuple[Any, str]) -> None:
    nb, _ = executed
    # The display handle of the job cell was updated in place when the job ended (from a
    # later cell's execution): plain text, readable with no widget manager.
    summary = "\n".join(o["data"]["text/plain"] for o in _cell(nb, "job").outputs
                        if o["output_type"] == "display_data"
                        and "text/plain" in o["data"] and "nosana job" in o["data"]["text/plain"])
    assert ": succeeded after" in summary, summary
    assert "op train: succeeded (exit 0)" in summary
    assert "results: loss=0.1342, accuracy=0.96" in summary
    # The service's port was free when the notebook ran (not the old fixed one, held here).
    port = re.search(r"\(private, op serve, port (\d+)", summary)
    assert port is not None and int(port.group(1)) != OLD_FIXED_PORT


def test_the_private_service_was_fetched(executed: tuple[Any, str]) -> None:
    nb, _ = executed
    shown = _text(_cell(nb, "service"), stream="stdout")
    assert "private: True" in shown
    assert "served: {'loss': 0.1342, 'accuracy': 0.96" in shown


def test_results_and_ops(executed: tuple[Any, str]) -> None:
    nb, _ = executed
    results = _text(_cell(nb, "results"))
    assert "'loss': 0.1342" in results and "'accuracy': 0.96" in results
    assert "'token_sha256': 'sha256:" in results
    assert _text(_cell(nb, "ops")) == "{'train': ('succeeded', 0), 'serve': ('succeeded', 0)}"
    checks = _text(_cell(nb, "checks"), stream="stdout")
    assert checks.strip() == "ok: True | train exit code: 0 | token received: True"


def test_the_sweep_section_runs_six_jobs_in_one_live_table(executed: tuple[Any, str]) -> None:
    nb, _ = executed
    cell = _cell(nb, "sweep")
    views = [o for o in cell.outputs
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1  # the table and its folds: one live view
    assert "execute_result" not in [o["output_type"] for o in cell.outputs]  # it is in runs
    # A DataFrame (pandas comes with the test extra): its rows, read from its HTML.
    [html] = [o["data"]["text/html"] for o in _cell(nb, "sweep-table").outputs
              if "text/html" in o.get("data", {})]
    header = re.findall(r"<th>(\w+)</th>", html.split("</thead>")[0])
    assert header == ["lr", "steps", "status", "elapsed", "cost", "loss", "address", "index"]
    rows = [[index, *re.findall(r"<td>(.*?)</td>", row)] for index, row in
            re.findall(r"<tr>\s*<th>(\d+)</th>(.*?)</tr>", html, re.S)]
    assert [row[:4] for row in rows] == [
        [str(i), lr, steps, "succeeded"] for i, (lr, steps) in enumerate(
            [("0.05", "1"), ("0.05", "5"), ("0.05", "20"), ("0.20", "1"), ("0.20", "5"),
             ("0.20", "20")])], html
    assert [row[6] for row in rows] == ["7.290000", "3.138106", "0.133028", "3.240000",
                                        "0.054420", "0.000000"], html
    best = _text(_cell(nb, "sweep-best"), stream="stdout")
    assert best.strip() == "best: {'lr': 0.2, 'steps': 20} loss: 0.0"
    listed = _text(_cell(nb, "sweep-jobs"))
    assert listed.count(" succeeded ") == 6 and "runs #5" in listed, listed


def test_no_secret_anywhere_in_the_executed_notebook(executed: tuple[Any, str]) -> None:
    nb, token = executed
    saved = nbformat.writes(nb)  # outputs, cell metadata, notebook metadata, widget state
    assert "widgets" in nb.metadata  # the widget state was saved, and is checked too
    assert token not in saved
    assert token not in json.dumps(nb.metadata)


def test_the_notebook_runs_the_demo_definition() -> None:
    """``python -m nosana_magic demo`` and the notebook run the very same job."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    job = _cell(nb, "job").source
    first, _, body = job.partition("\n")
    assert first.startswith("%%nosana_confidential -o run --timeout 5m")
    assert body == QUICKSTART_DEFINITION
    namespace: dict[str, Any] = {}
    exec(_cell(nb, "scripts").source, namespace)
    assert namespace["TRAIN_PY"] == TRAIN_PY and namespace["SERVE_PY"] == SERVE_PY
    # The secret cell displays nothing (an expression would put the token in Out).
    assert _cell(nb, "secret").source.rstrip().splitlines()[-1].startswith("    os.environ[")


def test_the_saved_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_demo_command(tmp_path: Path) -> None:
    token = "tok-" + secrets.token_hex(12)
    with _port_taken(OLD_FIXED_PORT):
        done = subprocess.run(
            [sys.executable, "-m", "nosana_magic", "demo"], cwd=tmp_path,
            env=_environment(tmp_path, token), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "Started the local Nosana network" in done.stdout
    assert "ok   the job received the token" in done.stdout
    assert "ok   the private service served the metrics" in done.stdout
    assert "results: loss=0.1342, accuracy=0.96" in done.stdout
    assert token not in done.stdout + done.stderr
    # A command run once leaves nothing running: the service it started is stopped.
    assert done.stdout.rstrip().endswith("· stopped the local Nosana network the demo started")
    assert not (tmp_path / "data" / "local-network.json").exists()


def test_a_second_ctrl_c_does_not_cancel_the_demos_stop(
    devnode: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The demo in this process, on a test devnode: Ctrl-C twice while the host's /stop
    fails for a while. The stop goes through (on the ledger); the demo says so and fails."""
    import signal
    import threading

    from nosana_magic.__main__ import demo
    from nosana_magic.job import jobs

    from .waiting import PATIENCE

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    for name in [name for name in os.environ if name.startswith("NOSANA_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("NOSANA_DEVNODE_URL", devnode.url)
    monkeypatch.setenv("NOSANA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DEMO_API_TOKEN", "tok-" + secrets.token_hex(12))
    known = set(jobs())
    faults = devnode.config.faults

    def interrupt_twice_once_running() -> None:
        deadline = time.monotonic() + PATIENCE
        while not any(j.phase == "running" and j.logs for j in set(jobs()) - known):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        faults.fail_routes, faults.fail_requests = r"/stop$", 10**6
        signal.raise_signal(signal.SIGINT)
        time.sleep(0.8)
        signal.raise_signal(signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_twice_once_running, daemon=True)
    interrupter.start()
    try:
        code = demo(timeout="2m", quiet=True)
    finally:
        faults.fail_requests = 0
        interrupter.join(PATIENCE)
    [job] = set(jobs()) - known
    err = capsys.readouterr().err
    assert code == 1 and f"demo failed: job {job.address} stopped" in err, err
    assert "still stopping it" in err
    assert job.status == "stopped" and devnode.job(job.address).state.done


def test_main_help() -> None:
    done = subprocess.run([sys.executable, "-m", "nosana_magic", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "demo" in done.stdout


def test_a_failing_job_fails_the_headless_run(tmp_path: Path) -> None:
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("%load_ext nosana_magic"),
        nbformat.v4.new_code_cell(
            '%%nosana_confidential -o run --timeout 2m\n{"version": "0.1", "type": "container",'
            ' "ops": [{"type": "container/run", "id": "train",'
            ' "args": {"image": "ubuntu", "cmd": "echo before; exit 3"}}]}'),
        nbformat.v4.new_code_cell("print('never reached')"),
    ])
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _environment(tmp_path, "unused").items():
            mp.setenv(key, value)
        client = NotebookClient(nb, timeout=120, startup_timeout=180, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO)}})
        with pytest.raises(CellExecutionError) as info:
            client.execute()
    assert info.value.ename == "JobFailed"
    [error] = [o for o in nb.cells[1].outputs if o["output_type"] == "error"]
    assert error["traceback"] == [f"JobFailed: {info.value.evalue}"]
    assert "op train exited with 3" in error["evalue"]
    assert not nb.cells[2].get("outputs")


def test_kernel_interrupt_stops_the_job(tmp_path: Path) -> None:
    """Interrupt (the notebook's stop button) during a blocking cell: one line, job stopped."""
    from jupyter_client.manager import start_new_kernel

    with pytest.MonkeyPatch.context() as mp:
        for key, value in _environment(tmp_path, "unused").items():
            mp.setenv(key, value)
        km, kc = start_new_kernel(kernel_name="python3", cwd=str(REPO), startup_timeout=180)
    try:
        kc.execute_interactive("%load_ext nosana_magic", timeout=60)
        body = ('{"version": "0.1", "type": "container", "ops": [{"type": "container/run",'
                ' "id": "long", "args": {"image": "ubuntu", "cmd": "echo started; sleep 60"}}]}')
        msg_id = kc.execute(f"%%nosana_confidential -o run\n{body}")
        streamed, error = "", None
        interrupted = False
        while error is None:
            msg = kc.get_iopub_msg(timeout=60)
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_msg":
                streamed += json.dumps(content)
            elif kind == "error":
                error = content
            if not interrupted and "[long] started" in streamed:
                km.interrupt_kernel()
                interrupted = True
        assert error["ename"] == "JobInterrupted"
        assert error["traceback"] == [error["evalue"]]
        assert error["evalue"].startswith("job ") and error["evalue"].endswith(" stopped")
        reply = kc.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error"
        printed: list[str] = []

        def keep(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])

        # The kernel aborts requests that arrive just after an error: ask again (bounded).
        deadline = time.monotonic() + 60
        while True:
            reply = kc.execute_interactive("run.wait(30); print(run.phase, run.status)",
                                           timeout=60, output_hook=keep)
            if reply["content"]["status"] != "aborted" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert reply["content"]["status"] == "ok"
        assert "".join(printed).split() == ["done", "stopped"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
