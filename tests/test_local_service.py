"""The local network as a per-user service: started on first use, found again by every process
of the user through its runtime file, outliving the process that started it, stopped on
request or when idle, one service however many processes start it at once.

Each test has a data dir of its own (so a service of its own) and stops what it started; the
session's teardown stops whatever is left below its temporary directory. Processes of "other
kernels" are subprocesses of this test run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.utils.capture import capture_output

from nosana_magic.devnode.runtime import (
    LOG_FILE,
    RUNTIME_FILE,
    TOKEN_HEADER,
    ServiceInfo,
    pid_alive,
    read_runtime,
    write_runtime,
)
from nosana_magic.network import local
from nosana_magic.settings import Settings

from .conftest import (
    definition,
    free_port,
    ipython_shell,
    list_placeholder,
    op,
    processes_of_jobs,
    text,
)
from .waiting import PATIENCE, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir of the test's own; its service (if any) is stopped after the test, and no
    process of it is left."""
    directory = tmp_path / "data"
    yield directory
    info = read_runtime(directory)
    local.stop_local_service(Settings.from_env({}, data_dir=str(directory)))
    if info is not None:
        wait_until(lambda: not pid_alive(info.pid), what="the test's service gone")


def settings_for(directory: Path, **overrides: Any) -> Settings:
    """Nothing configured but the data dir (and a short idle time: 2m, as the session's)."""
    return Settings.from_env({}, data_dir=str(directory), **{"local_idle": 120, **overrides})


def environment(directory: Path) -> dict[str, str]:
    """Another kernel's environment: nothing configured but the data dir and the session's
    idle time."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NOSANA_")}
    environ.update({"NOSANA_DATA_DIR": str(directory), "PYTHONPATH": str(ROOT),
                    "NOSANA_LOCAL_IDLE": os.environ.get("NOSANA_LOCAL_IDLE", "2m")})
    return environ


def python(code: str, directory: Path, *, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``code`` in a new Python process (another kernel) with ``directory`` as its data dir
    and nothing else configured."""
    environ = {**environment(directory), **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=environ, cwd=ROOT, timeout=timeout)


def status(info: ServiceInfo, token: str | None = None) -> httpx.Response:
    headers = {TOKEN_HEADER: info.token if token is None else token}
    return httpx.get(f"{info.url}/_devnode/status", headers=headers, trust_env=False,
                     timeout=PATIENCE)


WHO = """
    from nosana_magic.network.local import local_network
    from nosana_magic.settings import Settings
    notices = []
    network = local_network(Settings.from_env(), on_notice=notices.append)
    print(network.base_url)
    print(notices[0] if notices else "")
"""


def test_the_first_use_starts_it_and_another_process_uses_the_same(data_dir: Path) -> None:
    notices: list[str] = []
    network = local.local_network(settings_for(data_dir), on_notice=notices.append)
    info = read_runtime(data_dir)
    assert info is not None and pid_alive(info.pid) and info.pid != os.getpid()
    assert network.base_url == info.url and info.url.startswith("http://127.0.0.1:")
    assert notices == [
        f"Started the local Nosana network at {info.url} (pid {info.pid}, shared by your "
        "kernels; stops after 2m idle or on %nosana local stop; jobs run as local processes "
        "on this machine)"]
    # The runtime file is the user's alone, and the token is shown nowhere.
    runtime = data_dir / RUNTIME_FILE
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / LOG_FILE).stat().st_mode) == 0o600
    assert info.token in runtime.read_text() and info.token not in repr(info)
    assert info.token not in notices[0] and info.token not in repr(network)
    # Another process of the user finds it: no second service.
    other = python(WHO, data_dir)
    assert other.returncode == 0, other.stderr
    url, notice = other.stdout.splitlines()
    assert url == info.url
    assert notice.startswith(f"Using the local Nosana network at {info.url} (pid {info.pid}, up ")
    assert read_runtime(data_dir) == info


