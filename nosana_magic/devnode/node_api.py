"""The node API of every emulated host, under ``/node/{address}`` (docs/protocol.md §3–§8).

A hand-rolled ASGI app rather than a starlette router, because what a client sees here is
Express's behaviour, quirks included: ``express.json()`` applied to every request (100 kB
limit → 413; a non-JSON content type leaves the body ``{}``), the owner-signature middleware
on ``/job/:jobId/*`` (it runs before the route is known, so an unknown sub-path still needs a
valid header), ``res.send(JSON.stringify(x))`` bodies labelled ``text/html``, Express's HTML
404 page, and a WebSocket server that accepts an upgrade on any path and routes by the
``path`` field of each JSON message.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..protocol import AuthError, b58decode, verify_auth_header
from .config import DevNodeConfig
from .host import EmulatedHost, JobRecord, Subscription, compact_json, flow_wire
from .ledger import Ledger, LedgerJob

__all__ = ["BODY_LIMIT", "NodeApi"]

#: body-parser's default ``limit: '100kb'``.
BODY_LIMIT = 100 * 1024

_HTML = "text/html; charset=utf-8"
_JSON = "application/json; charset=utf-8"
_CORS = {"Access-Control-Allow-Origin": "*", "X-Powered-By": "Express"}
_NODE_PATH = re.compile(r"^/node/(?P<address>[^/]+)(?P<rest>/.*)?$")
_JOB_PATH = re.compile(r"^/job/(?P<job>[^/]+)/.+$")
_UNAUTHORIZED = "Unauthorized Request"
_NOT_VERIFIED = "signature does not verify"


class _NotJson(ValueError):
    """A token Python's ``json`` accepts and JavaScript's ``JSON.parse`` does not."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def _reject_constant(name: str) -> Any:
    # NaN, Infinity, -Infinity: body-parser's JSON.parse throws a SyntaxError on them.
    raise _NotJson(name.lstrip("-")[:1])


def _text(status: int, body: str) -> Response:
    return Response(body, status_code=status, media_type=_HTML, headers=_CORS)


def _json(value: Any, status: int = 200) -> Response:
    return Response(compact_json(value), status_code=status, media_type=_JSON, headers=_CORS)


def _json_text(value: Any) -> Response:
    """``res.send(JSON.stringify(x))``: JSON labelled text/html, as the node sends it."""
    return _text(200, compact_json(value))


def _express_error(status: int, message: str) -> Response:
    """Express's default error page (the message inside ``<pre>``)."""
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Error</title>\n</head>\n<body>\n<pre>{html.escape(message)}</pre>\n"
        "</body>\n</html>\n"
    )
    return Response(page, status_code=status, media_type=_HTML, headers=_CORS)


def _account_error(job_id: object) -> str:
    """What the node's chain lookup throws for a job that is not on the ledger: web3.js's
    ``PublicKey`` refuses text that is not base58, or not 32 bytes of it, and an address
    with no account is "not found" (docs/protocol.md §3)."""
    if not isinstance(job_id, str):
        return "Invalid public key input"
    try:
        key = b58decode(job_id)
    except ValueError as exc:
        return str(exc)  # "Non-base58 character"
    if len(key) != 32:
        return "Invalid public key input"
    return f"Account does not exist or has no data {job_id}"


@dataclass
class _Call:
    """One node-API request, after body parsing and (for job routes) authentication."""

    request: Request
    host: EmulatedHost
    path: str
    body: Any
    params: dict[str, str]
    job: LedgerJob | None = None

    @property
    def record(self) -> JobRecord | None:
        return self.host.record(self.job.address) if self.job is not None else None


Handler = Callable[["NodeApi", _Call], Awaitable[Response]]

#: The devnode server's own ASGI message: several WebSocket text frames, ``texts``, written
#: at once (what ``websocket.send`` does for one; the server is ``app._WebSockets``).
SEND_TEXTS = "nosana_magic.websocket.send_texts"

#: Frames written to a socket in one go at most.
WRITE_FRAMES = 1_000


