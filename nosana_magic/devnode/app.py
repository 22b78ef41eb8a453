"""The devnode: one loopback ASGI server holding the ledger, IPFS and the emulated hosts.

``DevNode.start()`` serves on 127.0.0.1 from a background thread with its own event loop (so a
notebook's or a test's loop is never blocked or shared); ``stop()`` kills every job process,
closes every socket and joins that thread.

Beside the Nosana routes it serves its own under ``/_devnode/``: ``GET status`` (pid, jobs,
requests in flight, idleness, the event loop's lag) and, with a token, ``POST stop`` (sets
:attr:`DevNode.stop_requested`, which whoever runs the devnode acts on) and ``POST credits``
(``{"api_key": …}``: serve a user's own key with :attr:`DevNodeConfig.credits_usd`, as the
local network service does for a key its clients configured). With
``DevNodeConfig.token`` set, every route but the node API and the services asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from ..protocol import JobState
from .config import DevNodeConfig
from .credits import API_KEY_PREFIX
from .host import EmulatedHost
from .ipfs import IpfsStore, ipfs_routes
from .ledger import CLIENT_MANAGER_PREFIX, Ledger, LedgerJob, ledger_routes
from .monitor import Activity, LoopLag
from .node_api import SEND_TEXTS, NodeApi
from .reaper import Reaper
from .runtime import TOKEN_HEADER
from .services import ServiceRegistry

__all__ = ["DevNode"]

_T = TypeVar("_T")


class DevNode:
    """An embedded local Nosana network on 127.0.0.1 (ledger + IPFS + emulated hosts).

    Use it as a context manager (sync or async), or call :meth:`start` / :meth:`stop`.
    The hosts run the ops of the jobs they take **as local processes on this machine**.
    """

    def __init__(self, config: DevNodeConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else DevNodeConfig()
        self.config: DevNodeConfig = dataclasses.replace(base, **overrides) if overrides else base
        if not self.config.markets:
            raise ValueError("a devnode needs at least one market")
        self.ipfs = IpfsStore()
        self.ledger = Ledger(
            self.config.markets,
            pickup_delay=lambda: self.config.pickup_delay,
            ipfs=self.ipfs,
            signing_answer=lambda: self.config.signing_answer,
        )
        # Kept out of every repr: an API key is a credential (of the local network only).
        self._api_key = self.ledger.credits.issue(
            usd=self.config.credits_usd, key=self.config.api_key
        )
        self.url = ""
        self.node_url_template = ""
        self.services = ServiceRegistry(lambda: self.url)
        self._workdir: Path | None = None
        self._own_workdir = False
        self.hosts: list[EmulatedHost] = []
        #: Kills what the jobs run should this process be killed (started with the first job).
        self.reaper = Reaper()
        markets = list(self.ledger.markets.values())
        per_market = self.config.hosts_per_market
        count = per_market * len(markets) if per_market is not None else self.config.hosts
        for index in range(count):
            market = markets[index // per_market if per_market else index % len(markets)]
            host = EmulatedHost(
                market=market,
                ledger=self.ledger,
                ipfs=self.ipfs,
                services=self.services,
                config=self.config,
                workdir=self._job_root,
                reaper=self.reaper,
            )
            self.hosts.append(host)
            self.ledger.hosts[host.address] = host
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._closing: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped = False
        self.activity = Activity()
        self.loop_lag = LoopLag()
        #: Set by ``POST /_devnode/stop`` or after ``idle_timeout``; whoever runs the devnode
        #: (the local network service) then stops it.
        self.stop_requested = threading.Event()
        self.started = time.time()

    # ------------------------------------------------------------------ public API

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    @property
    def api_key(self) -> str:
        """The API key the devnode made at start (``nos_…``): ``Bearer`` on the credit
        routes, with :attr:`DevNodeConfig.credits_usd` of credits."""
        return self._api_key

    @property
    def client_manager_url(self) -> str:
        """The base URL of the signing service (``…/auth/sign-message/external``)."""
        return f"{self.url}{CLIENT_MANAGER_PREFIX}" if self.url else ""

    def issue_api_key(self, usd: float = 10.0, *, expires_in: float | None = None) -> str:
        """Another API key with ``usd`` of credits (and its own project key)."""
        return self.ledger.credits.issue(usd=usd, expires_in=expires_in)

    def node_url(self, node: str) -> str:
        return self.node_url_template.format(node=quote(node, safe=""))  # one path segment

    def host(self, address: str) -> EmulatedHost:
        for host in self.hosts:
            if host.address == address:
                return host
        raise KeyError(address)

    @property
    def workdir(self) -> Path | None:
        return self._workdir

    @property
    def serving(self) -> bool:
        """Started, not stopped, and its server thread still runs."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopped

    def start(self, timeout: float = 15.0) -> DevNode:
        """Serve in a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("a DevNode can be started once")
        if self.config.workdir is not None:
            self._workdir = Path(self.config.workdir)
            self._workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="nosana-devnode-"))
            self._own_workdir = True
        # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only
        # for such sockets, and without it every two-part response waits for a delayed ACK
        # (~40 ms a request on loopback).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Loopback only: the hosts run job commands on this machine.
            sock.bind(("127.0.0.1", self.config.port))
        except OSError:
            sock.close()
            self._cleanup_workdir()
            raise
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.node_url_template = f"{self.url}/node/{{node}}"
        self._thread = threading.Thread(
            target=self._thread_main, args=(sock,), name="nosana-devnode", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"the devnode did not start within {timeout} s")
        if self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"the devnode failed to start: {error}") from error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Kill every job process, close every socket, join the thread. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None and thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError("the devnode thread did not stop")
        # Last: it kills whatever a job that did not stop in time left running.
        self.reaper.close()
        self._cleanup_workdir()

    def job(self, address: str) -> LedgerJob:
        return self.ledger.job(address)

    def wait_job(self, address: str, *states: JobState | str, timeout: float) -> LedgerJob:
        """Block until the job is in one of ``states`` (default: done); ``TimeoutError``."""
        wanted = {JobState(s) for s in states} or {JobState.COMPLETED, JobState.STOPPED}
        deadline = time.monotonic() + timeout
        while True:
            job = self.ledger.jobs.get(address)
            if job is not None and job.state in wanted:
                return job
            if time.monotonic() >= deadline:
                state = job.state.value if job is not None else "unknown"
                raise TimeoutError(f"job {address} is {state} after {timeout} s")
            time.sleep(0.02)

    def call(self, fn: Callable[[], _T], timeout: float = 10.0) -> _T:
        """Run ``fn`` on the devnode's event loop and return its result (thread-safe).

        The ledger and the hosts live on that loop; code on other threads that must change
        them (e.g. a bridge mirroring jobs listed on another ledger) goes through here.
        """
        loop = self._loop
        if loop is None or self._stopped or not loop.is_running():
            raise RuntimeError("the devnode is not running")

        async def run() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)

    def __enter__(self) -> DevNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> DevNode:
        return await _in_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await _in_thread(self.stop)

    def __repr__(self) -> str:
        return f"DevNode({self.url or 'not started'}, hosts={len(self.hosts)})"

    # ------------------------------------------------------------------ the server thread

    def _job_root(self) -> Path:
        assert self._workdir is not None
        return self._workdir

    def _cleanup_workdir(self) -> None:
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _build_app(self) -> Callable[[Scope, Receive, Send], Any]:
        node_api = NodeApi(
            hosts={host.address: host for host in self.hosts},
            ledger=self.ledger,
            config=self.config,
            closing=lambda: self._closing,
        )

        async def index(request: Request) -> JSONResponse:
            return JSONResponse({
                "name": "nosana_magic devnode (embedded local Nosana network)",
                "url": self.url,
                "node_url_template": self.node_url_template,
                "markets": [self.ledger.market_json(m) for m in self.ledger.markets.values()],
                "hosts": [{"address": h.address, "market": h.market.slug} for h in self.hosts],
            })

        routes: list[BaseRoute] = [
            Route("/", index, methods=["GET"]),
            *self._control_routes(),
            *ledger_routes(self.ledger, lambda: self.config.faults),
            *ipfs_routes(self.ipfs),
            Mount("/service", app=self.services.asgi_app()),
        ]
        rest = Starlette(routes=routes)
        token = self.config.token.encode() if self.config.token else None

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path", "")
            if scope["type"] not in ("http", "websocket") or path.startswith("/_devnode/"):
                # Looking at the devnode is not using it: no activity.
                if token is not None and not _presents(scope, token):
                    await _refuse(scope, send)
                else:
                    await rest(scope, receive, send)
                return
            self.activity.begin()
            try:
                if path.startswith("/node/"):  # open, as a host's: each job's key signs
                    await node_api(scope, receive, send)
                elif path.startswith("/service/") or token is None or _presents(scope, token):
                    await rest(scope, receive, send)
                else:
                    await _refuse(scope, send)
            finally:
                self.activity.end()

        return app

    def _control_routes(self) -> list[BaseRoute]:
        async def status(request: Request) -> JSONResponse:
            try:
                window = float(request.query_params.get("window", "60"))
            except ValueError:
                return JSONResponse({"error": "window: not a number of seconds"}, 400)
            jobs = list(self.ledger.jobs.values())
            return JSONResponse({
                "name": "nosana_magic devnode",
                "pid": os.getpid(),
                "url": self.url,
                "started": self.started,
                "uptime_s": round(time.time() - self.started, 1),
                "jobs": {"listed": len(jobs),
                         "active": sum(1 for job in jobs if not job.state.done)},
                "requests_in_flight": self.activity.in_flight,
                "idle_s": round(self.idle_for(), 1),
                "idle_timeout_s": self.config.idle_timeout,
                "loop_lag": self.loop_lag.summary(max(0.0, window)),
            })

        async def stop(request: Request) -> JSONResponse:
            self.stop_requested.set()
            return JSONResponse({"stopping": True}, 202)

        async def admit(request: Request) -> JSONResponse:
            try:
                body = await request.json()
            except ValueError:
                body = None
            key = body.get("api_key") if isinstance(body, dict) else None
            if not isinstance(key, str) or not key.startswith(API_KEY_PREFIX) or (
                    len(key) <= len(API_KEY_PREFIX)) or not key.isprintable():
                return JSONResponse({"error": "api_key: expected a nos_… key"}, 400)
            try:
                self.ledger.credits.admit(key, usd=self.config.credits_usd)
            except ValueError as exc:  # e.g. a space in it: the key itself is never echoed
                return JSONResponse({"error": f"api_key: {exc}"}, 400)
            return JSONResponse({"admitted": True})

        routes: list[BaseRoute] = [Route("/_devnode/status", status, methods=["GET"])]
        if self.config.token is not None:  # only a devnode someone owns is told these
            routes += [Route("/_devnode/stop", stop, methods=["POST"]),
                       Route("/_devnode/credits", admit, methods=["POST"])]
        return routes

    def idle_for(self) -> float:
        """Seconds with no job and no request (0 while a job is queued or runs, or a request
        is in flight). Loop thread only."""
        if any(not job.state.done for job in self.ledger.jobs.values()):
            self.activity.touch()
            return 0.0
        if any(host.busy for host in self.hosts):
            self.activity.touch()
            return 0.0
        return self.activity.quiet_for()

    async def _watch_idle(self, timeout: float) -> None:
        """Set :attr:`stop_requested` once idle for ``timeout`` seconds."""
        while True:
            await asyncio.sleep(min(1.0, max(0.05, timeout / 4)))
            if self.idle_for() >= timeout:
                self.stop_requested.set()
                return

    def _thread_main(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._serve(sock))
        except BaseException as exc:  # reported to start(); the thread must end quietly
            self._error = exc
        finally:
            sock.close()
            self._ready.set()

    async def _serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        config = uvicorn.Config(
            self._build_app(),
            lifespan="off",
            log_config=None,  # never touch the embedding process's logging setup
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,
            ws_ping_interval=30.0,
            # A Nosana host's WebSocket server does not compress (docs/protocol.md §7).
            ws_per_message_deflate=False,
            ws=_WebSockets,
        )
        server = uvicorn.Server(config)
        self._server = server
        loop = asyncio.get_running_loop()
        matcher = loop.create_task(self.ledger.run_matcher(self._closing))
        watchers = [loop.create_task(self.loop_lag.run())]
        if self.config.idle_timeout is not None:
            watchers.append(loop.create_task(self._watch_idle(self.config.idle_timeout)))
        serving = loop.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)
            if not serving.done():
                self._ready.set()
            await serving
        finally:
            self._closing.set()
            for task in (matcher, *watchers):
                task.cancel()
            await asyncio.gather(matcher, *watchers, return_exceptions=True)
            # Anything a host left (it should not) must not outlive the loop.
            for host in self.hosts:
                await host.shutdown(timeout=self.config.stop_timeout)
            await self.services.aclose()

    async def _shutdown(self) -> None:
        assert self._closing is not None
        self._closing.set()
        await asyncio.gather(
            *(host.shutdown(timeout=self.config.stop_timeout) for host in self.hosts),
            return_exceptions=True,
        )
        await self.services.aclose()
        if self._server is not None:
            self._server.should_exit = True


def _presents(scope: Scope, token: bytes) -> bool:
    """Whether the request carries ``token`` in :data:`TOKEN_HEADER`."""
    name = TOKEN_HEADER.encode()
    given = next((value for key, value in scope.get("headers", ()) if key.lower() == name), b"")
    return hmac.compare_digest(given, token)


async def _refuse(scope: Scope, send: Send) -> None:
    """401 (a WebSocket is closed with 1008, policy violation) without reading the request."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b'{"error":"Unauthorized: this local network asks for its token"}'
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _WebSockets(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol with two changes.

    No frame log: uvicorn hands websockets its ``uvicorn.error`` logger, which then logs
    every frame at DEBUG, and the devnode's frames carry what jobs print (their secrets)
    and the clients' auth headers.

    Many frames in one write: the ASGI message :data:`SEND_TEXTS` sends each of its texts
    as a frame of its own, as that many ``websocket.send`` would, but in one write to the
    socket (a job's log goes out an entry per frame, thousands a second).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.debug = False  # websockets checks this before it logs a frame

    async def send(self, message: Any) -> None:
        if message["type"] != SEND_TEXTS:
            await super().send(message)
            return
        await self.writable.wait()  # the transport's flow control, as for one frame
        if self.disconnected or self.close_sent or not self.handshake_complete:
            raise ClientDisconnected()
        try:
            for text in message["texts"]:
                self.conn.send_text(text.encode())
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(self.conn.data_to_send()))


async def _in_thread(fn: Callable[[], _T]) -> _T:
    """Run a blocking call on a short-lived thread of its own (not the loop's executor, whose
    threads would outlive the call)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:
            error = exc
            loop.call_soon_threadsafe(settle, lambda: future.set_exception(error))
        else:
            loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    thread = threading.Thread(target=target, name="nosana-devnode-control", daemon=True)
    thread.start()
    try:
        return await future
    finally:
        # The thread's last act was settling the future: this join is immediate.
        thread.join(timeout=1.0)
