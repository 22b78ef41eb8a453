"""The bottom of every conversation with a server: one retry policy, HTTP clients, safe text.

* :class:`Retry` / :class:`Backoff`: the package's one retry policy. Every loop that tries
  again (a host's node API, the ledger API, Pinata, Solana RPC calls, waiting for a
  confirmation, the account subscription) runs on a :class:`Backoff`: bounded in attempts and
  in time, backing off between tries. It is the only place the package sleeps between tries.
* :func:`http_client_for`: an ``httpx`` client that honours the environment's proxies except
  on loopback, with one verifying TLS context per process.
* :func:`one_line`, :func:`server_message`, :func:`url_host`: what a server said (or where it
  is), made safe to show: one short line, no page of HTML, no URL path or query (they carry
  API keys).

It imports nothing else from the package: everything that talks to a server sits above it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

__all__ = [
    "Backoff",
    "Retry",
    "http_client_for",
    "is_loopback",
    "one_line",
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
