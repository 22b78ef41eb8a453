"""The devnode and the leak checks touch only their own processes.

Another devnode (another run of the suite, another user's notebook) may run jobs on the same
machine; its processes carry their own ``NOSANA_ID``. Here the test itself starts such
stand-ins: processes that carry some other job's id (someone else's, a prefix or an
extension of our job's id, an empty one). The devnode's cleanup must leave them alone, and
the fixtures' checks must not count them; they must still find an orphan of one of ours.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nosana_magic.devnode import DevNode, DevNodeConfig

from . import conftest
from .conftest import FAST, Project, definition, op, processes_of_jobs
from .waiting import PATIENCE, wait_until


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def stand_ins() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes that look like another devnode's jobs; killed (they are ours) at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(PATIENCE)


def _stand_in(started: list[subprocess.Popen[bytes]], job_id: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["sleep", "300"], env={**os.environ, "NOSANA_ID": job_id})
    started.append(process)
    return process


def test_the_devnode_cleanup_and_the_checks_leave_foreign_job_processes_alone(
    stand_ins: list[subprocess.Popen[bytes]],
) -> None:
    config = DevNodeConfig(**FAST)  # type: ignore[arg-type]
    with DevNode(config) as node, Project(node) as project:
        job = project.post_placeholder()
        project.wait_flow(job, "waiting-for-job-definition")
        foreign = [_stand_in(stand_ins, job_id)
                   for job_id in ("someone-else", job[:-1], job + "x", "")]
        # The op detaches a daemon: only the search by NOSANA_ID (the cleanup) ends it.
        daemon = "setsid sleep 300 > /dev/null 2>&1 < /dev/null & echo $! > daemon.pid"
        assert project.send_definition(job, definition(op("a", daemon))).status_code == 200
        project.collect(job)
        assert node.workdir is not None
        pid = int((node.workdir / job / "daemon.pid").read_text())
        wait_until(lambda: not _alive(pid), what="the job's detached daemon killed")
        assert all(process.poll() is None for process in foreign)
        # The checks count nothing of theirs, neither by our job's id nor as a session job.
        pids = {process.pid for process in foreign}
        assert not pids & processes_of_jobs({job})
        assert not pids & processes_of_jobs()
        node.wait_job(job, timeout=PATIENCE)
    # Stopping the devnode (its last sweep over every job) leaves them alone too.
    assert all(process.poll() is None for process in foreign)


def test_the_checks_find_an_orphan_of_ours(tmp_path: Path) -> None:
    """An op's setsid'd grandchild whose parent died still counts: the session is its
    subreaper, and its job directory (HOME) lies in the session's temporary directory."""
    root = conftest.SESSION_ROOT
    assert root is not None and root in tmp_path.resolve().parents
    job = f"orphan-{uuid.uuid4().hex[:12]}"
    env = {"PATH": os.environ["PATH"], "NOSANA_ID": job, "HOME": str(tmp_path)}
    parent = subprocess.run(
        ["sh", "-c", "setsid sleep 300 > /dev/null 2>&1 < /dev/null & echo $!"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=PATIENCE, check=True)
    orphan = int(parent.stdout)
    try:
        assert _alive(orphan)
        assert processes_of_jobs({job}) == {orphan}
        assert orphan in processes_of_jobs()
        # The same process in someone else's job directory is not a job of this session.
        stranger = subprocess.Popen(["sleep", "300"], env={**env, "HOME": "/tmp"})
        try:
            assert stranger.pid not in processes_of_jobs()
            assert stranger.pid in processes_of_jobs({job})  # ours, by its (our) job id
        finally:
            stranger.kill()
            stranger.wait(PATIENCE)
    finally:
        os.kill(orphan, 9)
    wait_until(lambda: not _alive(orphan), what="the orphan gone")
    assert not processes_of_jobs({job})
