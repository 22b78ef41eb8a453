"""HostClient: SSE parsing, then every method over loopback (the retry policy: test_transport)."""

from __future__ import annotations

import asyncio
import json as _json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from nosana_magic.devnode import DevNode
from nosana_magic.host import HostClient, HostError, Retry, SseParser
from nosana_magic.network.api import ApiNetwork
from nosana_magic.results import NodeLogEntry, OutputEntry
from nosana_magic.wallet import Wallet

from .conftest import (
    definition,
    list_placeholder,
    network_for,
    op,
    running_node,
    serve_app,
)
from .waiting import PATIENCE, until

# --------------------------------------------------------------------------- SSE


def test_sse_parser_events_comments_and_multiline_data() -> None:
    parser = SseParser()
    lines = [
        ": keep-alive",
        "",
        'data: {"a":1}',
        "",
        "event: x",
        "id: 3",
        "data:first",
        "data: second",
        "",
        "retry: 100",
        "",
        "data",
        "",
    ]
    got = [d for d in (parser.feed(line) for line in lines) if d is not None]
    assert got == ['{"a":1}', "first\nsecond", ""]


def test_host_error_is_one_line_naming_host_and_route() -> None:
    err = HostError("http://h", "POST /job/J/job-definition", "refused (401 Unauthorized Request)")
    assert str(err) == (
        "host http://h: POST /job/J/job-definition: refused (401 Unauthorized Request)"
    )
    assert err._render_traceback_() == [f"HostError: {err}"]


# =========================================================================== loopback tests
# Against a real devnode on 127.0.0.1 (conftest's ``devnode`` fixture), or, where the devnode
# cannot show a behaviour (a host without the current routes, a lost answer, a different
# replay), a tiny starlette app on loopback.





FAST_RETRY = Retry(first=0.05, cap=0.2, attempts=1000, total=PATIENCE)


@pytest.fixture
async def network(devnode: DevNode) -> AsyncIterator[ApiNetwork]:
    net = network_for(devnode)
    yield net
    await net.aclose()


async def _host_for(
    devnode: DevNode, network: ApiNetwork, **kw: Any
) -> tuple[HostClient, str]:
    job = await list_placeholder(network, **kw)
    node = await running_node(network, job)
    return HostClient(devnode.node_url(node), job, network.wallet, retry=FAST_RETRY), job


def _body(document: dict[str, Any]) -> bytes:
    return _json.dumps(document).encode()


async def _all_logs(host: HostClient, last: str, timeout: float = PATIENCE
                    ) -> list[NodeLogEntry]:
    """Follow /log until an entry's text starts with ``last``."""
    got: list[NodeLogEntry] = []

    async def follow() -> None:
        async for entry in host.logs():
            got.append(entry)
            if entry.log.startswith(last):
                return

    await asyncio.wait_for(follow(), timeout)
    return got


def _flow_status(devnode: DevNode, job: str) -> str | None:
    record = devnode.host(devnode.job(job).node or "").record(job)
    return record.flow.status if record is not None and record.flow is not None else None


def _history(devnode: DevNode, node: str, job: str) -> list[NodeLogEntry]:
    return [
        NodeLogEntry.model_validate_json(_json.loads(frame)["data"])
        for frame in devnode.host(node).node_logs.history(job)
    ]


