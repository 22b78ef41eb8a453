"""The hosts' streams: ``/job/{id}/info`` SSE and the WebSocket routes (docs/protocol.md §6, §7)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nosana_magic.devnode import DevNode
from nosana_magic.protocol import auth_header, now_ms
from nosana_magic.wallet import Wallet

from .conftest import Project, definition, op
from .waiting import PATIENCE


def ws_url(project: Project, job: str, path: str = "/") -> str:
    node = project.node.job(job).node
    return f"{project.node.url.replace('http', 'ws', 1)}/node/{node}{path}"


async def frames(ws: ClientConnection, count: int,
                 timeout: float = PATIENCE) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        out.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return out


async def close_code(ws: ClientConnection, timeout: float = PATIENCE) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), timeout)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


@contextlib.asynccontextmanager
async def info_stream(project: Project, job: str) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                                        httpx.Response]]:
    """An open ``/info`` stream (and its client, to make other calls beside it)."""
    async with httpx.AsyncClient(base_url=project.node.url, trust_env=False,
                                 timeout=PATIENCE) as client, client.stream(
        "GET", project.node_path(job, "/info"), headers=project.header()
    ) as response:
        yield client, response


async def sse_events(response: httpx.Response) -> AsyncIterator[str]:
    """Every non-empty line of the stream (``data: …`` events and ``: keep-alive``)."""
    async for line in response.aiter_lines():
        if line:
            yield line


# ---------------------------------------------------------------------- SSE /info


async def test_info_stream_sends_changes_and_closes_at_end_time(project: Project) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    events: list[dict[str, Any]] = []
    async with info_stream(project, job) as (client, response):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"  # (no charset)
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        async for line in sse_events(response):
            assert line.startswith("data: ")
            events.append(json.loads(line[6:]))
            if len(events) == 1:
                assert events[0]["status"] == "waiting-for-job-definition"
                posted = await client.post(
                    project.node_path(job, "/job-definition"), headers=project.header(),
                    json=definition(op("hello", "sleep 0.3; echo hello")))
                assert posted.status_code == 200
    # The stream ended by itself: the last event carries endTime, and (as the real host's
    # race usually goes) the status the host wrote when it opened the results window.
    assert events[-1]["endTime"] is not None
    assert events[-1]["status"] == "waiting-for-result"
    assert events[-1]["operations"] is None
    assert all(e["endTime"] is None for e in events[:-1])
    running = [e for e in events if e["status"] == "running"]
    assert running and running[-1]["operations"]["all"] == {"hello": "running"}
    for event in events:
        assert event["errors"] == []
        assert "secrets" in event
        for state in event["opStates"]:
            assert "logs" not in state and "providerId" not in state


async def test_info_last_event_in_the_other_order(project: Project) -> None:
    project.node.config.info_last_event = "final-status"
    job = project.submit(definition(op("hello", "sleep 0.3; echo hello")))
    events: list[dict[str, Any]] = []
    async with info_stream(project, job) as (_client, response):
        async for line in sse_events(response):
            events.append(json.loads(line[6:]))
    assert events[-1]["endTime"] is not None and events[-1]["status"] == "success"
    assert all(e["endTime"] is None for e in events[:-1])
    final_ops = events[-1]["operations"]
    assert final_ops is None or final_ops["all"] == {"hello": "finished"}


async def test_info_keep_alive_comments(project: Project) -> None:
    project.node.config.sse_keepalive = 0.2
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    lines: list[str] = []
    async with info_stream(project, job) as (_client, response):
        async for line in sse_events(response):
            lines.append(line)
            if len(lines) == 3:
                break
    assert lines[0].startswith("data: ")
    assert lines[1:] == [": keep-alive", ": keep-alive"]


async def test_info_stream_of_a_finished_job_is_one_event(project: Project) -> None:
    job = project.submit(definition(op("x", "true")))
    project.wait_flow(job, "waiting-for-result")
    async with httpx.AsyncClient(base_url=project.node.url, trust_env=False,
                                 timeout=PATIENCE) as client:
        response = await client.get(project.node_path(job, "/info"), headers=project.header())
    events = [line for line in response.text.split("\n\n") if line]
    assert len(events) == 1
    final = json.loads(events[0][6:])
    assert final["status"] == "waiting-for-result" and final["endTime"] is not None
    assert final["errors"] == [] and final["opStates"][0]["status"] == "success"


async def test_info_stream_ends_when_the_devnode_stops(project: Project) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    async with info_stream(project, job) as (_client, response):
        lines = sse_events(response)
        assert (await anext(lines)).startswith("data: ")
        project.node.stop()
        rest = [line async for line in lines]
    assert all(line.startswith(("data: ", ":")) for line in rest)


# ---------------------------------------------------------------------- WS /log


def log_message(project: Project, job: str, header: str | None = None) -> str:
    return json.dumps({
        "path": "/log",
        "header": header if header is not None else project.wallet.auth_header("nosana-auth"),
        "body": {"jobAddress": job, "address": project.wallet.address},
    })


async def test_log_replays_history_then_streams(project: Project) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    history = [json.loads(frame)["data"] for frame in
               project.node.host(project.node.job(job).node or "").node_logs.history(job)]
    async with connect(ws_url(project, job, "/log"), proxy=None) as ws:
        await ws.send(log_message(project, job))
        replay = await frames(ws, len(history))
        assert [f["path"] for f in replay] == ["log"] * len(history)
        assert [f["data"] for f in replay] == history
        first = json.loads(replay[0]["data"])
        assert {"log", "type", "timestamp", "job"} <= set(first) and first["job"] == job
        posted = project.send_definition(job, definition(op("hello", "echo hello-from-op")))
        assert posted.status_code == 200
        live: list[dict[str, Any]] = []
        while not any(e.get("type") == "log" for e in live):
            (frame,) = await frames(ws, 1)
            live.append(json.loads(frame["data"]))
    texts = [e["log"] for e in live]
    assert "Job definition received" in texts
    container = next(e for e in live if e["type"] == "log")
    assert container["log"] == "hello-from-op\n"
    assert container["method"] == "NodeRepository.displayLog"


async def test_log_accepts_the_cli_header_without_time_on_the_root_path(
    project: Project,
) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    header = auth_header(project.wallet.keypair, "Hello Nosana Node!", include_time=False)
    async with connect(ws_url(project, job, "/"), proxy=None) as ws:
        await ws.send(log_message(project, job, header))
        (frame,) = await frames(ws, 1)
    assert frame["path"] == "log"


NOBODY = "11111111111111111111111111111111"
UNAUTHORIZED = "Unauthorized Request"


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        ("this is not json", 1011, "Internal Server Error"),
        ("[" * 20_000, 1011, "Internal Server Error"),
        ("null", 1011, "Internal Server Error"),
        ('{"path": "/log", "header": NaN, "body": {"jobAddress": "JOB"}}', 1011,
         "Internal Server Error"),
        (json.dumps({"path": "/log", "header": "HEADER"}), 1011, "Internal Server Error"),
        (json.dumps({"path": "/nope", "body": {"jobAddress": "JOB"}}), 3003, "Invalid Path"),
        ("[1, 2]", 3003, "Invalid Path"),
        (json.dumps({"path": "/log", "header": "HEADER", "body": {}}), 1007,
         "Expected body to contain jobAddress."),
        (json.dumps({"path": "/log", "header": "HEADER", "body": "text"}), 1007,
         "Expected body to contain jobAddress."),
        (json.dumps({"path": "/log", "header": "HEADER", "body": {"jobAddress": NOBODY}}), 3000,
         f"{UNAUTHORIZED}: Account does not exist or has no data {NOBODY}"),
        (json.dumps({"path": "/log", "header": "HEADER", "body": {"jobAddress": "0OIl"}}), 3000,
         f"{UNAUTHORIZED}: Non-base58 character"),
        (json.dumps({"path": "/status", "header": "HEADER", "body": {"jobAddress": "abc"}}),
         3000, f"{UNAUTHORIZED}: Invalid public key input"),
        (json.dumps({"path": "/flog", "body": {"jobAddress": NOBODY}}), 3000,
         f"{UNAUTHORIZED}: Account does not exist or has no data {NOBODY}"),
        # A header the validator throws on: the reason says no more than this.
        (json.dumps({"path": "/log", "header": "garbage", "body": {"jobAddress": "JOB"}}), 3000,
         UNAUTHORIZED),
        (json.dumps({"path": "/log", "body": {"jobAddress": "JOB"}}), 3000, UNAUTHORIZED),
        (json.dumps({"path": "/log", "header": "EXPIRED", "body": {"jobAddress": "JOB"}}), 3000,
         UNAUTHORIZED),
        (json.dumps({"path": "/status", "header": "EXPIRED", "body": {"jobAddress": "JOB"}}),
         3000, UNAUTHORIZED),
        (json.dumps({"path": "/flog", "body": {"jobAddress": "JOB"}}), 1008,
         "Invalid job address"),
    ],
)
async def test_websocket_close_codes(project: Project, message: str, code: int,
                                     reason: str) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    expired = auth_header(project.wallet.keypair, "m", timestamp_ms=now_ms() - 301_000)
    message = (message.replace("JOB", job).replace("HEADER", project.wallet.auth_header("m"))
               .replace("EXPIRED", expired))
    async with connect(ws_url(project, job), proxy=None) as ws:
        await ws.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), PATIENCE)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, reason)


async def test_wrong_signature_is_silently_ignored(project: Project) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    stranger = Wallet.generate()
    async with connect(ws_url(project, job), proxy=None) as ws:
        await ws.send(log_message(project, job, stranger.auth_header("nosana-auth")))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.4)
        # Still open: the right header on the same socket subscribes.
        await ws.send(log_message(project, job))
        (frame,) = await frames(ws, 1)
        assert frame["path"] == "log"


# ---------------------------------------------------------------------- WS /flog and /status


async def test_flog_is_unauthenticated_and_filters(project: Project) -> None:
    job = project.submit(definition(
        op("one", "echo one-a; echo one-b; sleep 30", execution={"group": "g"}),
        op("two", "echo two-a; sleep 30", execution={"group": "g"}),
    ))
    record = project.wait_flow(job, "running")
    host = project.node.host(project.node.job(job).node or "")
    deadline = asyncio.get_running_loop().time() + PATIENCE
    while len([t for t in host.task_logs.history(job) if t["type"] == "container"]) < 3:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    async with connect(ws_url(project, job), proxy=None) as ws:
        await ws.send(json.dumps({"path": "/flog",
                                  "body": {"jobAddress": job, "opId": "one",
                                           "type": "container"}}))
        raw = await frames(ws, 2)
        assert {f["path"] for f in raw} == {"flog"}
        got = [json.loads(f["data"]) for f in raw]
    assert [g["message"] for g in got] == ["one-a\n", "one-b\n"]
    assert all(g["opId"] == "one" and g["group"] == "g" and g["type"] == "container"
               for g in got)
    stamps = [t["timestamp"] for t in host.task_logs.history(job)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert record.running
    project.post(job, "/stop")


async def test_status_stream_for_owner_and_node(project: Project) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    host = project.node.host(project.node.job(job).node or "")
    for signer in (project.wallet, host.wallet):
        async with connect(ws_url(project, job), proxy=None) as ws:
            await ws.send(json.dumps({"path": "/status", "header": signer.auth_header("x"),
                                      "body": {"jobAddress": job}}))
            got = await frames(ws, 3)
        assert {f["path"] for f in got} == {"state"}
        states = [json.loads(f["data"]) for f in got]
        assert [s["status"] for s in states] == [
            "claiming-job", "claiming-job-success", "awaiting-job-definition"]
        assert all({"status", "state", "timestamp", "index"} <= set(s) for s in states)
    async with connect(ws_url(project, job), proxy=None) as ws:
        await ws.send(json.dumps({"path": "/status",
                                  "header": Wallet.generate().auth_header("x"),
                                  "body": {"jobAddress": job}}))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)


async def test_unknown_host_refuses_the_upgrade(project: Project) -> None:
    url = project.node.url.replace("http", "ws", 1) + "/node/nobody/"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, proxy=None, open_timeout=PATIENCE):
            pass
    assert refused.value.response.status_code == 403


# ---------------------------------------------------------------------- history caps


def test_log_history_is_capped_in_entries_and_bytes() -> None:
    from nosana_magic.devnode.host import LogHub

    hub: LogHub[str] = LogHub(5, byte_cap=10, size=len)
    for item in ("aaaa", "bbbb", "cccc"):
        hub.publish("J", item)
    assert hub.history("J") == ["bbbb", "cccc"]
    hub.publish("J", "x" * 50)  # larger than the cap on its own: kept, as the newest
    assert hub.history("J") == ["x" * 50]
    hub.publish("J", "yy")
    assert hub.history("J") == ["yy"]
    for i in range(8):
        hub.publish("K", str(i))
    assert hub.history("K") == ["3", "4", "5", "6", "7"]


def test_a_host_caps_each_jobs_log_history_in_bytes() -> None:
    from nosana_magic.devnode import DevNodeConfig

    from .conftest import FAST

    assert DevNodeConfig().log_history_bytes == 64 * 1024 * 1024
    config = DevNodeConfig(**{**FAST, "log_history_bytes": 20_000,  # type: ignore[arg-type]
                              "keep_log_history": True})
    with DevNode(config) as node, Project(node) as project:
        job = project.submit(definition(op("a", "for i in $(seq 1 1000); do echo line-$i; done")))
        project.collect(job)
        info = node.wait_job(job, timeout=PATIENCE)
        host = node.host(info.node or "")
        history = host.node_logs.history(job)  # each entry as the frame it is sent in
        assert sum(len(frame.encode()) for frame in history) <= 20_000
        lines = [json.loads(json.loads(frame)["data"])["log"] for frame in history]
        assert "line-1000\n" in lines
        assert "line-1\n" not in lines
        tasks = host.task_logs.history(job)
        assert sum(len(entry["message"].encode()) + 100 for entry in tasks) <= 20_000


# ---------------------------------------------------------------------- as a Nosana host sends it


async def replay(project: Project, job: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` entries a new ``/log`` subscription gets."""
    async with connect(ws_url(project, job), proxy=None) as ws:
        await ws.send(log_message(project, job))
        return [json.loads(frame["data"]) for frame in await frames(ws, count)]


