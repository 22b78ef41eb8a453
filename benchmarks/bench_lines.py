"""A local job printing many short lines, end to end: the devnode, the client, the text view.

Run: python benchmarks/bench_lines.py [--lines 200000] [--runs 3] [--devnode default|process]

Each run is one job (``seq 1 N``) on the local network, followed by the plain-text view (the
view of a terminal or a script: every line formatted and written, here to /dev/null so that
no terminal sets the pace), timed from ``run_confidential()`` to the view's summary. It
reports lines per second over that whole time and over the stream alone (first line to last
line in the handle), and checks that every line is in the handle.

``--devnode default`` is what a newcomer gets: the package's own local network (started
before the first run, so its start-up is not in the figures: ``bench_startup.py`` has it).
``--devnode process`` is a devnode started by hand in a process of its own
(``NOSANA_DEVNODE_URL``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    definition,
    network_settings,
    printed_numbers,
    quiet_stdout,
    spread,
)

from nosana_magic.display import JobView, follow
from nosana_magic.job import run_confidential
from nosana_magic.network import open_network


def one_run(settings: Any, lines: int) -> dict[str, float]:
    arrivals: list[float] = []

    def on_event(event: Any) -> None:
        if event.kind == "log":
            arrivals.append(time.perf_counter())

    started = time.perf_counter()
    with quiet_stdout():
        job = run_confidential(definition(f"seq 1 {lines}"), settings=settings, wait=False,
                               timeout=600)
        job.subscribe(on_event)  # long before the first line: a host takes a job in 0.2 s
        view = JobView(job, mode="text").show()
        follow(job, view)
    elapsed = time.perf_counter() - started
    if not job.ok:
        raise SystemExit(f"the job did not succeed: {job.status} {job.reason}")
    numbers = printed_numbers(job)
    if len(numbers) != lines or numbers[-1].strip() != str(lines):
        raise SystemExit(f"the handle holds {len(numbers):,} of {lines:,} lines")
    stream = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    return {"elapsed": elapsed, "rate": lines / elapsed, "stream": lines / stream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--devnode", choices=["default", "process"], default="default")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data, network_settings(args.devnode,
                                                                 Path(data)) as settings:
        from nosana_magic import runner

        network = open_network(settings)  # started now, outside the timed runs
        runner.run_sync(network.markets(), timeout=60)
        runner.run_sync(network.aclose(), timeout=10)
        runs = [one_run(settings, args.lines) for _ in range(args.runs)]
    elapsed = [r["elapsed"] for r in runs]
    rates = [r["rate"] for r in runs]
    print(f"{args.lines:,} lines, devnode {args.devnode}, {args.runs} runs, text view to "
          "/dev/null")
    print(f"  job, run_confidential() to the summary: {spread(elapsed)} s")
    print(f"  lines per second over that time:       {spread(rates, ',.0f')}")
    print(f"  lines per second, first to last line:  {spread([r['stream'] for r in runs], ',.0f')}")
    print("  every line in the handle: yes")


if __name__ == "__main__":
    main()
