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

Its jobs' processes never outlive it: it kills them when it stops, and, should it be killed
in a way that runs none of its code (SIGKILL, the out-of-memory killer), the devnode's reaper
(:mod:`.reaper`, a process of its own that every devnode starts with its first job) kills
them. The runtime file it leaves then names a dead pid: the next client sees it is stale and
starts a new service.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--hosts-per-market", type=int, default=None, metavar="N",
                        help="emulated hosts in each market (default: the devnode's)")
    return parser


def serve(data_dir: Path, idle_timeout: float, ready: Callable[[str], None], *,
          hosts_per_market: int | None = None) -> int:
    """Run the service until it is told to stop, or is idle for ``idle_timeout`` s (0: never).

    ``ready`` gets ``ready PID URL`` once the runtime file is written.
    """
    import dataclasses
    import secrets

    from .app import DevNode
    from .config import DevNodeConfig
    from .monitor import collect_less

    collect_less()  # this process is the service alone
    token = secrets.token_urlsafe(32)
    config = DevNodeConfig(token=token, idle_timeout=idle_timeout or None)
    if hosts_per_market is not None:
        config = dataclasses.replace(config, hosts_per_market=hosts_per_market)
    node = DevNode(config)
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
            api_key=node.api_key, started=node.started, idle_timeout=idle_timeout,
            version=package_version()))
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
    told = False

    def ready(line: str) -> None:
        nonlocal told
        os.write(write_fd, line.encode() + b"\n")
        os.close(write_fd)
        told = True

    try:
        return serve(data_dir, max(0.0, args.idle_timeout), ready,
                     hosts_per_market=args.hosts_per_market)
    except BaseException as exc:
        if not told:  # the launcher says why, in one line
            os.write(write_fd, f"error: {type(exc).__name__}: {exc}\n".encode())
        raise


if __name__ == "__main__":
    sys.exit(main())
