"""Resident memory the client keeps for finished jobs, and for one very long log.

Run: python benchmarks/bench_memory.py jobs [--jobs 100] [--lines 2000] [--devnode default|process]
     python benchmarks/bench_memory.py big [--lines 1000000] [--devnode default|process]

``jobs``: after a few warm-up jobs, ``--jobs`` jobs of ``--lines`` lines each run (in the
background, all at once) and finish; their handles are kept, as a notebook keeps them. It
reports this process's resident memory (RSS, after a full garbage collection) added per
finished job. ``big``: one job printing ``--lines`` lines, waited for; the RSS it added once
finished, and at its highest while it ran (sampled every 0.2 s).

``--devnode default`` is the package's own local network (an in-process devnode counts in
this process's memory); ``--devnode process`` a devnode in a process of its own, so the
figures are the client's alone. Run each in a fresh process: a process's RSS does not
shrink back after a peak, so one figure would colour the next.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
import threading
from pathlib import Path
from typing import Any

from common import (
    definition,
    network_settings,
    rss_mb,
)

from nosana_magic.job import run_confidential


def run_all(settings: Any, jobs: int, lines: int) -> list[Any]:
    handles = [run_confidential(definition(f"seq 1 {lines}"), settings=settings, wait=False,
                                timeout=1800) for _ in range(jobs)]
    concurrent.futures.wait([job.future for job in handles], timeout=3600)
    failed = [job for job in handles if not job.ok]
    if failed:
        raise SystemExit(f"{len(failed)} jobs failed: {failed[0].status} {failed[0].reason}")
    return handles


def per_job(settings: Any, jobs: int, lines: int) -> None:
    kept = run_all(settings, 10, lines)  # warm-up: imports, caches, the network's start
    before = rss_mb()
    kept += run_all(settings, jobs, lines)
    after = rss_mb()
    print(f"{jobs} finished jobs of {lines:,} lines, handles kept")
    print(f"  RSS before {before:.1f} MB, after {after:.1f} MB: "
          f"{(after - before) / jobs:.2f} MB per finished job")


def big(settings: Any, lines: int) -> None:
    run_all(settings, 2, 1000)  # warm-up
    before = rss_mb()
    highest = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            highest[0] = max(highest[0], rss_mb(collect=False))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    job = run_confidential(definition(f"seq 1 {lines}"), settings=settings, timeout=3600)
    done.set()
    sampler.join()
    if not job.ok:
        raise SystemExit(f"the job failed: {job.status} {job.reason}")
    after = rss_mb()
    count = sum(1 for line in job.logs if line.container)
    print(f"one job of {lines:,} lines ({count:,} of its lines in the handle)")
    print(f"  RSS before {before:.1f} MB; once finished +{after - before:.1f} MB; "
          f"highest while it ran +{highest[0] - before:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("test", choices=["jobs", "big"])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--lines", type=int, default=None)
    parser.add_argument("--devnode", choices=["default", "process"], default="default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data, network_settings(args.devnode,
                                                                 Path(data)) as settings:
        print(f"devnode {args.devnode}")
        if args.test == "jobs":
            per_job(settings, args.jobs, args.lines or 2000)
        else:
            big(settings, args.lines or 1_000_000)


if __name__ == "__main__":
    main()
