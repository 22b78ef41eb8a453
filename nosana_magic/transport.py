"""The bottom of every conversation with a server: one retry policy, HTTP clients, safe text.

* :class:`Retry` / :class:`Backoff`: the package's one retry policy. Every loop that tries
  again (a host's node API, the ledger API, Pinata, Solana RPC calls, waiting for a
  confirmation, the account subscription) runs on a :class:`Backoff`: bounded in attempts and
  in time, backing off between tries. It is the only place the package sleeps between tries.
* :func:`http_client_for`: an ``httpx`` client that honours the environment's proxies except
  on loopback, with one verifying TLS context per process.
* :func:`open_websocket`: a WebSocket opened by the same rules (aiohttp underneath, whose
  frame reader is compiled: a host's log comes an entry per frame), with its two ways of
  ending, :class:`WebSocketClosed` and :class:`WebSocketUnavailable`.
* :func:`one_line`, :func:`server_message`, :func:`url_host`: what a server said (or where it
  is), made safe to show: one short line, no page of HTML, no URL path or query (they carry
  API keys).

It imports nothing else from the package: everything that talks to a server sits above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "Backoff",
    "Retry",
    "WebSocket",
    "WebSocketClosed",
    "WebSocketUnavailable",
    "http_client_for",
    "is_loopback",
    "one_line",
    "open_websocket",
    "server_message",
    "url_host",
]


# --------------------------------------------------------------------------- retry policy


@dataclass(frozen=True)
class Retry:
    """How a retry loop backs off and when it gives up.

    The pause before attempt *n+1* is ``min(cap, first * factor**n)``; the loop stops after
    ``attempts`` attempts or ``total`` seconds, whichever comes first. A call that has its own
    ``timeout`` uses that as ``total``.
    """

    first: float = 0.1
    cap: float = 2.0
    factor: float = 2.0
    attempts: int = 200
    total: float = 60.0

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap < self.first or self.factor < 1:
            raise ValueError("Retry needs 0 < first <= cap and factor >= 1")
        if self.attempts < 1 or self.total <= 0:
            raise ValueError("Retry needs attempts >= 1 and total > 0")

    def backoff(self, total: float | None = None) -> Backoff:
        """A fresh loop state bounded by ``total`` seconds (default :attr:`total`)."""
        return Backoff(self, total=self.total if total is None else total)


@dataclass
class Backoff:
    """The state of one bounded retry loop. The only place this package sleeps between tries.

    ::

        backoff = retry.backoff(timeout)
        while True:
            ...try once; return on success...
            if not await backoff.wait():
                raise SomeError(f"gave up after {backoff.attempt} attempts")
    """

    retry: Retry
    total: float
    attempt: int = 0
    started: float = field(default_factory=time.monotonic)
    _delay: float = 0.0

    def __post_init__(self) -> None:
        self._delay = self.retry.first

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def remaining(self) -> float:
        return max(0.0, self.total - self.elapsed)

    async def wait(self) -> bool:
        """Count the attempt that just failed and sleep before the next one.

        Returns ``False`` (without sleeping) when the bound is reached. The last pause is cut
        so that one final attempt happens right at the time bound.
        """
        self.attempt += 1
        remaining = self.remaining
        if self.attempt >= self.retry.attempts or remaining <= 0:
            return False
        await asyncio.sleep(min(self._delay, remaining))
        self._delay = min(self.retry.cap, self._delay * self.retry.factor)
        return True

    def reset(self) -> None:
        """Progress was made (a stream delivered data): start the bounds over."""
        self.attempt = 0
        self.started = time.monotonic()
        self._delay = self.retry.first


# --------------------------------------------------------------------------- HTTP clients


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (then no proxy from the environment applies:
    a corporate ``HTTP_PROXY`` must not swallow requests to the local network)."""
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # Building a verifying TLS context loads the CA bundle (~50 ms): once per process, not
    # once per client, so that taking a job up is not delayed by it.
    return httpx.create_ssl_context()


def http_client_for(url: str, *, timeout: float | None = None) -> httpx.AsyncClient:
    """A new client for ``url``: environment proxies are honoured except on loopback.

    ``timeout``: the client's default per request (``None``: httpx's); calls may pass their own.
    """
    return httpx.AsyncClient(
        trust_env=not is_loopback(url),
        verify=_tls_context(),
        timeout=httpx.Timeout(5.0) if timeout is None else httpx.Timeout(timeout),
    )


# --------------------------------------------------------------------------- WebSockets

#: Seconds between the pings that keep a WebSocket open and find a peer that is gone.
WS_PING_S = 20.0