def host_of(project: Project, job: str) -> Any:
    return project.node.host(project.node.job(job).node or "")


async def test_log_entries_have_the_hosts_shape(project: Project) -> None:
    job = project.submit(definition(op("hello", "echo out; echo err >&2")))
    project.wait_flow(job, "waiting-for-result")
    entries = await replay(project, job, len(host_of(project, job).node_logs.history(job)))
    container = [e for e in entries if e["type"] == "log"]
    assert sorted(e["log"] for e in container) == ["err\n", "out\n"]
    # Container lines say neither the op nor the stream: no payload, as on a Nosana host.
    assert all(set(e) == {"method", "job", "log", "timestamp", "type"} for e in container)
    assert not any("payload" in e for e in entries)
    # Progress lines say what they wait for in an object; other lines have no "pending".
    process = [e for e in entries if e["type"] == "process"]
    assert {e["log"] for e in process} >= {"Resolving job definition", "Validating job definition",
                                          "Waiting for job definition"}
    for entry in process:
        assert entry["pending"]["isPending"] is True and "." in entry["pending"]["expecting"]
    assert not any("pending" in e for e in entries if e["type"] != "process")
    assert not any("\x1b[" in e["log"] for e in entries)


async def test_an_older_devnode_says_which_op_and_stream(project: Project) -> None:
    project.node.config.log_payload = True
    job = project.submit(definition(op("hello", "echo out; echo err >&2")))
    project.wait_flow(job, "waiting-for-result")
    entries = await replay(project, job, len(host_of(project, job).node_logs.history(job)))
    container = {e["log"]: e["payload"] for e in entries if e["type"] == "log"}
    assert container == {"out\n": {"opId": "hello", "stream": "stdout"},
                         "err\n": {"opId": "hello", "stream": "stderr"}}


async def test_node_lines_in_colour_when_asked(project: Project) -> None:
    project.node.config.node_log_colors = True
    job = project.submit(definition(op("hello", "echo plain")))
    project.wait_flow(job, "waiting-for-result")
    entries = await replay(project, job, len(host_of(project, job).node_logs.history(job)))
    assert [e["log"] for e in entries if e["type"] == "log"] == ["plain\n"]  # as printed
    own = [e["log"] for e in entries if e["type"] != "log" and e["log"]]
    assert own and all(text.startswith("\x1b[") and text.endswith("\x1b[39m") for text in own)
    assert any(f"\x1b[1m{job}\x1b[22m" in text for text in own)  # the job in bold


async def test_log_history_is_gone_once_the_job_is_done(project: Project) -> None:
    job = project.submit(definition(op("hello", "echo hello")))
    async with connect(ws_url(project, job), proxy=None) as early:
        await early.send(log_message(project, job))
        project.collect(job)
        project.node.wait_job(job, timeout=PATIENCE)
        # A subscriber from before the end got every line, and stays open.
        seen: list[dict[str, Any]] = []
        while not any("Job result published" in e["log"] for e in seen):
            seen.extend(json.loads(f["data"]) for f in await frames(early, 1))
        assert "hello\n" in [e["log"] for e in seen]
        async with connect(ws_url(project, job), proxy=None) as late:
            await late.send(log_message(project, job))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(late.recv(), 0.4)
    assert host_of(project, job).node_logs.history(job) == []


