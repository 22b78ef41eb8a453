"""Exposed services: ids, health checks, and the /service proxy, over real loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nosana_magic.devnode.executor import Executor
from nosana_magic.devnode.services import ServiceRegistry
from nosana_magic.protocol import expose_id
from nosana_magic.results import FlowState, NodeLogEntry

from .test_devnode_executor import job  # noqa: F401  (the fixture that checks for leaks)
from .waiting import PATIENCE

PY = sys.executable
BASE = "http://devnode.test"

#: A tiny HTTP service: ``argv[1]`` is the port; with ``argv[2]``, a path, it exits once a
#: file is there.
SERVER = r"""
import http.server, json, os, sys, threading, time
port = int(sys.argv[1])
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def reply(self, code, body, kind="text/plain"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Service", "tiny")
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, "ok")
        if self.path.startswith("/hello"):
            return self.reply(200, "hello from the service at " + self.path)
        self.reply(404, "no such page")
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        echo = {"path": self.path, "body": body, "x-test": self.headers.get("x-test"),
                "keep-alive": self.headers.get("keep-alive"),
                "accept-encoding": self.headers.get("accept-encoding")}
        self.reply(201, json.dumps(echo), "application/json")
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
def exit_when_told():
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.02)
    os._exit(0)
if len(sys.argv) > 2:
    threading.Thread(target=exit_when_told, daemon=True).start()
print("serving", flush=True)
server.serve_forever()
"""

HEALTH = {
    "type": "http",
    "path": "/health",
    "method": "GET",
    "expected_status": 200,
    "continuous": True,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def registry(**kw: Any) -> ServiceRegistry:
    kw.setdefault("startup_interval", 0.05)
    kw.setdefault("check_interval", 0.1)
    kw.setdefault("check_timeout", 5.0)  # a loaded machine may answer slowly
    return ServiceRegistry(lambda: BASE, **kw)


async def until(condition: Callable[[], bool], timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def tiny_server(port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        PY, "-c", SERVER, str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), PATIENCE) == b"serving\n"
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), PATIENCE)


@contextlib.asynccontextmanager
async def devnode_app(services: ServiceRegistry) -> AsyncIterator[httpx.AsyncClient]:
    """The registry's app mounted at /service, as the devnode mounts it, via ASGITransport."""
    app = Starlette(routes=[Mount("/service", app=services.asgi_app())])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


@contextlib.asynccontextmanager
async def uvicorn_server(app: Any) -> AsyncIterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, PATIENCE)


# ---------------------------------------------------------------- ids and endpoint records


async def test_public_and_private_ids():
    services = registry()
    try:
        public = services.expose(
            job="JobA", op_id="web", op_index=2, port=8000, private=False, health_checks=[]
        )
        assert public.expose_id == expose_id("JobA", 2, 8000)
        assert public.url == f"{BASE}/service/{public.expose_id}"
        assert public.status == "UNKNOWN"
        assert services.secrets("JobA")["urlmode"] == "public"

        first = services.expose(
            job="JobB", op_id="web", op_index=0, port=8000, private=True, health_checks=[]
        )
        second = services.expose(
            job="JobB", op_id="web", op_index=0, port=8000, private=True, health_checks=[]
        )
        assert len(first.expose_id) == len(second.expose_id) == 45
        assert first.expose_id != second.expose_id
        assert first.expose_id != expose_id("JobB", 0, 8000)

        endpoints = services.endpoints("JobB")
        assert set(endpoints) == {first.expose_id, second.expose_id}
        assert endpoints[first.expose_id].model_dump(by_alias=True) == {
            "opID": "web",
            "port": 8000,
            "url": first.url,
            "status": "UNKNOWN",
        }
        secrets = services.secrets("JobB")
        assert secrets["urlmode"] == "private"
        assert secrets["JobB"][first.expose_id]["opID"] == "web"
        assert services.endpoints("nobody") == {} and services.secrets("nobody") == {}

        await services.close_op("JobB", "web")
        assert services.endpoints("JobB") == {}
        assert set(services.endpoints("JobA")) == {public.expose_id}
        await services.close_job("JobA")
        assert services.endpoints("JobA") == {}
    finally:
        await services.aclose()


# ---------------------------------------------------------------- health checks