async def test_full_protocol_definition_info_logs_results(
    devnode: DevNode, network: ApiNetwork
) -> None:
    host, job = await _host_for(devnode, network)
    lines = "; ".join(f"echo line{i}" for i in range(10))
    body = _body(
        definition(op("train", f"{lines}; echo 'acc=0.93'; echo oops >&2",
                      results={"acc": "acc=([0-9.]+)"}))
    )
    # A Nosana host clears a job's /log history once the job is done: follow it from the start.
    following = asyncio.create_task(_all_logs(host, "Job result published"))
    await host.send_definition(body, timeout=PATIENCE)

    events = [event async for event in host.info(timeout=PATIENCE)]
    assert events[-1].end_time is not None
    assert all(e.end_time is None for e in events[:-1])
    # The host's results window opened before its stream said more (docs/protocol.md §6).
    assert events[-1].status == "waiting-for-result"

    node = devnode.job(job).node
    assert node is not None
    history = _history(devnode, node, job)
    flow = await host.results(timeout=PATIENCE)
    # The quirk of docs/protocol.md §10: the status served with the results is not the final one.
    assert flow.status == "waiting-for-result"
    [train] = flow.op_states
    # Each match as the host keeps it: the whole match, then the groups (docs/protocol.md §14).
    assert train.exit_code == 0 and train.results == {"acc": ["acc=0.93", "0.93"]}
    assert [e.log for e in train.logs if e.type == "stdout"][:2] == ["line0\n", "line1\n"]

    got = await following
    assert [(e.timestamp, e.log) for e in got][: len(history)] == [
        (e.timestamp, e.log) for e in history
    ][: len(got)]
    container = [e for e in got if e.type == "log"]
    assert [e.log for e in container][:3] == ["line0\n", "line1\n", "line2\n"]
    # The host does not name op or stream: each is a plain container line.
    assert all(type(e) is OutputEntry for e in container)
    await until(lambda: _history(devnode, node, job) == [])  # cleared once the job is done
    assert host.log_connections == 1
    await host.aclose()


async def test_every_request_carries_a_fresh_timestamped_header(
    devnode: DevNode, network: ApiNetwork
) -> None:
    host, job = await _host_for(devnode, network)
    first = host._headers()["Authorization"]
    await asyncio.sleep(0.01)
    second = host._headers()["Authorization"]
    assert first != second  # a new timestamp each time
    message, _sig, stamp = second.split(":")
    assert message == job and int(stamp) > int(first.split(":")[2])
    await host.aclose()


async def test_definition_retries_through_500s(devnode: DevNode, network: ApiNetwork) -> None:
    host, job = await _host_for(devnode, network)
    devnode.config.faults.fail_routes = "job-definition$"
    devnode.config.faults.fail_requests = 3
    await host.send_definition(_body(definition(op("a", "true"))), timeout=PATIENCE)
    assert devnode.config.faults.fail_requests == 0
    record = devnode.host(devnode.job(job).node or "").record(job)
    assert record is not None and record.definition_received
    await host.aclose()


async def test_definition_refused_at_once_on_other_4xx(
    devnode: DevNode, network: ApiNetwork
) -> None:
    host, job = await _host_for(devnode, network)
    await until(lambda: _flow_status(devnode, job) == "waiting-for-job-definition")
    # A retry would first pause 20 s: an answer well before that means no retry.
    patient = Retry(first=20, cap=20, attempts=100, total=3 * PATIENCE)
    stranger = HostClient(host.base_url, job, Wallet.generate(), retry=patient)
    start = time.monotonic()
    with pytest.raises(HostError) as info:
        await stranger.send_definition(_body(definition(op("a", "true"))), timeout=3 * PATIENCE)
    assert time.monotonic() - start < 15
    assert info.value.status == 401
    assert str(info.value).startswith(f"host {host.base_url}: POST /job/{job}/job-definition:")
    assert "Unauthorized Request" in str(info.value)
    # A second definition for the same job: the host is past that phase.
    await host.send_definition(_body(definition(op("a", "true"))), timeout=PATIENCE)
    with pytest.raises(HostError, match="cannot send job definition at this time"):
        await host.send_definition(_body(definition(op("a", "true"))), timeout=PATIENCE)
    await host.aclose()
    await stranger.aclose()


async def test_definition_gives_up_within_its_bound_when_no_host_takes_the_job(
    devnode: DevNode, network: ApiNetwork
) -> None:
    devnode.config.pickup_delay = None  # never picked up: the host has no flow for it
    job = await list_placeholder(network)
    some_host = devnode.hosts[0].address
    # Without the call's timeout the policy would go on for minutes: the bound is the call's.
    endless = Retry(first=0.05, cap=0.2, attempts=10**6, total=600)
    host = HostClient(devnode.node_url(some_host), job, network.wallet, retry=endless)
    start = time.monotonic()
    with pytest.raises(HostError) as info:
        await host.send_definition(_body(definition(op("a", "true"))), timeout=0.6)
    elapsed = time.monotonic() - start
    assert 0.6 <= elapsed < PATIENCE
    message = str(info.value)
    assert "gave up after" in message and "invalid job id" in message
    assert f"POST /job/{job}/job-definition" in message
    assert "\n" not in message
    await host.aclose()


async def test_results_polled_quickly_until_the_window_opens(
    devnode: DevNode, network: ApiNetwork
) -> None:
    host, _job = await _host_for(devnode, network)
    await host.send_definition(_body(definition(op("a", "sleep 0.4; echo done"))),
                               timeout=PATIENCE)
    flow = await host.results(timeout=PATIENCE)
    in_hand = time.time()
    assert flow.end_time is not None
    # The polls are at most 0.2 s apart (FAST_RETRY): a return to polling every few seconds
    # shows as seconds here. How fast exactly is for benchmarks/bench_local.py to measure.
    assert in_hand - flow.end_time / 1000 < 2.0
    assert flow.op_states[0].logs[-1].log == "done\n"
    await host.aclose()


async def test_results_give_up_with_a_clear_error(devnode: DevNode, network: ApiNetwork) -> None:
    devnode.config.faults.results_never_served = True
    host, job = await _host_for(devnode, network)
    await host.send_definition(_body(definition(op("a", "true"))), timeout=PATIENCE)
    with pytest.raises(HostError) as info:
        await host.results(timeout=0.5)
    assert f"GET /job/{job}/results" in str(info.value)
    assert "cannot get job result at this time" in str(info.value)
    await host.aclose()


async def test_results_bodies_are_json_whatever_the_content_type(
    devnode: DevNode, network: ApiNetwork
) -> None:
    host, job = await _host_for(devnode, network)
    await host.send_definition(_body(definition(op("a", "echo hi"))), timeout=PATIENCE)
    flow = await host.results(timeout=PATIENCE)
    # The devnode labels it text/html as Express does; we parsed it anyway.
    raw = httpx.get(
        f"{host.base_url}/job/{job}/results", headers=host._headers(), timeout=PATIENCE
    )
    assert raw.headers["content-type"].startswith("text/html")
    assert flow.op_states[0].operation_id == "a"
    await host.aclose()


async def test_stop_ends_a_running_job_and_results_stay_collectable(
    devnode: DevNode, network: ApiNetwork
) -> None:
    host, job = await _host_for(devnode, network)
    # Far longer than every bound below: only the stop can end it in time.
    await host.send_definition(_body(definition(op("a", "echo started; sleep 300"))),
                               timeout=PATIENCE)
    record = devnode.host(devnode.job(job).node or "").record(job)
    assert record is not None
    await until(lambda: record.flow is not None and record.flow.op_states
                and any(log.log == "started\n" for log in record.flow.op_states[0].logs))
    await host.stop()
    events = [event async for event in host.info(timeout=PATIENCE)]
    assert events[-1].end_time is not None
    flow = await host.results(timeout=PATIENCE)
    assert flow.op_states[0].logs[0].log == "started\n"
    await host.aclose()


async def test_info_reconnects_through_500s(devnode: DevNode, network: ApiNetwork) -> None:
    host, _job = await _host_for(devnode, network)
    await host.send_definition(_body(definition(op("a", "sleep 0.2"))), timeout=PATIENCE)
    devnode.config.faults.fail_routes = "/info$"
    devnode.config.faults.fail_requests = 2
    events = [event async for event in host.info(timeout=PATIENCE)]
    assert events[-1].end_time is not None
    assert devnode.config.faults.fail_requests == 0
    await host.aclose()


