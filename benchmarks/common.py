"""What the benchmark scripts share: a devnode in a process of its own, the default local
network, the devnode's event-loop lag, resident memory, and figures as medians with ranges.

Not a test helper: nothing here asserts. The scripts run against whatever checkout they sit
in (``sys.path`` gets the checkout first), so one script measures the code before and after a
change alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

import httpx  # noqa: E402

#: Seconds between two probes of an event loop's lag.
PROBE_S = 0.05


def definition(cmd: str, *, results: dict[str, str] | None = None) -> str:
    op: dict[str, Any] = {"type": "container/run", "id": "a",
                          "args": {"image": "ubuntu:22.04", "cmd": cmd}}
    if results:
        op["results"] = results
    return json.dumps({"version": "0.1", "type": "container", "meta": {"trigger": "cli"},
                       "ops": [op]})


def printed_numbers(job: Any) -> list[str]:
    """The numbers a ``seq`` job printed, as its handle holds them (live lines are of stream
    ``output``, lines from the results ``stdout``)."""
    return [line.text for line in job.logs if line.container and line.text.strip().isdigit()]


@contextlib.contextmanager
def devnode_process(workdir: Path, *args: str) -> Iterator[tuple[str, str]]:
    """A devnode in a process of its own (``python -m nosana_magic.devnode --port 0``), so
    that it shares no GIL with the client. Yields its URL and node URL template."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nosana_magic.devnode", "--port", "0", "--workdir",
         str(workdir), *args],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        url = template = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("devnode listening on "):
                url = line.split()[-1]
            elif line.startswith("node API URL template: "):
                template = line.split()[-1]
            elif line.startswith("Ctrl-C to stop"):
                break
        if not url or not template:
            raise SystemExit("the devnode did not start")
        yield url, template
    finally:
        proc.terminate()  # the devnode kills its job processes on SIGTERM
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def default_settings(data_dir: Path, **overrides: Any) -> Any:
    """Settings with nothing configured but a data dir of the benchmark's own: the default
    local network, as a newcomer gets it."""
    from nosana_magic.settings import Settings

    return Settings.from_env({}, data_dir=str(data_dir), **overrides)


def stop_default_network(settings: Any) -> None:
    """Stop what the default local network left running (a per-user service, if the
    checkout has one; an in-process devnode dies with the process)."""
    from nosana_magic.network import local

    stop = getattr(local, "stop_local_service", None)
    if stop is not None:
        stop(settings)


def service_hosts() -> list[str]:
    """The devnode arguments that give it as many hosts as the local network service has
    (a yardstick with fewer hosts would queue the jobs the service runs at once)."""
    from nosana_magic.network import local

    per_market = getattr(local, "LOCAL_HOSTS_PER_MARKET", None)
    return ["--hosts", str(2 * per_market)] if per_market else []


@contextlib.contextmanager
def network_settings(mode: str, data_dir: Path) -> Iterator[Any]:
    """Settings for the local network: ``process``, a devnode of this script's own in a
    process, with the service's hosts; otherwise the user's local network service,
    stopped afterwards."""
    if mode == "process":
        with tempfile.TemporaryDirectory() as workdir, devnode_process(
                Path(workdir), *service_hosts()) as (url, _):
            yield default_settings(data_dir, devnode_url=url)
        return
    settings = default_settings(data_dir)
    try:
        yield settings
    finally:
        stop_default_network(settings)


class LoopLag:
    """The lag of the default local network's event loop over a run: read from the
    devnode's status route where it has one, else measured by a probe put on the loop of
    the in-process devnode (``None`` when neither can be had)."""

    def __init__(self, settings: Any) -> None:
        from nosana_magic.network import local

        self._started = time.monotonic()
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._route: tuple[str, dict[str, str]] | None = None
        node = getattr(local, "embedded_devnode", lambda: None)()
        if settings.devnode_url:
            self._route = (settings.devnode_url.rstrip("/"), {})
        elif node is not None and getattr(node, "_loop", None) is not None:
            asyncio.run_coroutine_threadsafe(self._probe(), node._loop)
        else:
            info = getattr(local, "service_info", lambda s: None)(settings)
            if info is not None:
                self._route = (info.url, {local.TOKEN_HEADER: info.token})

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            before = loop.time()
            await asyncio.sleep(PROBE_S)
            self._samples.append(max(0.0, loop.time() - before - PROBE_S))

    def result(self) -> dict[str, float] | None:
        """p50, p99 and max lag in ms, and the number of samples."""
        self._stop.set()
        if self._route is not None:
            url, headers = self._route
            window = time.monotonic() - self._started
            reply = httpx.get(f"{url}/_devnode/status", params={"window": f"{window:.1f}"},
                              headers=headers, trust_env=False, timeout=10)
            if reply.status_code != 200:
                return None  # a devnode without the route
            lag: dict[str, float] = reply.json()["loop_lag"]
            return lag
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return {"samples": len(ordered), "p50_ms": 1000 * percentile(ordered, 50),
                "p99_ms": 1000 * percentile(ordered, 99), "max_ms": 1000 * ordered[-1]}


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of sorted values (nearest rank)."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rss_mb(*, collect: bool = True) -> float:
    """This process's resident memory now, in MB (after a full collection, unless not
    ``collect``)."""
    if collect:
        gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spread(values: Sequence[float], fmt: str = ".2f") -> str:
    """``median (min-max)`` of ``values``."""
    return (f"{format(statistics.median(values), fmt)} "
            f"({format(min(values), fmt)}-{format(max(values), fmt)})")


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Standard output into /dev/null (what a view prints is still formatted and written)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield
