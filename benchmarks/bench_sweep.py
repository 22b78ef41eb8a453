"""Many background jobs from one process: all results, no line lost, the devnode's loop lag.

Run: python benchmarks/bench_sweep.py [--jobs 200] [--lines 2000] [--devnode default|process]

What a sweep from one kernel does: ``--jobs`` jobs started at once with ``wait=False`` (each
opening its network from the settings, as each ``%%nosana_confidential -b`` cell does), each
printing ``--lines`` lines and a result, then waited for. It checks that every job succeeded
with its result and every line, and reports the total time and the lag of the devnode's
event loop over the run (p50, p99, max: how late a 50 ms sleep on that loop wakes up).

``--devnode default``: the package's own local network, started by the first job, as a
newcomer gets it. ``--devnode process``: a devnode started beforehand, idle, in a process of
its own (``NOSANA_DEVNODE_URL``), the yardstick: the ratio of the two total times says what
the default costs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    LoopLag,
    definition,
    network_settings,
    printed_numbers,
)

from nosana_magic.job import run_confidential


def sweep(settings: Any, jobs: int, lines: int) -> dict[str, Any]:
    cmd = f"seq 1 {lines}; echo done={lines}"
    started = time.perf_counter()
    first = run_confidential(definition(cmd, results={"done": "done=([0-9]+)"}),
                             settings=settings, wait=False, timeout=1800)
    lag = LoopLag(settings)  # the default network is up once the first job opened it
    handles = [first] + [
        run_confidential(definition(cmd, results={"done": "done=([0-9]+)"}),
                         settings=settings, wait=False, timeout=1800)
        for _ in range(jobs - 1)]
    concurrent.futures.wait([job.future for job in handles], timeout=3600)
    elapsed = time.perf_counter() - started
    loop_lag = lag.result()
    failed = [job for job in handles if not job.ok]
    without = [job for job in handles if job.ok and job.results.get("done") != lines]
    lost = sum(lines - len(printed_numbers(job)) for job in handles)
    return {"elapsed": elapsed, "failed": len(failed), "without_result": len(without),
            "lost": lost, "lag": loop_lag,
            "first_failure": f"{failed[0].status}: {failed[0].reason}" if failed else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--devnode", choices=["default", "process"], default="default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data, network_settings(args.devnode,
                                                                 Path(data)) as settings:
        result = sweep(settings, args.jobs, args.lines)
    print(f"{args.jobs} background jobs x {args.lines:,} lines, devnode {args.devnode}")
    print(f"  total time: {result['elapsed']:.1f} s")
    print(f"  jobs failed: {result['failed']} {result['first_failure']}".rstrip())
    print(f"  jobs without their result: {result['without_result']}")
    print(f"  lines lost: {result['lost']:,}")
    lag = result["lag"]
    if lag is None:
        print("  devnode loop lag: not measurable here (a devnode of this checkout in its "
              "own process has no status route)")
    else:
        print(f"  devnode loop lag: p50 {lag['p50_ms']:.1f} ms, p99 {lag['p99_ms']:.1f} ms, "
              f"max {lag['max_ms']:.1f} ms ({lag['samples']:.0f} samples)")


if __name__ == "__main__":
    main()