async def test_health_checks_drive_the_status():
    port = free_port()
    changes: list[str] = []
    services = registry()
    try:
        checked = services.expose(
            job="J", op_id="web", op_index=0, port=port, private=False, health_checks=[HEALTH]
        )
        checked.on_change = lambda: changes.append(checked.status)
        wrong = services.expose(
            job="J",
            op_id="web",
            op_index=0,
            port=port + 0,
            private=True,
            health_checks=[{**HEALTH, "expected_status": 204}],
        )
        unchecked = services.expose(
            job="J", op_id="web", op_index=1, port=port, private=False, health_checks=[]
        )
        await asyncio.sleep(0.3)
        assert (checked.status, wrong.status, unchecked.status) == ("OFFLINE", "OFFLINE", "UNKNOWN")
        assert not checked.started.is_set()

        async with tiny_server(port):
            await until(lambda: checked.status == "ONLINE")
            assert checked.started.is_set()
            await asyncio.sleep(0.3)
            assert wrong.status == "OFFLINE"  # 200 is not the expected 204
            assert unchecked.status == "UNKNOWN"
        # The service died: the continuous check notices.
        await until(lambda: checked.status == "OFFLINE")
        assert changes[:2] == ["ONLINE", "OFFLINE"]
        async with tiny_server(port):
            await until(lambda: checked.status == "ONLINE")
    finally:
        await services.aclose()


async def test_websocket_health_check_and_proxy():
    async def greet_then_echo(ws: ServerConnection) -> None:
        await ws.send("hello-ws")
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                await ws.send(f"{ws.request.path}:{message}")  # type: ignore[union-attr]

    services = registry()
    async with serve(greet_then_echo, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        try:
            good = services.expose(
                job="J",
                op_id="ws",
                op_index=0,
                port=port,
                private=False,
                health_checks=[
                    {"type": "websocket", "expected_response": "hello", "continuous": False}
                ],
            )
            bad = services.expose(
                job="J",
                op_id="ws",
                op_index=1,
                port=port,
                private=False,
                health_checks=[
                    {"type": "websocket", "expected_response": "other", "continuous": False}
                ],
            )
            await until(lambda: good.status == "ONLINE")
            assert bad.status == "OFFLINE"

            async with uvicorn_server(services.asgi_app()) as devnode_port:
                url = f"ws://127.0.0.1:{devnode_port}/service/{good.expose_id}/room?x=1"
                async with ws_connect(url, proxy=None) as ws:
                    assert await asyncio.wait_for(ws.recv(), PATIENCE) == "hello-ws"
                    await ws.send("ping")
                    assert await asyncio.wait_for(ws.recv(), PATIENCE) == "/room?x=1:ping"
                unknown = f"ws://127.0.0.1:{devnode_port}/service/{'x' * 44}/"
                with pytest.raises(InvalidStatus) as refused:
                    await ws_connect(unknown, proxy=None, open_timeout=PATIENCE)
                assert refused.value.response.status_code == 404
                assert refused.value.response.body == b"service not found"
                down = services.expose(
                    job="J",
                    op_id="ws",
                    op_index=2,
                    port=free_port(),
                    private=True,
                    health_checks=[],
                )
                with pytest.raises(InvalidStatus) as refused:
                    await ws_connect(
                        f"ws://127.0.0.1:{devnode_port}/service/{down.expose_id}/",
                        proxy=None,
                        open_timeout=PATIENCE,
                    )
                assert refused.value.response.status_code == 502
        finally:
            await services.aclose()


# ---------------------------------------------------------------- the HTTP proxy


async def test_proxy_forwards_requests_and_answers_404_and_502():
    port = free_port()
    services = registry()
    try:
        service = services.expose(
            job="J", op_id="web", op_index=0, port=port, private=True, health_checks=[]
        )
        async with devnode_app(services) as client:
            down = await client.get(f"/service/{service.expose_id}/hello")
            assert down.status_code == 502
            assert down.headers["content-type"].startswith("text/plain")
            assert f"port {port}" in down.text

            unknown = await client.get(f"/service/{'z' * 45}/hello")
            assert (unknown.status_code, unknown.text) == (404, "service not found")

            async with tiny_server(port):
                hello = await client.get(f"/service/{service.expose_id}/hello/there?a=1&b=two")
                assert hello.status_code == 200
                assert hello.text == "hello from the service at /hello/there?a=1&b=two"
                assert hello.headers["x-service"] == "tiny"
                # Percent-encoded /, ? and # reach the service as sent, not decoded.
                encoded = await client.get(f"/service/{service.expose_id}/hello/a%2Fb%3Fc%23d?x=1")
                assert encoded.text == "hello from the service at /hello/a%2Fb%3Fc%23d?x=1"

                posted = await client.post(
                    f"/service/{service.expose_id}/echo",
                    content=b"payload",
                    headers={
                        "x-test": "yes",
                        "keep-alive": "timeout=5",
                        "accept-encoding": "identity",
                    },
                )
                assert posted.status_code == 201
                assert posted.json() == {
                    "path": "/echo",
                    "body": "payload",
                    "x-test": "yes",
                    "keep-alive": None,  # hop-by-hop: not forwarded
                    "accept-encoding": "identity",  # the caller's own, not the proxy's default
                }

                missing = await client.get(f"/service/{service.expose_id}/nothing")
                assert (missing.status_code, missing.text) == (404, "no such page")

        # The proxy also answers when served from the root (not mounted).
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=services.asgi_app()), base_url=BASE
        ) as bare:
            assert (await bare.get(f"/service/{service.expose_id}/x")).status_code == 502
    finally:
        await services.aclose()


