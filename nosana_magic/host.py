"""``HostClient``: the node API of the one host that runs one job (docs/protocol.md §3–§8).

What it does differently from the Nosana CLI (docs/protocol.md §23), on purpose:

* every request carries a **fresh** owner-signed ``Authorization`` header with a timestamp, so
  a late request (results at the end of a long job) is never refused as expired;
* every retry loop is **bounded** (attempts and total time) and backs off from ~0.1 s to ~2 s
  through the package's one retry policy (:class:`~nosana_magic.transport.Backoff`); giving
  up raises :class:`HostError` naming the host and the route;
* results are polled inside the host's 60 s window as soon as the caller sees ``endTime``;
* a 401 (or WS close 3000) whose detail is the host's on-chain lookup of the job failing is
  retried within the bound; only a signature that does not verify (the wrong wallet) and an
  expired header are final (docs/protocol.md §3);
* the ``/log`` WebSocket reconnects without duplicating lines, finds where a new
  connection's replay really starts (a host's history may have been cut or cleared), says
  when lines may be missing, and keeps an entry it cannot read as raw text (see :meth:`logs`);
* bodies are parsed as JSON whatever their content type (the host labels JSON ``text/html``);
* when a host answers 404 on the current ``/job/{id}/…`` paths, the legacy paths of
  docs/protocol.md §8 are tried once and, if they answer, used for the rest of the client's life.

Nothing this module raises or logs holds a request body (the definition body carries the
job's secrets): messages name the host, the route and the host's short error string only,
passed through the optional ``redact`` function as a backstop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from .errors import HostError
from .hostlog import LogReader
from .results import FlowState, InfoEvent, LiveEntry
from .signer import Signer
from .transport import (
    Backoff,
    Retry,
    WebSocketClosed,
    WebSocketUnavailable,
    http_client_for,
    one_line,
    open_websocket,
    server_message,
)

__all__ = [
    "Backoff",
    "HostClient",
    "HostError",
    "Retry",
    "SseParser",
]

log = logging.getLogger(__name__)


#: The node API's retry policy unless the caller gives one (from ~0.1 s to ~2 s, 60 s at most).
_DEFAULT_RETRY = Retry()

#: Error strings of the host (docs/protocol.md §5), matched as prefixes.
_INVALID_JOB_ID = "invalid job id"
_CANNOT_SEND_DEFINITION = "cannot send job definition at this time"
_CANNOT_GET_RESULTS = "cannot get job result at this time"
_UNAUTHORIZED = "unauthorized request"

#: WebSocket close codes of the node (docs/protocol.md §7) that retrying cannot fix.
_WS_FATAL_CODES = {3000: "the host refused our signature", 3003: "the host refused the path"}
#: ... except 3000 when its reason is not about our header: the host looks the job up on
#: chain for each subscription, and an RPC error there closes 3000 too.
_WS_AUTH_CODE = 3000

Kind = Literal["definition", "results", "stop"]

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)

#: Current routes (after 2025-10-02) and the legacy ones of docs/protocol.md §8, per operation.
_ROUTES: dict[Kind, tuple[str, str, str]] = {
    # kind: (method, current path, legacy path)
    "definition": ("POST", "/job/{job}/job-definition", "/job-definition/{job}"),
    "results": ("GET", "/job/{job}/results", "/job-result/{job}"),
    "stop": ("POST", "/job/{job}/stop", "/service/stop/{job}"),
}


# --------------------------------------------------------------------------- errors


# --------------------------------------------------------------------------- SSE


class SseParser:
    """Incremental Server-Sent Events parser: feed lines, get the ``data`` of whole events.

    Only ``data:`` matters to the node API; ``:`` comments (the host's ``: keep-alive``)
    and the other fields (``event``, ``id``, ``retry``) are ignored.
    """

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """One line without its terminator; returns an event's data when a blank line ends it."""
        if line == "":
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        return None


# --------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class _Again:
    """A classifier's verdict "try again": ``problem`` is reported if the bound runs out."""

    problem: str


def _auth_problem_is_final(message: str) -> bool:
    """Whether a host's "Unauthorized Request…" (401, or the reason of WS close 3000) is
    final. Our headers are always fresh and well formed, so only two refusals are about
    them (docs/protocol.md §3): plain "Unauthorized Request" (the signature does not verify: the
    wrong wallet) and an expired header (the clocks disagree). Any other detail is the
    host's per-request lookup of the job on chain failing (RPC or account errors), which a
    later attempt may pass."""
    text = " ".join(message.split()).lower().rstrip(".")
    if not text.startswith(_UNAUTHORIZED):
        return True  # not the middleware's answer: nothing says retrying helps
    detail = text[len(_UNAUTHORIZED):].lstrip(":").strip()
    return not detail or "expired" in detail


def _to_ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :]
    return base_url


