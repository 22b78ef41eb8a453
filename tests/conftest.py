"""Shared fixtures: leak checks (every devnode test, and the whole session), a started devnode."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosana_magic.devnode import DevNode, DevNodeConfig

#: Short timings so the suite runs every phase in seconds.
FAST = {"pickup_delay": 0.05, "results_window": 2.0, "sse_interval": 0.02, "stop_timeout": 5.0}


# ---------------------------------------------------------------------- leak checks (Linux /proc)


def _children() -> set[int]:
    """Live (non-zombie) child processes of this process."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").glob("*"):
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return {pid for pid in pids if _state(pid) not in (None, "Z")}


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


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


def processes_of_jobs(jobs: set[str] | None = None) -> set[int]:
    """Live processes (of any parent) whose environment says they belong to one of ``jobs``
    (``None``: to any job). The executor sets ``NOSANA_ID``, which grandchildren inherit, so
    an orphan is found too."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        ids = {v for v in environ.split(b"\0") if v.startswith(b"NOSANA_ID=")}
        if not ids or (jobs is not None and not ids & {f"NOSANA_ID={j}".encode() for j in jobs}):
            continue
        if _state(int(entry.name)) != "Z":
            found.add(int(entry.name))
    return found


def _wait_until(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not check():  # type: ignore[operator]
            return
        time.sleep(0.02)


@pytest.fixture(scope="session", autouse=True)
def no_job_process_outlives_the_tests() -> Iterator[None]:
    """Whatever started them (devnode fixtures, magics, notebooks), no job process is left."""
    before = processes_of_jobs()
    yield
    from nosana_magic.network.local import stop_embedded_devnode

    stop_embedded_devnode()
    _wait_until(lambda: processes_of_jobs() - before, 5.0)
    assert not (processes_of_jobs() - before), "job processes outlived the test session"


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

    _wait_until(lambda: new_threads() or (_children() - children), 3.0)
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
        _wait_until(lambda: processes_of_jobs(jobs), 3.0)
        assert not processes_of_jobs(jobs), "job processes survived the devnode"
