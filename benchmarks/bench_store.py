"""The local store's log path: lines per second in and out, bytes per line on disk, memory.

Run: python benchmarks/bench_store.py [--lines 1000000] [--rate 200000]

One job's log goes through a ``JobRecorder`` (as the job machine hands it batches of 1,000
lines from the package's loop thread) into a fresh store in a temporary directory, then is
read back. It reports:

1. **the writer alone**: 150,000 lines handed over at once, then the time until they are
   committed (lines/s: the writer's own speed, redaction off and on);
2. **a paced log**: ``--lines`` lines handed over at ``--rate`` lines/s (4× the end-to-end
   target of the local network, 50,000 lines/s): the caller's cost per line, lines dropped
   (0 expected: the writer keeps up), how long after the last line everything was committed;
3. **bytes per line on disk** (the database and its WAL, after a checkpoint);
4. **memory**: the process's resident set before, at its peak, and after;
5. **read back**: every line through ``iter_logs`` (lines/s), and the last 100 by range.

The lines are built once (ten batches of distinct text, reused in turn), so the figures are
the store's and not the cost of formatting lines.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nosana_magic.secrets import Redactor
from nosana_magic.store import Store


@dataclass(frozen=True)
class Line:
    op_id: str | None
    stream: str
    text: str
    timestamp: float


def rss_mb(field: str = "VmRSS") -> float:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(field + ":"):
            return int(row.split()[1]) / 1024
    return float("nan")


def batches() -> list[list[Line]]:
    now = time.time()
    return [[Line("train", "stdout", f"step {b * 1000 + i} loss {1 / (i + 1):.6f} lr 3e-4 "
                  f"epoch {b}", now + i * 1e-4) for i in range(1000)] for b in range(10)]


def writer_alone(tmp: Path, made: list[list[Line]], redact: bool) -> float:
    store = Store(tmp / f"alone-{redact}.sqlite3")
    redactor = Redactor({"TOKEN": "hf_not_in_these_lines_0123456789"}) if redact else None
    rec = store.record(network="local", redactor=redactor)
    store.flush()
    start = time.perf_counter()
    for i in range(150):
        rec.append_logs(made[i % len(made)])
    store.flush(timeout=600)
    took = time.perf_counter() - start
    store.close()
    return 150_000 / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=200_000)
    args = parser.parse_args()
    made = batches()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        alone = [writer_alone(tmp, made, redact) for redact in (False, True)]

        path = tmp / "runs.sqlite3"
        store = Store(path)
        rec = store.record(network="local", status="running")
        store.flush()
        before = rss_mb()
        costs = []
        start = time.perf_counter()
        for n, first in enumerate(range(0, args.lines, 1000)):
            due = start + first / args.rate
            while time.perf_counter() < due:
                time.sleep(0.001)
            t0 = time.perf_counter()
            rec.append_logs(made[n % len(made)])
            costs.append((time.perf_counter() - t0) / 1000)
        handed = time.perf_counter()
        rec.finish(status="succeeded")
        store.flush(timeout=600)
        lag = time.perf_counter() - handed
        peak, after = rss_mb("VmHWM"), rss_mb()
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        job = store.job(rec.key)

        start = time.perf_counter()
        count = sum(1 for _ in store.iter_logs(rec.key))
        read = time.perf_counter() - start
        start = time.perf_counter()
        tail = store.logs(rec.key, job.log_lines - 100)
        ranged = time.perf_counter() - start
        store.close()

    print(f"writer alone, 150,000 lines          {alone[0]:10,.0f} lines/s "
          f"({alone[1]:,.0f} with a redactor)")
    print(f"paced: {job.log_lines:,} lines at {args.rate:,}/s")
    print(f"  caller's cost per line (median)    {statistics.median(costs) * 1e6:8.2f} µs")
    print(f"  dropped                            {job.log_dropped:8,}")
    print(f"  committed after the last line      {lag * 1e3:8.0f} ms")
    print(f"on disk                              {size / 2**20:8.1f} MB "
          f"({size / max(job.log_lines, 1):.1f} bytes/line)")
    print(f"memory before / peak / after         {before:.0f} / {peak:.0f} / {after:.0f} MB")
    print(f"read back, every line                {count / read:10,.0f} lines/s")
    print(f"read back, last 100 lines            {ranged * 1e3:8.1f} ms ({len(tail)} lines)")


if __name__ == "__main__":
    main()