async def test_dropped_log_socket_reconnects_without_duplicate_or_lost_line(
    devnode: DevNode, network: ApiNetwork
) -> None:
    host, job = await _host_for(devnode, network)
    # The history is compared with the host's after the job: the devnode keeps it.
    devnode.config.keep_log_history = True
    faults = devnode.config.faults
    faults.drop_ws_after_frames = 7
    stop = asyncio.Event()

    async def drop_mid_stream() -> None:
        # Each new subscription replays the history first; drop it 7 frames past what the
        # client has seen, so every connection makes progress and is then cut mid-stream.
        seen = 0
        while not stop.is_set():
            if host.log_connections != seen:
                seen = host.log_connections
                faults.drop_ws_after_frames = host.log_cursor + 7 if seen < 6 else None
            await asyncio.sleep(0.002)

    dropper = asyncio.create_task(drop_mid_stream())
    script = "for i in $(seq 1 40); do echo line$i; sleep 0.005; done"
    await host.send_definition(_body(definition(op("a", script))), timeout=PATIENCE)
    following = asyncio.create_task(_all_logs(host, "Job result published"))
    await host.results(timeout=PATIENCE)  # the window closes, the result is published
    got = await following
    stop.set()
    await dropper
    node = devnode.job(job).node or ""
    history = _history(devnode, node, job)
    assert [(e.timestamp, e.log) for e in got] == [(e.timestamp, e.log) for e in history]
    assert [e.log for e in got if e.type == "log"] == [f"line{i}\n" for i in range(1, 41)]
    assert host.log_connections >= 4
    assert host.log_gaps == 0
    assert host.log_cursor == len(history)
    await host.aclose()


# --------------------------------------------------------------------------- tiny hosts


def _legacy_app(calls: list[str]) -> Starlette:
    """A host from before 2025-10: only the legacy routes (the current ones are 404)."""
    flow = {"status": "waiting-for-result", "startTime": 1, "endTime": 2, "opStates": []}

    async def record(request: Request) -> Response:
        calls.append(f"{request.method} {request.url.path}")
        if not request.headers.get("authorization") or not request.headers.get("x-session-id"):
            return PlainTextResponse("Unauthorized Request", status_code=401)
        path = request.url.path
        if path.startswith("/job-definition/"):
            return PlainTextResponse("Job definition received")
        if path.startswith("/job-result/"):
            return PlainTextResponse(_json.dumps(flow), media_type="text/html")
        return PlainTextResponse("job stopped successfully")

    async def missing(request: Request) -> Response:
        calls.append(f"{request.method} {request.url.path}")
        return Response(
            f"<pre>Cannot {request.method} {request.url.path}</pre>",
            status_code=404,
            media_type="text/html",
        )

    return Starlette(
        routes=[
            Route("/job-definition/{job}", record, methods=["POST"]),
            Route("/job-result/{job}", record, methods=["GET"]),
            Route("/service/stop/{job}", record, methods=["POST"]),
            Route("/{rest:path}", missing, methods=["GET", "POST"]),
        ]
    )


async def test_legacy_routes_are_used_after_a_404_and_remembered() -> None:
    calls: list[str] = []
    async with serve_app(_legacy_app(calls)) as url:
        host = HostClient(url, "JOB1", Wallet.generate(), retry=FAST_RETRY)
        await host.send_definition(b'{"ops": []}', timeout=PATIENCE)
        assert host.legacy is True
        assert calls == ["POST /job/JOB1/job-definition", "POST /job-definition/JOB1"]
        flow = await host.results(timeout=PATIENCE)
        assert flow.status == "waiting-for-result"
        await host.stop()
        # Once known, the legacy paths are used directly.
        assert calls[2:] == ["GET /job-result/JOB1", "POST /service/stop/JOB1"]
        await host.aclose()


