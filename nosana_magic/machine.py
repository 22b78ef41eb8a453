"""The state machine of one confidential job: the I/O behind its handle.

The machine (docs/protocol.md §2, without the CLI's faults of docs/protocol.md §23)::

    validating ─▶ (every ${…} reference resolves?) ─▶ pinning (the public placeholder)
      ─▶ listing ─▶ queued ─▶ sending-definition (the real one, resolved only now)
      ─▶ running (/info + /log followed) ─▶ collecting-results (inside the host's window)
      ─▶ done

It runs on the package's private loop (``runner``) and owns every call to the network and
the host: the post and attach flows, the ledger watcher, the ``/info`` and ``/log``
followers, sending the definition, collecting the results, draining the log and finishing.
What it learns it writes to the job's record (:class:`~nosana_magic.record.JobRecord`, the
state side of the handle) through the record's handful of ``_set_…`` methods; the record
decides what to say about it. The machine keeps only its I/O: the host client, its tasks,
the environment and namespace until the definition is sent.

Nothing secret is kept longer than needed: the resolved body goes to the host and is
dropped; every host text passes through the redactor; the environment and namespace are
dropped when the job is done.

Reaction times on the local network are set by the ledger poll (0.1 s) and the first retry
pauses (0.1 s): no multi-second polling anywhere, so a host's "ready" and "ended" are acted
on within about 100 ms.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal, TypeVar

from . import runner
from .errors import NosanaError, OutcomeUnknown
from .host import HostClient, HostError
from .jobdef import JobDefinition, parse_job_definition, validate_job_definition
from .joblog import reconcile
from .network.base import JobInfo, JobState, Market, Network, NetworkError
from .outcome import Failure, first_line, redact_flow, result_groups
from .protocol import (
    EXPIRY_MARGIN_S,
    exposed_services,
    format_duration,
    service_url,
    short_address,
)
from .record import Changes, JobRecord
from .results import FlowState, LiveEntry, LogLine, ServiceUrl, host_lines
from .settings import reference_env
from .signer import Signer
from .transport import Backoff, Retry

__all__ = ["JobMachine", "Private"]

log = logging.getLogger(__name__)

T = TypeVar("T")

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
#: ``/info`` attempts failed in a row before the results are also polled for (bounded by
#: the job's life), every this many seconds: the end is then not missed with ``/info``.
INFO_FAILURES_BEFORE_PROBE = 3
RESULTS_PROBE_PAUSE_S = 2.0
#: Log drain at the end: caught up once every line arrived and this much silence followed ...
LOG_IDLE_S = 0.2
#: ... or, with lines missing (the results bring them back), after this much silence ...
LOG_MISSING_IDLE_S = 1.0
#: ... and given up after this much silence (a long replay keeps the drain going) ...
LOG_STALL_S = 5.0
#: ... or after this long in all, however long the replay.
LOG_DRAIN_MAX_S = 120.0
#: Lines of the log's end reconciled with the results beyond twice the lines they hold.
LOG_TAIL_SLACK = 1_000

#: Neither the network (its ledger) nor the job's host answered for this long: contact with
#: the job is lost, and the machine gives up on it rather than wait for its expiry.
SILENCE_S = 60.0
#: How often a long wait looks for that silence.
SILENCE_CHECK_S = 5.0
#: Silent this long, a stop is tried briefly: Ctrl-C must not hang on a network that is gone.
QUIET_S = 10.0
#: ... each of its two attempts (host, then ledger) bounded by this.
QUIET_STOP_S = 3.0

#: How long a listing whose answer was lost is looked for on the ledger (and stopped).
LOST_LISTING_WAIT_S = 10.0

#: What a job keeps private (docs/protocol.md §11): ``"both"`` its definition and its results
#: (the Nosana CLI's confidential job), ``"input"`` only the definition (the host pins the
#: results publicly), ``"results"`` only the results (the definition is pinned publicly).
Private = Literal["both", "input", "results"]


class JobMachine:
    """The state machine of one job. Made by the handle, started by :meth:`start`.

    ``attach``: follow a job listed earlier (``job.address`` is known, the definition is
    not) instead of posting ``definition`` (or ``source``, parsed on the loop).
    """

    def __init__(
        self,
        job: JobRecord,
        network: Network,
        *,
        definition: JobDefinition | None,
        source: str | dict[str, Any] | None,
        attach: bool,
        market: str | None,
        node: str | None,
        private: Private,
        env: Mapping[str, str] | None,
        namespace: Mapping[str, Any] | None,
        owns_network: bool,
        params: Mapping[str, Any] | None = None,
        results_timeout: float,
        retry: Retry,
    ) -> None:
        self.job = job
        self.network = network
        self.definition = definition
        self.private = private
        self._source = source
        self._attach = attach
        self._market_ref = market
        self._node_ref = node
        self._env = env
        self._namespace = namespace
        self._params = params
        self._owns_network = owns_network
        self._results_timeout = results_timeout
        self._retry = retry
        self._host: HostClient | None = None
        self._signer_of_job: Signer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        #: What the machine's waits wait on: every write to the record notifies it.
        self.changes = job._changes
        #: Set once the machine is closing its clients (a stop then has nothing to do).
        self._finishing = False
        self._ledger_error: str | None = None
        #: ``time.monotonic()`` when the machine started (silence counts from there at first).
        self._started_at = time.monotonic()
        #: The results asked for while ``/info`` is down, and what they answered.
        self._probe: asyncio.Task[None] | None = None
        self._probed: FlowState | None = None
        #: A job attached to: the op ids and results group counts of the host's definition.
        self._host_shape: tuple[list[str], dict[str, dict[str, int]]] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        """Run the machine on the package's loop (returns at once)."""
        if self._task is not None:
            return
        if runner.in_runner_thread():
            self._launch()
        else:
            runner.run_sync(self._launch_async(), timeout=10)

    async def _launch_async(self) -> None:
        self._launch()

    def _launch(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._main())

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the machine's loop, from whichever loop the caller is on."""
        loop = self._loop
        assert loop is not None, "the machine was not started"
        if asyncio.get_running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    # ------------------------------------------------------------------ stop, extend

    async def stop(self) -> None:
        """End the job (returns once the host or the ledger accepted it)."""
        job = self.job
        if job.done or self._finishing:
            return  # ended meanwhile: nothing to stop
        if job.address is None:
            # Not listed yet: the machine sees the flag before listing (and does not list).
            job._set_stop_requested(True)
            return
        if job.state is not None and job.state.done:
            return
        # Set while a stop is being sent (the machine then expects the host's refusals);
        # put back if the stop did not go through.
        before = job._stop_requested
        job._set_stop_requested(True)
        try:
            await self._send_stop(job.address)
        except BaseException:
            if not job.done and not self._finishing:
                job._set_stop_requested(before)
            raise

    async def _send_stop(self, address: str) -> None:
        job = self.job
        # Nothing heard for a while: try briefly, and say so (Ctrl-C returns in seconds).
        silent = silent_for(self.network, self._host, self._started_at)
        quiet = silent >= QUIET_S
        if job.state is JobState.RUNNING and job.node is not None:
            try:
                await (await self._host_client()).stop(
                    timeout=QUIET_STOP_S if quiet else 10.0)
                job._mark("stop-sent")
                return
            except (HostError, NetworkError) as exc:
                log.info("host stop failed (%s); stopping on the ledger", exc)
            except RuntimeError:
                if self._finishing:
                    return  # the machine closed the client: the job is ending anyway
                raise
        if self._finishing:
            return
        if job.state is None or not job.state.done:
            try:
                await asyncio.wait_for(self.network.stop(address),
                                       QUIET_STOP_S if quiet else None)
                job._mark("stop-sent")
            except (NetworkError, asyncio.TimeoutError):
                if quiet:
                    raise NetworkError(
                        f"the stop could not be sent: neither the {self.network.name} network "
                        f"nor the job's host has answered for {silent:.0f} s (the job may run "
                        "until its timeout)") from None
                # Already ended meanwhile? Then there is nothing to stop.
                info = await self.network.job(address)
                if not info.state.done:
                    raise

    async def extend(self, seconds: int) -> None:
        assert self.job.address is not None
        await self.network.extend(self.job.address, seconds)
        self.job._extended(seconds)

    # ------------------------------------------------------------------ the run

    async def _main(self) -> None:
        job = self.job
        try:
            if self._attach:
                await self._attach_flow()
            else:
                await self._post_flow()
        except asyncio.CancelledError:
            # The process is exiting (the runner cancels every task): stop the job rather than
            # leave it running, and paid for, with nobody to collect its results; briefly.
            self._fail(Failure("the job client was shut down"))
            await self._abandon(timeout=3)
        except (NosanaError, Failure) as exc:
            self._fail(exc)
            await self._abandon()
        except Exception as exc:  # a bug: keep the handle consistent, say what happened
            log.exception("job %s: unexpected error", job.address)
            detail = self.job._redactor.redact(str(exc).splitlines()[0] if str(exc) else "")
            self._fail(Failure(f"internal error: {type(exc).__name__}: {detail}"))
            await self._abandon()
        finally:
            await self._finish()

    def _fail(self, error: BaseException) -> None:
        text = self.job._redactor.redact(first_line(error))
        log.info("job %s failed: %s", self.job.address, text)
        self.job._fail(error)

    async def _abandon(self, timeout: float = 10) -> None:
        """After a failure: a listed job that is not done is stopped (so it does not run, and
        cost, until its timeout)."""
        job = self.job
        if job.address is None or (job.state is not None and job.state.done):
            return
        deadline = time.monotonic() + timeout
        if job.state is JobState.RUNNING and job.node is not None:
            # Like stop(): the host first, one bounded POST (a ledger stop on Solana is a
            # transaction, which rarely fits these budgets), then the ledger.
            try:
                host = await asyncio.wait_for(self._host_client(), timeout / 4)
                await asyncio.wait_for(host.stop(timeout=timeout / 2), timeout / 2 + 0.5)
                job._warn(f"job {job.address} was stopped after the failure")
                return
            except (NosanaError, RuntimeError, asyncio.TimeoutError) as exc:
                log.info("host stop after the failure failed (%s); stopping on the ledger", exc)
        try:
            remaining = max(0.5, deadline - time.monotonic())
            await asyncio.wait_for(self.network.stop(job.address), remaining)
            job._warn(f"job {job.address} was stopped after the failure")
        except (NosanaError, asyncio.TimeoutError) as exc:
            job._warn(f"could not stop job {job.address}: {exc}")

    async def _finish(self) -> None:
        self._finishing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._host is not None:
            await self._host.aclose()
        if self._owns_network:
            try:
                await self.network.aclose()
            except Exception:  # closing must not hide the outcome
                log.debug("closing the network failed", exc_info=True)
        # Drop what is no longer needed and could hold secrets.
        self._env = None
        self._namespace = None
        self.job._settle()

    async def _signer(self, project: str | None = None) -> Signer:
        """The job's project as a signer (asked of the network once: with credits, that is
        one request to the signing service). ``project``: the ledger's, if not yet recorded."""
        job = self.job
        assert job.address is not None
        if self._signer_of_job is None:
            if project is None and job.ledger is not None:
                project = job.ledger.project
            self._signer_of_job = await self.network.signer(job.address, project or None)
        return self._signer_of_job

    async def _host_client(self) -> HostClient:
        job = self.job
        assert job.address is not None and job.node is not None
        signer = await self._signer()
        if self._host is None:
            self._host = HostClient(
                self.network.node_url(job.node),
                job.address,
                signer,
                retry=self._retry,
                # Looked up per call: the redactor is known only once the definition is resolved.
                redact=lambda text: self.job._redactor.redact(text),
            )
        return self._host

    def _ledger_done(self) -> bool:
        state = self.job.state
        return state is not None and state.done

    def _env_map(self) -> Mapping[str, str]:
        return self._env if self._env is not None else reference_env()

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """:meth:`Changes.wait_for`, giving up on the job as lost once neither the network nor
        its host has answered for ``SILENCE_S`` (:func:`wait_unless_silent`)."""
        return await wait_unless_silent(
            self.changes, predicate, timeout,
            lambda: silent_for(self.network, self._host, self._started_at),
            f"job {self.job.address}: neither the {self.network.name} network nor its host")

    # -- posting a new job ---------------------------------------------------------------

    def _validate(self) -> JobDefinition:
        """The definition, parsed and with every reference resolvable: nothing leaves this
        machine before that."""
        definition = self.definition
        if definition is None:
            source = self._source
            definition = (
                parse_job_definition(source) if isinstance(source, str)
                else validate_job_definition(source)
            )
            self.definition = definition
        definition.check_resolved(env=self._env_map(), namespace=self._namespace or {},
                                  params=self._params)
        return definition

    async def _post_flow(self) -> None:
        job = self.job
        job._set_phase("validating")
        definition = self._validate()
        placeholder = definition.placeholder(
            send=self.private != "results", receive=self.private != "input")
        market = await self._resolve_market()
        job._set_market(market)
        if market.job_timeout and job.timeout > market.job_timeout:
            raise Failure(
                f"timeout {format_duration(job.timeout)} exceeds market {market.slug}'s "
                f"longest job ({format_duration(market.job_timeout)})"
            )
        if self.job._stop_requested:
            return

        job._set_phase("pinning")
        cid = await self.network.pin(placeholder)
        job._set_placeholder(cid)
        if self.job._stop_requested:
            return

        job._set_phase("listing")
        before = await listed_before(self.network, cid, market)
        try:
            listing = await self.network.post(cid, market, job.timeout, node=self._node_ref)
        except OutcomeUnknown as exc:
            await recover_lost_listing(self.job, self.network, self._retry, exc, cid, market,
                                       before)
            raise
        job._listed(listing.job)
        job._set_phase("queued")
        self._tasks.append(asyncio.create_task(self._watch_ledger()))
        if self.job._stop_requested:
            await self.stop()
        await self._follow_job(definition)

    async def _resolve_market(self) -> Market:
        ref = self._market_ref
        if ref is not None:
            return await self.network.market(ref)
        name = self.network.name
        if name != "local":
            raise Failure(f"choose a market on {name} (--market or NOSANA_MARKET)")
        markets = await self.network.markets()
        if not markets:
            raise Failure("the local network has no market")
        ready = [m for m in markets if m.idle_hosts > 0]
        return (ready or markets)[0]

    # -- following a listed job ----------------------------------------------------------

    async def _attach_flow(self) -> None:
        job = self.job
        assert job.address is not None
        info = await self.network.job(job.address)
        # Refuses a job this wallet (or API key) did not list: its host would not answer.
        await self._signer(info.project)
        job._set_ledger(info)
        try:
            job._set_market(await self.network.market(info.market))
        except NetworkError:
            job._set_market(None)
        job._set_phase("queued" if info.state is JobState.QUEUED else "running")
        self._tasks.append(asyncio.create_task(self._watch_ledger()))
        await self._follow_job(None)

    async def _follow_job(self, definition: JobDefinition | None) -> None:
        """From queued to done: wait for a host, send the definition, follow the run, collect
        the results, wait for the ledger's end, drain the log."""
        job = self.job
        if not await self._wait_for_host():
            return  # ended before it ran (delisted): nothing to collect
        job._mark("running")
        urls = public_urls(self.network, job.address, definition)
        if urls:
            job._set_urls(urls)
        host = await self._host_client()
        op_ids = self.definition.op_ids if self.definition else None
        if op_ids is None:
            # A job attached to: its ops and results rules from the host's copy of the
            # definition (its values are dropped at once).
            self._host_shape = await shape_from_host(host)
            op_ids = self._host_shape[0] if self._host_shape else None
        streams = HostStreams(job, self._retry, on_info_lost=lambda: self._probe_results(host),
                              op_ids=op_ids)
        log_task = asyncio.create_task(streams.follow_logs(host))
        self._tasks += [log_task, asyncio.create_task(streams.follow_info(host)),
                        asyncio.create_task(streams.follow_states(host))]
        if definition is not None and not self._ledger_done():
            job._set_phase("sending-definition")
            await self._send_definition(host, definition)
        job._set_phase("running")
        await self._until_ended()
        if self.job._info_end is not None:
            job._mark("end-seen")
        flow = await self._collect()
        if flow is not None:
            self._take_flow(flow, await self._result_groups(flow, host))
        # The ledger's final state (the host completes the job after the window), bounded.
        await self.changes.wait_for(self._ledger_done, LEDGER_DONE_TIMEOUT_S)
        await streams.drain_logs(host, log_task, flow)
        if host.log_connections and (not host.log_connected or (
                host.log_connections > 1 and host.log_connection_entries == 0)):
            # The stream is down, or came back with an empty replay: a host does not replay a
            # finished job's log (docs/protocol.md §7), what it sent while the socket was
            # down is gone; the results bring back the ops' lines.
            job._log_gap("the live log was disconnected at the end: the host's last lines "
                         "may be missing (the ops' lines are taken from the results)")
        log_task.cancel()
        await asyncio.gather(log_task, return_exceptions=True)
        if flow is not None:
            _make_log_whole(job)

    def _probe_results(self, host: HostClient) -> None:
        """``/info`` is down: ask for the results themselves, bounded by the job's life, so
        that its end is not missed (each other signal may be down too)."""
        if self._probe is not None or self._finishing:
            return

        async def probe() -> None:
            lifetime = (self.job.expires_at or time.time() + self.job.timeout) - time.time()
            try:
                self._probed = await host.results(timeout=max(60.0, lifetime + EXPIRY_MARGIN_S),
                                                  pause=RESULTS_PROBE_PAUSE_S)
            except HostError as exc:
                log.info("results probe of %s gave up: %s", self.job.address, exc)
                return
            self.job._set_window_open()

        self._probe = asyncio.create_task(probe())
        self._tasks.append(self._probe)

    async def _wait_for_host(self) -> bool:
        """Queued: until a host takes the job (True) or it ends without running (False)."""
        job = self.job
        horizon = job.timeout + EXPIRY_MARGIN_S + 24 * 3600.0
        running = await self._wait(
            lambda: job.node is not None or self._ledger_done() or self._ledger_error is not None,
            horizon,
        )
        if not running:
            raise Failure(f"job {job.address} was not taken by a host")
        if job.node is None and not self._ledger_done() and self._ledger_error is not None:
            raise Failure(f"lost track of job {job.address}: {self._ledger_error}", lost=True)
        return job.node is not None

    async def _send_definition(self, host: HostClient, definition: JobDefinition) -> None:
        """Resolve the definition (only now) and POST it to the host; the body is not kept."""
        resolved = definition.resolve(env=self._env_map(), namespace=self._namespace or {},
                                      params=self._params)
        self.job._set_redactor(resolved.redactor)
        send = asyncio.create_task(host.send_definition(resolved.body, timeout=SEND_TIMEOUT_S))
        del resolved
        send.add_done_callback(lambda _task: self.changes.notify())

        # A job stopped or ended meanwhile makes the POST pointless: stop trying.
        def pointless() -> bool:
            return self.job._stop_requested or self._ledger_done() or self.job._info_end is not None

        await self._wait(lambda: send.done() or pointless(), SEND_TIMEOUT_S + 5)
        if not send.done():
            send.cancel()
            await asyncio.gather(send, return_exceptions=True)
        if send.cancelled():
            return
        try:
            send.result()  # raises the HostError of a refused definition
            self.job._mark("definition-sent")
        except HostError:
            # Stopped before the host took the definition: that refusal is expected.
            if not self.job._stop_requested:
                raise

    def _ended(self) -> bool:
        """The host says the flow ended (``/info``; or its results window opened, by
        ``/log``, ``/status`` or the results themselves), the ledger says the job ended, or
        its expiry passed (the host then ends it). Any one suffices."""
        expiry = self.job.expires_at
        return (self.job._info_end is not None or self.job._window_open or self._ledger_done()
                or (expiry is not None and time.time() >= expiry))

    async def _until_ended(self) -> None:
        """Wait for the end, following extensions: the bound is re-computed from the current
        expiry on every wake-up, and the wait also wakes when the expiry is due (so reaching
        it is noticed at once). Raises if the job outlives its expiry by ``EXPIRY_MARGIN_S``
        without the host, the ledger or the clock saying it ended."""
        job = self.job
        fallback_start = time.time()  # only when the ledger has not shown a start time
        while not self._ended():
            now = time.time()
            expiry = job.expires_at or (fallback_start + job.timeout)
            remaining = expiry + EXPIRY_MARGIN_S - now
            if remaining <= 0:
                raise Failure(f"job {job.address} did not end within {EXPIRY_MARGIN_S:g} s "
                              "of its expiry", lost=True)
            to_expiry = expiry - now
            await self._wait(self._ended, min(to_expiry, remaining) if to_expiry > 0
                             else remaining)

    # -- results -------------------------------------------------------------------------

    async def _collect(self) -> FlowState | None:
        """The private results (or, for send-only jobs, the public ones on IPFS).

        Polled from the moment the end is seen, inside the host's window. The window closes
        before the ledger shows the job done, so once the ledger says done the polling gets
        only a short grace (a host that quit never opens a window at all). Attaching after
        the end, that grace bounds the polls; an answer under way still gets its request
        timeout.
        """
        if self.private == "input":
            return await self._public_result()
        host = await self._host_client()
        self.job._set_phase("collecting-results")
        if self._probed is not None:
            self.job._mark("results")
            return self._probed
        late = self.job._info_end is None and self._ledger_done()
        timeout = LATE_RESULTS_TIMEOUT_S if late else self._results_timeout
        fetch = asyncio.create_task(host.results(timeout=timeout))
        fetch.add_done_callback(lambda _task: self.changes.notify())
        try:
            await self.changes.wait_for(lambda: fetch.done() or self._ledger_done(), timeout + 1)
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
                    f"GET /job/{self.job.address}/results",
                    f"the job ended ({self.job.state}) without the host serving its results",
                    gave_up=True,
                )
            flow = fetch.result()
        except HostError as exc:
            if self.job._stop_requested or self.job.state is JobState.STOPPED:
                self.job._warn(f"no results: {exc}")
                return None
            raise
        finally:
            if not fetch.done():
                fetch.cancel()
        self.job._mark("results")
        return flow

    async def _public_result(self) -> FlowState | None:
        """Send-only jobs: the host pins the full result publicly; read it from IPFS."""
        def published() -> bool:
            info = self.job.ledger
            return self._ledger_done() and info is not None and bool(info.ipfs_result)

        await self.changes.wait_for(published, LEDGER_DONE_TIMEOUT_S + self._results_timeout)
        info = self.job.ledger
        fetch: Callable[[str], Awaitable[Any]] | None = getattr(self.network, "fetch", None)
        if info is None or not info.ipfs_result or fetch is None:
            self.job._warn("the public result could not be read")
            return None
        document = await fetch(info.ipfs_result)
        try:
            flow = FlowState.model_validate(document)
        except ValueError:
            raise Failure("the public result is not a flow state") from None
        self.job._mark("results")
        return flow

    async def _result_groups(self, flow: FlowState,
                             host: HostClient) -> dict[str, dict[str, int]] | None:
        """Each results regex's group count (where one match ends in a results value,
        docs/protocol.md §14): from the definition, or the host's copy of it for a job
        attached to; None when neither is known."""
        if self.definition is not None:
            return result_groups(self.definition.to_dict())
        if self._host_shape is None and any(op.results for op in flow.op_states):
            self._host_shape = await shape_from_host(host)
        return self._host_shape[1] if self._host_shape else None

    def _take_flow(self, flow: FlowState,
                   groups: dict[str, dict[str, int]] | None = None) -> None:
        """Hand the results to the job, every host text in them redacted."""
        if self.job._redactor:
            flow = redact_flow(flow, self.job._redactor.redact)
        self.job._set_flow(flow, groups=groups)

    # -- ledger --------------------------------------------------------------------------

    async def _watch_ledger(self) -> None:
        job = self.job
        assert job.address is not None
        backoff = self._retry.backoff()
        last: JobInfo | None = None
        while True:
            try:
                async for info in self.network.watch(job.address):
                    # A new watch() yields the current state first: only a change is progress
                    # (else watch, fail, watch again would never run out of retries).
                    if info == last:
                        continue
                    last = info
                    backoff.reset()
                    job._set_ledger(info)
                return
            except NetworkError as exc:
                if not await backoff.wait():
                    self._ledger_error = str(exc)
                    job._warn(f"stopped following the ledger: {exc}")
                    self.changes.notify()
                    return

    # -- URLs ----------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<JobMachine of job {short_address(self.job.address or '(not listed)')}>"


