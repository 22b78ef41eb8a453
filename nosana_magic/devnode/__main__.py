"""``python -m nosana_magic.devnode``: serve an embedded local Nosana network until Ctrl-C.

It binds 127.0.0.1 only, prints its base URL, markets and host addresses, and exits cleanly
on Ctrl-C or SIGTERM (every job process is killed first).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .app import DevNode
from .config import DevNodeConfig
from .monitor import collect_less

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nosana_magic.devnode",
        description="An embedded local Nosana network (ledger, IPFS, emulated hosts) on "
        "127.0.0.1. The hosts RUN JOB COMMANDS AS LOCAL PROCESSES ON THIS MACHINE.",
    )
    parser.add_argument("--port", type=int, default=8123, help="port (0: any free port)")
    parser.add_argument("--hosts", type=int, default=2, help="emulated hosts (default 2)")
    parser.add_argument("--results-window", type=float, default=60.0, metavar="S",
                        help="seconds a host waits for GET /results (default 60)")
    parser.add_argument("--pickup-delay", type=float, default=0.2, metavar="S",
                        help="seconds before an idle host takes a queued job (default 0.2)")
    parser.add_argument("--stop-grace", type=float, default=10.0, metavar="S",
                        help="seconds a stopped op gets before it is killed, as docker stop "
                        "(default 10)")
    parser.add_argument("--colors", action="store_true",
                        help="node log lines in ANSI colours, as a host in a terminal writes them")
    parser.add_argument("--legacy-routes", action="store_true",
                        help="also serve the pre-2025-10 node routes (/job-definition/:id …)")
    parser.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                        help="where job working directories go (default: a temporary one)")
    parser.add_argument("--api-key", default=None, metavar="nos_…",
                        help="the API key to serve (default: a fresh one, printed at start)")
    parser.add_argument("--credits", type=float, default=10.0, metavar="USD",
                        help="the credits of that API key, in USD (default 10)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.hosts < 1:
        print("--hosts must be at least 1", file=sys.stderr)
        return 2
    if args.api_key is not None and (not args.api_key.startswith("nos_") or args.api_key == "nos_"):
        print("--api-key must look like nos_…", file=sys.stderr)
        return 2
    if args.credits < 0:
        print("--credits must be at least 0", file=sys.stderr)
        return 2
    collect_less()  # this process is the devnode alone
    config = DevNodeConfig(
        hosts=args.hosts,
        results_window=args.results_window,
        pickup_delay=args.pickup_delay,
        stop_grace=args.stop_grace,
        node_log_colors=args.colors,
        legacy_routes=args.legacy_routes,
        workdir=args.workdir,
        port=args.port,
        api_key=args.api_key,
        credits_usd=args.credits,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = DevNode(config)
    try:
        try:
            node.start()
        except OSError as exc:
            print(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"devnode listening on {node.url}")
        print(f"node API URL template: {node.node_url_template}")
        for market in node.ledger.markets.values():
            print(f"market {market.slug}: {market.address} "
                  f"({market.price} NOS base units/s, job timeout {market.job_timeout} s)")
        for host in node.hosts:
            print(f"host {host.address} in {host.market.slug}")
        # Printed so that a notebook can use it (NOSANA_API_KEY); it pays on this devnode only.
        print(f"API key (${args.credits:.2f} of local credits): {node.api_key}")
        print(f"signing service: {node.client_manager_url}")
        print("WARNING: the hosts run job commands as local processes on this machine.")
        print("Ctrl-C to stop.", flush=True)
        # Bounded waits so a signal is handled promptly on every platform.
        while not stop.wait(0.5):
            pass
        print("stopping (killing job processes)…", flush=True)
    finally:
        node.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("devnode stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