async def test_a_404_on_both_paths_is_an_error_naming_the_route() -> None:
    async def missing(request: Request) -> Response:
        return PlainTextResponse("Cannot GET", status_code=404)

    app = Starlette(routes=[Route("/{rest:path}", missing, methods=["GET", "POST"])])
    async with serve_app(app) as url:
        host = HostClient(url, "JOB1", Wallet.generate(), retry=FAST_RETRY)
        with pytest.raises(HostError, match=r"POST /job/JOB1/job-definition: .*404"):
            await host.send_definition(b"{}", timeout=PATIENCE)
        assert host.legacy is None
        await host.aclose()


async def test_a_lost_answer_to_an_accepted_definition_counts_as_accepted() -> None:
    """The first POST reaches the host but its answer is lost (a 502 from a proxy); the
    retry is told 'cannot send job definition at this time': the stored definition says
    it was received."""
    state = {"stored": False, "posts": 0}

    async def post(request: Request) -> Response:
        state["posts"] += 1
        if not state["stored"]:
            state["stored"] = True
            return PlainTextResponse("Bad Gateway", status_code=502)
        return PlainTextResponse("cannot send job definition at this time", status_code=400)

    async def get(request: Request) -> Response:
        if state["stored"]:
            return PlainTextResponse('{"secret": "not shown"}')
        return PlainTextResponse("The job definition has not yet been set.", status_code=400)

    app = Starlette(routes=[
        Route("/job/{job}/job-definition", post, methods=["POST"]),
        Route("/job/{job}/job-definition", get, methods=["GET"]),
    ])
    async with serve_app(app) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY)
        await host.send_definition(b"{}", timeout=PATIENCE)
        assert state["posts"] == 2
        await host.aclose()


async def test_error_messages_are_redacted_and_never_hold_the_body() -> None:
    secret = "hf_supersecretvalue"

    async def post(request: Request) -> Response:
        body = (await request.body()).decode()
        return PlainTextResponse(f"bad definition: {body}", status_code=422)

    app = Starlette(routes=[Route("/job/{job}/job-definition", post, methods=["POST"])])
    async with serve_app(app) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY,
                          redact=lambda t: t.replace(secret, "[secret:HF]"))
        with pytest.raises(HostError) as info:
            await host.send_definition(_json.dumps({"token": secret}).encode(), timeout=PATIENCE)
        assert secret not in str(info.value) and "[secret:HF]" in str(info.value)
        await host.aclose()


async def test_a_long_error_message_is_redacted_before_it_is_shortened() -> None:
    # The message is cut to one short line: cut first, a secret at the cut would show half.
    from nosana_magic.secrets import Redactor

    secret = "hf_" + "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8"

    async def post(request: Request) -> Response:
        return PlainTextResponse("e" * 190 + " " + secret + " more", status_code=422)

    app = Starlette(routes=[Route("/job/{job}/job-definition", post, methods=["POST"])])
    async with serve_app(app) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY,
                          redact=Redactor({"HF": secret}).redact)
        with pytest.raises(HostError) as info:
            await host.send_definition(b"{}", timeout=PATIENCE)
        message = str(info.value)
        assert not any(secret[:k] in message for k in range(3, len(secret))), message
        await host.aclose()


def _ws_app(histories: list[list[str]], close_code: int | None = None,
            starts: list[int] | None = None) -> Starlette:
    """A /log server: connection *n* replays ``histories[n]`` (timestamps from
    ``starts[n]``, 1000 by default, one ms apart) then closes (1001 / a code)."""
    connections = {"n": 0}

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        first = _json.loads(await websocket.receive_text())
        assert first["path"] == "/log" and first["header"].count(":") == 2
        if close_code is not None:
            await websocket.close(code=close_code, reason="Unauthorized Request: expired")
            return
        n = min(connections["n"], len(histories) - 1)
        connections["n"] += 1
        start = starts[n] if starts is not None else 1000
        for i, text in enumerate(histories[n]):
            entry = {"log": text, "type": "log", "timestamp": start + i, "job": "J"}
            await websocket.send_text(_json.dumps({"path": "log", "data": _json.dumps(entry)}))
        await websocket.close(code=1001)

    return Starlette(routes=[WebSocketRoute("/", ws)])


