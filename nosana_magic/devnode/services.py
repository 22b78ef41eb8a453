"""Exposed services of devnode jobs: service ids, health checks, and the HTTP proxy.

On Nosana an op's exposed port is reachable at ``https://{exposeId}.{frp-domain}`` through the
node's tunnel (docs/protocol.md §12). The devnode has one loopback
address, so the service lives under a path instead: ``{devnode}/service/{exposeId}/...`` is
proxied to ``http://127.0.0.1:{port}/...``.

* public ops get the deterministic id ``expose_id(job, op_index, port)``; ``private: true`` ops a
  random 45-character one (``createHash(randomBytes(45).hex, 45)``), which only the owner
  learns (``GET /job/{id}/endpoints``, ``/info``);
* status: ``UNKNOWN`` without health checks, ``OFFLINE`` with; ``ONLINE`` once every startup
  check of the port passed; continuous checks then flip it between ``OFFLINE`` and ``ONLINE``;
* WebSocket upgrades on a service URL are proxied too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets as _secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ..protocol import PRIVATE_EXPOSE_ID_LENGTH, create_hash, expose_id
from ..results import EndpointStatus, ServiceEndpoint

__all__ = ["ASGIApp", "ExposedPort", "ServiceRegistry", "private_expose_id"]

_log = logging.getLogger(__name__)

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Headers that belong to one connection and are not forwarded (RFC 9110 7.6.1), plus Host.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
# Headers httpx adds to every request unless the caller set them.
_CLIENT_DEFAULTS = ("accept", "accept-encoding", "connection", "user-agent")
# Headers the WebSocket client library sets itself on the upstream handshake.
_WS_OWN_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "content-length",
    }
)


def private_expose_id() -> str:
    """A fresh id for a private service: 45 characters, unguessable (``generateExposeId``)."""
    return create_hash(_secrets.token_hex(45), PRIVATE_EXPOSE_ID_LENGTH)


@dataclass(eq=False)
class ExposedPort:
    """One exposed port of a running op, and where the devnode serves it."""

    expose_id: str
    job: str
    op_id: str
    op_index: int
    port: int
    private: bool
    url: str
    health_checks: list[dict[str, Any]]
    status: EndpointStatus = "UNKNOWN"
    #: Set once every startup health check passed (the node's "startup success").
    started: asyncio.Event = field(default_factory=asyncio.Event)
    on_change: Callable[[], None] | None = None
    task: asyncio.Task[None] | None = None

    def endpoint(self) -> ServiceEndpoint:
        return ServiceEndpoint(op_id=self.op_id, port=self.port, url=self.url, status=self.status)


class ServiceRegistry:
    """The services of every job on one devnode: ids, health, and the ``/service`` proxy.

    ``base_url`` returns the devnode's base URL (known only once the server has bound).
    ``expose`` must be called from the event loop that serves the devnode.
    """

    def __init__(
        self,
        base_url: Callable[[], str],
        *,
        startup_interval: float = 0.25,
        check_interval: float = 1.5,
        check_timeout: float = 2.0,
        proxy_timeout: float = 30.0,
    ) -> None:
        self._base_url = base_url
        self.startup_interval = startup_interval
        self.check_interval = check_interval
        self.check_timeout = check_timeout
        self.proxy_timeout = proxy_timeout
        self._services: dict[str, ExposedPort] = {}
        self._client: httpx.AsyncClient | None = None

    # ------------------------------------------------------------------ registry

    def expose(
        self,
        *,
        job: str,
        op_id: str,
        op_index: int,
        port: int,
        private: bool,
        health_checks: list[dict[str, Any]],
        on_change: Callable[[], None] | None = None,
    ) -> ExposedPort:
        """Register an op's port; health checks (if any) start at once.

        ``on_change`` is called whenever the service's status changes.
        """
        service_id = private_expose_id() if private else expose_id(job, op_index, port)
        old = self._services.pop(service_id, None)
        if old is not None and old.task is not None:
            old.task.cancel()  # the same op exposed again (a restart): the new one wins
        base = self._base_url().rstrip("/")
        service = ExposedPort(
            expose_id=service_id,
            job=job,
            op_id=op_id,
            op_index=op_index,
            port=int(port),
            private=private,
            url=f"{base}/service/{service_id}",
            health_checks=list(health_checks),
            status="OFFLINE" if health_checks else "UNKNOWN",
            on_change=on_change,
        )
        self._services[service_id] = service
        if health_checks:
            service.task = asyncio.get_running_loop().create_task(
                self._health_loop(service), name=f"health {service_id}"
            )
        return service

    def get(self, service_id: str) -> ExposedPort | None:
        return self._services.get(service_id)

    def ready(self, job: str) -> ExposedPort | None:
        """The first of the job's services whose startup health checks all passed, if any."""
        return next((service for service in self._services.values()
                     if service.job == job and service.started.is_set()), None)

    def endpoints(self, job: str) -> dict[str, ServiceEndpoint]:
        """``expose_id -> ServiceEndpoint`` for ``GET /job/{id}/endpoints``."""
        return {
            service.expose_id: service.endpoint()
            for service in self._services.values()
            if service.job == job
        }

    def secrets(self, job: str) -> dict[str, Any]:
        """The node's ``flow.secrets`` for the job: ``{job: {id: {opID, port, url, status}},
        "urlmode": "private"|"public"}``, or ``{}`` when the job exposes nothing now."""
        services = [service for service in self._services.values() if service.job == job]
        if not services:
            return {}
        return {
            job: {
                service.expose_id: service.endpoint().model_dump(by_alias=True)
                for service in services
            },
            "urlmode": "private" if any(service.private for service in services) else "public",
        }

    async def close_op(self, job: str, op_id: str) -> None:
        """The op ended: its services go away."""
        await self._forget(s for s in self._services.values() if s.job == job and s.op_id == op_id)

    async def close_job(self, job: str) -> None:
        """Stop the job's health checks and forget its services."""
        await self._forget(s for s in self._services.values() if s.job == job)

    async def aclose(self) -> None:
        """Forget every service and close the HTTP client."""
        await self._forget(self._services.values())
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _forget(self, services: Any) -> None:
        doomed = list(services)
        for service in doomed:
            self._services.pop(service.expose_id, None)
        tasks = [service.task for service in doomed if service.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: an HTTP(S)_PROXY of this machine must never see loopback calls.
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        return self._client

    # ------------------------------------------------------------------ health checks

    def _set_status(self, service: ExposedPort, status: EndpointStatus) -> None:
        if service.status == status:
            return
        service.status = status
        if service.on_change is not None:
            try:
                service.on_change()
            except Exception:
                _log.exception("service on_change callback failed")

    async def _health_loop(self, service: ExposedPort) -> None:
        checks = service.health_checks
        while not await self._all_pass(service, checks):
            await asyncio.sleep(self.startup_interval)
        service.started.set()  # (first: the status change tells the host it is ready)
        self._set_status(service, "ONLINE")
        continuous = [check for check in checks if check.get("continuous")]
        if not continuous:
            return
        while True:
            await asyncio.sleep(self.check_interval)
            healthy = await self._all_pass(service, continuous)
            self._set_status(service, "ONLINE" if healthy else "OFFLINE")

    async def _all_pass(self, service: ExposedPort, checks: list[dict[str, Any]]) -> bool:
        for check in checks:
            try:
                ok = await asyncio.wait_for(
                    self._check(service.port, check), timeout=self.check_timeout
                )
            except (
                asyncio.TimeoutError,
                OSError,
                httpx.HTTPError,
                ConnectionClosed,
                InvalidHandshake,
            ):
                ok = False
            if not ok:
                return False
        return True

    async def _check(self, port: int, check: dict[str, Any]) -> bool:
        kind = check.get("type", "http")
        if kind == "http":
            path = str(check.get("path") or "/")
            response = await self._http().request(
                str(check.get("method") or "GET").upper(),
                f"http://127.0.0.1:{port}/{path.lstrip('/')}",
                headers={str(k): str(v) for k, v in (check.get("headers") or {}).items()},
                content=_body(check.get("body")),
                timeout=self.check_timeout,
            )
            await response.aclose()
            return bool(response.status_code == int(check.get("expected_status", 200)))
        if kind == "websocket":
            expected = check.get("expected_response")
            async with ws_connect(
                f"ws://127.0.0.1:{port}/", open_timeout=self.check_timeout, proxy=None
            ) as ws:
                if not expected:
                    return True
                message = await ws.recv()
                text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
                # A service answers with its greeting; containing the expected text is a pass.
                return str(expected) in text
        return False

    # ------------------------------------------------------------------ proxy

    def asgi_app(self) -> ASGIApp:
        """The ASGI app the devnode mounts at ``/service``: ``/{expose_id}/{path...}``."""
        return _App(self._asgi)

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # mounted apps see none; served alone, it has no state
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        service, rest = self._route(scope)
        if scope["type"] == "websocket":
            await self._proxy_ws(scope, receive, send, service, rest)
            return
        if service is None:
            response: Response = PlainTextResponse("service not found", status_code=404)
        else:
            response = await self._proxy_http(Request(scope, receive), service, rest)
        await response(scope, receive, send)

    def _route(self, scope: Scope) -> tuple[ExposedPort | None, str]:
        """The service and the rest of the path, still percent-encoded as the caller sent it
        (``raw_path``), so ``%2F``, ``%3F`` and ``%23`` reach the service unchanged."""
        raw: bytes | None = scope.get("raw_path")
        if raw is not None:
            path = raw.decode("latin-1").split("?", 1)[0]
        else:
            path = quote(scope.get("path", ""), safe="/:@!$&'()*+,;=~")
        root = quote(scope.get("root_path", ""), safe="/:@!$&'()*+,;=~")
        # Starlette's Mount keeps the full path and records the prefix in root_path.
        if root and path.startswith(root):
            path = path[len(root) :]
        if path.startswith("/service/"):  # not mounted: served from the server's root
            path = path[len("/service") :]
        service_id, _, rest = path.lstrip("/").partition("/")
        return self._services.get(unquote(service_id)), rest

    async def _proxy_http(self, request: Request, service: ExposedPort, rest: str) -> Response:
        query: bytes = request.scope.get("query_string", b"")
        url = httpx.URL(f"http://127.0.0.1:{service.port}/{rest}", query=query or None)
        headers = [
            (key, value) for key, value in request.headers.items() if key.lower() not in _HOP_BY_HOP
        ]
        client_host = request.client.host if request.client else "127.0.0.1"
        headers += [
            ("x-forwarded-for", client_host),
            ("x-forwarded-host", request.headers.get("host", "")),
            ("x-forwarded-proto", request.url.scheme),
        ]
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        upstream_request = self._http().build_request(
            request.method,
            url,
            headers=headers,
            content=request.stream() if has_body else None,
            timeout=httpx.Timeout(self.proxy_timeout, connect=5.0),
        )
        # httpx adds its own defaults (Accept-Encoding, User-Agent, ...); the service should
        # see the caller's request, e.g. no compressed body for a caller that did not ask.
        for name in _CLIENT_DEFAULTS:
            if name not in request.headers:
                upstream_request.headers.pop(name, None)
        try:
            upstream = await self._http().send(upstream_request, stream=True)
        except httpx.TimeoutException:
            return PlainTextResponse(
                f"service on port {service.port} did not answer in time", status_code=504
            )
        except httpx.HTTPError as exc:
            return PlainTextResponse(
                f"service unavailable: nothing answers on port {service.port} "
                f"({type(exc).__name__})",
                status_code=502,
            )
        response_headers = [
            (key, value)
            for key, value in upstream.headers.multi_items()
            if key.lower() not in _HOP_BY_HOP
        ]
        response = StreamingResponse(
            _raw_body(upstream),
            status_code=upstream.status_code,
            background=BackgroundTask(upstream.aclose),
        )
        # Raw (still encoded) bytes pass through, so the upstream's own headers stay true.
        response.raw_headers = [
            (key.encode("latin-1"), value.encode("latin-1")) for key, value in response_headers
        ]
        return response

    async def _proxy_ws(
        self, scope: Scope, receive: Receive, send: Send, service: ExposedPort | None, rest: str
    ) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        if service is None:
            await _deny(scope, send, 404, "service not found")
            return
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"ws://127.0.0.1:{service.port}/{rest}" + (f"?{query}" if query else "")
        subprotocols = list(scope.get("subprotocols") or [])
        headers = [
            (key.decode("latin-1"), value.decode("latin-1"))
            for key, value in scope.get("headers", [])
            if key.decode("latin-1").lower() not in _HOP_BY_HOP | _WS_OWN_HEADERS
        ]
        try:
            upstream = await ws_connect(
                target,
                additional_headers=headers,
                subprotocols=subprotocols or None,
                open_timeout=5.0,
                proxy=None,
                max_size=None,
            )
        except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
            detail = (
                f"answered {exc.response.status_code}"
                if isinstance(exc, InvalidStatus)
                else f"nothing answers ({type(exc).__name__})"
            )
            await _deny(scope, send, 502, f"service unavailable: port {service.port} {detail}")
            return
        accept: MutableMapping[str, Any] = {"type": "websocket.accept"}
        if upstream.subprotocol:
            accept["subprotocol"] = upstream.subprotocol
        await send(accept)

        async def client_to_upstream() -> None:
            while True:
                message: Message = await receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close()
                    return
                if message.get("text") is not None:
                    await upstream.send(message["text"])
                elif message.get("bytes") is not None:
                    await upstream.send(message["bytes"])

        async def upstream_to_client() -> None:
            try:
                async for data in upstream:
                    if isinstance(data, str):
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": data})
            except ConnectionClosed:
                pass
            code = upstream.close_code or 1000
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code})

        tasks = [
            asyncio.ensure_future(client_to_upstream()),
            asyncio.ensure_future(upstream_to_client()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.close()


async def _deny(scope: Scope, send: Send, status: int, text: str) -> None:
    """Refuse a WebSocket handshake with an HTTP answer where the server supports it (ASGI
    ``websocket.http.response``); otherwise a close before accepting (servers answer 403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = text.encode("utf-8")
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": text[:100]})


class _App:
    """An ASGI 3 app object (servers detect the interface from an ``async __call__``; a
    bound method would be taken for ASGI 2)."""

    def __init__(self, handler: ASGIApp) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


async def _raw_body(upstream: httpx.Response) -> Any:
    async for chunk in upstream.aiter_raw():
        yield chunk


def _body(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, str)):
        return value.encode("utf-8") if isinstance(value, str) else value
    return json.dumps(value).encode("utf-8")