class NodeApi:
    """ASGI app for ``/node/{address}/...``: HTTP routes, SSE and the WebSocket server."""

    def __init__(
        self,
        *,
        hosts: dict[str, EmulatedHost],
        ledger: Ledger,
        config: DevNodeConfig,
        closing: Callable[[], asyncio.Event | None],
    ) -> None:
        self.hosts = hosts
        self.ledger = ledger
        self.config = config
        self._closing = closing
        self._routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        job = r"/job/(?P<job>[^/]+)"
        for method, pattern, handler in [
            ("GET", r"/", NodeApi._root),
            ("GET", r"/node/info", NodeApi._node_info),
            ("POST", job + r"/job-definition", NodeApi._post_definition),
            ("GET", job + r"/job-definition", NodeApi._get_definition),
            ("GET", job + r"/results", NodeApi._results),
            ("GET", job + r"/endpoints", NodeApi._endpoints),
            ("GET", job + r"/info", NodeApi._info),
            ("POST", job + r"/stop", NodeApi._stop),
            ("GET", job + r"/ops", NodeApi._ops),
            ("GET", job + r"/ops/(?P<op>[^/]+)", NodeApi._op),
            ("GET", job + r"/group/current", NodeApi._current_group),
            ("GET", job + r"/group/(?P<group>[^/]+)", NodeApi._group),
        ]:
            self._routes.append((method, re.compile(f"^{pattern}$"), handler, False))
        legacy = r"/(?P<job>[^/]+)"
        for method, pattern, handler in [
            ("POST", r"/job-definition" + legacy, NodeApi._post_definition),
            ("GET", r"/job-result" + legacy, NodeApi._results),
            ("GET", r"/service/url" + legacy, NodeApi._endpoints),
            ("POST", r"/service/stop" + legacy, NodeApi._stop),
        ]:
            self._routes.append((method, re.compile(f"^{pattern}$"), handler, True))

    # ------------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _NODE_PATH.match(scope.get("path", ""))
        host = self.hosts.get(unquote(match["address"])) if match else None
        if scope["type"] == "websocket":
            if host is None:
                await WebSocket(scope, receive, send).close(code=1008)
                return
            await self._websocket(WebSocket(scope, receive, send), host, send)
            return
        if scope["type"] != "http":
            return
        if host is None or match is None:
            response = _express_error(404, f"Cannot {scope.get('method', 'GET')} "
                                      f"{scope.get('path', '')} (no such host)")
        else:
            response = await self._http(Request(scope, receive), host, match["rest"] or "/")
        await response(scope, receive, send)

    async def _http(self, request: Request, host: EmulatedHost, rest: str) -> Response:
        faults = self.config.faults
        stall = faults.stall_for(rest)
        if stall > 0:
            await self._sleep(stall)
        if faults.take_failure(rest):
            return _text(500, "Internal Server Error")
        if request.method == "OPTIONS":
            # cors(): every origin, every method.
            return Response(status_code=204, headers={
                **_CORS,
                "Access-Control-Allow-Methods": "GET,HEAD,PUT,PATCH,POST,DELETE",
                "Access-Control-Allow-Headers": request.headers.get(
                    "access-control-request-headers", "*"),
            })
        body, error = await self._parse_body(request)
        if error is not None:
            return error
        path = rest.rstrip("/") or "/"
        call = _Call(request=request, host=host, path=path, body=body, params={})
        job_route = _JOB_PATH.match(rest)
        if job_route is not None:
            denied = self._authorize(call, unquote(job_route["job"]))
            if denied is not None:
                return denied
        method = "GET" if request.method == "HEAD" else request.method
        for route_method, pattern, handler, legacy in self._routes:
            if route_method != method or (legacy and not self.config.legacy_routes):
                continue
            found = pattern.match(path)
            if found is None:
                continue
            call.params = {k: unquote(v) for k, v in found.groupdict().items()}
            if legacy:
                denied = self._authorize(call, call.params["job"])
                if denied is not None:
                    return denied
            return await handler(self, call)
        return _express_error(404, f"Cannot {request.method} {rest}")

    async def _sleep(self, seconds: float) -> None:
        closing = self._closing()
        if closing is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(closing.wait(), seconds)

    # ------------------------------------------------------------------ express.json()

    async def _parse_body(self, request: Request) -> tuple[Any, Response | None]:
        headers = request.headers
        if "content-length" not in headers and "transfer-encoding" not in headers:
            return {}, None
        mime = headers.get("content-type", "").split(";")[0].strip().lower()
        if mime != "application/json":
            # body-parser leaves other types alone: req.body = req.body || {}.
            return {}, None
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > BODY_LIMIT:
            return None, _express_error(413, "PayloadTooLargeError: request entity too large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > BODY_LIMIT:
                return None, _express_error(413, "PayloadTooLargeError: request entity too large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw:
            return {}, None
        text = raw.decode("utf-8", "replace")
        stripped = text.lstrip(" \t\n\r")
        if not stripped.startswith(("{", "[")):
            # strict mode: only objects and arrays.
            token = stripped[:1] or "end of input"
            return None, _express_error(
                400, f"SyntaxError: Unexpected token '{token}', \"{text[:20]}\" is not valid JSON"
            )
        try:
            return json.loads(text, parse_constant=_reject_constant), None
        except _NotJson as exc:
            return None, _express_error(
                400,
                f"SyntaxError: Unexpected token '{exc.token}', \"{text[:20]}\" is not valid JSON",
            )
        except json.JSONDecodeError as exc:
            return None, _express_error(400, f"SyntaxError: {exc.msg} in JSON at position "
                                        f"{exc.pos}")
        except RecursionError:
            return None, _express_error(400, "SyntaxError: JSON nested too deeply")

    # -------------------------------------------------- auth (docs/protocol.md §3)

    def _authorize(self, call: _Call, job_id: str) -> Response | None:
        if not job_id:
            return _text(400, "Expected jobId parameter.")
        job = self.ledger.jobs.get(job_id)
        if job is None:
            return _text(401, f"{_UNAUTHORIZED}: {_account_error(job_id)}")
        header = call.request.headers.get("authorization")
        if header is None:
            return _text(401, f"{_UNAUTHORIZED}: Header not found with key authorization.")
        try:
            verify_auth_header(header, job.project, expiry_s=job.timeout)
        except AuthError as exc:
            if str(exc) == _NOT_VERIFIED:
                return _text(401, _UNAUTHORIZED)
            return _text(401, f"{_UNAUTHORIZED}: {exc}")
        call.job = job
        return None

    # -------------------------------------------------- routes (docs/protocol.md §5)

    async def _root(self, call: _Call) -> Response:
        return _json(call.host.address)

    async def _node_info(self, call: _Call) -> Response:
        host = call.host
        current = host.current
        return _json({
            "status": "RUNNING" if current is not None else "QUEUED",
            "state": current.phase if current is not None else "idle",
            "job": current.address if current is not None else None,
            "uptime": int(time.time() - host.started_at),
            "info": {
                "address": host.address,
                "market": host.market.address,
                "marketSlug": host.market.slug,
                "version": "devnode",
                "gpus": [],
            },
        })

    async def _post_definition(self, call: _Call) -> Response:
        body = call.body
        if body is None or body is False or body == "" or body == 0:
            return _text(400, "job definition parameters not provided")
        record = call.record
        if record is None or record.flow is None:
            return _text(400, "invalid job id")
        if record.flow.status != "waiting-for-job-definition" or record.phase != "waiting":
            return _text(400, "cannot send job definition at this time")
        call.host.definition_posted(record, body)
        return _text(200, "Job definition received")

    async def _get_definition(self, call: _Call) -> Response:
        record = call.record
        if record is None or record.flow is None:
            return _text(400, "invalid job id")
        if record.flow.status == "waiting-for-job-definition":
            return _text(400, "The job definition has not yet been set. "
                         "Please set the job definition and try again.")
        definition = record.definition if record.definition_received else record.placeholder
        return _json_text(definition)

    async def _results(self, call: _Call) -> Response:
        record = call.record
        if record is None or record.flow is None:
            return _text(400, "invalid job id")
        if record.flow.status != "waiting-for-result" or self.config.faults.results_never_served:
            return _text(400, "cannot get job result at this time")
        call.host.results_served(record)
        return _json_text(flow_wire(record.flow))

    async def _endpoints(self, call: _Call) -> Response:
        record = call.record
        secrets = record.flow.secrets if record is not None and record.flow is not None else None
        job = call.job.address if call.job is not None else ""
        if not secrets or not secrets.get(job):
            return _text(400, "No exposed url for job id")
        # ONLINE only once a startup health check passed (a service without health checks
        # stays OFFLINE at the top level, whatever its own status says).
        ready = (
            record is not None
            and call.host.current is record
            and record.running
            and record.service_url_ready
        )
        return _json({"urls": secrets[job], "status": "ONLINE" if ready else "OFFLINE"})

    async def _stop(self, call: _Call) -> Response:
        record = call.record
        if record is not None and record.phase in ("claiming", "waiting", "validating", "running"):
            call.host.stop_now(record)
        return _text(200, "job stopped successfully")

    def _running_record(self, call: _Call) -> JobRecord | None:
        record = call.record
        return record if record is not None and record.running else None

    async def _ops(self, call: _Call) -> Response:
        record = self._running_record(call)
        if record is None:
            return _text(400, "invalid job id")
        return _json(record.op_progress())

    async def _op(self, call: _Call) -> Response:
        record = self._running_record(call)
        if record is None:
            return _text(400, "invalid job id")
        progress = record.op_progress()
        op = call.params["op"]
        if op not in progress:
            return _text(404, "operation not found")
        return _json({op: progress[op]})

    async def _current_group(self, call: _Call) -> Response:
        record = self._running_record(call)
        if record is None:
            return _text(400, "invalid job id")
        current = record.current_group()
        if current is None:
            return _text(404, "group not found")
        return _json(record.groups()[current])

    async def _group(self, call: _Call) -> Response:
        record = self._running_record(call)
        if record is None:
            return _text(400, "invalid job id")
        group = record.groups().get(call.params["group"])
        if group is None:
            return _text(404, "group not found")
        return _json(group)

    # -------------------------------------------------- SSE (docs/protocol.md §6)

    async def _info(self, call: _Call) -> Response:
        record = call.record
        if record is None or record.flow is None:
            return _text(404, "Failed to find job for provided job id.")
        return StreamingResponse(
            self._info_events(record),
            headers={
                **_CORS,
                # As the node writes it: no charset (starlette would add one to media_type).
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                "X-Accel-Buffering": "no",
            },
        )

    async def _info_events(self, record: JobRecord) -> AsyncIterator[str]:
        """First event at once, then on change (at most one per ``sse_interval``), keep-alive
        comments while idle, and the end of the stream once ``endTime`` is set."""
        last: str | None = None
        keepalive_at = time.monotonic() + self.config.sse_keepalive
        while True:
            changed = record.change_event()
            ended = record.info_ended
            payload = record.info_event()
            if payload is not None and payload != last:
                last = payload
                yield f"data: {payload}\n\n"
                keepalive_at = time.monotonic() + self.config.sse_keepalive
            closing = self._closing()
            if (ended and payload is not None) or (closing is not None and closing.is_set()):
                return
            wait = max(0.0, keepalive_at - time.monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)
            if time.monotonic() >= keepalive_at:
                yield ": keep-alive\n\n"
                keepalive_at = time.monotonic() + self.config.sse_keepalive
            # Coalesce bursts of changes, as the node's 1-s poll does.
            await asyncio.sleep(self.config.sse_interval)

    # -------------------------------------------------- WebSocket (docs/protocol.md §7)

    async def _websocket(self, ws: WebSocket, host: EmulatedHost, send: Send) -> None:
        await ws.accept()
        conn = _WsConnection(ws, host, self, send)
        try:
            await conn.serve()
        finally:
            await conn.close(1001, "going away")


class _WsConnection:
    """One WebSocket: its messages, its subscriptions, and the frames it was sent."""

    def __init__(self, ws: WebSocket, host: EmulatedHost, api: NodeApi, send: Send) -> None:
        self.ws = ws
        self._asgi_send = send
        self.host = host
        self.api = api
        self.ledger = api.ledger
        self.config = api.config
        self._send_lock = asyncio.Lock()
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def serve(self) -> None:
        reader = asyncio.get_running_loop().create_task(self._read())
        waiters = {reader, asyncio.get_running_loop().create_task(self._done.wait())}
        closing = self.api._closing()
        if closing is not None:
            waiters.add(asyncio.get_running_loop().create_task(closing.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*waiters, *self._tasks]:
                task.cancel()
            await asyncio.gather(*waiters, *self._tasks, return_exceptions=True)

    async def close(self, code: int, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self._done.set()
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, reason=reason)

    async def _read(self) -> None:
        first = True
        while not self._closed:
            try:
                if first:
                    message = await asyncio.wait_for(
                        self.ws.receive_text(), self.config.ws_first_message_timeout)
                else:
                    message = await self.ws.receive_text()
            except asyncio.TimeoutError:
                await self.close(1008, "no message")
                return
            except (WebSocketDisconnect, RuntimeError, KeyError):
                # KeyError: a binary frame (no "text" key); RuntimeError: already closed.
                self._done.set()
                return
            first = False
            await self._dispatch(message)

    async def _dispatch(self, message: str) -> None:
        """Route one message as the node's WebSocket server does (docs/protocol.md §7).

        Its order of checks decides the close codes: a message that is not JSON, or a
        missing ``body``, is an internal error (1011); an unknown path 3003; no
        ``jobAddress`` 1007; a job the chain lookup cannot find 3000 with the lookup's
        error; a header the validator throws on (missing, malformed, expired) 3000 with no
        detail; a well-formed header with the wrong signature is ignored, without a close.
        """
        try:
            data = json.loads(message, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            data = None
        if data is None:
            await self.close(1011, "Internal Server Error")
            return
        fields = data if isinstance(data, dict) else {}
        path, body, header = fields.get("path"), fields.get("body"), fields.get("header")
        if path not in ("/log", "/flog", "/status"):
            await self.close(3003, "Invalid Path")
            return
        if body is None:
            await self.close(1011, "Internal Server Error")  # (reading body.jobAddress throws)
            return
        job_address = body.get("jobAddress") if isinstance(body, dict) else None
        if not job_address:
            await self.close(1007, "Expected body to contain jobAddress.")
            return
        job = self.ledger.jobs.get(job_address) if isinstance(job_address, str) else None
        if job is None:
            await self.close(3000, f"{_UNAUTHORIZED}: {_account_error(job_address)}"[:123])
            return
        assert isinstance(body, dict)
        if path == "/flog":
            record = self.host.record(job.address)
            if record is None or not record.running:
                await self.close(1008, "Invalid job address")
                return
            self._spawn(self._stream_flog(job.address, body))
            return
        keys = [job.project] if path == "/log" else [job.project, self.host.address]
        verdict = self._verify(header, keys)
        if verdict == "invalid":
            return  # a well-formed wrong signature: no close, no subscription
        if verdict != "ok":
            await self.close(3000, _UNAUTHORIZED)
            return
        if path == "/log":
            self._spawn(self._stream(self.host.node_logs, job.address, _same,
                                     drop_after=self.config.faults.drop_ws_after_frames))
        else:
            self._spawn(self._stream(self.host.node_states, job.address, _state_frame))

    def _verify(self, header: Any, keys: list[str]) -> str:
        """``"ok"``, ``"invalid"`` (well formed, wrong signature) or why the validator threw."""
        if not isinstance(header, str):
            return "no header"
        error = "invalid"
        for key in keys:
            try:
                verify_auth_header(header, key, expiry_s=self.config.ws_auth_expiry)
            except AuthError as exc:
                if str(exc) != _NOT_VERIFIED:
                    return str(exc)  # it threw: the next key is never tried
                continue
            return "ok"
        return error

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, frame: dict[str, Any]) -> None:
        await self._send_texts([compact_json(frame)])

    async def _send_texts(self, texts: list[str]) -> None:
        """Frames in order, one message each (a host sends one entry per message), written
        to the socket up to ``WRITE_FRAMES`` at a time (the devnode's server takes them in
        one ASGI message of its own, :data:`SEND_TEXTS`)."""
        async with self._send_lock:
            try:
                for start in range(0, len(texts), WRITE_FRAMES):
                    if self._closed:
                        return
                    await self._asgi_send(
                        {"type": SEND_TEXTS, "texts": texts[start : start + WRITE_FRAMES]})
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._done.set()

    async def _stream(
        self, hub: Any, job: str, frame: Callable[[Any], str], *,
        drop_after: int | None = None,
    ) -> None:
        """The job's history on ``hub``, then what comes next, each item as ``frame`` makes
        it; ``drop_after`` frames at most (a fault)."""
        history, sub = hub.subscribe(job)
        sent = 0
        try:
            pending = list(history)
            while not self._closed:
                if drop_after is not None and sent + len(pending) > drop_after:
                    await self._send_texts([frame(item) for item in pending[: drop_after - sent]])
                    await self.close(1001, "connection dropped (devnode fault)")
                    return
                await self._send_texts([frame(item) for item in pending])
                sent += len(pending)
                if sub.overflowed:
                    await self.close(1013, "too far behind")
                    return
                pending = await sub.next_batch(timeout=1.0)
        finally:
            hub.unsubscribe(job, sub)

    async def _stream_flog(self, job: str, body: dict[str, Any]) -> None:
        wanted = {k: body[k] for k in ("group", "opId", "type") if isinstance(body.get(k), str)}
        history, sub = self.host.task_logs.subscribe(job)
        try:
            pending = list(history)
            while not self._closed:
                await self._send_texts([
                    compact_json({"path": "flog", "data": compact_json(item)})
                    for item in pending if all(item.get(k) == v for k, v in wanted.items())])
                if sub.overflowed:
                    await self.close(1013, "too far behind")
                    return
                pending = await _next(sub)
        finally:
            self.host.task_logs.unsubscribe(job, sub)


def _same(frame: str) -> str:
    return frame


def _state_frame(state: dict[str, Any]) -> str:
    return compact_json({"path": "state", "data": compact_json(state)})


async def _next(sub: Subscription[dict[str, Any]]) -> list[dict[str, Any]]:
    return await sub.next_batch(timeout=1.0)
