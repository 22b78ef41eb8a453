"""``python -m nosana_magic.devnode.service --data-dir DIR``: the local network as a service.

One per user, started by the first local job of any kernel or script (``network/local.py``),
shared by all of them, outliving each: a devnode in a process of its own, on an ephemeral
127.0.0.1 port, that asks every client for a random token. It says where it is, its pid and
that token in the runtime file (:mod:`.runtime`), and stops on ``POST /_devnode/stop``
(``%nosana local stop``), on SIGTERM/SIGINT/SIGHUP, or once it had no job and no request for
``--idle-timeout`` seconds; stopping kills every job process first and removes the file.

The process forks once, before it loads the server: the parent (the *launcher*, the client's
own child) waits until the service listens and has written its runtime file, prints one line
(``ready PID URL``, or ``error: …``) and exits, so the client reaps it at once, and the
service, in a session of its own, is nobody's child to wait for and no terminal's to hang up
with. What the service writes goes to ``local-network.log`` beside the runtime file.

On Linux the service's session starts with a *guardian*: a small process (no server loaded)
that is a child subreaper and the service's parent. Whatever the service's job processes
leave as orphans comes to it and is reaped; when the service dies, however it dies (SIGKILL
included, when it cannot kill its jobs itself), every process of its jobs, now the
guardian's, is killed and the runtime file removed. A signal to stop it is passed on to the
service.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from .runtime import LOG_FILE, ServiceInfo, package_version, remove_runtime, write_runtime

__all__ = ["main", "serve"]

#: How long the launcher waits for the service to be ready.
START_TIMEOUT_S = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nosana_magic.devnode.service",
        description="The per-user local Nosana network service (started by the client; "
        "stop it with %nosana local stop or python -m nosana_magic local stop).")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="where the runtime file, its lock and the log go")
    parser.add_argument("--idle-timeout", type=float, default=3600.0, metavar="S",
                        help="stop after S seconds with no job and no request (0: never)")
    return parser


def serve(data_dir: Path, idle_timeout: float, ready: Callable[[str], None]) -> int:
    """Run the service until it is told to stop, or is idle for ``idle_timeout`` s (0: never).

    ``ready`` gets ``ready PID URL`` once the runtime file is written.
    """
    import secrets

    from .app import DevNode
    from .config import DevNodeConfig

    token = secrets.token_urlsafe(32)
    node = DevNode(DevNodeConfig(token=token, idle_timeout=idle_timeout or None))
    stop = node.stop_requested

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    node.start()
    pid = os.getpid()
    try:
        write_runtime(data_dir, ServiceInfo(
            url=node.url, node_url_template=node.node_url_template, pid=pid, token=token,
            started=node.started, idle_timeout=idle_timeout, version=package_version()))
        _say(f"serving on {node.url} (pid {pid}, idle timeout "
             f"{f'{idle_timeout:g} s' if idle_timeout else 'none'})")
        ready(f"ready {pid} {node.url}")
        while not stop.wait(0.5):  # bounded waits: signals are handled promptly
            if not node.serving:
                _say("the server thread ended")
                break
        _say("stopping: killing job processes")
    finally:
        # The file first: from now on a client starts a new service rather than use this one.
        remove_runtime(data_dir, pid)
        node.stop()
    _say("stopped")
    return 0


def _say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _launcher(read_fd: int, child: int, timeout: float, log_path: Path) -> int:
    """The parent: one line on stdout saying how the start went, then exit."""
    deadline = time.monotonic() + timeout
    received = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while b"\n" not in received:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                os.kill(child, signal.SIGTERM)
                print(f"error: not ready after {timeout:g} s (see {log_path})", flush=True)
                return 1
            chunk = pipe.read(4096)
            if not chunk:
                break
            received += chunk
    line = received.decode("utf-8", "replace").strip()
    if not line:
        print(f"error: the service exited while starting (see {log_path})", flush=True)
        return 1
    print(line, flush=True)
    return 0 if line.startswith("ready ") else 1


def _detach(log_path: Path) -> None:
    """The service's standard streams: nothing in, the log file out (the launcher's pipe to
    the client must not stay open in the service)."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def _become_subreaper() -> bool:
    """Make this process the one orphans below it are given to (Linux ``prctl``); whether
    it is."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


#: ``prctl`` option (linux/prctl.h).
_PR_SET_CHILD_SUBREAPER = 36
#: How long the guardian goes on killing what the service left.
_SWEEP_S = 10.0


def _guard(service: int, data_dir: Path) -> int:
    """The guardian: reap orphans until ``service`` exits, then kill and reap every process
    left below this one, remove the service's runtime file and exit with its status."""

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(service, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = 1
    while True:
        pid, status = os.waitpid(-1, 0)  # the service or an orphan given to us
        if pid == service:
            code = os.waitstatus_to_exitcode(status)
            break
    left = _sweep()
    if left or code:
        _say(f"the service ended (status {code}); killed {left} process(es) of its jobs")
    remove_runtime(data_dir, service)
    return 0 if code == 0 else 1


def _sweep() -> int:
    """SIGKILL every process below this one (each op leads a process group of its own), and
    reap them; how many were killed. Bounded by :data:`_SWEEP_S`."""
    killed: set[int] = set()
    deadline = time.monotonic() + _SWEEP_S
    while time.monotonic() < deadline:
        children = _children(os.getpid())
        for child in children:
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(child, signal.SIGKILL)
            killed.add(child)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            if not children:
                break  # nothing below us any more
        time.sleep(0.02)
    return len(killed)


def _children(pid: int) -> list[int]:
    """The live children of ``pid`` (``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data_dir: Path = args.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = data_dir / LOG_FILE
    if not hasattr(os, "fork"):
        print("error: the local network service needs a POSIX system", flush=True)
        return 2
    read_fd, write_fd = os.pipe()
    child = os.fork()  # before any thread exists
    if child:
        os.close(write_fd)
        return _launcher(read_fd, child, START_TIMEOUT_S, log_path)
    os.close(read_fd)
    os.setsid()
    _detach(log_path)
    if _become_subreaper():
        service = os.fork()
        if service:
            os.close(write_fd)  # the launcher sees the end of the pipe if the service dies
            return _guard(service, data_dir)
    told = False

    def ready(line: str) -> None:
        nonlocal told
        os.write(write_fd, line.encode() + b"\n")
        os.close(write_fd)
        told = True

    try:
        return serve(data_dir, max(0.0, args.idle_timeout), ready)
    except BaseException as exc:
        if not told:  # the launcher says why, in one line
            os.write(write_fd, f"error: {type(exc).__name__}: {exc}\n".encode())
        raise


if __name__ == "__main__":
    sys.exit(main())