class WebSocketClosed(Exception):
    """A WebSocket ended: by the peer's close frame (``code``, ``reason``), or without one
    (``code`` is None: the connection was lost)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed ({code})" if code else "connection lost")
        self.code = code
        self.reason = reason


class WebSocketUnavailable(Exception):
    """A WebSocket could not be opened: refused, unreachable, timed out, or (``bad_url``) not
    a WebSocket URL at all. The message says which, in a word or two."""

    def __init__(self, why: str, *, bad_url: bool = False) -> None:
        super().__init__(why)
        self.bad_url = bad_url


class WebSocket:
    """One open WebSocket: send text, read messages until it ends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        from aiohttp import WSMsgType  # (imported already: ws is one of its sockets)

        self._ws = ws
        self._kinds = WSMsgType

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_str(text)
        except (OSError, RuntimeError) as exc:  # aiohttp's reset errors are OSErrors
            raise WebSocketClosed(None) from exc

    async def messages(self) -> AsyncIterator[str | bytes]:
        """Every message as it comes (text as ``str``, binary as ``bytes``); raises
        :class:`WebSocketClosed` when the socket ends."""
        receive = self._ws.receive
        while True:
            data = self._data(await receive())
            if data is not None:
                yield data

    async def consume(self, take: Callable[[str | bytes], object]) -> None:
        """:meth:`messages`, each handed to ``take`` (no generator between: the loop for a
        stream of many small messages)."""
        receive, data_of = self._ws.receive, self._data
        while True:
            data = data_of(await receive())
            if data is not None:
                take(data)

    def _data(self, message: Any) -> str | bytes | None:
        """A message's data; None for a ping or a pong; WebSocketClosed when it ends."""
        kind, kinds = message.type, self._kinds
        if kind is kinds.TEXT or kind is kinds.BINARY:
            data: str | bytes = message.data
            return data
        if kind is kinds.CLOSE:
            raise WebSocketClosed(message.data, message.extra or "")
        if kind is kinds.PING or kind is kinds.PONG:
            return None
        raise WebSocketClosed(self._ws.close_code if kind is not kinds.ERROR else None)


@contextlib.asynccontextmanager
async def open_websocket(url: str, *, open_timeout: float,
                         max_size: int = 2**24) -> AsyncIterator[WebSocket]:
    """A WebSocket to ``url`` (``ws://`` or ``wss://``): environment proxies honoured except
    on loopback, the process's TLS context, a ping every ``WS_PING_S``, no compression.
    Opening it raises :class:`WebSocketUnavailable`; it is closed on the way out."""
    # aiohttp takes ~0.3 s to import: paid when the first log is followed, not at %load_ext.
    import aiohttp

    session = aiohttp.ClientSession(trust_env=not is_loopback(url))
    try:
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(url, max_msg_size=max_size, heartbeat=WS_PING_S,
                                   ssl=_tls_context() if url.startswith("wss:") else False,
                                   timeout=aiohttp.ClientWSTimeout(ws_close=2.0)),
                open_timeout)
        except aiohttp.InvalidURL:
            raise WebSocketUnavailable("not a WebSocket URL", bad_url=True) from None
        except aiohttp.WSServerHandshakeError as exc:
            raise WebSocketUnavailable(f"handshake refused (HTTP {exc.status})") from None
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise WebSocketUnavailable(_why(exc)) from None
        try:
            yield WebSocket(ws)
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
    finally:
        await session.close()


def _why(exc: BaseException) -> str:
    cause: Any = getattr(exc, "os_error", None) or exc
    return type(cause).__name__


# --------------------------------------------------------------------------- safe text


def url_host(url: str) -> str:
    """The host and port of ``url``: never its path, query or user info (keys live there)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return host


def one_line(text: str, limit: int = 200, *, keep_urls: bool = True) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` characters with "…".

    ``keep_urls=False`` replaces every URL by its host (:func:`url_host`).
    """
    words = text.split()
    if not keep_urls:
        words = [url_host(word.strip("'\"()<>,")) if "://" in word else word for word in words]
    line = " ".join(words)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def server_message(response: httpx.Response, limit: int = 200, *,
                   redact: Callable[[str], str] | None = None) -> str:
    """A server's error answer as one short line: a JSON string, the ``error``/``message``/
    ``detail`` string of a JSON object, else the body; ``HTTP <status>`` for an HTML page or an
    empty body. Callers redact what may echo a secret: pass ``redact`` to have it applied
    before the line is shortened (a cut would leave a piece of a secret unrecognised)."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, str):
        text = body
    elif isinstance(body, dict):
        text = next((body[key] for key in ("error", "message", "detail")
                     if isinstance(body.get(key), str)), text)
    if text.lstrip().startswith("<"):
        return f"HTTP {response.status_code}"
    line = one_line(redact(text) if redact is not None else text, limit)
    if not line:
        return f"HTTP {response.status_code}"
    return line
