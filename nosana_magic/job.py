"""``ConfidentialJob``: the async state machine of one confidential job, and its public handle.

The machine (docs/protocol.md §2, without the CLI's faults of docs/protocol.md §23)::

    validating ─▶ (every ${…} reference resolves?) ─▶ pinning (the public placeholder)
      ─▶ listing ─▶ queued ─▶ sending-definition (the real one, resolved only now)
      ─▶ running (/info + /log followed) ─▶ collecting-results (inside the host's window)
      ─▶ done

``phase`` is where the machine is; :attr:`ConfidentialJob.status` is the one word the package
says about the job everywhere (view, summary, repr, ``%nosana jobs``, errors): the live phase
(``stopping`` once a stop was asked for) and, once done, the verdict worked out by
:func:`job_status` from what the host, the ledger and the machine saw: ``succeeded``,
``failed``, ``stopped`` (by you), ``expired`` (its timeout), ``lost`` (the host or the ledger
quit or stopped answering). The host's own word for the flow stays in
:attr:`ConfidentialJob.host_status`.

It runs on the package's private loop (``runner``); the handle's attributes may be read from
any thread. Nothing secret is kept longer than needed or shown: the resolved body goes to
the host and is dropped; every host text (log lines, results, errors) passes through the
definition's :class:`~nosana_magic.secrets.Redactor`; reprs and errors name addresses,
statuses and op ids only.

Reaction times on the local network are set by the ledger poll (0.1 s) and the first retry
pauses (0.1 s): no multi-second polling anywhere, so a host's "ready" and "ended" are acted
on within about 100 ms.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from . import runner
from .errors import NosanaError
from .host import Backoff, HostClient, HostError, Retry
from .jobdef import JobDefinition, JobDefinitionError, parse_job_definition, validate_job_definition
from .network.base import JobInfo, JobState, Market, Network, NetworkError
from .protocol import DurationError, exposed_services, format_duration, parse_duration, service_url
from .results import FlowState, InfoEvent, NodeLogEntry, OpLog, OpState, ServiceUrl, final_status
from .secrets import Redactor, SecretError
from .settings import Settings

__all__ = [
    "FINAL_STATUSES",
    "ConfidentialJob",
    "JobEvent",
    "JobExpired",
    "JobFailed",
    "JobInterrupted",
    "JobLost",
    "JobNotFound",
    "JobStopped",
    "LogLine",
    "MissingResult",
    "OpResult",
    "Results",
    "find_job",
    "job_status",
    "jobs",
    "run_confidential",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

Phase = Literal[
    "validating",
    "pinning",
    "listing",
    "queued",
    "sending-definition",
    "running",
    "collecting-results",
    "done",
]
#: The verdicts :attr:`ConfidentialJob.status` can end with.
FINAL_STATUSES = ("succeeded", "failed", "stopped", "expired", "lost")

#: How long the results GET keeps trying after ``endTime``: the host's window is 60 s.
RESULTS_TIMEOUT_S = 70.0
#: How long the results GET tries when only the ledger says the job ended (the window may
#: be over, or there may be none: a host that quit).
LATE_RESULTS_TIMEOUT_S = 2.0
#: How long to wait for the ledger to show COMPLETED/STOPPED once the results are in hand.
LEDGER_DONE_TIMEOUT_S = 30.0
#: How long the definition POST retries after the host took the job (it must first fetch
#: the placeholder from IPFS).
SEND_TIMEOUT_S = 300.0
#: Extra time past a job's expiry before the machine stops waiting for its end.
EXPIRY_MARGIN_S = 120.0
#: How long Ctrl-C waits for the stop it started (the stop itself goes on after that).
STOP_WAIT_S = 60.0
#: Log drain at the end: caught up once every line arrived and this much silence followed.
LOG_IDLE_S = 0.2
#: ... and given up after this much silence (a long replay keeps the drain going) ...
LOG_STALL_S = 5.0
#: ... or after this long in all, however long the replay.
LOG_DRAIN_MAX_S = 120.0
#: The node a job shows on chain when it was stopped before any host took it.
SYSTEM_ADDRESS = "11111111111111111111111111111111"


# --------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class LogLine:
    """One line of a job's log: container output (``stdout``/``stderr``) or a host ``node`` line."""

    op_id: str | None
    stream: str
    text: str
    timestamp: float

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class OpResult:
    """One op's outcome, from the host's private results.

    ``host_status`` is the host's own word (``init``, ``running``, ``success``, ``failed``,
    ``stopped``); ``ended_by`` says what cut the op short, from the host's diagnostics:
    ``"stop"`` (yours; a host reports a stop through its API as an expiry), ``"expiry"`` (the
    job's timeout) or ``"host"`` (the host shut down). :attr:`status` is the package's word.
    """

    op_id: str
    host_status: str
    exit_code: int | None
    logs: list[LogLine]
    results: dict[str, Any]
    ended_by: Literal["stop", "expiry", "host"] | None = None
    #: False when the op never started (the job ended first).
    ran: bool = True

    @property
    def status(self) -> str:
        """``succeeded``, ``failed`` (a non-zero exit), ``stopped``, ``expired``, ``lost``,
        ``not run``, or the host's word while it runs."""
        if self.ended_by == "stop":
            return "stopped"
        if self.ended_by == "expiry":
            return "expired"
        if self.ended_by == "host":
            return "lost"
        if self.host_status == "failed" or self.exit_code not in (None, 0):
            return "failed"
        if not self.ran:
            return "not run"
        return {"success": "succeeded"}.get(self.host_status, self.host_status)

    @property
    def stdout(self) -> str:
        return "\n".join(line.text for line in self.logs if line.stream == "stdout")

    @property
    def stderr(self) -> str:
        return "\n".join(line.text for line in self.logs if line.stream == "stderr")


@dataclass(frozen=True)
class JobEvent:
    """What listeners of :meth:`ConfidentialJob.subscribe` receive."""

    kind: Literal["phase", "log", "urls", "state", "done"]
    job: ConfidentialJob
    line: LogLine | None = None


class JobFailed(NosanaError):
    """A job that did not succeed (:meth:`ConfidentialJob.raise_for_status`). One line."""

    def __init__(self, message: str, job: ConfidentialJob | None = None) -> None:
        super().__init__(message)
        self.job = job


class JobStopped(JobFailed):
    """A job that was stopped (by you) before it finished."""


class JobExpired(JobFailed):
    """A job that reached its timeout: the host ended it, its ops cut short."""