class HostClient:
    """The node API of one host, for one job, signed by the job's owner.

    ``base_url`` is the host's API root (``https://{node}.node.k8s.prd.nos.ci``, or the
    devnode's ``http://127.0.0.1:P/node/{node}``). Pass ``http`` to share a connection pool;
    otherwise the client owns one (close it with :meth:`aclose` or ``async with``).
    ``redact`` is applied to every host text that may reach the user.
    """

    #: Seconds one HTTP request may take (connect, write, and each read).
    request_timeout: float = 15.0
    #: Seconds of silence after which an SSE stream is considered dead (the host sends a
    #: keep-alive comment every 15 s).
    sse_idle_timeout: float = 45.0

    def __init__(
        self,
        base_url: str,
        job: str,
        signer: Signer,
        *,
        http: httpx.AsyncClient | None = None,
        retry: Retry = _DEFAULT_RETRY,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.job = job
        #: Who signs the requests: the job's project (a wallet, or the signing service's
        #: header for a credit job; docs/protocol.md §3, §24).
        self.signer = signer
        # One path segment whatever the ledger said the job is: no "/" or ".." reaches
        # another route.
        self._job_segment = quote(job, safe="")
        self.retry = retry
        self._redact = redact or (lambda text: text)
        self._http = http or http_client_for(self.base_url)
        self._owns_http = http is None
        #: ``None`` until a route answered; ``True`` once this host was found to speak only
        #: the legacy paths of docs/protocol.md §8.
        self.legacy: bool | None = None
        self._log_reader = LogReader(self.base_url)
        #: ``/log`` connections opened (1 + reconnects).
        self.log_connections = 0
        #: Whether a ``/log`` connection is open and subscribed right now.
        self.log_connected = False
        #: ``time.monotonic()`` of the host's last answer: a response, an event or a keep-alive
        #: of ``/info``, a ``/log`` frame (``None`` before the first).
        self.last_answer: float | None = None

    @property
    def log_cursor(self) -> int:
        """Log entries received from ``/log`` so far (see :meth:`follow_log`)."""
        return self._log_reader.count

    @property
    def log_gaps(self) -> int:
        """Reconnects after which lines may be missing: the new replay started after the
        last entry seen (the host's history was cut, cleared or replaced meanwhile)."""
        return self._log_reader.gaps

    @property
    def unreadable_entries(self) -> int:
        """Entries that could not be read as node log entries (kept as raw text)."""
        return self._log_reader.unreadable

    @property
    def log_connection_entries(self) -> int:
        """Entries the open ``/log`` connection sent so far (its replay included): none on a
        reconnect means the host no longer holds the job's history (a finished job's is
        cleared, docs/protocol.md §7), so what it sent meanwhile is gone."""
        return self._log_reader.connection_entries

    def __repr__(self) -> str:
        return f"HostClient({self.base_url!r}, job={self.job!r})"

    async def __aenter__(self) -> HostClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------------ plumbing

    def _auth(self) -> str:
        # The host checks the signer and the timestamp, not the message (docs/protocol.md §3);
        # the job address is a message without ":" that says what the header is for.
        return self.signer.auth_header(self.job)

    def _headers(self, *, legacy: bool = False) -> dict[str, str]:
        header = self._auth()
        headers = {"Authorization": header}
        if legacy:
            # Hosts before 2025-03-20 also required x-session-id (docs/protocol.md §8).
            headers["x-session-id"] = header
        return headers

    def _route(self, kind: Kind, *, legacy: bool | None = None) -> tuple[str, str]:
        method, current, old = _ROUTES[kind]
        use_legacy = self.legacy if legacy is None else legacy
        return method, (old if use_legacy else current).format(job=self._job_segment)

    def _route_name(self, kind: Kind) -> str:
        method, path = self._route(kind)
        return f"{method} {path}"

    def _message(self, response: httpx.Response) -> str:
        """The host's error string: short, one line, redacted; HTML pages are not shown."""
        # Redacted before it is shortened: a cut would leave a piece of a secret unrecognised.
        return server_message(response, redact=self._redact) or f"HTTP {response.status_code}"

    def _error(
        self,
        kind: Kind | str,
        problem: str,
        response: httpx.Response | None = None,
        *,
        gave_up: bool = False,
    ) -> HostError:
        route = self._route_name(kind) if kind in _ROUTES else str(kind)
        if response is None:
            return HostError(self.base_url, route, problem, gave_up=gave_up)
        message = self._message(response)
        return HostError(
            self.base_url,
            route,
            f"{problem} ({response.status_code} {message})",
            status=response.status_code,
            host_message=message,
        )

    def _timeout(self, backoff: Backoff) -> httpx.Timeout:
        # A request never outlives its loop's bound by much (0.5 s floor to get an answer).
        return httpx.Timeout(min(self.request_timeout, max(0.5, backoff.remaining)))

    async def _send(
        self,
        kind: Kind,
        backoff: Backoff,
        *,
        content: bytes | None = None,
        patient: bool = False,
    ) -> httpx.Response:
        """One attempt at ``kind``, trying the legacy path once if the current one is 404.

        Network errors propagate (``httpx.TransportError``) for the caller's retry loop.
        ``patient``: the attempt gets the whole ``request_timeout``, not what is left of the
        loop's bound (an answer under way may outlast the retries).
        """
        once = functools.partial(self._once, kind, backoff, content=content, patient=patient)
        response = await once(legacy=bool(self.legacy))
        if response.status_code == 404 and self.legacy is None:
            old = await once(legacy=True)
            if old.status_code != 404:
                log.info("host %s answers only the legacy routes", self.base_url)
                self.legacy = True
                return old
            return response
        if self.legacy is None and response.status_code != 404:
            self.legacy = False
        return response

    async def _once(
        self, kind: Kind, backoff: Backoff, *, content: bytes | None, legacy: bool,
        patient: bool = False,
    ) -> httpx.Response:
        method, path = self._route(kind, legacy=legacy)
        headers = self._headers(legacy=legacy)
        if content is not None:
            headers["Content-Type"] = "application/json"
        response = await self._http.request(
            method,
            self.base_url + path,
            content=content,
            headers=headers,
            timeout=httpx.Timeout(self.request_timeout) if patient else self._timeout(backoff),
        )
        self.last_answer = time.monotonic()
        return response

    async def _until_answered(
        self,
        kind: Kind,
        backoff: Backoff,
        classify: Callable[[httpx.Response], Awaitable[_T | _Again]],
        *,
        content: bytes | None = None,
        gave_up: str = "gave up after {attempts} attempts: {last}",
        on_transport_error: Callable[[], object] = lambda: None,
        patient: bool = False,
    ) -> _T:
        """Send ``kind`` until ``classify`` accepts an answer, within ``backoff``'s bound.

        ``classify`` returns the result, raises to refuse, or returns :class:`_Again`; network
        errors are retried too. When the bound runs out, :class:`HostError` (``gave_up=True``)
        is raised with ``gave_up`` formatted with ``attempts``, ``elapsed`` and ``last`` (the
        last problem).
        """
        last = "no attempt"
        while True:
            try:
                response = await self._send(kind, backoff, content=content, patient=patient)
            except httpx.TransportError as exc:
                on_transport_error()
                last = type(exc).__name__
            else:
                # Only the send is retried on network errors, not what ``classify`` does.
                verdict = await self._retryable_401(response) or await classify(response)
                if not isinstance(verdict, _Again):
                    return verdict
                last = verdict.problem
            if not await backoff.wait():
                problem = gave_up.format(
                    attempts=backoff.attempt, elapsed=backoff.elapsed, last=last
                )
                raise self._error(kind, problem, gave_up=True)

    async def _retryable_401(self, response: httpx.Response) -> _Again | None:
        """A 401 the host may not repeat (its on-chain lookup failed), to retry in the bound."""
        if response.status_code != 401:
            return None
        message = self._message(response)
        return None if _auth_problem_is_final(message) else _Again(f"401 {message}")

    def _body(self, kind: Kind, response: httpx.Response, model: type[_M], problem: str) -> _M:
        """The body as ``model``, parsed as JSON whatever its content type (even doubly encoded).

        An unreadable body raises :class:`HostError` with ``problem``; the body is not shown
        (results hold the job's logs and results).
        """
        try:
            data = json.loads(response.content)
            if isinstance(data, str):  # a doubly encoded body
                data = json.loads(data)
            return model.model_validate(data)
        except (ValueError, ValidationError):
            raise self._error(kind, problem) from None

    # ------------------------------------------------------------------ REST

    async def send_definition(self, body: bytes, *, timeout: float = 60.0) -> None:
        """POST the real job definition (``body``: raw JSON bytes) until the host accepts it.

        Retries, with backoff, while the host has not created the job's flow yet (400
        "invalid job id"), on 5xx and on network errors; gives up after ``timeout`` seconds.
        Any other 4xx raises :class:`HostError` at once with the host's message. If an earlier
        attempt reached the host but its answer was lost, the host answers "cannot send job
        definition at this time"; the stored definition is then checked to tell "already
        received" (success) from "too late" (error).
        """
        backoff = self.retry.backoff(timeout)
        maybe_delivered = False

        def maybe_lost() -> None:
            # No answer says so, but the POST may have reached the host (the connection
            # failed, or a 5xx came after it was stored).
            nonlocal maybe_delivered
            maybe_delivered = True

        async def classify(response: httpx.Response) -> _Again | None:
            status = response.status_code
            if 200 <= status < 300:
                return None
            message = self._message(response)
            if status == 400 and message.lower().startswith(_INVALID_JOB_ID):
                return _Again("the host has not taken up the job yet (400 invalid job id)")
            if status >= 500:
                maybe_lost()
                return _Again(f"{status} {message}")
            if (
                status == 400
                and message.lower().startswith(_CANNOT_SEND_DEFINITION)
                and maybe_delivered
                and await self._definition_stored(backoff)
            ):
                return None
            raise self._error("definition", "the host refused the definition", response)

        await self._until_answered(
            "definition",
            backoff,
            classify,
            content=body,
            gave_up="gave up after {attempts} attempts in {elapsed:.1f} s: {last}",
            on_transport_error=maybe_lost,
        )

    async def _definition_stored(self, backoff: Backoff) -> bool:
        """Whether the host already holds a definition for the job (a lost 200 earlier)."""
        if self.legacy:
            return False  # legacy hosts have no GET for it: report the refusal
        try:
            response = await self._http.get(
                f"{self.base_url}/job/{self._job_segment}/job-definition",
                headers=self._headers(),
                timeout=self._timeout(backoff),
            )
        except httpx.TransportError:
            return False
        # The body is the real definition (with its secrets): only its status is looked at.
        return response.status_code == 200

    async def results(self, *, timeout: float = 60.0, pause: float = 0.25) -> FlowState:
        """GET the job's private results; call it as soon as ``/info`` shows ``endTime``.

        The host serves them only inside its results window (docs/protocol.md §10); before that it
        answers 400 "cannot get job result at this time", which is retried quickly (pauses of
        at most ``pause`` seconds) until ``timeout``; an answer under way gets
        ``request_timeout`` even past it (a long result on a busy machine). The body is JSON
        whatever its content type. Note the returned ``status`` is usually
        ``waiting-for-result``: see :func:`results.final_status`.
        """
        quick = Retry(
            first=min(self.retry.first, pause),
            cap=pause,
            factor=self.retry.factor,
            attempts=max(self.retry.attempts, 1000, int(timeout / max(pause, 0.01)) + 10),
            total=timeout,
        )

        async def classify(response: httpx.Response) -> FlowState | _Again:
            status = response.status_code
            if status == 200:
                return self._body(
                    "results", response, FlowState, "the host sent results that are not a FlowState"
                )
            message = self._message(response)
            lowered = message.lower()
            if status == 400 and lowered.startswith((_CANNOT_GET_RESULTS, _INVALID_JOB_ID)):
                return _Again(f"400 {message}")
            if status >= 500:
                return _Again(f"{status} {message}")
            raise self._error("results", "the host refused to give the results", response)

        return await self._until_answered(
            "results",
            quick.backoff(),
            classify,
            gave_up="no results after {elapsed:.1f} s ({attempts} attempts): {last}",
            patient=True,
        )

    async def definition(self) -> dict[str, Any] | None:
        """The real definition as the host holds it (``GET /job/{job}/job-definition``), or
        None when the host does not give it (one try). It holds the job's resolved secrets:
        the caller reads what it needs and drops it; nothing of it is logged or raised."""
        try:
            response = await self._http.get(
                f"{self.base_url}/job/{self.job}/job-definition", headers=self._headers(),
                timeout=self.request_timeout)
            data = json.loads(response.content) if response.status_code == 200 else None
            if isinstance(data, str):  # a doubly encoded body
                data = json.loads(data)
        except (httpx.TransportError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Ask the host to end the job now (its expiry becomes now; results stay collectable)."""

        async def classify(response: httpx.Response) -> _Again | None:
            status = response.status_code
            if 200 <= status < 300:
                return None
            if status < 500:
                raise self._error("stop", "the host refused to stop the job", response)
            return _Again(f"{status} {self._message(response)}")

        await self._until_answered("stop", self.retry.backoff(timeout), classify)

    # ------------------------------------------------------------------ SSE /info

    async def info(self, *, timeout: float | None = None,
                   on_retry: Callable[[int, str], None] | None = None,
                   ) -> AsyncIterator[InfoEvent]:
        """Follow ``GET /job/{job}/info``: the job's flow as it changes, until ``endTime``.

        Yields each event (the host sends one at once, then one per change). Ends after the
        event that carries ``endTime``. A dropped stream is reopened with bounded backoff (the
        bound restarts whenever an event arrives); a reopened stream's first event repeats the
        last one and is skipped. 404 (the host has no flow for the job yet) is retried the
        same way. ``timeout`` bounds each streak of failures (default: the retry policy's);
        ``on_retry(attempt, why)`` is told of each failed attempt of a streak.
        """
        route = f"GET /job/{self.job}/info"
        url = f"{self.base_url}/job/{self._job_segment}/info"
        backoff = self.retry.backoff(timeout)
        last_data: str | None = None
        last = "no attempt"
        while True:
            try:
                request_timeout = httpx.Timeout(
                    self.request_timeout, read=self.sse_idle_timeout
                )
                async with self._http.stream(
                    "GET",
                    url,
                    headers={**self._headers(), "Accept": "text/event-stream"},
                    timeout=request_timeout,
                ) as response:
                    self.last_answer = time.monotonic()
                    if response.status_code != 200:
                        await response.aread()
                        if (
                            response.status_code == 404
                            or response.status_code >= 500
                            or await self._retryable_401(response) is not None
                        ):
                            last = f"{response.status_code} {self._message(response)}"
                        else:
                            raise self._error(route, "the host refused the stream", response)
                    else:
                        parser = SseParser()
                        async for line in response.aiter_lines():
                            self.last_answer = time.monotonic()  # keep-alives included
                            data = parser.feed(line)
                            if data is None or data == last_data:
                                continue
                            last_data = data
                            event = self._info_event(route, data)
                            backoff.reset()
                            yield event
                            if event.end_time is not None:
                                return
                        last = "the stream closed before the job ended"
            except httpx.TransportError as exc:
                last = type(exc).__name__
            if on_retry is not None:
                on_retry(backoff.attempt + 1, last)
            if not await backoff.wait():
                raise self._error(
                    route,
                    f"gave up after {backoff.attempt} attempts to follow it: {last}",
                    gave_up=True,
                )

    def _info_event(self, route: str, data: str) -> InfoEvent:
        try:
            return InfoEvent.model_validate_json(data)
        except ValidationError:
            raise self._error(route, "the host sent an event that is not a flow") from None

    # ------------------------------------------------------------------ WS /log

    async def follow_log(self, on_entries: Callable[[Sequence[LiveEntry]], None]) -> None:
        """Follow the job's node log over the ``/log`` WebSocket (owner-signed), handing
        the entries over in batches: ``on_entries(entries)`` gets every entry once, in
        order (container output, ``type == "log"``, and the host's progress lines), a batch
        being what arrived together (one read of the socket, at most :data:`LOG_BATCH`).

        It runs until cancelled (the stream has no end of its own); a dropped socket is
        reopened with bounded backoff, and giving up raises :class:`HostError`. A later
        call goes on where the last one stopped.

        A new connection replays the host's history, then streams new entries, with no
        marker between the two (docs/protocol.md §7); that history may start after the job's
        first line (a capped history), or be gone (the job is done). So the replay is not
        skipped by count: entries are timestamped in order, so every entry older than the
        last one seen is skipped, and at that last millisecond the entries seen are skipped
        once each. When the first new entry is not the job's first one seen and comes after
        the last one seen, lines may be missing: :attr:`log_gaps` counts it and a warning
        says so (the job's results have every op's lines). An entry that is not a readable
        node log entry is kept as raw text (``type: "unreadable"``) and counted in
        :attr:`unreadable_entries`, never dropped.
        """
        url = _to_ws_url(self.base_url)
        route = "WS /log"
        reader = self._log_reader
        reader.on_entries = on_entries
        backoff = self.retry.backoff()
        last = "no attempt"
        while True:
            try:
                async with open_websocket(url, open_timeout=self.request_timeout) as ws:
                    self.log_connections += 1
                    self.log_connected = True
                    self.last_answer = time.monotonic()
                    await ws.send(self._log_subscription())
                    reader.connected()

                    def take(raw: str | bytes) -> None:
                        if reader.frame(raw):  # a batch begins: the host is answering
                            self.last_answer = time.monotonic()
                            backoff.reset()

                    await ws.consume(take)
            except WebSocketClosed as exc:
                last = self._closed(exc, route)
            except WebSocketUnavailable as exc:
                if exc.bad_url:
                    raise HostError(self.base_url, route, str(exc)) from None
                last = str(exc)
            finally:
                self.log_connected = False
                reader.hand_over()
            if not await backoff.wait():
                raise HostError(
                    self.base_url,
                    route,
                    f"gave up after {backoff.attempt} attempts to reconnect: {last}",
                    gave_up=True,
                )

    async def logs(self) -> AsyncIterator[LiveEntry]:
        """The entries of :meth:`follow_log`, one at a time."""
        batches: asyncio.Queue[Sequence[LiveEntry] | None] = asyncio.Queue()

        async def follow() -> None:
            try:
                await self.follow_log(batches.put_nowait)
            finally:
                batches.put_nowait(None)

        task = asyncio.get_running_loop().create_task(follow())
        try:
            while (batch := await batches.get()) is not None:
                for entry in batch:
                    yield entry
            await task  # it ended: raises why
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def states(self) -> AsyncIterator[str]:
        """Follow the host's state machine for the job over the ``/status`` WebSocket
        (docs/protocol.md §7): yields each state's status (``awaiting-result-send`` when the
        results window opens …), the history first. A dropped socket is reopened with
        bounded backoff; giving up, or a host without the route, raises :class:`HostError`.
        """
        url = _to_ws_url(self.base_url)
        route = "WS /status"
        backoff = self.retry.backoff()
        seen: set[str] = set()
        last = "no attempt"
        while True:
            try:
                async with open_websocket(url, open_timeout=self.request_timeout) as ws:
                    await ws.send(json.dumps({"path": "/status", "header": self._auth(),
                                              "body": {"jobAddress": self.job}}))
                    async for raw in ws.messages():
                        state = _state_frame(raw)
                        if state is None or state in seen:
                            continue  # (a replay repeats the states seen)
                        seen.add(state)
                        backoff.reset()
                        yield state
            except WebSocketClosed as exc:
                last = self._closed(exc, route)
            except WebSocketUnavailable as exc:
                last = str(exc)
            if not await backoff.wait():
                raise HostError(self.base_url, route,
                                f"gave up after {backoff.attempt} attempts: {last}",
                                gave_up=True)

    def _log_subscription(self) -> str:
        """The first frame of a ``/log`` connection: which job, signed by its owner."""
        return json.dumps({"path": "/log", "header": self._auth(),
                           "body": {"jobAddress": self.job, "address": self.signer.address}})

    def _closed(self, exc: WebSocketClosed, route: str) -> str:
        """Why the host closed the log socket, in one line; raises :class:`HostError` when
        retrying cannot help (docs/protocol.md §7)."""
        code, reason = exc.code, exc.reason
        if code in _WS_FATAL_CODES:
            problem = f"{_WS_FATAL_CODES[code]} ({code} {one_line(reason)})"
            if code != _WS_AUTH_CODE or _auth_problem_is_final(reason):
                raise HostError(self.base_url, route, problem) from None
            return problem
        return f"connection closed ({code})" if code else "connection lost"



def _state_frame(raw: str | bytes) -> str | None:
    """The status of a ``/status`` frame (``{"path": "state", "data": "<JSON>"}``)."""
    try:
        frame = json.loads(raw)
        data = frame.get("data") if isinstance(frame, dict) else None
        state = json.loads(data) if isinstance(data, str) else data
    except ValueError:
        return None
    status = state.get("status") if isinstance(state, dict) else None
    return status if isinstance(status, str) else None





