"""How fast the client reacts to the host, and how fast logs flow through it, on the local network.

Run: python benchmarks/bench_local.py [--jobs 10] [--lines 15000]   (about a minute)

Three figures, against a devnode (ledger, IPFS and hosts on 127.0.0.1) started in a process of
its own, so that the server does not compete with the client for this process's GIL:

1. **host "Waiting for job definition" -> "Job definition received"**: how soon the client
   notices that a host took the job and sends it the real definition. Both instants are the
   host's own log timestamps (ms), as the client received them in ``job.node_logs``.
2. **endTime -> results in hand**: from the end the host records in the flow to the moment
   the client holds the private results (both wall clock on this machine).
3. **log lines per second**: one ``/log`` history (a job that printed ``--lines`` lines and
   keeps running, so that the host replays its history to each new subscriber) read by a bare
   WebSocket reader that only parses each frame, then by the client
   (``ConfidentialJob.attach``: auth, reconnect cursor, redaction, ``LogLine``, listeners),
   alone or with a widget ``JobView`` attached; the attached client then stops the job.

Machine speed blurs absolute times, so each latency is also given in bare HTTP round trips to
the same devnode (the client needs at least one request after the event), and each rate as a
ratio to the bare reader's, with the range over the runs. The Nosana CLI polls every 5 s for
the first two (docs/protocol.md §23); that is shown for scale.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from common import definition as _definition
from common import devnode_process
from websockets.asyncio.client import connect as ws_connect

from nosana_magic import runner
from nosana_magic.job import ConfidentialJob, JobEvent, run_confidential
from nosana_magic.network.api import ApiNetwork
from nosana_magic.wallet import Wallet

#: Runs of each log reader (the median is reported).
REPEATS = 5

#: The Nosana CLI's polling interval for the job's state and results (docs/protocol.md §23).
CLI_POLL_S = 5.0


def http_round_trip(url: str, samples: int = 50) -> float:
    """Median seconds of one small GET to the devnode (the machine's yardstick)."""
    times = []
    with httpx.Client(trust_env=False) as client:
        client.get(url + "/api/markets/")
        for _ in range(samples):
            start = time.perf_counter()
            client.get(url + "/api/markets/")
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def reaction_times(net: ApiNetwork, jobs: int) -> tuple[list[float], list[float]]:
    """Per job: waiting-for-definition -> received, and endTime -> results in hand (s)."""
    to_definition, to_results = [], []
    for _ in range(jobs):
        job = run_confidential(_definition("echo hi"), network=net, timeout=60)
        if not job.ok:
            raise SystemExit(f"benchmark job failed: {job.status} {job.error}")
        assert job.flow is not None and job.flow.end_time is not None
        # The host's own progress lines, with the host's timestamps (ms on the wire).
        stamps = {line.text: line.timestamp for line in job.node_logs}
        to_definition.append(
            stamps["Job definition received"] - stamps["Waiting for job definition"])
        to_results.append(job.timings["results"] - job.flow.end_time / 1000)
    return to_definition, to_results


def _subscription(job: str, wallet: Wallet) -> str:
    return json.dumps({"path": "/log", "header": wallet.auth_header(job),
                       "body": {"jobAddress": job, "address": wallet.address}})


async def _parse_rate(frames: AsyncIterator[Any], expected: int) -> float:
    """Lines/s over ``expected`` log frames, each frame and its entry parsed, nothing more."""
    count, first = 0, 0.0
    async for raw in frames:
        frame = json.loads(raw)
        if frame.get("path") != "log":
            continue
        data = frame["data"]
        json.loads(data) if isinstance(data, str) else data
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count == expected:
            return (expected - 1) / (time.perf_counter() - first)
    raise RuntimeError(f"the stream ended after {count} of {expected} entries")


async def bare_reader(node_url: str, job: str, wallet: Wallet, expected: int) -> float:
    """Lines/s of a reader on websockets that subscribes to ``/log`` and parses each frame."""
    async with ws_connect("ws://" + node_url.removeprefix("http://"), max_size=2**24,
                          proxy=None) as ws:
        await ws.send(_subscription(job, wallet))
        return await _parse_rate(ws, expected)


async def bare_reader_aiohttp(node_url: str, job: str, wallet: Wallet, expected: int) -> float:
    """:func:`bare_reader` on aiohttp, the WebSocket library the client uses."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(
            "ws://" + node_url.removeprefix("http://"), max_msg_size=2**24) as ws:
        await ws.send_str(_subscription(job, wallet))
        return await _parse_rate((message.data async for message in ws), expected)


def client_rate(address: str, net: ApiNetwork, expected: int, *, view: bool) -> tuple[float, int]:
    """Lines/s through ``ConfidentialJob.attach`` (optionally with a widget view attached),
    and the number of messages that view sent to the frontend."""
    import comm
    from comm.base_comm import BaseComm

    from nosana_magic.display import JobView

    arrivals: list[float] = []
    sent = [0]

    class CountingComm(BaseComm):
        def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                        buffers: Any = None, **keys: Any) -> None:
            if msg_type == "comm_msg":
                sent[0] += 1

    def on_event(event: JobEvent) -> None:
        if event.kind == "log":  # the lines that arrived together
            arrivals.extend([time.perf_counter()] * len(event.lines))

    original = comm.create_comm
    comm.create_comm = CountingComm
    try:
        job = ConfidentialJob(None, net, address=address)
        job.subscribe(on_event)  # before it starts: no line can be missed
        job.start()
        # Outside a kernel the view's display() calls print their bundles: keep them quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            shown = JobView(job, mode="widget").show() if view else None
            job.wait(120, until=lambda: len(arrivals) >= expected)
            job.stop()  # the replay is read: end the job (an attached handle cannot detach)
            job.wait(60)
            if shown is not None:
                shown.finish()
    finally:
        comm.create_comm = original
    if len(arrivals) < expected:  # more: what the host said about the stop
        raise RuntimeError(f"the client got {len(arrivals)} of {expected} entries")
    return (expected - 1) / (arrivals[expected - 1] - arrivals[0]), sent[0]


def replayed_job(net: ApiNetwork, lines: int) -> tuple[ConfidentialJob, int]:
    """A job that printed ``lines`` lines and keeps running (a host replays the history of
    a running job to each new subscriber, and forgets it once the job has ended), and the
    number of entries in that history."""
    job = run_confidential(_definition(f"seq 1 {lines}; sleep 600"), network=net,
                           timeout=900, wait=False)
    job.wait(120, until=lambda: sum(1 for line in job.logs if line.container) >= lines)
    assert job.address and job.node
    return job, len(job.logs)  # equal to the host's history, line for line


def log_rates(net: ApiNetwork, lines: int) -> dict[str, Any]:
    bare, bare_aio, client, with_view, messages = [], [], [], [], []
    expected = 0
    for _ in range(REPEATS):  # interleaved, so drift in the machine's load hits all three
        for view in (False, True):
            job, expected = replayed_job(net, lines)
            assert job.address and job.node
            bare.append(runner.run_sync(
                bare_reader(net.node_url(job.node), job.address, net.wallet, expected),
                timeout=120))
            bare_aio.append(runner.run_sync(
                bare_reader_aiohttp(net.node_url(job.node), job.address, net.wallet,
                                    expected), timeout=120))
            rate, sent = client_rate(job.address, net, expected, view=view)
            (with_view if view else client).append(rate)
            if view:
                messages.append(sent)
            job.wait(60)  # the attached handle stopped it
    pairs = list(zip(bare[0::2], bare[1::2], strict=True))
    pairs_aio = list(zip(bare_aio[0::2], bare_aio[1::2], strict=True))
    return {
        "entries": expected,
        "bare": statistics.median(bare),
        "bare_aio": statistics.median(bare_aio),
        "client_aio_ratios": sorted(c / b for c, (b, _) in zip(client, pairs_aio, strict=True)),
        "client": statistics.median(client),
        "view": statistics.median(with_view),
        "client_ratios": sorted(c / b for c, (b, _) in zip(client, pairs, strict=True)),
        "view_ratios": sorted(v / b for v, (_, b) in zip(with_view, pairs, strict=True)),
        "messages": max(messages),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="jobs for the latency figures")
    parser.add_argument("--lines", type=int, default=15_000,
                        help="lines of the log job (the devnode replays up to 20,000 entries)")
    args = parser.parse_args()

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir, devnode_process(Path(workdir)) as (url, tmpl):
        net = ApiNetwork(url, Wallet.generate(), node_url_template=tmpl)
        try:
            rtt = http_round_trip(url)
            to_definition, to_results = reaction_times(net, args.jobs)
            rates = log_rates(net, args.lines)
        finally:
            runner.run_sync(net.aclose(), timeout=10)

    def latency_row(name: str, values: list[float]) -> str:
        median = statistics.median(values)
        return (f"{name:<42} {median * 1000:>8.1f} ms {max(values) * 1000:>8.1f} ms "
                f"{median / rtt:>9.1f} {CLI_POLL_S / median:>9.0f}x")

    def spread(ratios: list[float]) -> str:
        return f"{ratios[0]:.2f}-{ratios[-1]:.2f}"

    print(f"nosana_magic on the local network: devnode {url} (its own process, default "
          f"timings), {args.jobs} jobs")
    print(f"yardstick: one bare HTTP round trip to the devnode, median {rtt * 1000:.2f} ms")
    print()
    print(f"{'latency':<42} {'median':>11} {'max':>11} {'round trips':>11} "
          f"{'vs CLI 5 s':>10}")
    print(latency_row("host waiting for definition -> received", to_definition))
    print(latency_row("endTime -> results in hand", to_results))
    print()
    print(f"{'log stream, ' + format(rates['entries'], ',') + ' entries replayed':<42} "
          f"{'lines/s':>11} {'/ bare':>11} {'range':>11}")
    print(f"{'bare WebSocket reader (parse only)':<42} {rates['bare']:>11,.0f} {1:>11.2f}")
    print(f"{'bare reader on aiohttp (parse only)':<42} {rates['bare_aio']:>11,.0f} "
          f"{rates['bare_aio'] / rates['bare']:>11.2f}")
    print(f"{'client / the aiohttp bare reader':<42} {'':>11} "
          f"{rates['client'] / rates['bare_aio']:>11.2f} {spread(rates['client_aio_ratios']):>11}")
    print(f"{'client (ConfidentialJob.attach)':<42} {rates['client']:>11,.0f} "
          f"{rates['client'] / rates['bare']:>11.2f} {spread(rates['client_ratios']):>11}")
    print(f"{'client + widget JobView':<42} {rates['view']:>11,.0f} "
          f"{rates['view'] / rates['bare']:>11.2f} {spread(rates['view_ratios']):>11}")
    print(f"frontend messages from the view for those {rates['entries']:,} lines: "
          f"{rates['messages']} (coalesced to at most ~10 per second)")
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