# ---------------------------------------------------------------- with the executor


def _executor(
    job_id: str, workdir: Path, definition: dict[str, Any], services: ServiceRegistry
) -> tuple[Executor, FlowState, list[NodeLogEntry]]:
    flow = FlowState(status="init")
    entries: list[NodeLogEntry] = []
    executor = Executor(
        definition=definition,
        job=job_id,
        workdir=workdir,
        flow=flow,
        emit=entries.append,
        changed=lambda: None,
        services=services,
        stop_grace=0.5,
    )
    return executor, flow, entries


async def test_an_op_service_is_reachable_through_its_url(tmp_path: Path, job: str):  # noqa: F811
    port = free_port()
    services = registry()
    definition = {
        "version": "0.1",
        "type": "container",
        "ops": [
            {"type": "container/create-volume", "id": "vol", "args": {"name": "v"}},
            {
                "type": "container/run",
                "id": "web",
                "args": {
                    "image": "python:3.11",
                    "cmd": [PY, "-c", SERVER, str(port)],
                    "expose": [{"port": port, "health_checks": [HEALTH]}, "%%ops.x.port%%"],
                },
            },
        ],
    }
    executor, flow, entries = _executor(job, tmp_path, definition, services)
    task = asyncio.create_task(executor.run())
    try:
        service_id = expose_id(job, 1, port)  # op index counts the create-volume op
        await until(
            lambda: (
                (services.get(service_id) is not None)
                and services.get(service_id).status == "ONLINE"
            )  # type: ignore[union-attr]
        )
        assert flow.secrets == {
            job: {
                service_id: {
                    "opID": "web",
                    "port": port,
                    "url": f"{BASE}/service/{service_id}",
                    "status": "ONLINE",
                }
            },
            "urlmode": "public",
        }
        async with devnode_app(services) as client:
            response = await client.get(f"/service/{service_id}/hello")
            assert response.text == "hello from the service at /hello"
        assert any("not served locally" in e.log for e in entries)
        await executor.stop("stopped")
        assert await asyncio.wait_for(task, PATIENCE) == "stopped"
        assert services.endpoints(job) == {} and flow.secrets == {}
    finally:
        if not task.done():
            await executor.stop("quit")
        await services.aclose()


async def test_dependents_start_beside_a_healthy_server(tmp_path: Path, job: str):  # noqa: F811
    port = free_port()
    services = registry()
    definition = {
        "version": "0.1",
        "type": "container",
        "ops": [
            {
                "type": "container/run",
                "id": "client",
                "args": {"image": "curl", "cmd": "echo client up; touch client.up; sleep 1000"},
                "execution": {
                    "group": "pair",
                    "depends_on": ["server"],
                    "stop_if_dependent_stops": True,
                },
            },
            {
                "type": "container/run",
                "id": "server",
                # The server lives until the client is up; the client, stopped with it, would
                # run forever.
                "args": {
                    "image": "python:3.11",
                    "cmd": [PY, "-c", SERVER, str(port), str(tmp_path / "client.up")],
                    "private": True,
                    "expose": [{"port": port, "health_checks": [HEALTH]}],
                },
                "execution": {"group": "pair"},
            },
        ],
    }
    executor, flow, _entries = _executor(job, tmp_path, definition, services)
    status = await asyncio.wait_for(executor.run(), PATIENCE)
    await services.aclose()
    assert status == "success"
    client, server = flow.op_states
    assert server.status == "success" and server.exit_code == 0
    assert client.start_time is not None and server.start_time is not None
    # (The client's start is recorded once its pipes are read, in the millisecond the server
    # may already end in: it started beside the server, not after it.)
    assert server.start_time <= client.start_time <= server.end_time  # type: ignore[operator]
    assert client.status == "stopped"
    assert client.diagnostics is not None
    assert client.diagnostics["reason"]["reason"] == "dependency 'server' ended success"
    assert "client up\n" in [log.log for log in client.logs]
    assert services.endpoints(job) == {}
