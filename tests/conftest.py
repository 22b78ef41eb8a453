"""Shared fixtures: a private sandbox for the session, leak checks (every devnode test, and the
whole session), a started devnode.

Two runs of the suite may share a machine, so everything here is scoped to this session: its
own temporary directory (``TMPDIR``, the local wallet's data dir, IPython's dir), and the leak
checks look only at processes this pytest process started (its descendants) and, among them,
at job processes whose job directory lies in this session's temporary directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosana_magic.devnode import DevNode, DevNodeConfig

from .waiting import PATIENCE

#: Short timings so the suite runs every phase in seconds. Only delays that tests wait out are
#: short. The results window closes as soon as the results are collected, so it can be long
#: enough that a loaded machine never misses it (tests that wait one out set a short one);
#: ``stop_timeout`` bounds a stop that takes well under a second.
FAST = {"pickup_delay": 0.05, "results_window": 10.0, "sse_interval": 0.02, "stop_timeout": 30.0,
        "stop_grace": 0.5}
#: The devnode's behaviours from before its hosts followed the real host's (each a named
#: ``DevNodeConfig`` setting), for the client tests written against them.
OLDER_DEVNODE = {"log_payload": True, "results_values": True, "keep_log_history": True,
                 "info_last_event": "final-status", "term_process_group": True}

#: This session's temporary directory (set by ``session_sandbox``). Every devnode the session
#: starts, in this process or in a subprocess, makes its job directories below it, and the
#: executor gives each op its job directory as ``HOME``.
SESSION_ROOT: Path | None = None


# ---------------------------------------------------------------------- our processes (/proc)


def _children_of(pid: int) -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def _children() -> set[int]:
    """Live (non-zombie) child processes of this process."""
    return {pid for pid in _children_of(os.getpid()) if _state(pid) not in (None, "Z")}


def _descendants() -> set[int]:
    """Live processes below this one. The session makes this process the subreaper of its
    descendants, so an orphan (an op's setsid'd grandchild whose parent died) stays here."""
    found: set[int] = set()
    todo = [os.getpid()]
    while todo:
        for child in _children_of(todo.pop()) - found:
            found.add(child)
            todo.append(child)
    return {pid for pid in found if _state(pid) not in (None, "Z")}


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _environment(pid: int) -> dict[bytes, bytes]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.partition(b"=")[::2] for item in raw.split(b"\0") if b"=" in item)


def _in_session(home: bytes) -> bool:
    if SESSION_ROOT is None or not home:
        return False
    path = Path(os.fsdecode(home))
    return path == SESSION_ROOT or SESSION_ROOT in path.parents


def processes_of_jobs(jobs: set[str] | None = None) -> set[int]:
    """Live job processes of this session: descendants of this process whose ``NOSANA_ID``
    is one of ``jobs`` (``None``: any job of this session, i.e. whose ``HOME``, the job
    directory the executor gives an op, is inside this session's temporary directory).

    The executor sets ``NOSANA_ID`` and ``HOME``, which grandchildren inherit, so an orphan
    is found too. Other processes on the machine are never looked at, and a process of ours
    that only carries some other job's id is not counted.
    """
    wanted = None if jobs is None else {job.encode() for job in jobs if job}
    found: set[int] = set()
    for pid in _descendants():
        env = _environment(pid)
        job = env.get(b"NOSANA_ID")
        if not job:
            continue
        if (job in wanted) if wanted is not None else _in_session(env.get(b"HOME", b"")):
            found.add(pid)
    return found


def _listening_ports() -> set[int]:
    """TCP ports this process listens on."""
    inodes: set[str] = set()
    for fd in Path("/proc/self/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _wait_while(check: object, timeout: float) -> None:
    """Until ``check()`` is falsy (a leak went away) or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not check():  # type: ignore[operator]
            return
        time.sleep(0.02)


def _become_subreaper() -> None:
    """Orphans among our descendants are re-parented to this process, not to init, so that
    the leak checks still find (only) them. Linux only; elsewhere the checks see less."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


@pytest.fixture(scope="session", autouse=True)
def session_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This session's own temporary directory, data dir and IPython dir, inherited by every
    subprocess it starts (kernels, the demo, a devnode): a second run of the suite on the
    same machine shares none of them."""
    global SESSION_ROOT
    root = tmp_path_factory.getbasetemp().resolve()
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    SESSION_ROOT = root
    _become_subreaper()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp))
        mp.setattr(tempfile, "tempdir", str(tmp))
        mp.setenv("XDG_DATA_HOME", str(root / "xdg-data"))  # the local wallet's default home
        mp.setenv("IPYTHONDIR", str(root / "ipython"))  # history databases, profiles
        yield root


@pytest.fixture(scope="session", autouse=True)
def no_job_process_outlives_the_tests(session_sandbox: Path) -> Iterator[None]:
    """Whatever started them (devnode fixtures, magics, notebooks), no job process of this
    session is left; those found are reported, then killed."""
    yield
    from nosana_magic.network.local import stop_embedded_devnode

    stop_embedded_devnode()
    _wait_while(processes_of_jobs, PATIENCE)
    left = processes_of_jobs()
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"job processes outlived the test session: {sorted(left)}"


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each devnode test: no new thread, child process or listening port remains."""
    if not request.node.module.__name__.rsplit(".", 1)[-1].startswith("test_devnode"):
        yield
        return
    threads = set(threading.enumerate())
    children = _children()
    ports = _listening_ports()
    yield

    def new_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in threads and t.is_alive()]

    _wait_while(lambda: new_threads() or (_children() - children), PATIENCE)
    assert not new_threads(), f"threads left behind: {new_threads()}"
    assert not (_children() - children), f"child processes left: {_children() - children}"
    assert not (_listening_ports() - ports), f"ports left open: {_listening_ports() - ports}"


@pytest.fixture
def devnode_config() -> DevNodeConfig:
    """The configuration the ``devnode`` fixture starts with (override it in a module)."""
    return DevNodeConfig(**FAST)  # type: ignore[arg-type]


@pytest.fixture
def devnode(devnode_config: DevNodeConfig) -> Iterator[DevNode]:
    """A started in-process devnode with short timings; after the test, no job process."""
    node = DevNode(devnode_config)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        jobs = set(node.ledger.jobs)
        _wait_while(lambda: processes_of_jobs(jobs), PATIENCE)
        assert not processes_of_jobs(jobs), "job processes survived the devnode"
