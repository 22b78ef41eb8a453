"""``JobRecord``: what is known about one job, the state side of its handle.

The job's machine (:mod:`nosana_magic.machine`) writes it, on the package's loop thread,
through the handful of ``_set_…`` methods below; anyone reads it, from any thread. Every
write tells the listeners (:meth:`JobRecord.subscribe`) and wakes the machine's waits
(:class:`Changes`). What is said about the job is derived on each read, never stored:
:attr:`JobRecord.status` and :attr:`JobRecord.reason` come from
:func:`~nosana_magic.outcome.verdict` over one :class:`~nosana_magic.outcome.Facts`
snapshot. :class:`~nosana_magic.job.ConfidentialJob` is this record plus what can be done
to the job (wait, stop, extend) and its reprs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import HostError
from .joblog import JobLog, OpLines, Reconciled
from .network.base import JobInfo, JobState, Market, Network
from .outcome import Facts, OpResult, Phase, Results, ops_and_results, reason, verdict
from .protocol import short_address
from .results import FlowState, InfoEvent, LogLine, ServiceUrl, final_status, urls_from_secrets
from .secrets import Redactor

__all__ = ["SYSTEM_ADDRESS", "Changes", "EventKind", "JobEvent", "JobRecord"]

log = logging.getLogger(__name__)

#: The node a job shows on chain when it was stopped before any host took it.
SYSTEM_ADDRESS = "11111111111111111111111111111111"

#: ``logs``: the log was made whole from the results (it replaces the lines seen live).
EventKind = Literal["phase", "log", "logs", "urls", "state", "done"]


@dataclass(frozen=True)
class JobEvent:
    """What listeners of :meth:`JobRecord.subscribe` receive (``job`` is the handle)."""

    kind: EventKind
    job: JobRecord
    #: For ``"log"``: the lines that arrived together, in order.
    lines: Sequence[LogLine] = ()


class Changes:
    """The machine's change notification, on its loop: :meth:`wait_for` re-checks its
    condition each time :meth:`notify` is called (every write to the record, a stop asked
    for, a request done), and gives up at its timeout. Loop thread only."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        """Wake every waiter (each re-checks its condition)."""
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Until ``predicate()`` holds (True) or ``timeout`` seconds passed (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                self._waiters.discard(waiter)
        return True


def _says_lost(error: BaseException | None) -> bool:
    """The error says the host or the ledger stopped answering: it is marked ``lost``
    (``JobLost``, a machine's :class:`~nosana_magic.outcome.Failure`) or it is a host
    client that gave up."""
    return getattr(error, "lost", False) is True or (
        isinstance(error, HostError) and error.gave_up)


class JobRecord:
    """What is known about one job (documented on :class:`~nosana_magic.job.ConfidentialJob`)."""

    def __init__(self, network: Network, *, timeout: int, address: str | None,
                 params: Mapping[str, Any] | None = None) -> None:
        self.network = network
        self.address: str | None = address
        self.params: dict[str, Any] | None = None if params is None else dict(params)
        self.placeholder: str | None = None
        self.market: Market | None = None
        self.node: str | None = None
        self.phase: Phase = "validating"
        self.flow: FlowState | None = None
        self.ops: Results[OpResult] = Results(kind="op", explain=self._explain_missing)
        self.results: Results[Any] = Results(explain=self._explain_missing)
        self.matches: Results[list[list[str | None]]] = Results(explain=self._explain_missing)
        self.urls: list[ServiceUrl] = []
        self.price: float | None = None
        self.timeout: int = timeout
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self.ledger: JobInfo | None = None
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self._log = JobLog()
        self._listeners: list[Callable[[JobEvent], None]] = []
        self._listeners_lock = threading.Lock()
        #: The machine's facts the verdict needs: a stop was asked for (and not refused), the
        #: host's last /info event, the redactor of the resolved definition.
        self._stop_requested = False
        self._info: InfoEvent | None = None
        #: A signal other than ``/info`` said the results window is open (a ``/log`` or
        #: ``/status`` line, or the results themselves answered).
        self._window_open = False
        #: Why the log may lack lines, one line each (also in :attr:`warnings`).
        self.log_warnings: list[str] = []
        self._redactor: Redactor = Redactor.empty()
        #: What the machine's waits wait on: every write notifies it.
        self._changes = Changes()
        #: Resolved (to the handle) once the "done" event reached every listener: what every
        #: wait waits for, so a waiter woken by the end sees what the listeners made of it.
        #: Running from the start, so it cannot be cancelled.
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._future.set_running_or_notify_cancel()

    # ------------------------------------------------------------------ derived state

    @property
    def network_name(self) -> str:
        """The network's name: ``local``, ``devnet`` or ``mainnet``."""
        return self.network.name

    @property
    def state(self) -> JobState | None:
        """The ledger's state of the job (``None`` before the ledger said anything)."""
        return None if self.ledger is None else self.ledger.state

    @property
    def done(self) -> bool:
        """True once the machine is done with the job: its status is final."""
        return self.phase == "done"

    @property
    def status(self) -> str:
        """The package's one word for the job (see :func:`~nosana_magic.job.job_status`):
        the live phase (``queued``, ``running``, ``stopping``…), then ``succeeded``,
        ``failed``, ``stopped``, ``expired`` or ``lost``."""
        return verdict(self._facts())

    @property
    def ok(self) -> bool:
        """True once the job is done and succeeded."""
        return self.status == "succeeded"

    @property
    def reason(self) -> str:
        """Why the job did not succeed, in one line ("" while it runs, or once it succeeded)."""
        return reason(self._facts(), self._redactor.redact)

    @property
    def host_status(self) -> str | None:
        """The host's own status word for the flow, as it last reported it (``running``,
        ``success``, ``failed``, ``stopped``, ``waiting-for-result``…), ``None`` before a host
        said anything. Raw: a host says ``success`` after an op failed, or after a stop
        through its API; :attr:`status` is the verdict. Once a host ended the flow and
        only says ``waiting-for-result`` (its results window opened before it said more,
        docs/protocol.md §6), the word is worked out from the results as the host would have
        said it (``success``, ``failed``, ``validation-error`` …)."""
        end = self._info_end
        word = end.status if end is not None else (
            self.flow.status if self.flow is not None
            else None if self._info is None else self._info.status)
        if word == "waiting-for-result" and self.flow is not None:
            return _host_word(self.flow)
        return word

    @property
    def logs(self) -> JobLog:
        """Every line of the job's log so far, in order (redacted, without ANSI escapes): a
        read-only sequence of :class:`LogLine` (``len``, ``[i]``, ``[-5:]``, iterate).

        While the job runs: what the host's ``/log`` stream sent, container lines with their
        op when it can be known and stream ``output`` (a Nosana host does not say
        stdout or stderr). Once the results are in: made whole from each op's log in the
        results (every op line with its op and stream, what the live stream missed put
        back), or with :attr:`log_warnings` saying what may be missing.

        The newest lines of a running job are in memory, the rest in the local store, read
        back when asked for; a finished job keeps none in memory (docs/experiments.md).
        """
        return self._log

    @property
    def stdout(self) -> str:
        """The ops' standard output, one line per entry (known once the results are in: the
        live stream does not say which stream a line is on)."""
        return "\n".join(line.text for line in self._log if line.stream == "stdout")

    @property
    def stderr(self) -> str:
        """The ops' standard error, one line per entry (known once the results are in)."""
        return "\n".join(line.text for line in self._log if line.stream == "stderr")

    @property
    def node_logs(self) -> list[LogLine]:
        """The host's own progress lines ("Job definition received", …)."""
        return [line for line in self._log if line.stream == "node"]

    @property
    def cost(self) -> float | None:
        """NOS: what the job cost once done, else the most it can cost (price × timeout)."""
        if self.price is None:
            return None
        return self._charged_seconds() * self.price

    @property
    def cost_usd(self) -> float | None:
        """USD, for a job paid with credits (else ``None``): what it cost once done, else the
        most it can cost (the market's credit price × timeout)."""
        if getattr(self.network, "pays_with", "wallet") != "credits" or self.market is None:
            return None
        per_hour = self.market.usd_per_hour_with_fee
        return None if per_hour is None else self._charged_seconds() * per_hour / 3600

    def _charged_seconds(self) -> float:
        """The seconds paid for: those it ran once done, else the whole timeout."""
        info = self.ledger
        if self.done and info is not None and info.time_start and info.time_end:
            return max(0, info.time_end - info.time_start)
        if self.done and info is not None and info.time_start is None:
            return 0.0  # never ran
        return float(self.timeout)

    @property
    def elapsed(self) -> float | None:
        """Seconds since the host started the job (until it ended)."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else time.time()
        return max(0.0, end - self.started_at)

    @property
    def expires_at(self) -> float | None:
        """Unix time the job's timeout is reached (``None`` before it started)."""
        return None if self.started_at is None else self.started_at + self.timeout

    @property
    def _info_end(self) -> InfoEvent | None:
        """The host's ``/info`` event that has ``endTime`` (the flow ended), once seen."""
        info = self._info
        return info if info is not None and info.end_time is not None else None

    def _facts(self) -> Facts:
        """The record as the verdict sees it, in one snapshot."""
        error = self.error
        end = self._info_end
        return Facts(
            done=self.done, phase=self.phase, stopping=self._stop_requested, error=error,
            error_lost=_says_lost(error),
            flow=self.flow, node=self.node, state=self.state,
            reported=None if end is None else end.status, timeout=self.timeout,
        )

    def _short(self) -> str:
        return short_address(self.address) if self.address else "(not listed)"

    def _explain_missing(self, kind: str, key: str, names: list[str]) -> str:
        """The line of a :class:`~nosana_magic.outcome.MissingResult`: what there is, and
        why not more."""
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

    def _emit(self, kind: EventKind, lines: Sequence[LogLine] = ()) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        event = JobEvent(kind, self, lines)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("a job listener failed (ignored)")
        self._changes.notify()

    # ------------------------------------------------------------------ written by the machine

    def _set_phase(self, phase: Phase) -> None:
        if self.phase != phase:
            self.phase = phase
            self.timings.setdefault(phase, time.time())
            log.debug("job %s: %s", self.address, phase)
            self._emit("phase")

    def _set_placeholder(self, cid: str) -> None:
        self.placeholder = cid

    def _set_market(self, market: Market | None) -> None:
        self.market = market
        if market is not None:
            self.price = market.price_per_second / 1e6

    def _listed(self, address: str) -> None:
        self.address = address
        self.timings["listed"] = time.time()
        self._emit("state")

    def _set_ledger(self, info: JobInfo) -> None:
        self.ledger = info
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
        self._emit("state")

    def _set_info(self, event: InfoEvent) -> None:
        """The host's ``/info``: its flow's status, service URLs and (at the end) endTime."""
        self._info = event
        urls = urls_from_secrets(event.secrets, self.address or "")
        if urls:
            self._set_urls(urls)
        if event.end_time is not None:
            self._mark("end-seen")
        self._emit("state")

    def _add_logs(self, lines: list[LogLine]) -> None:
        self._log.extend(lines)
        self._emit("log", lines)

    def _set_logs(self, start: int, log: Reconciled) -> None:
        """The log from line ``start`` on made whole from the results
        (:func:`~nosana_magic.joblog.reconcile`). The ops' lines are in the job's log from
        then on, so the results keep them no more (each op's are read from the log)."""
        self._log.replace_from(start, log.lines)
        self.ops = Results({op_id: dataclasses.replace(op, logs=OpLines(self._log, op_id))
                            for op_id, op in self.ops.items()},
                           kind="op", explain=self._explain_missing)
        if self.flow is not None:  # (the host's own lines stay: they say why an op failed)
            for state in self.flow.op_states:
                state.logs = [entry for entry in state.logs
                              if entry.type not in ("stdout", "stderr")]
        for warning in log.missing:
            self.log_warnings.append(warning)
            self._warn(warning)
        self._emit("logs", log.lines)
        self._emit("state")

    def _log_gap(self, warning: str) -> None:
        """Lines may be missing from the log (the results may still bring them back)."""
        self.log_warnings.append(warning)
        self._warn(warning)

    def _set_window_open(self) -> None:
        """A signal other than ``/info`` says the host opened the results window."""
        if not self._window_open:
            self._window_open = True
            self._mark("window-seen")
            self._changes.notify()

    def _set_urls(self, urls: list[ServiceUrl]) -> None:
        merged = {url.expose_id or url.url: url for url in self.urls}
        for url in urls:
            merged[url.expose_id or url.url] = url
        new = list(merged.values())
        if new != self.urls:
            self.urls = new
            self._emit("urls")

    def _set_flow(self, flow: FlowState,
                  groups: dict[str, dict[str, int]] | None = None) -> None:
        """The host's results (already redacted): each op's outcome and every value.
        ``groups``: each op's results regexes' group counts, where the definition is known."""
        self.flow = flow
        outcome = ops_and_results(flow, stopped_by_you=self._stop_requested, groups=groups)
        self.ops = Results(outcome.ops, kind="op", explain=self._explain_missing)
        self.results = Results(outcome.results, explain=self._explain_missing,
                               every=outcome.every)
        self.matches = Results(outcome.matches, explain=self._explain_missing)
        for problem in outcome.problems:
            self._warn(problem)
        if flow.secrets:
            self._set_urls(urls_from_secrets(flow.secrets, self.address or ""))

    def _set_stop_requested(self, requested: bool) -> None:
        self._stop_requested = requested
        self._changes.notify()

    def _set_redactor(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def _extended(self, seconds: int) -> None:
        self.timeout += seconds
        self._emit("state")

    def _mark(self, milestone: str) -> None:
        self.timings.setdefault(milestone, time.time())

    def _warn(self, warning: str) -> None:
        self.warnings.append(warning)

    def _fail(self, error: BaseException) -> None:
        """The error that ends the job (the first one counts)."""
        if self.error is None:
            self.error = self._public_error(error)

    def _public_error(self, error: BaseException) -> BaseException:
        """How the handle words an error of the machine (the handle's errors live above)."""
        return error

    def _settle(self) -> None:
        self.phase = "done"  # the verdict is derived
        self.ended_at = self.ended_at or time.time()
        self.timings.setdefault("done", time.time())
        self._log.done()
        self._emit("phase")
        self._emit("done")
        self._future.set_result(self)


def _host_word(flow: FlowState) -> str:
    """The end status a host gives a flow, worked out from its results (docs/protocol.md §9):
    ``success`` once every op ran, whatever their exit codes, and on expiry or a stop through
    its API; ``failed`` for its own errors, which show as an op it could not start;
    ``stopped``, ``validation-error`` … as the op states and errors say."""
    word = final_status(flow)
    if word not in ("failed", "expired"):
        return word
    could_not_start = any(op.status == "failed" and op.start_time is None
                          for op in flow.op_states)
    return "failed" if could_not_start else "success"