async def _follow_until(host: HostClient, last: str) -> list[str]:
    got: list[str] = []

    async def follow() -> None:
        async for entry in host.logs():
            got.append(entry.log)
            if entry.log == last:
                return

    await asyncio.wait_for(follow(), PATIENCE)
    return got


async def test_log_replay_after_the_cap_is_aligned_by_time_not_count() -> None:
    # The host keeps the last N entries: the reconnect's replay starts at l3, not at l0.
    # Skipping 10 entries by count (as if the replay started at line one) loses l10..l12.
    lines = [f"l{i}" for i in range(15)]
    histories = [lines[:10], lines[3:], lines[3:]]
    async with serve_app(_ws_app(histories, starts=[1000, 1003, 1003])) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY)
        assert await _follow_until(host, "l14") == lines
        assert host.log_gaps == 0 and host.log_connections == 2
        await host.aclose()


async def test_log_replay_starting_after_the_last_line_seen_is_a_gap() -> None:
    # The reconnect's replay starts after the last entry seen (l2..l3 are gone): counted.
    histories = [["l0", "l1"], ["l4", "l5"], ["l4", "l5"]]
    async with serve_app(_ws_app(histories, starts=[1000, 1004, 1004])) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY)
        assert await _follow_until(host, "l5") == ["l0", "l1", "l4", "l5"]
        assert host.log_gaps == 1
        await host.aclose()


async def test_log_replay_of_a_different_history_loses_no_new_line() -> None:
    # The second connection replays a different history (the host restarted): what is older
    # than the last entry seen is taken for the replay, the rest is kept.
    histories = [["a", "b"], ["x", "y", "z"], ["x", "y", "z"]]
    async with serve_app(_ws_app(histories)) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY)
        assert await _follow_until(host, "z") == ["a", "b", "y", "z"]
        await host.aclose()


async def test_an_unreadable_log_entry_is_kept_as_raw_text() -> None:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        frames = [{"path": "log", "data": _json.dumps({"log": "ok", "type": "log",
                                                       "timestamp": 1000})},
                  {"path": "log", "data": '{"log": 5, "timestamp": 1001}'},
                  {"path": "log", "data": _json.dumps({
                      "log": "pulling", "type": "process", "timestamp": 1002,
                      "pending": {"isPending": True, "expecting": "pulled"}})},
                  {"path": "log", "data": _json.dumps({"log": "end", "type": "log",
                                                       "timestamp": 1003})}]
        for frame in frames:
            await websocket.send_text(_json.dumps(frame))
        await websocket.close(code=1001)

    async with serve_app(Starlette(routes=[WebSocketRoute("/", ws)])) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY)
        got = await _follow_until(host, "end")
        assert got == ["ok", '{"log": 5, "timestamp": 1001}', "pulling", "end"]
        assert host.unreadable_entries == 1
        await host.aclose()


async def test_log_socket_unauthorized_close_is_an_error_at_once() -> None:
    async with serve_app(_ws_app([[]], close_code=3000)) as url:
        # A reconnect would first pause 20 s: an error well before that means none was tried.
        patient = Retry(first=20, cap=20, attempts=100, total=3 * PATIENCE)
        host = HostClient(url, "J", Wallet.generate(), retry=patient)
        start = time.monotonic()
        with pytest.raises(HostError, match=r"WS /log: the host refused our signature \(3000"):
            async for _ in host.logs():
                pass
        assert time.monotonic() - start < 15
        await host.aclose()


async def test_log_reconnects_are_bounded() -> None:
    async with serve_app(_ws_app([[]])) as url:
        host = HostClient(url, "J", Wallet.generate(),
                          retry=Retry(first=0.01, cap=0.02, attempts=5, total=PATIENCE))
        with pytest.raises(HostError, match="gave up after 5 attempts to reconnect"):
            async for _ in host.logs():
                pass
        await host.aclose()