def test_it_asks_every_client_for_its_token(data_dir: Path) -> None:
    info, started = local.ensure_service(settings_for(data_dir))
    assert started
    with httpx.Client(base_url=info.url, trust_env=False, timeout=PATIENCE) as client:
        for path in ("/", "/api/markets/", "/_devnode/status", "/ipfs/QmX"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert client.get(path, headers={TOKEN_HEADER: "not-it"}).status_code == 401
        assert client.post("/pinning/pinJSONToIPFS", json={}).status_code == 401
        assert client.post("/_devnode/stop").status_code == 401
        markets = client.get("/api/markets/", headers={TOKEN_HEADER: info.token})
        assert markets.status_code == 200 and markets.json()[0]["slug"] == "local-cpu"
        # The node API is a host's: open, each job's own key signs (docs/protocol.md §5).
        host = client.get("/", headers={TOKEN_HEADER: info.token}).json()["hosts"][0]
        assert client.get(f"/node/{host['address']}/node/info").status_code != 401
    assert pid_alive(info.pid)  # the refused stop did nothing


def test_it_outlives_the_process_that_started_it(data_dir: Path) -> None:
    started = python("""
        from nosana_magic.network.local import ensure_service
        from nosana_magic.settings import Settings
        info, started = ensure_service(Settings.from_env())
        print(info.pid, started)
    """, data_dir)
    assert started.returncode == 0, started.stderr
    pid, flag = started.stdout.split()
    assert flag == "True"
    # The starter has exited; the service runs on, and answers as the file says.
    info = local.service_info(settings_for(data_dir))
    assert info is not None and info.pid == int(pid) and pid_alive(info.pid)
    body = status(info).json()
    assert body["pid"] == info.pid and body["jobs"] == {"listed": 0, "active": 0}
    assert set(body["loop_lag"]) >= {"p50_ms", "p99_ms", "max_ms", "samples"}


def test_a_stale_runtime_file_is_replaced(data_dir: Path) -> None:
    settings = settings_for(data_dir)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [
        # Its process is gone.
        ServiceInfo(url=f"http://127.0.0.1:{free_port()}", node_url_template="x/{node}",
                    pid=dead.pid, token="t", started=0),
        # A live process of ours (this one), but no service at that address.
        ServiceInfo(url=f"http://127.0.0.1:{free_port()}", node_url_template="x/{node}",
                    pid=os.getpid(), token="t", started=0),
    ]
    previous: int | None = None
    for info in stale:
        write_runtime(data_dir, info)
        assert local.service_info(settings) is None
        found, started = local.ensure_service(settings)
        assert started and found.pid not in (info.pid, previous)
        assert read_runtime(data_dir) == found and status(found).status_code == 200
        local.stop_local_service(settings)
        previous = found.pid
    # A runtime file others may read is not trusted either.
    write_runtime(data_dir, stale[1])
    (data_dir / RUNTIME_FILE).chmod(0o644)
    assert read_runtime(data_dir) is None


def test_a_runtime_path_that_is_no_regular_file_is_ignored(tmp_path: Path) -> None:
    # Neither raised on (a directory) nor waited on (a FIFO, which would block a read).
    (tmp_path / RUNTIME_FILE).mkdir()
    assert read_runtime(tmp_path) is None
    (tmp_path / RUNTIME_FILE).rmdir()
    os.mkfifo(tmp_path / RUNTIME_FILE, 0o600)
    assert read_runtime(tmp_path) is None


def test_processes_starting_at_once_start_one_service(data_dir: Path) -> None:
    code = textwrap.dedent("""
        from nosana_magic.network.local import ensure_service
        from nosana_magic.settings import Settings
        info, started = ensure_service(Settings.from_env())
        print(info.pid, started)
    """)
    environ = environment(data_dir)
    starters = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=environ, cwd=ROOT)
                for _ in range(3)]
    answers = []
    for starter in starters:
        out, err = starter.communicate(timeout=120)
        assert starter.returncode == 0, err
        answers.append(out.split())
    assert len({pid for pid, _ in answers}) == 1, answers
    assert sorted(flag for _, flag in answers) == ["False", "False", "True"]


def test_it_stops_when_idle_but_not_while_a_job_runs(data_dir: Path) -> None:
    settings = settings_for(data_dir, local_idle=1)
    from nosana_magic import run_confidential

    job = run_confidential(text(definition(op("a", "sleep 3; echo slept=3",
                                              results={"slept": "slept=([0-9]+)"}))),
                           settings=settings, timeout=120)
    assert job.ok and job.results["slept"] == 3, job.reason  # 3 s: it did not stop meanwhile
    info = read_runtime(data_dir)
    assert info is not None
    wait_until(lambda: not pid_alive(info.pid), what="the idle service stopped")
    assert not (data_dir / RUNTIME_FILE).exists()
    assert "stopped" in (data_dir / LOG_FILE).read_text()