class JobLost(JobFailed):
    """A job whose outcome is unknown: its host (or the ledger) quit or stopped answering."""


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C while waiting on a job: the job was stopped. Shows one line, no traceback.

    ``sent`` is True when the stop request went through.
    """

    def __init__(self, message: str, job: ConfidentialJob | None = None, *,
                 sent: bool = False) -> None:
        super().__init__(message)
        self.job = job
        self.sent = sent

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


class JobNotFound(NosanaError):
    """No job of this process matches a reference (or more than one does)."""


class MissingResult(KeyError):
    """A name that is not among a job's results (or ops). One line: what there is, and why.

    A ``KeyError``, so ``name in job.results`` and ``job.results.get(name)`` work as for any
    dict; ``key`` is the name looked up.
    """

    def __init__(self, message: str, key: object = None) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


_V = TypeVar("_V")


class Results(dict[str, _V]):
    """A job's results (or its ops) by name: a plain dict, except that a missing name raises
    :class:`MissingResult` saying which names exist and, if the job did not succeed, why.

    ``explain(kind, key, names)`` words that line (the job knows its own state).
    """

    def __init__(self, items: Mapping[str, _V] | None = None, *, kind: str = "result",
                 explain: Callable[[str, str, list[str]], str] | None = None) -> None:
        super().__init__(items or {})
        self._kind = kind
        self._explain = explain

    def __missing__(self, key: str) -> _V:
        names = [str(name) for name in self]
        if self._explain is not None:
            raise MissingResult(self._explain(self._kind, key, names), key)
        have = f"there are {', '.join(names)}" if names else f"there are no {self._kind}s"
        raise MissingResult(f"no {self._kind} {key!r}: {have}", key)

    def __reduce__(self) -> tuple[type[dict[str, _V]], tuple[dict[str, _V]]]:
        # Copies and pickles are plain dicts: the explanation belongs to the live job.
        return dict, (dict(self),)


# --------------------------------------------------------------------------- helpers


def _short(address: str | None) -> str:
    if not address:
        return "(not listed)"
    return address if len(address) <= 8 else f"{address[:4]}…{address[-2:]}"


def _timestamp_s(value: str | int | float | None) -> float:
    """Seconds from the host's ms integers or docker's ISO strings (``now`` if unknown)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1000.0
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        # Docker writes nanoseconds; datetime takes microseconds.
        head, dot, rest = text.partition(".")
        if dot:
            digits = "".join(c for c in rest if c.isdigit())
            tail = rest[len(digits):]
            text = f"{head}.{digits[:6]}{tail}"
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    return time.time()


def _strip_newline(text: str) -> str:
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def _decode(value: Any) -> Any:
    """A results value JSON-decoded when it parses (``"0.93"`` → ``0.93``), else as it is."""
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _redact_tree(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_tree(item, redact) for item in value]
    if isinstance(value, dict):
        return {key: _redact_tree(item, redact) for key, item in value.items()}
    return value


def _urls_from_secrets(secrets: Mapping[str, Any] | None, job: str) -> list[ServiceUrl]:
    """Service URLs in a flow's ``secrets`` (``{job: {exposeId: {opID, port, url, status}}}``)."""
    if not secrets:
        return []
    entries = secrets.get(job)
    if not isinstance(entries, Mapping):
        return []
    urls: list[ServiceUrl] = []
    for expose_id, item in entries.items():
        if not isinstance(item, Mapping) or not isinstance(item.get("url"), str):
            continue
        status = item.get("status")
        urls.append(
            ServiceUrl(
                url=item["url"],
                port=item.get("port", ""),
                op_id=str(item.get("opID") or item.get("opId") or ""),
                # A private service has a host-made random id of 45 characters.
                private=len(str(expose_id)) == 45,
                status=status if status in ("ONLINE", "OFFLINE", "UNKNOWN") else "UNKNOWN",
                expose_id=str(expose_id),
            )
        )
    return urls


def _validation_summary(errors: list[Any]) -> str:
    """The host's validation errors as ``path: expected type`` (values are never shown)."""
    items: list[Any] = []
    for error in errors:
        items.extend(error if isinstance(error, list) else [error])
    parts: list[str] = []
    for item in items[:3]:
        if isinstance(item, Mapping) and "path" in item:
            path = str(item.get("path", "")).removeprefix("$input").lstrip(".") or "(top level)"
            expected = item.get("expected")
            parts.append(f"{path}: expected {expected}" if expected else path)
        elif isinstance(item, str):
            parts.append(item)
    more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
    return "; ".join(parts) + more


# --------------------------------------------------------------------------- the verdict

#: Exit codes of a process ended by SIGTERM / SIGKILL (Docker's 128 + N): how a stop ends one.
_STOP_EXIT_CODES = frozenset({137, 143})
#: The host's final flow words, in the package's.
_HOST_OUTCOME = {"success": "succeeded", "expired": "expired", "stopped": "stopped"}


def _op_ended_by(op: OpState, stopped_by_you: bool) -> Literal["stop", "expiry", "host"] | None:
    """What cut an op short, from its diagnostics (and the exit code of a stopped process)."""
    reason = (op.diagnostics or {}).get("reason")
    reason = reason if isinstance(reason, Mapping) else {}
    if reason.get("jobStopped") is True:
        return "stop"
    if reason.get("jobExpired") is True:
        # A host ends a job stopped through its API as an expiry: the stop was ours.
        return "stop" if stopped_by_you else "expiry"
    if reason.get("hostShutDown") is True:
        return "host"
    if stopped_by_you and op.exit_code in _STOP_EXIT_CODES:
        return "stop"
    return None


def job_status(job: ConfidentialJob) -> str:
    """The one word the package says about ``job``, worked out from the machine's facts.

    While the job runs: its phase, or ``stopping`` once a stop was sent. Once it is done:

    * ``lost``: an error saying the host or the ledger stopped answering, or the job ended
      without results and without its host's verdict (a host that quit);
    * ``failed``: any other error (it never ran, or the host refused it), or the results say
      an op exited non-zero or failed, or the host rejected the definition;
    * ``stopped``: you stopped it (a host reports such a stop as an expiry, so the stop wins
      over that) — unless the results show it had finished on its own; also a job stopped
      on the ledger before any host took it;
    * ``expired``: its timeout cut its ops short;
    * ``succeeded``: every op that ran exited 0.

    Nothing here is stored: the view, the summary, the repr, ``%nosana`` and
    :meth:`ConfidentialJob.raise_for_status` all read this.
    """
    if not job.done:
        return "stopping" if job._stop_requested else job.phase
    error = job.error
    if error is not None:
        lost = isinstance(error, JobLost) or (isinstance(error, HostError) and error.gave_up)
        return "lost" if lost else "failed"
    flow = job.result
    stopped_by_you = job._stop_requested
    if flow is None:
        if stopped_by_you or job.node is None:
            return "stopped"  # delisted before it ran, or stopped with nothing to collect
        reported = _HOST_OUTCOME.get(job._reported_status or "")
        if reported is not None and job.state is not JobState.STOPPED:
            return reported
        return "lost"
    ended_by = {_op_ended_by(op, stopped_by_you) for op in flow.op_states}
    if "host" in ended_by:
        return "lost"
    if stopped_by_you and ("stop" in ended_by or not flow.op_states):
        return "stopped"
    outcome = final_status(flow, reported=job._specific_report())
    verdict = _HOST_OUTCOME.get(outcome, "failed")
    if stopped_by_you and verdict in ("expired", "stopped"):
        return "stopped"
    return verdict


# --------------------------------------------------------------------------- the registry

_registry_lock = threading.Lock()
_registry: list[ConfidentialJob] = []


def jobs() -> list[ConfidentialJob]:
    """This process's jobs, oldest first."""
    with _registry_lock:
        return list(_registry)


