"""What the devnode knows of its own health: requests in flight, idleness, event-loop lag.

:class:`Activity` counts the requests in flight and when the last one began or ended: a
devnode with no job and no request for its ``idle_timeout`` stops (the local network service
does). :class:`LoopLag` is a probe on the devnode's loop: a task that sleeps
:data:`PROBE_S` and records how much later than asked it woke, which is how long something
else held the loop (or the process's GIL). Both are read through ``GET /_devnode/status``.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections import deque
from typing import Any

__all__ = ["PROBE_S", "SERVER_GC_THRESHOLDS", "Activity", "LoopLag", "collect_less"]

#: How long the probe sleeps each time.
PROBE_S = 0.05
#: How far back lag samples are kept (seconds).
LAG_HISTORY_S = 600.0


class Activity:
    """Requests in flight, and when the last one began or ended (loop thread only)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._last = time.monotonic()

    def begin(self) -> None:
        self.in_flight += 1
        self._last = time.monotonic()

    def end(self) -> None:
        self.in_flight -= 1
        self._last = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since the last request ended (0 while one is in flight)."""
        return 0.0 if self.in_flight else time.monotonic() - self._last

    def touch(self) -> None:
        """Count now as activity (e.g. a job that just ended)."""
        self._last = time.monotonic()


class LoopLag:
    """Lag samples of the loop :meth:`run` runs on, for the last :data:`LAG_HISTORY_S`."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(
            maxlen=math.ceil(LAG_HISTORY_S / PROBE_S))
        self._max = 0.0

    async def run(self) -> None:
        """Probe until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(PROBE_S)
            now = loop.time()
            lag = max(0.0, now - before - PROBE_S)
            self._samples.append((now, lag))
            self._max = max(self._max, lag)

    def summary(self, window: float = 60.0) -> dict[str, Any]:
        """The lag over the last ``window`` seconds: samples, p50, p99 and max (ms), and the
        largest since the start."""
        since = asyncio.get_running_loop().time() - window
        lags = sorted(lag for at, lag in self._samples if at >= since)

        def ms(value: float) -> float:
            return round(value * 1000, 1)

        def rank(q: float) -> float:
            return lags[max(0, min(len(lags) - 1, math.ceil(q * len(lags)) - 1))]

        return {
            "window_s": window,
            "samples": len(lags),
            "p50_ms": ms(rank(0.50)) if lags else None,
            "p99_ms": ms(rank(0.99)) if lags else None,
            "max_ms": ms(lags[-1]) if lags else None,
            "max_since_start_ms": ms(self._max),
        }


#: Collector thresholds for a process that is a devnode alone (see :func:`collect_less`).
SERVER_GC_THRESHOLDS = (50_000, 20, 20)


def collect_less() -> None:
    """Make the garbage collector run less often in this process: call only in a process
    that is a devnode alone (its command line, the local network service). The flows of
    finished jobs keep many small objects (their op logs), and the default thresholds have
    the collector walk them all often enough to hold the event loop up: 200 jobs of 2,000
    lines had its lag's p99 at ~100 ms, ~46 ms with these (benchmarks/bench_sweep.py)."""
    gc.set_threshold(*SERVER_GC_THRESHOLDS)
