"""What kills a job's processes when the devnode cannot: the reaper, and the process sweep.

A devnode kills its ops when it stops. Killed itself (``SIGKILL``, an out-of-memory kill, a
kernel restart), it can run no code, and the ops it started live on. So a devnode that runs a
job first starts a reaper: a small process of its own session that holds the reading end of a
pipe from the devnode and hears, line by line, which jobs run (``+<job>``) and which ended
(``-<job>``). When the pipe ends (the devnode stopped, or died: the kernel closes its end
either way) the reaper kills every process of the jobs still running and exits.

Processes are found by the ``NOSANA_ID=<job>`` the executor puts in every op's environment,
which whatever an op starts inherits, so what left the op's process group (``setsid``,
daemons) is found too (:func:`kill_job_processes`).

This file runs as a script (``python -I -S reaper.py``), so that the reaper starts in
milliseconds: it imports the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading

__all__ = ["Reaper", "kill_job_processes"]


def kill_job_processes(job: str) -> list[int]:
    """SIGKILL every live process whose environment holds ``NOSANA_ID=<job>``; the pids killed.

    The process-group kill misses what an op detached into a session of its own (``setsid``,
    daemons); they all inherited the ``NOSANA_ID`` the executor set, so they are found here.
    Only that exact entry counts (not a prefix, not another job's id, never an empty id: job
    ids are unique per devnode), only processes of this user are looked at, and a process is
    signalled through a pidfd, its environment checked again once the pidfd is open, so a pid
    that was reused meanwhile is never hit. Linux only (``/proc``); elsewhere, or for
    processes we may not read, it quietly does nothing. A few passes catch what a dying
    process forked meanwhile.
    """
    if not job:
        raise ValueError("kill_job_processes needs a job id")
    marker = f"NOSANA_ID={job}".encode()
    me, uid = os.getpid(), os.getuid()
    killed: list[int] = []
    for _ in range(5):
        try:
            entries = os.listdir("/proc")
        except OSError:
            return killed
        found = [
            pid
            for pid in (int(entry) for entry in entries if entry.isdigit())
            if pid != me and pid not in killed and _kill_if_marked(pid, uid, marker)
        ]
        if not found:
            break
        killed.extend(found)
    return killed


def _kill_if_marked(pid: int, uid: int, marker: bytes) -> bool:
    """SIGKILL ``pid`` if it is this user's and its environment holds ``marker``."""
    if not _marked(pid, uid, marker):
        return False
    try:
        pidfd = _pidfd(pid)
    except ProcessLookupError:
        return False
    try:
        # Checked again now that the pidfd is open: if the environment is still the marked
        # one, the pidfd is that process (a pid is reused only once its process is gone, and
        # a pidfd of a gone process signals nothing).
        if pidfd is not None and not _marked(pid, uid, marker):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _marked(pid: int, uid: int, marker: bytes) -> bool:
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return False
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in handle.read().split(b"\0")
    except OSError:
        return False


def _pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or None where the system has none (then ``os.kill`` is used);
    ProcessLookupError when it is gone."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None or not hasattr(signal, "pidfd_send_signal"):
        return None
    try:
        return int(opener(pid))
    except ProcessLookupError:
        raise
    except OSError:  # no pidfds in this kernel, or no descriptor left
        return None


class Reaper:
    """The devnode's side: starts the reaper process on the first :meth:`watch`, tells it which
    jobs run, and ends it with :meth:`close`. Thread-safe; a reaper that cannot be started is
    not an error (the devnode's own stop still kills its jobs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False

    def watch(self, job: str) -> None:
        """The reaper kills ``job``'s processes if this process dies before :meth:`forget`."""
        self._send(f"+{job}\n")

    def forget(self, job: str) -> None:
        """``job`` has ended and its processes are gone."""
        self._send(f"-{job}\n")

    def _send(self, line: str) -> None:
        if "\n" in line[:-1] or not line[1:-1]:
            raise ValueError("a job id is one line of text")
        with self._lock:
            if self._closed:
                return
            if self._process is None:
                self._process = self._start()
            stdin = self._process.stdin if self._process is not None else None
            if stdin is None:
                return
            with contextlib.suppress(OSError):  # the reaper died: nothing more to tell it
                stdin.write(line.encode())
                stdin.flush()

    @staticmethod
    def _start() -> subprocess.Popen[bytes] | None:
        try:
            return subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # A session of its own: a signal to the devnode's process group (Ctrl-C in a
                # terminal, a kill of the group) does not end the reaper with it.
                start_new_session=True,
                close_fds=True,
            )
        except OSError:
            return None

    def close(self, timeout: float = 10.0) -> None:
        """End the reaper (it kills what is left of the jobs still watched) and wait for it."""
        with self._lock:
            self._closed = True
            process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def main() -> None:
    """Read ``+job``/``-job`` lines until the pipe ends; then kill what the watched jobs left."""
    jobs: set[str] = set()
    with contextlib.suppress(OSError, KeyboardInterrupt):
        for raw in sys.stdin.buffer:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("+") and len(line) > 1:
                jobs.add(line[1:])
            elif line.startswith("-"):
                jobs.discard(line[1:])
    for job in sorted(jobs):
        kill_job_processes(job)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the end of the pipe ends it
    main()