def find_job(ref: str) -> ConfidentialJob:
    """The job of this process whose address is ``ref`` or starts with it (unique)."""
    ref = ref.strip()
    if not ref:
        raise JobNotFound("no job reference given")
    matches = [job for job in jobs() if job.address and job.address.startswith(ref)]
    exact = [job for job in matches if job.address == ref]
    if exact:
        return exact[-1]
    if not matches:
        raise JobNotFound(f"no job of this session matches {ref!r}")
    if len({job.address for job in matches}) > 1:
        raise JobNotFound(f"{ref!r} matches {len(matches)} jobs; give more characters")
    return matches[-1]


def _register(job: ConfidentialJob) -> None:
    with _registry_lock:
        _registry.append(job)


# --------------------------------------------------------------------------- the handle


class ConfidentialJob:
    """One confidential job: its live state, its logs and results, and what can be done to it.

    Made by :func:`run_confidential` or :meth:`attach`. Attributes are snapshots that may be
    read from any thread; they change on the package's loop thread.
    """

    def __init__(
        self,
        definition: JobDefinition | None,
        network: Network,
        *,
        market: str | None = None,
        timeout: int = 1800,
        node: str | None = None,
        send: bool = True,
        receive: bool = True,
        env: Mapping[str, str] | None = None,
        namespace: Mapping[str, Any] | None = None,
        owns_network: bool = False,
        source: str | dict[str, Any] | None = None,
        address: str | None = None,
        results_timeout: float = RESULTS_TIMEOUT_S,
        retry: Retry | None = None,
    ) -> None:
        self.definition = definition
        self.network = network
        self.network_name: str = network.name
        self.address: str | None = address
        self.market: Market | None = None
        self.node: str | None = None
        self.state: JobState | None = None
        #: Where the machine is (``validating`` … ``done``); :attr:`status` is the verdict.
        self.phase: Phase = "validating"
        self.result: FlowState | None = None
        self.ops: Results[OpResult] = Results(kind="op", explain=self._explain_missing)
        self.results: Results[Any] = Results(explain=self._explain_missing)
        self.urls: list[ServiceUrl] = []
        self.price: float | None = None
        self.timeout: int = timeout
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self.ledger: JobInfo | None = None
        #: Unix times of the milestones (``listed``, ``running``, ``definition-sent``,
        #: ``end-seen``, ``results``, ``done``…), for the view and for measurements.
        self.timings: dict[str, float] = {}
        #: Problems that did not end the job (a log stream that gave up, …), one line each.
        self.warnings: list[str] = []

        self._market_ref = market
        self._node_ref = node
        self._send = send
        self._receive = receive
        self._env = env
        self._namespace = namespace
        self._owns_network = owns_network
        self._source = source
        self._attached = address is not None and definition is None and source is None
        self._results_timeout = results_timeout
        self._retry = retry or Retry()
        self._redactor: Redactor = Redactor.empty()
        self._logs: list[LogLine] = []
        self._listeners: list[Callable[[JobEvent], None]] = []
        self._listeners_lock = threading.Lock()
        self._host: HostClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._done = threading.Event()
        #: Set after the "done" event reached every listener: what waiters wait for, so that
        #: a waiter woken by the end sees what the listeners made of it.
        self._settled = threading.Event()
        self._changed: asyncio.Event | None = None
        self._stop_requested = False
        #: Set once the machine is closing its clients (a stop then has nothing to do).
        self._finishing = False
        self._info_end: InfoEvent | None = None
        self._reported_status: str | None = None
        self._flow_status: str | None = None
        self._last_log_at = 0.0
        self._container_lines = 0
        self._ledger_error: str | None = None

    # ------------------------------------------------------------------ public snapshot API

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def status(self) -> str:
        """The package's one word for the job (see :func:`job_status`): the live phase
        (``queued``, ``running``, ``stopping``…), then ``succeeded``, ``failed``,
        ``stopped``, ``expired`` or ``lost``."""
        return job_status(self)

    @property
    def ok(self) -> bool:
        """True once the job is done and succeeded."""
        return self.status == "succeeded"

    @property
    def host_status(self) -> str | None:
        """The host's own status word for the flow, as it last reported it (``running``,
        ``success``, ``failed``, ``stopped``, ``waiting-for-result``…), ``None`` before a host
        said anything. Raw: a host says ``success`` after an op failed, or after a stop
        through its API; :attr:`status` is the verdict."""
        if self._reported_status is not None:
            return self._reported_status
        if self.result is not None:
            return self.result.status
        return self._flow_status

    @property
    def logs(self) -> list[LogLine]:
        """Every line of the job's ``/log`` stream so far, in order (redacted)."""
        return list(self._logs)

    @property
    def stdout(self) -> str:
        """The ops' standard output, one line per entry."""
        return "\n".join(line.text for line in self._logs if line.stream == "stdout")

    @property
    def stderr(self) -> str:
        return "\n".join(line.text for line in self._logs if line.stream == "stderr")

    @property
    def node_logs(self) -> list[LogLine]:
        """The host's own progress lines ("Job definition received", …)."""
        return [line for line in self._logs if line.stream == "node"]

    @property
    def cost(self) -> float | None:
        """NOS: what the job cost once done, else the most it can cost (price × timeout)."""
        if self.price is None:
            return None
        info = self.ledger
        if self.done and info is not None and info.time_start and info.time_end:
            return max(0, info.time_end - info.time_start) * self.price
        if self.done and info is not None and info.time_start is None:
            return 0.0  # never ran
        return self.price * self.timeout

    @property
    def elapsed(self) -> float | None:
        """Seconds since the host started the job (until it ended)."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else time.time()
        return max(0.0, end - self.started_at)

    @property
    def expires_at(self) -> float | None:
        return None if self.started_at is None else self.started_at + self.timeout

    def __repr__(self) -> str:
        parts = [f"<ConfidentialJob {_short(self.address)}"]
        if self.market is not None:
            parts.append(self.market.slug)
        parts.append(self.status)
        if self.node:
            parts.append(f"node {self.node[:2]}…")
        return " ".join(parts) + ">"

    def _repr_html_(self) -> str:
        rows: list[tuple[str, str]] = [
            ("job", html.escape(self.address or "(not listed)")),
            ("network", html.escape(self.network_name)),
        ]
        if self.market is not None:
            rows.append(("market", html.escape(self.market.slug)))
        rows.append(("status", html.escape(self.status)))
        if self.done and not self.ok:
            rows.append(("why", html.escape(self.reason)))
        if self.node:
            rows.append(("node", html.escape(self.node)))
        if self.elapsed is not None:
            rows.append(("elapsed", html.escape(format_duration(self.elapsed))))
        if self.price is not None:
            cost = self.cost
            money = f"{self.price:.6g} NOS/s"
            if cost is not None:
                money += f", {'cost' if self.done else 'at most'} {cost:.6g} NOS"
            rows.append(("price", html.escape(money)))
        for url in self.urls:
            label = f"{url.op_id}:{url.port}" + (" (private)" if url.private else "")
            link = html.escape(url.url, quote=True)
            rows.append(
                (html.escape(label), f'<a href="{link}" target="_blank">{html.escape(url.url)}</a>')
            )
        if not self.done:
            # A notebook keeps this table as the cell's output: say it is a snapshot, so a
            # saved "QUEUED" is not read as the job's fate (the view's summary is the record).
            stamp = time.strftime("%H:%M:%S")
            rows.append(("as of", f"{stamp}, while the job ran; the view above follows it"))
        body = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
            for k, v in rows
        )
        return f"<table class='nosana-job'>{body}</table>"

    # ------------------------------------------------------------------ listeners

    def subscribe(self, listener: Callable[[JobEvent], None]) -> Callable[[], None]:
        """Call ``listener(event)`` on every change from now on (on the loop thread).

        Returns the function that unsubscribes. A listener that raises is logged and kept
        away from the job. Nothing is replayed: read the handle's attributes for the past.
        """
        with self._listeners_lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, kind: Literal["phase", "log", "urls", "state", "done"],
              line: LogLine | None = None) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        event = JobEvent(kind, self, line)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a job listener failed (ignored)")
        self._pulse()

    def _set_phase(self, phase: Phase) -> None:
        if self.phase != phase:
            self.phase = phase
            self.timings.setdefault(phase, time.time())
            log.debug("job %s: %s", self.address, phase)
            self._emit("phase")

    def _pulse(self) -> None:
        """Wake every ``_until`` waiter (they re-check their condition)."""
        changed = self._changed
        if changed is not None:
            self._changed = asyncio.Event()
            changed.set()

    async def _until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (re-checked on every change); False on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                return predicate()
        return True

    # ------------------------------------------------------------------ starting

    def start(self) -> ConfidentialJob:
        """Run the machine on the package's loop (returns at once)."""
        if self._task is not None or self._done.is_set():
            return self
        _register(self)
        if runner.in_runner_thread():
            self._launch()
        else:
            runner.run_sync(self._launch_async(), timeout=10)
        return self

    async def _launch_async(self) -> None:
        self._launch()

    def _launch(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._task = self._loop.create_task(self._main())

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the job's loop, from whichever loop the caller is on."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise JobFailed(f"job {_short(self.address)} was never started", self)
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - always called from a coroutine
            current = None
        if current is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    # ------------------------------------------------------------------ waiting, stop, extend

    def wait(self, timeout: float | None = None) -> ConfidentialJob:
        """Block until the job is done; returns the job (check :attr:`ok`).

        ``timeout`` (seconds): raise :class:`TimeoutError` if it is still running then.
        Ctrl-C while waiting stops the job (the host ends it; when still queued, it is
        delisted) and raises :class:`JobInterrupted` ("job X stopped").
        """
        if runner.in_runner_thread():
            raise runner.RunnerError("wait() on the loop thread: use await job.wait_async()")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._settled.wait(0.1):
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"job {_short(self.address)} still {self.phase} after {timeout:g} s"
                    )
        except KeyboardInterrupt:
            raise self.stop_after_interrupt() from None
        return self

    def stop_after_interrupt(self) -> JobInterrupted:
        """Ctrl-C while waiting on the job: stop it, and return the :class:`JobInterrupted`
        to raise, whose one line says whether the stop went through.

        The stop runs on the package's loop, where a further Ctrl-C cannot cancel it (that
        would leave a paid job running): further interrupts are noted on stderr and the wait
        goes on, bounded by ``STOP_WAIT_S``.
        """
        address = self.address or "(not listed)"
        if self.done:
            return JobInterrupted(f"job {address} already {self.status}", self)
        future = runner.submit(self.stop_async())
        deadline = time.monotonic() + STOP_WAIT_S
        interrupts = 0
        noted = 0
        problem: str | None = None
        while True:
            try:
                if interrupts > noted:
                    noted = interrupts
                    print(f"job {_short(self.address)}: still stopping it (a stop is not "
                          f"cancelled; waiting up to {STOP_WAIT_S:g} s)", file=sys.stderr)
                remaining = deadline - time.monotonic()
                if future.done() or remaining <= 0:
                    break
                concurrent.futures.wait([future], timeout=min(0.1, remaining))
            except KeyboardInterrupt:
                interrupts += 1
        if not future.done():
            problem = f"no answer within {STOP_WAIT_S:g} s (the stop request goes on)"
        elif future.cancelled():
            problem = "the stop request was cancelled"
        else:
            error = future.exception()
            if error is not None:
                text = str(error).splitlines()[0] if str(error) else type(error).__name__
                problem = self._redactor.redact(text)
        if problem is None:
            return JobInterrupted(f"job {address} stopped", self, sent=True)
        return JobInterrupted(f"job {address}: stop requested, still running: {problem}", self)

    async def wait_async(self, timeout: float | None = None) -> ConfidentialJob:
        """``await`` the end of the job (from any event loop)."""
        loop = asyncio.get_running_loop()
        done = self._settled

        async def poll() -> None:
            # A threading.Event is visible from every loop; waiting in short slices keeps
            # this cancellable without a thread.
            while not done.is_set():
                await asyncio.sleep(0.05)

        if self._task is not None and self._loop is loop:
            waiter = asyncio.shield(self._task)
            try:
                await asyncio.wait_for(waiter, timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(
                    f"job {_short(self.address)} still {self.phase} after {timeout:g} s"
                ) from None
            return self
        try:
            await asyncio.wait_for(poll(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"job {_short(self.address)} still {self.phase} after {timeout:g} s"
            ) from None
        return self

    def stop(self) -> None:
        """End the job: the host stops it when running (results stay collectable), the
        ledger delists it when queued. Returns once the request is accepted."""
        if self.done:
            return
        runner.run_sync(self.stop_async(), timeout=60)

    async def stop_async(self) -> None:
        if self.done:
            return
        await self._on_loop(self._stop())

    async def _stop(self) -> None:
        if self.done or self._finishing:
            return  # ended meanwhile: nothing to stop
        if self.address is None:
            # Not listed yet: the machine sees the flag before listing (and does not list).
            self._stop_requested = True
            self._pulse()
            return
        if self.state is not None and self.state.done:
            return
        # Set while a stop is being sent (the machine then expects the host's refusals);
        # put back if the stop did not go through.
        before, self._stop_requested = self._stop_requested, True
        self._pulse()
        try:
            await self._send_stop(self.address)
        except BaseException:
            if not self.done and not self._finishing:
                self._stop_requested = before
                self._pulse()
            raise

    async def _send_stop(self, address: str) -> None:
        if self.state is JobState.RUNNING and self.node is not None:
            host = self._host or self._host_client()
            try:
                await host.stop()
                self.timings.setdefault("stop-sent", time.time())
                return
            except HostError as exc:
                log.info("host stop failed (%s); stopping on the ledger", exc)
            except RuntimeError:
                if self._finishing:
                    return  # the machine closed the client: the job is ending anyway
                raise
        if self._finishing:
            return
        if self.state is None or not self.state.done:
            try:
                await self.network.stop(address)
                self.timings.setdefault("stop-sent", time.time())
            except NetworkError:
                # Already ended meanwhile? Then there is nothing to stop.
                info = await self.network.job(address)
                if not info.state.done:
                    raise

    def extend(self, duration: str | int) -> None:
        """Add time to the job (``"30m"``, ``"1h"``; an int is seconds)."""
        runner.run_sync(self.extend_async(duration), timeout=60)

    async def extend_async(self, duration: str | int) -> None:
        try:
            seconds = duration if isinstance(duration, int) else parse_duration(duration)
        except DurationError as exc:
            raise JobFailed(str(exc), self) from None
        if isinstance(seconds, bool) or seconds <= 0:
            raise JobFailed(f"cannot extend by {duration!r}", self)
        if self.address is None or self.done:
            raise JobFailed(f"job {_short(self.address)} is not running: cannot extend it", self)
        await self._on_loop(self._extend(seconds))

    async def _extend(self, seconds: int) -> None:
        assert self.address is not None
        await self.network.extend(self.address, seconds)
        self.timeout += seconds
        self._emit("state")

    def raise_for_status(self) -> ConfidentialJob:
        """Raise if the job is done and did not succeed; return the job otherwise.

        :class:`JobStopped` (you stopped it), :class:`JobExpired`, :class:`JobLost`, else
        :class:`JobFailed` (the definition's or a reference's own error when that was it);
        the one line is ``job X <status>: <why>``.
        """
        status = self.status
        if not self.done or status == "succeeded":
            return self
        address = self.address or "(not listed)"
        if isinstance(self.error, (JobDefinitionError, SecretError)):
            raise self.error
        if status == "stopped":
            raise JobStopped(f"job {address} stopped", self)
        kind = {"expired": JobExpired, "lost": JobLost}.get(status, JobFailed)
        raise kind(f"job {address} {status}: {self.reason}", self)

    @property
    def reason(self) -> str:
        """Why the job did not succeed, in one line ("" while it runs, or once it succeeded)."""
        status = self.status
        if not self.done or status == "succeeded":
            return ""
        if self.error is not None:
            text = str(self.error).splitlines()[0] if str(self.error) else type(self.error).__name__
            return self._redactor.redact(text)
        if status == "stopped":
            return "stopped by you" if self._stop_requested else "stopped by its project"
        flow = self.result
        if status == "lost":
            if flow is None and self.state is JobState.STOPPED:
                return "ended STOPPED on the ledger without results (the host quit)"
            return "the host did not serve the job's results, so how it ended is unknown"
        if status == "expired":
            return (f"it reached its timeout ({format_duration(self.timeout)}); its ops were "
                    "cut short")
        if flow is not None:
            outcome = final_status(flow, reported=self._specific_report())
            if outcome == "validation-error":
                detail = _validation_summary(flow.errors)
                return "the host rejected the job definition" + (f": {detail}" if detail else "")
            for op in flow.op_states:
                if op.status == "failed" or op.exit_code not in (None, 0):
                    if op.exit_code is not None:
                        return f"op {op.operation_id} exited with {op.exit_code}"
                    return f"op {op.operation_id} {op.status}"
            if flow.errors:
                first = flow.errors[0]
                text = first if isinstance(first, str) else json.dumps(first)[:200]
                return f"the host says {outcome}: {self._redactor.redact(text)}"
        return f"the host says {self.host_status or 'nothing'}"

    def _specific_report(self) -> str | None:
        """The final status the host reported, when it says more than ``success`` (a host's
        flow ``success`` means its task manager finished, not that every op succeeded)."""
        reported = self._reported_status
        return None if reported == "success" else reported

    def _explain_missing(self, kind: str, key: str, names: list[str]) -> str:
        """The line of a :class:`MissingResult`: what there is, and why not more."""
        where = f"job {self.address or '(not listed)'}"
        if not self.done:
            return (f"no {kind} {key!r} yet: {where} is {self.status} ({kind}s arrive when "
                    "it ends; job.wait() waits for that)")
        have = f"its {kind}s are {', '.join(names)}" if names else f"it has no {kind}s"
        line = f"no {kind} {key!r} in {where}: {have}"
        if self.status != "succeeded":
            line += f"; the job {self.status}: {self.reason}"
        elif kind == "result" and not names:
            line += " (no op's `results` pattern matched its output)"
        return line

    # ------------------------------------------------------------------ attach

    @classmethod
    def attach(
        cls,
        address: str,
        network: Network | Settings | str | None = None,
        *,
        on_notice: Callable[[str], None] | None = None,
        wait: bool = False,
        results_timeout: float = RESULTS_TIMEOUT_S,
    ) -> ConfidentialJob:
        """Follow a job listed earlier (or in another kernel) with the same wallet.

        Streams the host's replayed ``/log`` history and then the live log, and still collects
        the private results when the job ends (inside the host's window). The real definition
        is not known here, so secret values cannot be redacted from what the host sends back.
        """
        net, owns = _open(network, on_notice=on_notice)
        job = cls(None, net, owns_network=owns, address=address, results_timeout=results_timeout)
        job.start()
        return job.wait() if wait else job

    # ------------------------------------------------------------------ the machine

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        log.info("job %s failed: %s", self.address, self._redactor.redact(text))

    def _host_client(self) -> HostClient:
        assert self.address is not None and self.node is not None
        if self._host is None:
            self._host = HostClient(
                self.network.node_url(self.node),
                self.address,
                self.network.wallet,
                retry=self._retry,
                # Looked up per call: the redactor is known only once the definition is resolved.
                redact=lambda text: self._redactor.redact(text),
            )
        return self._host

    async def _main(self) -> None:
        tasks: list[asyncio.Task[Any]] = []
        try:
            if self._attached:
                await self._attach_flow(tasks)
            else:
                await self._post_flow(tasks)
        except asyncio.CancelledError:
            # The process is exiting (the runner cancels every task): stop the job rather than
            # leave it running, and paid for, with nobody to collect its results; briefly.
            self._fail(JobFailed("the job client was shut down", self))
            await self._abandon(timeout=3)
        except NosanaError as exc:
            self._fail(exc)
            await self._abandon()
        except Exception as exc:  # a bug: keep the handle consistent, say what happened
            log.exception("job %s: unexpected error", self.address)
            detail = self._redactor.redact(str(exc).splitlines()[0] if str(exc) else "")
            self._fail(JobFailed(f"internal error: {type(exc).__name__}: {detail}", self))
            await self._abandon()
        finally:
            await self._finish(tasks)

    async def _abandon(self, timeout: float = 10) -> None:
        """After a failure: a listed job that is not done is stopped (so it does not run, and
        cost, until its timeout)."""
        if self.address is None or (self.state is not None and self.state.done):
            return
        deadline = time.monotonic() + timeout
        if self.state is JobState.RUNNING and self.node is not None:
            # Like _stop(): the host first, one bounded POST (a ledger stop on Solana is a
            # transaction, which rarely fits these budgets), then the ledger.
            try:
                host = self._host or self._host_client()
                await asyncio.wait_for(host.stop(timeout=timeout / 2), timeout / 2 + 0.5)
                self.warnings.append(f"job {self.address} was stopped after the failure")
                return
            except (NosanaError, RuntimeError, asyncio.TimeoutError) as exc:
                log.info("host stop after the failure failed (%s); stopping on the ledger", exc)
        try:
            remaining = max(0.5, deadline - time.monotonic())
            await asyncio.wait_for(self.network.stop(self.address), remaining)
            self.warnings.append(f"job {self.address} was stopped after the failure")
        except (NosanaError, asyncio.TimeoutError) as exc:
            self.warnings.append(f"could not stop job {self.address}: {exc}")

    async def _finish(self, tasks: list[asyncio.Task[Any]]) -> None:
        self._finishing = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._host is not None:
            await self._host.aclose()
        if self._owns_network:
            try:
                await self.network.aclose()
            except Exception:  # closing must not hide the outcome
                log.debug("closing the network failed", exc_info=True)
        self.phase = "done"  # the verdict is job_status()'s
        self.ended_at = self.ended_at or time.time()
        self.timings.setdefault("done", time.time())
        # Drop what is no longer needed and could hold secrets.
        self._env = None
        self._namespace = None
        self._done.set()
        self._emit("phase")
        self._emit("done")
        self._settled.set()

    # -- posting a new job ---------------------------------------------------------------

    async def _post_flow(self, tasks: list[asyncio.Task[Any]]) -> None:
        # validating: nothing leaves this machine until the definition is valid and every
        # reference resolves.
        self._set_phase("validating")
        definition = self.definition
        if definition is None:
            source = self._source
            definition = (
                parse_job_definition(source) if isinstance(source, str)
                else validate_job_definition(source)
            )
            self.definition = definition
        definition.check_resolved(env=self._env_map(), namespace=self._namespace or {})
        placeholder = definition.placeholder(send=self._send, receive=self._receive)
        market = await self._resolve_market()
        self.market = market
        self.price = market.price_per_second / 1e6
        if market.job_timeout and self.timeout > market.job_timeout:
            raise JobFailed(
                f"timeout {format_duration(self.timeout)} exceeds market {market.slug}'s "
                f"longest job ({format_duration(market.job_timeout)})",
                self,
            )
        if self._stop_requested:
            return

        self._set_phase("pinning")
        cid = await self.network.pin(placeholder)
        if self._stop_requested:
            return

        self._set_phase("listing")
        listing = await self.network.post(cid, market, self.timeout, node=self._node_ref)
        self.address = listing.job
        self.timings["listed"] = time.time()
        self._emit("state")
        self._set_phase("queued")
        tasks.append(asyncio.create_task(self._watch_ledger()))
        if self._stop_requested:
            await self._stop()

        await self._follow_job(tasks, definition=definition)

    async def _resolve_market(self) -> Market:
        ref = self._market_ref
        if ref is not None:
            return await self.network.market(ref)
        if self.network_name != "local":
            raise JobFailed(
                f"choose a market on {self.network_name} (--market or NOSANA_MARKET)", self
            )
        markets = await self.network.markets()
        if not markets:
            raise JobFailed("the local network has no market", self)
        ready = [m for m in markets if m.idle_hosts > 0]
        return (ready or markets)[0]

    def _env_map(self) -> Mapping[str, str]:
        return self._env if self._env is not None else os.environ

    # -- following a listed job ----------------------------------------------------------

    async def _attach_flow(self, tasks: list[asyncio.Task[Any]]) -> None:
        assert self.address is not None
        info = await self.network.job(self.address)
        if info.project and info.project != self.network.wallet.address:
            raise JobFailed(
                f"job {self.address} was posted by {info.project}, not by this wallet "
                f"({self.network.wallet.address}): its host will not answer us",
                self,
            )
        self._apply_ledger(info)
        try:
            self.market = await self.network.market(info.market)
        except NetworkError:
            self.market = None
        self._set_phase("queued" if info.state is JobState.QUEUED else "running")
        tasks.append(asyncio.create_task(self._watch_ledger()))
        await self._follow_job(tasks, definition=None)

    async def _follow_job(
        self, tasks: list[asyncio.Task[Any]], *, definition: JobDefinition | None
    ) -> None:
        assert self.address is not None
        # queued: until a host takes it (or it ends without running: stopped while queued).
        horizon = self.timeout + EXPIRY_MARGIN_S + 24 * 3600.0
        running = await self._until(
            lambda: self.node is not None or self._ledger_done() or self._ledger_error is not None,
            horizon,
        )
        if not running:
            raise JobFailed(f"job {self.address} was not taken by a host", self)
        if self.node is None and not self._ledger_done() and self._ledger_error is not None:
            raise JobLost(f"lost track of job {self.address}: {self._ledger_error}", self)
        if self.node is None:
            # Ended before it ran (delisted): nothing to collect.
            return
        self.timings.setdefault("running", time.time())
        self._precompute_urls(definition)
        host = self._host_client()
        log_task = asyncio.create_task(self._follow_logs(host))
        tasks.append(log_task)
        tasks.append(asyncio.create_task(self._follow_info(host)))

        if definition is not None and not self._ledger_done():
            self._set_phase("sending-definition")
            # Resolved only now; the body goes to the host and is not kept.
            resolved = definition.resolve(env=self._env_map(), namespace=self._namespace or {})
            self._redactor = resolved.redactor
            send = asyncio.create_task(host.send_definition(resolved.body, timeout=SEND_TIMEOUT_S))
            del resolved
            send.add_done_callback(lambda _task: self._pulse())

            # A job stopped or ended meanwhile makes the POST pointless: stop trying.
            def pointless() -> bool:
                return self._stop_requested or self._ledger_done() or self._info_end is not None

            await self._until(lambda: send.done() or pointless(), SEND_TIMEOUT_S + 5)
            if not send.done():
                send.cancel()
                await asyncio.gather(send, return_exceptions=True)
            if not send.cancelled():
                try:
                    send.result()  # raises the HostError of a refused definition
                    self.timings["definition-sent"] = time.time()
                except HostError:
                    # Stopped before the host took the definition: that refusal is expected.
                    if not self._stop_requested:
                        raise
        self._set_phase("running")

        # running: until the host says the flow ended, the ledger says the job ended, or the
        # job's expiry passed (the host then ends it).
        def ended() -> bool:
            expiry = self.expires_at
            return (
                self._info_end is not None
                or self._ledger_done()
                or (expiry is not None and time.time() >= expiry)
            )

        await self._until_ended(ended)
        if self._info_end is not None:
            self.timings.setdefault("end-seen", time.time())

        flow = await self._collect()
        if flow is not None:
            self._apply_result(flow)
        # The ledger's final state (the host completes the job after the window), bounded.
        await self._until(self._ledger_done, LEDGER_DONE_TIMEOUT_S)
        await self._drain_logs(log_task)

    async def _until_ended(self, ended: Callable[[], bool]) -> None:
        """Wait for ``ended()``, following extensions: the bound is re-computed from the
        current expiry on every wake-up, and the wait also wakes when the expiry is due (so
        reaching it is noticed at once). Raises if the job outlives its expiry by
        ``EXPIRY_MARGIN_S`` without the host, the ledger or the clock saying it ended."""
        fallback_start = time.time()  # only when the ledger has not shown a start time
        while not ended():
            now = time.time()
            expiry = self.expires_at or (fallback_start + self.timeout)
            remaining = expiry + EXPIRY_MARGIN_S - now
            if remaining <= 0:
                raise JobLost(
                    f"job {self.address} did not end within {EXPIRY_MARGIN_S:g} s of its "
                    "expiry",
                    self,
                )
            to_expiry = expiry - now
            await self._until(ended, min(to_expiry, remaining) if to_expiry > 0 else remaining)

    async def _collect(self) -> FlowState | None:
        """The private results (or, for send-only jobs, the public ones on IPFS).

        Polled from the moment the end is seen, inside the host's window. The window closes
        before the ledger shows the job done, so once the ledger says done the polling gets
        only a short grace (a host that quit never opens a window at all). Attaching after
        the end, that grace bounds the polls; an answer under way still gets its request
        timeout.
        """
        if not self._receive:
            return await self._public_result()
        host = self._host_client()
        self._set_phase("collecting-results")
        late = self._info_end is None and self._ledger_done()
        timeout = LATE_RESULTS_TIMEOUT_S if late else self._results_timeout
        fetch = asyncio.create_task(host.results(timeout=timeout))
        fetch.add_done_callback(lambda _task: self._pulse())
        try:
            await self._until(lambda: fetch.done() or self._ledger_done(), timeout + 1)
            if not fetch.done():
                # Late, the GET's own bound already is the short grace: what runs past it is
                # an answer under way (a long result on a busy machine), given its request
                # timeout. Otherwise the ledger's end cuts the polling short.
                grace = timeout + host.request_timeout if late else LATE_RESULTS_TIMEOUT_S
                await asyncio.wait({fetch}, timeout=grace)
            if not fetch.done():
                fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)
                raise HostError(
                    host.base_url,
                    f"GET /job/{self.address}/results",
                    f"the job ended ({self.state}) without the host serving its results",
                    gave_up=True,
                )
            flow = fetch.result()
        except HostError as exc:
            if self._stop_requested or self.state is JobState.STOPPED:
                self.warnings.append(f"no results: {exc}")
                return None
            raise
        finally:
            if not fetch.done():
                fetch.cancel()
        self.timings["results"] = time.time()
        return flow

    async def _public_result(self) -> FlowState | None:
        """Send-only jobs: the host pins the full result publicly; read it from IPFS."""
        await self._until(
            lambda: self._ledger_done() and bool(self.ledger and self.ledger.ipfs_result),
            LEDGER_DONE_TIMEOUT_S + self._results_timeout,
        )
        info = self.ledger
        fetch: Callable[[str], Awaitable[Any]] | None = getattr(self.network, "fetch", None)
        if info is None or not info.ipfs_result or fetch is None:
            self.warnings.append("the public result could not be read")
            return None
        document = await fetch(info.ipfs_result)
        try:
            flow = FlowState.model_validate(document)
        except ValueError:
            raise JobFailed("the public result is not a flow state", self) from None
        self.timings["results"] = time.time()
        return flow

    def _apply_result(self, flow: FlowState) -> None:
        redact = self._redactor.redact
        if self._redactor:
            flow = FlowState.model_validate(_redact_tree(flow.to_wire(), redact))
        self.result = flow
        ops: dict[str, OpResult] = {}
        merged: dict[str, Any] = {}
        owners: dict[str, list[str]] = {}
        for op in flow.op_states:
            decoded = {name: _decode(value) for name, value in (op.results or {}).items()}
            ops[op.operation_id] = OpResult(
                op_id=op.operation_id,
                host_status=op.status,
                exit_code=op.exit_code,
                logs=[self._op_line(op.operation_id, entry) for entry in op.logs],
                results=decoded,
                ended_by=_op_ended_by(op, self._stop_requested),
                ran=op.start_time is not None or op.status == "running",
            )
            for name in decoded:
                owners.setdefault(name, []).append(op.operation_id)
        for op_id, op_result in ops.items():
            for name, value in op_result.results.items():
                key = name if len(owners[name]) == 1 else f"{op_id}.{name}"
                merged[key] = value
        self.ops = Results(ops, kind="op", explain=self._explain_missing)
        self.results = Results(merged, explain=self._explain_missing)
        if flow.secrets:
            self._set_urls(_urls_from_secrets(flow.secrets, self.address or ""))

    @staticmethod
    def _op_line(op_id: str, entry: OpLog) -> LogLine:
        stream = entry.type if entry.type in ("stdout", "stderr") else "stderr"
        return LogLine(op_id, stream, _strip_newline(entry.log), _timestamp_s(entry.timestamp))

    # -- ledger --------------------------------------------------------------------------

    def _ledger_done(self) -> bool:
        return self.state is not None and self.state.done

    def _apply_ledger(self, info: JobInfo) -> None:
        self.ledger = info
        self.state = info.state
        if info.node and info.node != SYSTEM_ADDRESS and info.state is not JobState.QUEUED:
            self.node = info.node
        if info.timeout:
            self.timeout = info.timeout
        if info.price:
            self.price = info.price / 1e6
        if info.time_start and self.started_at is None:
            # The ledger has whole seconds; our own clock is finer when we saw it happen.
            seen = time.time()
            self.started_at = seen if seen - info.time_start < 2 else float(info.time_start)
        if info.state.done and self.ended_at is None and info.time_end:
            seen = time.time()
            self.ended_at = seen if seen - info.time_end < 2 else float(info.time_end)

    async def _watch_ledger(self) -> None:
        assert self.address is not None
        backoff = self._retry.backoff()
        last: JobInfo | None = None
        while True:
            try:
                async for info in self.network.watch(self.address):
                    # A new watch() yields the current state first: only a change is progress
                    # (else watch, fail, watch again would never run out of retries).
                    if info == last:
                        continue
                    last = info
                    backoff.reset()
                    self._apply_ledger(info)
                    self._emit("state")
                return
            except NetworkError as exc:
                if not await backoff.wait():
                    self._ledger_error = str(exc)
                    self.warnings.append(f"stopped following the ledger: {exc}")
                    self._pulse()
                    return

    # -- host streams --------------------------------------------------------------------

    def _stream_retry(self) -> Backoff:
        """How long a dead host stream is retried: slowly, for as long as the job can live
        (the machine cancels the followers once the job is done). Pause with
        :meth:`_resume`, which moves the bound along with :meth:`extend`."""
        return Retry(first=1.0, cap=5.0, attempts=100_000, total=60.0).backoff(
            self._stream_lifetime(0.0)
        )

    def _stream_lifetime(self, elapsed: float) -> float:
        """A stream retry loop's total bound, ``elapsed`` seconds after it began: until the
        job's current expiry plus ``EXPIRY_MARGIN_S`` (at least 60 s in all)."""
        expiry = self.expires_at or (time.time() + self.timeout)
        return max(60.0, elapsed + expiry + EXPIRY_MARGIN_S - time.time())

    async def _resume(self, backoff: Backoff) -> bool:
        """``backoff.wait()`` with the bound re-computed from the job's current expiry."""
        backoff.total = self._stream_lifetime(backoff.elapsed)
        return await backoff.wait()

    async def _follow_info(self, host: HostClient) -> None:
        """Follow ``/info`` (status, URLs, ``endTime``) until the event that has ``endTime``.

        A stream that gave up is resumed after a pause (the first failure is noted in
        :attr:`warnings`): losing ``/info`` would mean noticing the end only from the ledger,
        after the host's results window.
        """
        resume = self._stream_retry()
        while True:
            try:
                async for event in host.info(timeout=self._retry.total):
                    self._on_info(event)
                return
            except HostError as exc:
                if not exc.gave_up:
                    self.warnings.append(f"stopped following /info: {exc}")
                    self._pulse()
                    return
                if not any(w.startswith("/info interrupted") for w in self.warnings):
                    self.warnings.append(f"/info interrupted (resuming): {exc}")
                if not await self._resume(resume):
                    self._pulse()
                    return

    def _on_info(self, event: InfoEvent) -> None:
        self._flow_status = event.status
        urls = _urls_from_secrets(event.secrets, self.address or "")
        if urls:
            self._set_urls(urls)
        if event.end_time is not None:
            self._reported_status = event.status
            self._info_end = event
            self.timings.setdefault("end-seen", time.time())
        self._emit("state")

    async def _follow_logs(self, host: HostClient) -> None:
        """Follow ``/log`` until cancelled; resumed from the cursor after the client gave up."""
        resume = self._stream_retry()
        while True:
            try:
                async for entry in host.logs(since=host.log_cursor):
                    line = self._log_line(entry)
                    self._logs.append(line)
                    if line.stream != "node":
                        self._container_lines += 1
                    self._last_log_at = time.monotonic()
                    self._emit("log", line)
            except HostError as exc:
                if not exc.gave_up:
                    self.warnings.append(f"stopped following /log: {exc}")
                    self._pulse()
                    return
                if not any(w.startswith("/log interrupted") for w in self.warnings):
                    self.warnings.append(f"/log interrupted (resuming): {exc}")
                if not await self._resume(resume):
                    self._pulse()
                    return

    def _log_line(self, entry: NodeLogEntry) -> LogLine:
        payload = entry.payload if isinstance(entry.payload, Mapping) else {}
        op_id = payload.get("opId") or payload.get("op_id") or payload.get("operationId")
        text = self._redactor.redact(_strip_newline(entry.log))
        stamp = entry.timestamp / 1000.0 if entry.timestamp else time.time()
        if entry.type == "log":
            stream = payload.get("stream") or payload.get("type")
            stream = stream if stream in ("stdout", "stderr") else "stdout"
        else:
            stream = "node"
        return LogLine(op_id if isinstance(op_id, str) else None, stream, text, stamp)

    async def _drain_logs(self, log_task: asyncio.Task[Any] | None) -> None:
        """Let the ``/log`` stream catch up before it is closed.

        Caught up means: connected (not between reconnects), every container line the
        results hold has arrived, and nothing new for ``LOG_IDLE_S`` (the host's closing
        progress lines). A replay that is still delivering lines keeps the drain going, so
        attaching to a long finished job gets every line; silence for ``LOG_STALL_S`` or
        ``LOG_DRAIN_MAX_S`` in all ends it.
        """
        host = self._host
        if host is None or log_task is None:
            return
        flow = self.result
        expected = 0
        if flow is not None:
            expected = sum(
                1 for op in flow.op_states for entry in op.logs
                if entry.type in ("stdout", "stderr")
            )
        start = time.monotonic()
        while not log_task.done():
            now = time.monotonic()
            received = self._container_lines
            idle = now - max(self._last_log_at, start)
            if host.log_connected and received >= expected and idle >= LOG_IDLE_S:
                return
            if idle >= LOG_STALL_S or now - start >= LOG_DRAIN_MAX_S:
                return
            await asyncio.sleep(max(0.02, min(0.1, LOG_IDLE_S - idle)))

    # -- URLs ----------------------------------------------------------------------------

    def _precompute_urls(self, definition: JobDefinition | None) -> None:
        """Public service URLs are known before the job runs, where the network has a domain."""
        domain = self.network.service_domain()
        if definition is None or domain is None or self.address is None:
            return
        urls = [
            ServiceUrl(
                url=service_url(service.expose_id, domain),
                port=service.port,
                op_id=service.op_id,
                private=False,
                expose_id=service.expose_id,
            )
            for service in exposed_services(definition.to_dict(), self.address)
        ]
        if urls:
            self._set_urls(urls)

    def _set_urls(self, urls: list[ServiceUrl]) -> None:
        merged = {url.expose_id or url.url: url for url in self.urls}
        for url in urls:
            merged[url.expose_id or url.url] = url
        new = list(merged.values())
        if new != self.urls:
            self.urls = new
            self._emit("urls")


# --------------------------------------------------------------------------- entry points


def _open(
    network: Network | Settings | str | None,
    *,
    settings: Settings | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> tuple[Network, bool]:
    """The network to use, and whether we opened it (and so must close it)."""
    if isinstance(network, Network):
        return network, False
    from .network import open_network

    if isinstance(network, Settings):
        chosen = network
    else:
        chosen = settings or Settings.from_env()
        if isinstance(network, str):
            chosen = chosen.with_overrides(network=network)
    return open_network(chosen, on_notice=on_notice), True


def run_confidential(
    definition: str | dict[str, Any] | JobDefinition,
    *,
    market: str | None = None,
    timeout: str | int | None = None,
    network: str | Network | None = None,
    node: str | None = None,
    send: bool = True,
    receive: bool = True,
    wait: bool = True,
    env: Mapping[str, str] | None = None,
    namespace: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> ConfidentialJob:
    """Run a confidential Nosana job; returns its handle (done when ``wait`` is true).

    ``definition``: cell text (JSON with comments), parsed JSON, or a :class:`JobDefinition`.
    ``timeout``: ``"30m"``, ``"2h"``, or seconds as an int (default: the settings', 30 min).
    ``network``: ``"local"`` (default: the embedded devnode), ``"devnet"``, ``"mainnet"``, or
    a :class:`Network`. ``env`` (default ``os.environ``) and ``namespace`` resolve
    ``${env:…}``/``${var:…}`` just before the definition is sent to the host.
    ``send``/``receive`` select the placeholder variant (both: the CLI's; see
    :meth:`JobDefinition.placeholder`). Failures do not raise here: check ``job.ok`` or call
    ``job.raise_for_status()``.
    """
    base = settings or Settings.from_env()
    if market is not None:
        base = base.with_overrides(market=market)
    if timeout is not None:
        try:
            seconds = timeout if isinstance(timeout, int) else parse_duration(timeout)
        except DurationError as exc:
            raise JobFailed(f"timeout: {exc}") from None
        base = base.with_overrides(timeout=seconds)
    net, owns = _open(network, settings=base, on_notice=on_notice)
    parsed: JobDefinition | None = None
    source: str | dict[str, Any] | None = None
    if isinstance(definition, JobDefinition):
        parsed = definition
    else:
        source = definition
    job = ConfidentialJob(
        parsed,
        net,
        market=base.market,
        timeout=base.timeout,
        node=node,
        send=send,
        receive=receive,
        env=env,
        namespace=namespace,
        owns_network=owns,
        source=source,
    )
    job.start()
    if wait:
        job.wait()
    return job
