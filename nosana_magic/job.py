"""``ConfidentialJob``: the handle of one confidential job; ``run_confidential()``.

The handle is what a cell returns and what a user reads: the job's live state, its logs,
results and service URLs, and what can be done to it (:meth:`~ConfidentialJob.wait`,
:meth:`~ConfidentialJob.stop`, :meth:`~ConfidentialJob.extend`, each with an ``…_async``
twin). Its state is a :class:`~nosana_magic.record.JobRecord`: the job's
:class:`~nosana_magic.machine.JobMachine` does the I/O on the package's private loop and
writes what it learns there, through the record's handful of ``_set_…`` methods.

:attr:`ConfidentialJob.status` is the one word the package says about the job everywhere
(view, summary, repr, ``%nosana jobs``, errors): the live phase (``stopping`` once a stop
was asked for) and, once done, the verdict worked out by :func:`job_status` from what the
host, the ledger and the machine saw: ``succeeded``, ``failed``, ``stopped`` (by you),
``expired`` (its timeout), ``lost`` (the host or the ledger quit or stopped answering). The
host's own word for the flow stays in :attr:`ConfidentialJob.host_status`.

The handle's attributes may be read from any thread. Reprs and errors name addresses,
statuses and op ids only; every host text in the handle was redacted by the machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import html
import sys
import threading
import time
import warnings as _warnings
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar, get_args

from . import runner
from .errors import (
    JobExpired,
    JobFailed,
    JobInterrupted,
    JobLost,
    JobNotFound,
    JobStopped,
    MissingResult,
)
from .jobdef import JobDefinition, JobDefinitionError
from .machine import RESULTS_TIMEOUT_S, JobMachine, Private
from .network.base import Network
from .outcome import FINAL_STATUSES, Failure, OpResult, Results, first_line
from .protocol import DurationError, format_duration, parse_duration, short_address
from .record import JobEvent, JobRecord
from .results import FlowState, LogLine
from .secrets import SecretError
from .settings import Settings
from .store import Store, StoreError, open_store
from .transport import Retry

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
    "Private",
    "Results",
    "find_job",
    "job_status",
    "jobs",
    "run_confidential",
    "stop_line",
]

T = TypeVar("T")

#: How long a stop is waited for: a Ctrl-C does not cancel it, and it goes on after that.
STOP_WAIT_S = 60.0
#: How long, once a stop after Ctrl-C was accepted, the end of the job is waited for, so
#: that what is said next is final: a host stops containers as ``docker stop`` does (10 s
#: before a program that ignores SIGTERM is killed, docs/protocol.md §9), then hands out the
#: results.
END_WAIT_S = 30.0

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


def stop_line(job: ConfidentialJob) -> str:
    """What is said once a stop was accepted and the (bounded) wait for the end is over
    (after Ctrl-C, ``%nosana stop``): how the job ended, or that it is still ending."""
    if job.done:
        return f"job {job.address or '(not listed)'} {job.status}"
    return (f"job {job.address or '(not listed)'} stopping: the stop was accepted, the job has "
            "not ended yet (job.wait() waits for the end)")


def job_status(job: ConfidentialJob) -> str:
    """The one word the package says about ``job`` (see :func:`~nosana_magic.outcome.verdict`).

    Nothing here is stored: the view, the summary, the repr, ``%nosana`` and
    :meth:`ConfidentialJob.raise_for_status` all read this (as :attr:`~JobRecord.status`).
    """
    return job.status


# --------------------------------------------------------------------------- the handle


class ConfidentialJob(JobRecord):
    """One confidential job: its live state, its logs and results, and what can be done to it.

    Made by :func:`run_confidential` or :meth:`attach`. The attributes are snapshots that may
    be read from any thread; the job's machine changes them on the package's loop thread
    (they are the job's :class:`~nosana_magic.record.JobRecord`).

    One :class:`concurrent.futures.Future`, :attr:`future`, is resolved when the job is
    done: :meth:`wait`, :meth:`wait_async` and :meth:`add_done_callback` wait on it. The
    handle is not itself a Future: ``done`` is a property (``if job.done:`` must not be a
    bound method, always true) and ``result`` is, for one more release, the old name of
    :attr:`flow`.

    Attributes:

    address       the job's address on the ledger (``None`` until it is listed)
    status        its one word: the phase, then succeeded, failed, stopped, expired or lost
    ok            True once the job is done and succeeded
    done          True once the machine is done with the job (its status is final)
    reason        why the job did not succeed, in one line ("" otherwise)
    phase         where the machine is, ``validating`` … ``done`` (:attr:`status` is the verdict)
    results       each ``results`` name's value, its last match (``.all(name)``: every match)
    matches       each ``results`` name's every match, ``[whole match, group 1, …]`` per line
    ops           each op's :class:`OpResult` (status, exit code, logs, results) by op id
    urls          the services the job exposes (:class:`~nosana_magic.results.ServiceUrl`)
    logs          every line of the job's log so far (:class:`LogLine`, redacted)
    log_warnings  why the log may lack lines (a host keeps 24,999 per op), one line each
    stdout        the ops' standard output, one line per entry (once the results are in)
    stderr        the ops' standard error, one line per entry (once the results are in)
    node_logs     the host's own progress lines
    flow          the host's raw results (:class:`~nosana_magic.results.FlowState`)
    result        deprecated name of ``flow`` (it goes in the next release)
    host_status   the host's own word for the flow (raw: ``success`` after a failed op)
    error         the error that ended the job, if one did
    warnings      problems that did not end the job, one line each
    network       the :class:`~nosana_magic.network.base.Network` the job runs on
    network_name  its name: ``local``, ``devnet`` or ``mainnet``
    definition    the job definition (``None`` for a job followed with :meth:`attach`)
    params        its parameters, for a job of a sweep (``${param:NAME}``), else ``None``
    placeholder   the CID of the public placeholder pinned for it
    private       what is kept private: ``both``, ``input`` or ``results``
    market        the market the job is listed on
    node          the address of the host that runs it
    state         the ledger's word for it (``QUEUED``, ``RUNNING``, ``COMPLETED``, ``STOPPED``)
    ledger        the ledger's last record of it
    price         NOS per second
    cost          NOS: what it cost once done, else the most it can cost
    cost_usd      the same in USD when credits pay (else None)
    timeout       its timeout in seconds (extensions included)
    started_at    Unix time the host started it
    ended_at      Unix time it ended
    elapsed       seconds since the host started it (until it ended)
    expires_at    Unix time its timeout is reached
    timings       Unix times of its milestones (``listed``, ``running``, ``results``, …)
    future        the Future resolved (to the job) when it is done
    """

    def __init__(
        self,
        definition: JobDefinition | None,
        network: Network,
        *,
        market: str | None = None,
        timeout: int = 1800,
        node: str | None = None,
        private: Private = "both",
        env: Mapping[str, str] | None = None,
        namespace: Mapping[str, Any] | None = None,
        owns_network: bool = False,
        source: str | dict[str, Any] | None = None,
        address: str | None = None,
        results_timeout: float | None = None,
        retry: Retry | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        _check_private(private)
        super().__init__(network, timeout=timeout, address=address, params=params)
        attach = address is not None and definition is None and source is None
        self._machine = JobMachine(
            self, network, definition=definition, source=source, attach=attach,
            market=market, node=node, private=private, env=env, namespace=namespace,
            owns_network=owns_network, retry=retry or Retry(), params=params,
            results_timeout=RESULTS_TIMEOUT_S if results_timeout is None else results_timeout,
        )

    # ------------------------------------------------------------------ derived state

    @property
    def definition(self) -> JobDefinition | None:
        """The job definition (parsed on the loop; ``None`` for an attached job)."""
        return self._machine.definition

    @property
    def private(self) -> Private:
        """What the job keeps private: ``both``, ``input`` or ``results``."""
        return self._machine.private

    @property
    def result(self) -> FlowState | None:
        """Deprecated: the host's raw results are :attr:`flow` (``results`` holds their
        values). ``result`` goes in the next release."""
        _warnings.warn("ConfidentialJob.result is deprecated: use .flow (the host's raw "
                       "results; .results holds the values)", DeprecationWarning, stacklevel=2)
        return self.flow

    # ------------------------------------------------------------------ reprs

    def __repr__(self) -> str:
        parts = [f"<ConfidentialJob {self._short()}"]
        if self.market is not None:
            parts.append(self.market.slug)
        parts.append(self.status)
        if self.node:
            parts.append(f"node {short_address(self.node)}")
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
        usd = self.cost_usd
        if usd is not None and self.market is not None:
            from .network.markets import format_usd

            money = (f"{format_usd(self.market.usd_per_hour_with_fee or 0)}/h in credits, "
                     f"{'cost' if self.done else 'at most'} {format_usd(usd)}")
            rows.append(("price", html.escape(money)))
        elif self.price is not None:
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

    def _public_error(self, error: BaseException) -> BaseException:
        if isinstance(error, Failure):
            return (JobLost if error.lost else JobFailed)(str(error), self)
        return error

    # ------------------------------------------------------------------ starting

    def start(self) -> ConfidentialJob:
        """Run the job's machine on the package's loop (returns at once)."""
        if self._machine.started or self.done:
            return self
        _register(self)
        self._machine.start()
        return self

    def record_in(self, store: Store | Settings | None, **placement: Any) -> ConfidentialJob:
        """Record the job in the local store as it goes (before :meth:`start`; the entry
        points do it): ``store``, or the one of these settings. ``placement``: its
        ``sweep_id`` and ``sweep_index``; ``take_over=True`` for a job followed again."""
        from .recording import record_job

        try:
            opened = store if isinstance(store, Store) else open_store(store)
        except StoreError as exc:
            self._warn(f"not recorded in the local store: {exc}")
            return self
        record_job(self, opened, definition=lambda: self.definition, **placement)
        return self

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._machine.started:
            coro.close()
            raise JobFailed(f"job {self._short()} was never started", self)
        return await self._machine.call(coro)

    # ------------------------------------------------------------------ waiting, stop, extend

    @property
    def future(self) -> concurrent.futures.Future[ConfidentialJob]:
        """The :class:`concurrent.futures.Future` of the job: resolved, to the job itself,
        once it is done and every listener heard so. For ``concurrent.futures.wait`` or
        ``as_completed`` over a sweep, or ``asyncio.wrap_future``. It cannot be cancelled
        (:meth:`stop` ends a job), and its result never raises: check :attr:`ok`."""
        return self._future

    def add_done_callback(self, fn: Callable[[ConfidentialJob], object]) -> None:
        """Call ``fn(job)`` once the job is done: on the package's loop thread, or at once
        (on this thread) if it is done already. What ``fn`` raises is logged."""
        self._future.add_done_callback(lambda _future: fn(self))

    def wait(self, timeout: float | None = None, *, each: Callable[[], object] | None = None,
             until: Callable[[], bool] | None = None) -> ConfidentialJob:
        """Block until the job is done, or ``until()`` holds; returns the job (check
        :attr:`ok`).

        ``timeout`` (seconds): raise :class:`TimeoutError` if neither happened by then.
        ``each()`` is called on this thread about every 0.1 s (the text view prints there).
        Ctrl-C while waiting stops the job (the host ends it; when still queued, it is
        delisted), waits up to ``END_WAIT_S`` for its end, and raises
        :class:`JobInterrupted`, one line saying how it ended (:meth:`stop_after_interrupt`).
        """
        if runner.in_runner_thread():
            raise runner.RunnerError("wait() on the loop thread: use await job.wait_async()")
        try:
            done = runner.wait(self._future, timeout, each=each, until=until)
        except KeyboardInterrupt:
            raise self.stop_after_interrupt(each=each) from None
        if not done and (until is None or not until()):
            raise TimeoutError(f"job {self._short()} still {self.phase} after {timeout:g} s")
        return self

    async def wait_async(self, timeout: float | None = None) -> ConfidentialJob:
        """``await`` the end of the job (from any event loop); cancelling the wait leaves
        the job alone."""
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._future)), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"job {self._short()} still {self.phase} after {timeout:g} s"
            ) from None
        return self

    def stop(self) -> None:
        """End the job: the host stops it when running (results stay collectable), the
        ledger delists it when queued. Returns once the request is accepted.

        A Ctrl-C meanwhile does not cancel the stop (that would leave a paid job running):
        it is noted on stderr and the wait goes on, up to ``STOP_WAIT_S`` (then
        :class:`TimeoutError`; the request goes on). A refused stop raises its error.
        """
        if self.done:
            return
        future = self._stop_shielded()
        if not future.done():
            raise TimeoutError(f"job {self._short()}: {self._stop_problem(future)}")
        future.result()

    def stop_after_interrupt(self, *, each: Callable[[], object] | None = None
                             ) -> JobInterrupted:
        """Ctrl-C while waiting on the job: stop it, wait (bounded) for its end, and return
        the :class:`JobInterrupted` to raise, whose one line says what happened.

        The stop is not cancelled by a further Ctrl-C (see :meth:`stop`). Once it is
        accepted, the end of the job is waited for, up to ``END_WAIT_S`` (a further Ctrl-C
        ends that wait, not the stop), so the line is the final word where it can be. A job
        already stopping is not stopped again: the line says where it is.
        """
        address = self.address or "(not listed)"
        if self.done:
            return JobInterrupted(f"job {address} already {self.status}", self)
        if not self._stop_requested:
            problem = self._stop_problem(self._stop_shielded(each))
            if problem is not None:
                return JobInterrupted(f"job {address}: stop requested, still running: {problem}",
                                      self)
            with contextlib.suppress(KeyboardInterrupt):
                runner.wait(self._future, END_WAIT_S, each=each)
        return JobInterrupted(stop_line(self), self, sent=True)

    def _stop_shielded(self, each: Callable[[], object] | None = None,
                       ) -> concurrent.futures.Future[None]:
        """The stop, sent on the loop and waited for through Ctrl-C (bounded)."""
        def still_stopping() -> None:
            print(f"job {self._short()}: still stopping it (a stop is not cancelled; waiting "
                  f"up to {STOP_WAIT_S:g} s)", file=sys.stderr)

        return runner.shielded(self.stop_async(), STOP_WAIT_S, each=each,
                               interrupted=still_stopping)

    def _stop_problem(self, future: concurrent.futures.Future[None]) -> str | None:
        """What kept a stop from going through (``None``: it went through)."""
        if not future.done():
            return f"no answer within {STOP_WAIT_S:g} s (the stop request goes on)"
        if future.cancelled():
            return "the stop request was cancelled"
        error = future.exception()
        return None if error is None else self._redactor.redact(first_line(error))

    async def stop_async(self) -> None:
        """``await`` :meth:`stop` (from any event loop)."""
        if self.done:
            return
        await self._on_loop(self._machine.stop())

    def extend(self, duration: str | int) -> None:
        """Add time to the job (``"30m"``, ``"1h"``; an int is seconds)."""
        runner.run_sync(self.extend_async(duration), timeout=60)

    async def extend_async(self, duration: str | int) -> None:
        """``await`` :meth:`extend` (from any event loop)."""
        try:
            seconds = duration if isinstance(duration, int) else parse_duration(duration)
        except DurationError as exc:
            raise JobFailed(str(exc), self) from None
        if isinstance(seconds, bool) or seconds <= 0:
            raise JobFailed(f"cannot extend by {duration!r}", self)
        if self.address is None or self.done:
            raise JobFailed(f"job {self._short()} is not running: cannot extend it", self)
        await self._on_loop(self._machine.extend(seconds))

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

    # ------------------------------------------------------------------ attach

    @classmethod
    def attach(
        cls,
        address: str,
        network: Network | Settings | str | None = None,
        *,
        on_notice: Callable[[str], None] | None = None,
        wait: bool = False,
        results_timeout: float | None = None,
    ) -> ConfidentialJob:
        """Follow a job listed earlier (or in another kernel) with the same wallet.

        Streams the host's replayed ``/log`` history and then the live log, and still collects
        the private results when the job ends (inside the host's window). The real definition
        is not known here: the secrets redacted from what the host sends back are the values
        that the ``${env:NAME}`` references of its definition in the local store have in
        this environment (none for a job the store does not hold).
        """
        net, owns = _open(network, on_notice=on_notice)
        job = cls(None, net, owns_network=owns, address=address, results_timeout=results_timeout)
        job.record_in(network if isinstance(network, Settings) else None, take_over=True)
        job.start()
        return job.wait() if wait else job


# --------------------------------------------------------------------------- entry points


def _check_private(private: object) -> None:
    if private not in get_args(Private):
        raise JobFailed(f"private: expected 'both', 'input' or 'results', got {private!r}")


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


def _job_settings(settings: Settings | None, *, market: str | None,
                  timeout: str | int | None, pay: str | None) -> Settings:
    """``settings`` (default: from the environment) with a call's own arguments over them."""
    base = settings or Settings.from_env()
    if market is not None:
        base = base.with_overrides(market=market)
    if pay is not None:
        base = base.with_overrides(pay=pay)
    if timeout is not None:
        try:
            seconds = timeout if isinstance(timeout, int) else parse_duration(timeout)
        except DurationError as exc:
            raise JobFailed(f"timeout: {exc}") from None
        base = base.with_overrides(timeout=seconds)
    return base


def run_confidential(
    definition: str | dict[str, Any] | JobDefinition,
    *,
    market: str | None = None,
    timeout: str | int | None = None,
    network: str | Network | None = None,
    node: str | None = None,
    private: Private = "both",
    pay: str | None = None,
    wait: bool = True,
    env: Mapping[str, str] | None = None,
    namespace: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    on_notice: Callable[[str], None] | None = None,
    params: Mapping[str, Any] | None = None,
) -> ConfidentialJob:
    """Run a confidential Nosana job; returns its handle (done when ``wait`` is true).

    ``definition``: cell text (JSON with comments), parsed JSON, or a :class:`JobDefinition`.
    ``timeout``: ``"30m"``, ``"2h"``, or seconds as an int (default: the settings', 30 min).
    ``network``: ``"local"`` (default: the local network service), ``"devnet"``, ``"mainnet"``, or
    a :class:`Network`. ``private``: what is kept private, ``"both"`` (the definition and
    the results, as the Nosana CLI's confidential jobs), ``"input"`` (the host pins the
    results publicly) or ``"results"`` (the definition is pinned publicly: it must hold no
    secret). ``pay``: ``"credits"`` (the API key in ``NOSANA_API_KEY``) or ``"wallet"``
    (default: credits when an API key is set). ``env`` (default: the process environment) and
    ``namespace`` resolve ``${env:…}`` and ``${var:…}`` just before the definition is sent to
    the host; ``params`` resolve ``${param:…}`` (a sweep runs one job per parameter set:
    :func:`nosana_magic.sweep`). The job is recorded in the local store of ``settings`` as it
    goes. Failures do not raise here: check ``job.ok`` or call ``job.raise_for_status()``.
    """
    _check_private(private)
    base = _job_settings(settings, market=market, timeout=timeout, pay=pay)
    net, owns = _open(network, settings=base, on_notice=on_notice)
    parsed = definition if isinstance(definition, JobDefinition) else None
    source = definition if not isinstance(definition, JobDefinition) else None
    job = ConfidentialJob(
        parsed, net, market=base.market, timeout=base.timeout, node=node, private=private,
        env=env, namespace=namespace, owns_network=owns, source=source, params=params,
    )
    job.record_in(base)
    job.start()
    if wait:
        job.wait()
    return job