async def test_an_older_devnode_replays_a_finished_jobs_log(project: Project) -> None:
    project.node.config.keep_log_history = True
    job = project.submit(definition(op("hello", "echo hello")))
    project.collect(job)
    project.node.wait_job(job, timeout=PATIENCE)
    history = host_of(project, job).node_logs.history(job)
    entries = await replay(project, job, len(history))
    assert "hello\n" in [e["log"] for e in entries]


async def test_a_new_subscription_replays_from_the_oldest_entry_kept() -> None:
    """Past the cap the oldest entries are dropped, so a new connection's replay starts
    further on than the job's first line: where depends on how many were dropped."""
    from nosana_magic.devnode import DevNodeConfig

    from .conftest import FAST

    config = DevNodeConfig(**{**FAST, "log_history": 50})  # type: ignore[arg-type]
    async with DevNode(config) as node:
        with Project(node) as project:
            job = project.submit(definition(op("many", "for i in $(seq 1 200); do echo $i; done")))
            project.wait_flow(job, "waiting-for-result")
            kept = [json.loads(frame)["data"]
                    for frame in host_of(project, job).node_logs.history(job)]
            assert len(kept) == 50
            first = await replay(project, job, 50)
            again = await replay(project, job, 50)
    assert [compact(e) for e in first] == kept
    assert first == again
    numbers = [int(e["log"]) for e in first if e["type"] == "log"]
    assert numbers and numbers[0] > 1 and numbers == list(range(numbers[0], numbers[-1] + 1))