async def recover_lost_listing(job: JobRecord, network: Network, retry: Retry,
                               exc: OutcomeUnknown, cid: str, market: Market,
                               before: set[str] | None) -> None:
    """The listing was sent and its answer lost (docs/protocol.md §22): the job may exist,
    running and paid for until its timeout. Find it, for a short while (the ledger may
    show it late), and stop it; or say plainly that it may exist and how to stop it.
    Raises :class:`Failure` in every case."""
    stop_it = "stop it with %nosana stop ADDRESS"
    if exc.job is None and before is None:
        wallet = getattr(network, "wallet", None)
        whose = (f"a job of wallet {wallet.address}" if wallet is not None else
                 "a job of your API key's project on the Nosana dashboard")
        raise Failure(f"{exc}. This network cannot be searched for it: if it was listed, it "
                      f"runs until its timeout ({format_duration(job.timeout)}); look for "
                      f"{whose} and {stop_it}")
    found = await appeared(network, retry, exc.job, cid, market,
                           before or set())
    if not found:
        if exc.job is not None:
            raise Failure(f"{exc}. Job {exc.job} was not on the ledger after "
                          f"{LOST_LISTING_WAIT_S:g} s: most likely not listed; if it appears "
                          f"later, stop it with %nosana stop {exc.job}")
        raise Failure(f"{exc}. No new job of this wallet appeared on the ledger within "
                      f"{LOST_LISTING_WAIT_S:g} s: most likely nothing was listed")
    if len(found) > 1:
        raise Failure(f"{exc}. Jobs {', '.join(sorted(found))} appeared meanwhile: one may "
                      f"be this one (the others another listing's); {stop_it}")
    address = found[0]
    job._listed(address)  # the handle shows it; _abandon() stops it if this stop fails
    try:
        await asyncio.wait_for(network.stop(address), LOST_LISTING_WAIT_S)
        job._set_ledger(await network.job(address))
        outcome = "it was stopped"
    except (NosanaError, asyncio.TimeoutError) as err:
        outcome = f"stopping it failed ({first_line(err)}); {stop_it}"
    raise Failure(f"{exc}. The job was listed all the same ({address}): {outcome}")