def start_job_and_die(directory: Path, cmd: str) -> str:
    """A kernel that starts a job running ``cmd`` (which prints ``up``), then dies (SIGKILL:
    nothing of it stops the job); the job's address."""
    kernel = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from nosana_magic import run_confidential
            from nosana_magic.settings import Settings
            job = run_confidential({text(definition(op("a", cmd)))!r},
                                   settings=Settings.from_env(), wait=False, timeout=600)
            while not any(line.text == "up" for line in job.logs):
                time.sleep(0.05)
            print(job.address, flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=environment(directory))
    try:
        assert kernel.stdout is not None
        address = kernel.stdout.readline().strip()
    finally:
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(PATIENCE)
    assert address
    return address


def test_stop_ends_the_jobs_and_their_processes(data_dir: Path) -> None:
    address = start_job_and_die(data_dir, "echo up; sleep 300")
    assert address and processes_of_jobs({address})
    settings = settings_for(data_dir)
    found = local.service_status(settings)
    assert found is not None and found[1]["jobs"]["active"] == 1
    stopped = local.stop_local_service(settings)
    assert stopped is not None and not pid_alive(stopped.pid)
    wait_until(lambda: not processes_of_jobs({address}), what="the job's processes killed")
    assert local.service_info(settings) is None and not (data_dir / RUNTIME_FILE).exists()
    assert local.stop_local_service(settings) is None  # nothing left to stop


def test_a_killed_service_leaves_no_process_of_its_jobs(data_dir: Path) -> None:
    # A kernel starts a job whose op also leaves a process in a session of its own (a daemon
    # it started), then dies; then the service is SIGKILLed: nothing of it can act on that.
    address = start_job_and_die(data_dir, "setsid sleep 300 & echo up; sleep 300")
    assert len(processes_of_jobs({address})) >= 2
    info = read_runtime(data_dir)
    assert info is not None
    os.kill(info.pid, signal.SIGKILL)
    # The devnode's reaper (a process of its own) kills them, the detached one included.
    wait_until(lambda: not processes_of_jobs({address}), what="its job's processes gone")
    wait_until(lambda: not pid_alive(info.pid), what="the killed service gone")
    # Its runtime file is left behind, stale: the next use sees so and starts a new one.
    assert read_runtime(data_dir) == info and local.service_info(settings_for(data_dir)) is None
    found, started = local.ensure_service(settings_for(data_dir))
    assert started and found.pid != info.pid and read_runtime(data_dir) == found