def compact(entry: dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)


async def test_drop_after_frames_closes_each_subscription_within_its_replay(
    project: Project,
) -> None:
    project.node.config.faults.drop_ws_after_frames = 5
    job = project.submit(definition(op("many", "for i in $(seq 1 20); do echo $i; done")))
    project.wait_flow(job, "waiting-for-result")
    got = []
    for _ in range(2):
        async with connect(ws_url(project, job), proxy=None) as ws:
            await ws.send(log_message(project, job))
            got.append(await frames(ws, 5))
            code = await close_code(ws)
        assert code == 1001
    # Each connection replays from the start again, so none gets past the fifth entry.
    assert got[0] == got[1]
    assert got[0] == [json.loads(frame)
                      for frame in host_of(project, job).node_logs.history(job)[:5]]


def test_a_chunk_of_output_is_sent_as_the_entries_one_line_at_a_time_would_be(
        project: Project) -> None:
    """The host builds a chunk's frames from one template: each must be exactly the frame
    the entry of that line alone makes (escapes, quotes, non-ASCII, control characters)."""
    from nosana_magic.devnode.executor import OUTPUT_METHOD
    from nosana_magic.results import NodeLogEntry

    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    host = host_of(project, job)
    record = host.record(job)
    lines = ['plain\n', 'with "quotes" and \\ back\\slash\n', 'tab\tand \x01 \x1b[31mred\n',
             'non-ASCII: é ü 😀 \u2028 sep\n', '<<line>> and {"json": [1, 2]}', '', '\n']
    stamp = now_ms()

    async def both() -> tuple[list[str], list[str]]:
        for line in lines:
            host.emit(record, NodeLogEntry(type="log", method=OUTPUT_METHOD, log=line,
                                           timestamp=stamp, job=job,
                                           payload={"opId": "a", "stream": "stdout"}))
        one_by_one = host.node_logs.history(job)[-len(lines):]
        await host.emit_output(record, "a", "stdout", lines, stamp)
        return one_by_one, host.node_logs.history(job)[-len(lines):]

    assert project.node._loop is not None
    one_by_one, batched = asyncio.run_coroutine_threadsafe(
        both(), project.node._loop).result(PATIENCE)
    assert batched == one_by_one
    assert [json.loads(json.loads(frame)["data"])["log"] for frame in batched] == lines