async def shape_from_host(host: HostClient) -> tuple[list[str], dict[str, dict[str, int]]] | None:
    """The op ids and results regexes' group counts of the host's copy of the
    definition, or None when the host does not give it (yet)."""
    document = await host.definition()
    ops = document.get("ops") if document else None
    if not document or not isinstance(ops, list):
        return None
    ids = [str(op.get("id")) for op in ops if isinstance(op, dict)]
    return ids, result_groups(document)


def public_urls(network: Network, address: str | None,
                definition: JobDefinition | None) -> list[ServiceUrl]:
    """Public service URLs are known before the job runs, where the network has a domain."""
    domain = network.service_domain()
    if definition is None or domain is None or address is None:
        return []
    return [
        ServiceUrl.of(service.expose_id, url=service_url(service.expose_id, domain),
                      port=service.port, op_id=service.op_id)
        for service in exposed_services(definition.to_dict(), address)
    ]


async def listed_before(network: Network, cid: str, market: Market) -> set[str] | None:
    """The lister's unfinished jobs with this placeholder before listing: what a listing
    whose answer is lost may add to (``None`` where the network cannot be searched)."""
    search = getattr(network, "listed_jobs", None)
    if search is None:
        return None
    try:
        return {info.address for info in await search(cid, market)}
    except NetworkError:
        return None