# ------------------------------------------------------------------- 401 (docs/protocol.md §3)


def _flaky_auth_app(messages: list[str], calls: list[str]) -> Starlette:
    """A host whose middleware answers ``messages`` (401 each) before letting requests by."""

    async def handle(request: Request) -> Response:
        calls.append(f"{request.method} {request.url.path}")
        if len(calls) <= len(messages):
            return PlainTextResponse(messages[len(calls) - 1], status_code=401)
        return PlainTextResponse("job stopped successfully")

    return Starlette(routes=[Route("/job/{job}/stop", handle, methods=["POST"])])


async def test_a_401_from_the_hosts_chain_lookup_is_retried() -> None:
    calls: list[str] = []
    rpc = "Unauthorized Request: failed to get info about account J: 429 Too Many Requests"
    async with serve_app(_flaky_auth_app([rpc, rpc], calls)) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY)
        await host.stop(timeout=PATIENCE)
        assert calls == ["POST /job/J/stop"] * 3
        await host.aclose()


@pytest.mark.parametrize("message", [
    "Unauthorized Request",  # the signature does not verify: the wrong wallet
    "Unauthorized Request: Authorization has expired.",
])
async def test_a_401_about_our_header_is_final_at_once(message: str) -> None:
    calls: list[str] = []
    async with serve_app(_flaky_auth_app([message] * 10, calls)) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY)
        with pytest.raises(HostError) as info:
            await host.stop(timeout=PATIENCE)
        assert info.value.status == 401 and not info.value.gave_up
        assert calls == ["POST /job/J/stop"]
        await host.aclose()


async def test_a_401_from_the_chain_lookup_gives_up_within_the_bound() -> None:
    calls: list[str] = []
    rpc = "Unauthorized Request: fetch failed"
    async with serve_app(_flaky_auth_app([rpc] * 1000, calls)) as url:
        host = HostClient(url, "J", Wallet.generate(),
                          retry=Retry(first=0.01, cap=0.02, attempts=4, total=PATIENCE))
        with pytest.raises(HostError, match="gave up after 4 attempts: 401 Unauthorized") as info:
            await host.stop(timeout=PATIENCE)
        assert info.value.gave_up and len(calls) == 4
        await host.aclose()


async def test_info_retries_a_401_from_the_chain_lookup() -> None:
    calls: list[str] = []
    event = {"status": "running", "startTime": 1, "endTime": 2, "opStates": []}

    async def info(request: Request) -> Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return PlainTextResponse("Unauthorized Request: fetch failed", status_code=401)
        return PlainTextResponse(f"data: {_json.dumps(event)}\n\n",
                                 media_type="text/event-stream")

    app = Starlette(routes=[Route("/job/{job}/info", info)])
    async with serve_app(app) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY)
        events = [e async for e in host.info(timeout=PATIENCE)]
        assert [e.end_time for e in events] == [2] and len(calls) == 2
        await host.aclose()


async def test_log_socket_3000_from_the_chain_lookup_is_retried() -> None:
    connections = {"n": 0}

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        connections["n"] += 1
        if connections["n"] == 1:
            await websocket.close(code=3000, reason="Unauthorized Request: fetch failed")
            return
        entry = {"log": "hello", "type": "log", "timestamp": 1000, "job": "J"}
        await websocket.send_text(_json.dumps({"path": "log", "data": _json.dumps(entry)}))
        await websocket.close(code=1001)

    async with serve_app(Starlette(routes=[WebSocketRoute("/", ws)])) as url:
        host = HostClient(url, "J", Wallet.generate(), retry=FAST_RETRY)

        async def first() -> str:
            async for entry in host.logs():
                return entry.log
            return ""

        assert await asyncio.wait_for(first(), PATIENCE) == "hello"
        assert connections["n"] == 2
        await host.aclose()