async def test_an_ops_output_waits_for_a_slow_subscriber_and_then_goes_on() -> None:
    from nosana_magic.devnode.host import LogHub

    hub: LogHub[str] = LogHub(100, subscriber_cap=10)
    _, sub = hub.subscribe("J")
    hub.publish_many("J", list("abcdef"))  # more than half the subscriber's cap waits
    waiting = asyncio.get_running_loop().create_task(hub.room("J", PATIENCE))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert await sub.next_batch(timeout=1) == list("abcdef")
    await asyncio.wait_for(waiting, PATIENCE)
    # A subscriber that reads nothing holds the output back no longer than the bound.
    hub.publish_many("J", list("ghijkl"))
    await asyncio.wait_for(hub.room("J", 0.1), PATIENCE)
    assert not sub.overflowed


async def test_a_slow_log_reader_gets_every_line_of_a_fast_op(project: Project) -> None:
    """The op is held back rather than the reader dropped (close 1013) and its lines lost."""
    for host in project.node.hosts:
        host.node_logs._subscriber_cap = 200
    job = project.post_placeholder()
    project.wait_running(job)
    async with connect(ws_url(project, job), proxy=None) as ws:
        await ws.send(log_message(project, job))
        project.send_definition(job, definition(op("fast", "seq 1 3000")))
        numbers: list[int] = []
        while len(numbers) < 3000:
            entry = json.loads((await frames(ws, 1))[0]["data"])
            if entry["type"] == "log":
                numbers.append(int(entry["log"]))
                if len(numbers) % 100 == 0:
                    await asyncio.sleep(0.02)  # a reader slower than the op
    assert numbers == list(range(1, 3001))