async def appeared(network: Network, retry: Retry, known: str | None, cid: str,
                   market: Market, before: set[str]) -> list[str]:
    """The jobs a lost listing made, as the ledger shows them within
    ``LOST_LISTING_WAIT_S``: the known address if it exists, else this wallet's unfinished
    jobs with this placeholder that were not there before."""
    backoff = retry.backoff(LOST_LISTING_WAIT_S)
    while True:
        try:
            if known is not None:
                await network.job(known)
                return [known]
            search = network.listed_jobs  # type: ignore[attr-defined]
            new = [info.address for info in await search(cid, market)
                   if info.address not in before]
            if new:
                return new
        except NetworkError:
            pass  # not there (yet), or the ledger did not answer: ask again
        if not await backoff.wait():
            return []



def silent_for(network: object, host: HostClient | None, since: float) -> float:
    """Seconds since ``network`` (its ledger) or ``host`` last answered, counted from
    ``since`` before either did (0 for a network that does not say when it last answered)."""
    if not hasattr(network, "last_answer"):
        return 0.0
    heard = [when for when in (getattr(network, "last_answer", None),
                               host.last_answer if host is not None else None)
             if when is not None]
    return time.monotonic() - max(heard, default=since)


async def wait_unless_silent(changes: Changes, predicate: Callable[[], bool], timeout: float,
                             silence: Callable[[], float], who: str) -> bool:
    """``changes.wait_for(predicate, timeout)``, giving up (a lost :class:`Failure`) once
    ``silence()`` reaches ``SILENCE_S``: a network that died is noticed within about a minute,
    not at the job's expiry (looked at every ``SILENCE_CHECK_S``). ``who`` names what fell
    silent, for the message."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if await changes.wait_for(predicate, max(0.0, min(remaining, SILENCE_CHECK_S))):
            return True
        if remaining <= SILENCE_CHECK_S:
            return False
        silent = silence()
        if silent >= SILENCE_S:
            raise Failure(f"lost contact with {who} answered for {silent:.0f} s (it may still "
                          "run on its host until its timeout)", lost=True)


class HostStreams:
    """The host's ``/info`` and ``/log`` streams of one job, followed on the loop into the
    job's record. A stream that dies is resumed after a pause for as long as the job can live
    (its expiry plus ``EXPIRY_MARGIN_S``, moved along with an extension); at the end the
    log is drained, so that every line the host sent is in the record."""

    def __init__(self, job: JobRecord, retry: Retry, *,
                 on_info_lost: Callable[[], None] | None = None,
                 op_ids: list[str] | None = None) -> None:
        self.job = job
        self._retry = retry
        #: The job's op ids, where its definition is known.
        self._op_ids = op_ids
        self._on_info_lost = on_info_lost
        self._last_log_at = 0.0
        self._container_lines = 0
        self._gaps_seen = 0
        #: The streams whose interruption was noted in the job's warnings.
        self._interrupted: set[str] = set()

    def _stream_retry(self) -> Backoff:
        """How long a dead host stream is retried: slowly, for as long as the job can live
        (the machine cancels the followers once the job is done). Pause with
        :meth:`_resume`, which moves the bound along with an extension."""
        return Retry(first=1.0, cap=5.0, attempts=100_000, total=60.0).backoff(
            self._stream_lifetime(0.0)
        )

    def _stream_lifetime(self, elapsed: float) -> float:
        """A stream retry loop's total bound, ``elapsed`` seconds after it began: until the
        job's current expiry plus ``EXPIRY_MARGIN_S`` (at least 60 s in all)."""
        job = self.job
        expiry = job.expires_at or (time.time() + job.timeout)
        return max(60.0, elapsed + expiry + EXPIRY_MARGIN_S - time.time())

    async def _resume(self, backoff: Backoff) -> bool:
        """``backoff.wait()`` with the bound re-computed from the job's current expiry."""
        backoff.total = self._stream_lifetime(backoff.elapsed)
        return await backoff.wait()

    async def _keep_following(self, stream: str, exc: HostError, resume: Backoff) -> bool:
        """A host stream failed: whether to resume it (after a pause). The first failure is
        noted in the job's warnings; one that retrying cannot fix ends the stream."""
        if stream == "/info" and self._on_info_lost is not None:
            self._on_info_lost()  # the end must not be missed with it
        if not exc.gave_up:
            self.job._warn(f"stopped following {stream}: {exc}")
            self.job._changes.notify()
            return False
        if stream not in self._interrupted:
            self._interrupted.add(stream)
            self.job._warn(f"{stream} interrupted (resuming): {exc}")
        if not await self._resume(resume):
            self.job._changes.notify()
            return False
        return True

    async def follow_info(self, host: HostClient) -> None:
        """Follow ``/info`` (status, URLs, ``endTime``) until the event that has ``endTime``.

        A stream that gave up is resumed: losing ``/info`` would mean noticing the end only
        from the ledger, after the host's results window.
        """
        resume = self._stream_retry()
        while True:
            try:
                async for event in host.info(timeout=self._retry.total,
                                             on_retry=self._info_retried):
                    self.job._set_info(event)
                return
            except HostError as exc:
                if not await self._keep_following("/info", exc, resume):
                    return

    def _info_retried(self, attempt: int, why: str) -> None:
        """``/info`` failed ``attempt`` times in a row: from the third, the end must not
        depend on it (a host whose stream answers 500 for good still serves the results)."""
        if attempt < INFO_FAILURES_BEFORE_PROBE or "/info failing" in self._interrupted:
            return
        self._interrupted.add("/info failing")
        self.job._warn(f"/info failing ({why}); its end is watched for by the other signals "
                       "and by polling the results")
        if self._on_info_lost is not None:
            self._on_info_lost()

    async def follow_logs(self, host: HostClient) -> None:
        """Follow ``/log`` until cancelled; resumed where it stopped after the client gave up.

        The entries come in batches (what arrived together), and each batch goes to the
        handle at once. A container line goes to its op when that can be known
        (docs/protocol.md §7: the host does not say): when exactly one op runs, by the
        host's last ``/info``. The host's line that it opens the results window is a
        signal of the end.
        """
        resume = self._stream_retry()
        while True:
            try:
                await host.follow_log(functools.partial(self._log_entries, host))
            except HostError as exc:
                if not await self._keep_following("/log", exc, resume):
                    return

    def _log_entries(self, host: HostClient, entries: Sequence[LiveEntry]) -> None:
        lines = LogLine.from_live_entries(entries, self.job._redactor,
                                          op_id=self._running_op())
        node_lines = host_lines(entries)
        self._container_lines += len(entries) - len(node_lines)
        if any(_opens_results_window(entry) for entry in node_lines):
            self.job._set_window_open()
        self._last_log_at = time.monotonic()
        self._note_gaps(host)
        self.job._add_logs(lines)

    def _running_op(self) -> str | None:
        """The op a live container line comes from, when it can be known: the only op (by
        the definition, or the host's last ``/info``), or the only one running by that."""
        if self._op_ids is not None and len(self._op_ids) == 1:
            return self._op_ids[0]
        info = self.job._info
        if info is None:
            return None
        if len(info.op_states) == 1:
            return info.op_states[0].operation_id
        running = [op.operation_id for op in info.op_states if op.status == "running"]
        return running[0] if len(running) == 1 else None

    def _note_gaps(self, host: HostClient) -> None:
        if host.log_gaps > self._gaps_seen:
            self._gaps_seen = host.log_gaps
            self.job._log_gap("the live log may have missed lines while it reconnected (the "
                              "host's history no longer held them); the results bring back "
                              "the ops' lines")

    async def follow_states(self, host: HostClient) -> None:
        """Follow ``/status`` for the host's word that it opened the results window; a
        host without the route, or one that stops answering it, is left alone (the other
        signals of the end remain)."""
        try:
            async for state in host.states():
                if state == "awaiting-result-send":
                    self.job._set_window_open()
        except HostError as exc:
            log.debug("not following /status of %s: %s", self.job.address, exc)

    async def drain_logs(self, host: HostClient, log_task: asyncio.Task[Any],
                         flow: FlowState | None) -> None:
        """Let the ``/log`` stream catch up before it is closed.

        Caught up means: connected (not between reconnects), every container line the
        results hold has arrived, and nothing new for ``LOG_IDLE_S`` (the host's closing
        progress lines). A replay that is still delivering lines keeps the drain going, so
        attaching to a long finished job gets every line; silence for ``LOG_STALL_S`` or
        ``LOG_DRAIN_MAX_S`` in all ends it.
        """
        expected = sum(
            1 for op in (flow.op_states if flow is not None else [])
            for entry in op.logs if entry.type in ("stdout", "stderr")
        )
        start = time.monotonic()
        while not log_task.done():
            now = time.monotonic()
            idle = now - max(self._last_log_at, start)
            caught_up = self._container_lines >= expected or idle >= LOG_MISSING_IDLE_S
            if host.log_connected and caught_up and idle >= LOG_IDLE_S:
                return
            if idle >= LOG_STALL_S or now - start >= LOG_DRAIN_MAX_S:
                return
            await asyncio.sleep(max(0.02, min(0.1, LOG_IDLE_S - idle)))


def _make_log_whole(job: JobRecord) -> None:
    """Each op's lines from the results, with op and stream, into the end of the job's log,
    which holds them (twice as many lines, for the host's own lines between), read back
    from the store if need be."""
    ops = {op_id: op.logs for op_id, op in job.ops.items()}
    start, tail = job._log.tail(2 * sum(map(len, ops.values())) + LOG_TAIL_SLACK)
    job._set_logs(start, reconcile(tail, ops, after_more=start > 0))


def _opens_results_window(entry: LiveEntry) -> bool:
    """A host's line that it is opening the results window: it resolves the results
    (docs/protocol.md §10), as a Nosana host (``JobExternalUtil.resolveResult``) and the
    devnode write it."""
    return entry.method == "JobExternalUtil.resolveResult" or entry.log.startswith(
        ("Resolving job results", "Waiting for the results to be collected"))