def test_credits_on_the_service_are_its_own_key_or_yours(data_dir: Path, tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.json")
    own = local.local_network(Settings.from_env(
        {"NOSANA_CREDENTIALS_FILE": absent, "NOSANA_PAY": "credits"}, data_dir=str(data_dir),
        local_idle=120))
    info = read_runtime(data_dir)
    # The service's own key is in its private runtime file, and nowhere shown.
    assert info is not None and info.api_key.startswith("nos_") and own.pays_with == "credits"
    assert info.api_key not in repr(info) and info.api_key not in repr(own)
    mine = "nos_" + "m" * 40
    yours = local.local_network(Settings.from_env(
        {"NOSANA_CREDENTIALS_FILE": absent, "NOSANA_API_KEY": mine}, data_dir=str(data_dir),
        local_idle=120))

    async def use() -> tuple[float, float, float, float]:
        try:
            await list_placeholder(yours, timeout=60)
            a, b = await own.balance(), await yours.balance()
            return a.assigned, b.assigned, a.reserved, b.reserved
        finally:
            await own.aclose()
            await yours.aclose()

    # The key it did not know got its starting credits, in an account of its own.
    own_assigned, your_assigned, own_reserved, your_reserved = asyncio.run(use())
    assert (own_assigned, your_assigned, own_reserved) == (10.0, 10.0, 0.0)
    assert your_reserved > 0
    for path in (data_dir / RUNTIME_FILE, data_dir / LOG_FILE):
        assert mine not in path.read_text()
    # Only a client with the token may have a key served.
    refused = httpx.post(f"{info.url}/_devnode/credits", json={"api_key": "nos_" + "x" * 40},
                         trust_env=False, timeout=PATIENCE)
    assert refused.status_code == 401


def test_credits_commands_on_the_service_need_no_setting(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in [k for k in os.environ if k.startswith("NOSANA_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NOSANA_DATA_DIR", str(data_dir))
    monkeypatch.setenv("NOSANA_LOCAL_IDLE", "2m")
    monkeypatch.setenv("NOSANA_CREDENTIALS_FILE", str(tmp_path / "absent.json"))
    body = text(definition(op("a", "echo answer=7", results={"answer": "answer=([0-9]+)"})))
    with ipython_shell() as shell, capture_output() as captured:
        before = shell.run_line_magic("nosana", "credits --network local")
        shell.run_cell_magic("nosana_confidential", "--pay credits -t 2m -o run", body)
        after = shell.run_line_magic("nosana", "credits --network local")
        run = shell.user_ns["run"]
    rows_before, rows_after = dict(before.rows), dict(after.rows)
    assert before.title == "nosana credits on local" and rows_before["assigned"] == "$10.00"
    assert rows_before["settled"] == "$0.00" and rows_after["reserved"] == "$0.00"
    assert run.ok and run.results["answer"] == 7, run.reason
    assert "credits:" in captured.stdout  # the balance after the job, as on any network
    info = read_runtime(data_dir)
    assert info is not None and info.api_key not in captured.stdout + captured.stderr


def test_attach_from_a_new_kernel_and_the_local_commands(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel starts a job and dies at once (no atexit: nothing of it stops the job).
    started = python(f"""
        import os
        from nosana_magic import run_confidential
        from nosana_magic.settings import Settings
        job = run_confidential({text(definition(op("a", "sleep 2; echo answer=42",
                                                   results={"answer": "answer=([0-9]+)"})))!r},
                               settings=Settings.from_env(), wait=False, timeout=120)
        job.wait(60, until=lambda: job.phase == "running")  # the host has its definition
        print(job.address, flush=True)
        os._exit(0)
    """, data_dir)
    assert started.returncode == 0, started.stderr
    address = started.stdout.split()[-1]
    # A new kernel with nothing configured but its (the user's) data dir attaches.
    for key in [k for k in os.environ if k.startswith("NOSANA_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NOSANA_DATA_DIR", str(data_dir))
    monkeypatch.setenv("NOSANA_LOCAL_IDLE", "2m")
    with ipython_shell() as shell, capture_output() as captured:
        job = shell.run_line_magic("nosana", f"attach {address}")
        assert job is not None and job.ok and job.results["answer"] == 42, job.reason
        table = shell.run_line_magic("nosana", "local status")
        rows = {row[0]: row[1] for row in table.rows}
        shell.run_line_magic("nosana", "local stop")
        after = shell.run_line_magic("nosana", "local")
        stopped = captured.stdout
        shell.run_line_magic("nosana", "local start")
        again = read_runtime(data_dir)
        shell.run_line_magic("nosana", "local start")
    info_pid = rows["pid"]
    assert rows["state"] == "running" and rows["jobs"].startswith("0 queued or running, 1 listed")
    assert f"stopped the local Nosana network (pid {info_pid})" in stopped
    assert after.rows[0][1].startswith("not running")
    assert not pid_alive(int(info_pid))
    # Started by hand: said once as started, then as already running.
    assert again is not None and again.pid != int(info_pid) and pid_alive(again.pid)
    assert captured.stdout[len(stopped):].splitlines() == [
        f"Started the local Nosana network at {again.url} (pid {again.pid}, shared by your "
        "kernels; stops after 2m idle or on %nosana local stop; jobs run as local processes "
        "on this machine)",
        f"the local Nosana network already runs at {again.url} (pid {again.pid})"]


def test_the_command_line_says_the_same(data_dir: Path) -> None:
    def run(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nosana_magic", "local", action],
                              capture_output=True, text=True, env=environment(data_dir), cwd=ROOT,
                              timeout=120)

    assert run("status").returncode == 1
    up = run("start")
    assert up.returncode == 0 and up.stdout.startswith("started the local Nosana network at")
    shown = run("status")
    info = read_runtime(data_dir)
    assert info is not None and shown.returncode == 0
    rows = dict(line.split(None, 1) for line in shown.stdout.splitlines()
                if line.split()[0] in ("state", "pid", "url"))
    assert rows == {"state": "running", "pid": str(info.pid), "url": info.url}
    assert info.token not in shown.stdout
    assert run("stop").stdout.strip() == f"stopped the local Nosana network (pid {info.pid})"
    assert not pid_alive(info.pid)
    assert run("stop").stdout.strip() == "no local Nosana network runs for this user"
