"""Sweeps: one definition run once per parameter set, each its own confidential job.

:func:`sweep` (and ``%%nosana_confidential --sweep …``) makes one job handle per parameter
set (docs/experiments.md §2) and runs them on the package's loop, at most ``parallel`` at a
time, in order. Each job is a confidential job like any other (its own placeholder, its own
host, its ``${param:NAME}`` values resolved only when its definition is sent), recorded in the
local store with its sweep. :class:`Runs` is what the sweep returns: the handles
(``runs[i]``), a table of them (``to_pandas()``, ``to_dataframe()``, ``rows()``, its reprs),
``best("loss")``, ``wait()`` and ``stop()``.

Ctrl-C while waiting stops every job of the sweep: those running are stopped on their hosts,
those queued are delisted, those not started yet never start; a further Ctrl-C does not
cancel the stops. A job that fails does not stop the others: the table says which failed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from . import runner
from .errors import JobFailed, JobInterrupted, MissingResult, ParamError
from .job import END_WAIT_S, STOP_WAIT_S, ConfidentialJob, _open
from .jobdef import JobDefinition, parse_job_definition, validate_job_definition
from .outcome import first_line
from .params import ParamSet, check_params, param_sets
from .protocol import DurationError, parse_duration
from .settings import Settings, reference_env
from .store import Store, StoreError, open_store
from .table import Row, Table

if TYPE_CHECKING:
    from .machine import Private
    from .network.base import Network

__all__ = ["DEFAULT_PARALLEL", "Runs", "sweep"]

log = logging.getLogger(__name__)

#: Jobs of a sweep that run at once unless told otherwise.
DEFAULT_PARALLEL = 4


class Runs(Sequence[ConfidentialJob]):
    """The jobs of one sweep, in the order of their parameter sets.

    A sequence of :class:`~nosana_magic.job.ConfidentialJob` (``runs[i]``, ``len(runs)``,
    iteration); ``future`` is resolved (to the sweep) once every job is done. Made by
    :func:`sweep`.
    """

    def __init__(self, jobs: Sequence[ConfidentialJob], params: Sequence[ParamSet], *,
                 name: str, parallel: int, network: Network, owns_network: bool,
                 store: Store | None = None, sweep_id: str | None = None) -> None:
        self.name = name
        #: The sweep's id in the local store (``None`` when it is not recorded).
        self.id = sweep_id
        self.params: list[ParamSet] = [dict(p) for p in params]
        self.parallel = parallel
        self.network = network
        self._jobs = list(jobs)
        self._owns_network = owns_network
        self._store = store
        self._stopping = False
        self._started: set[int] = set()
        self.future: concurrent.futures.Future[Runs] = concurrent.futures.Future()
        self.future.set_running_or_notify_cancel()
        self._task: concurrent.futures.Future[None] | None = None

    # -- the sequence ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._jobs)

    @overload
    def __getitem__(self, index: int) -> ConfidentialJob: ...
    @overload
    def __getitem__(self, index: slice) -> list[ConfidentialJob]: ...

    def __getitem__(self, index: int | slice) -> ConfidentialJob | list[ConfidentialJob]:
        return self._jobs[index]

    def __iter__(self) -> Iterator[ConfidentialJob]:
        return iter(self._jobs)

    # -- state -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once every job of the sweep is done."""
        return self.future.done()

    @property
    def status(self) -> str:
        """``running`` until every job is done; then ``succeeded`` (all did), ``stopped``
        (you stopped the sweep) or ``failed`` (some job did not succeed: see :attr:`failed`)."""
        if not self.done:
            return "stopping" if self._stopping else "running"
        return self._verdict()

    def _verdict(self) -> str:
        if self._stopping:
            return "stopped"
        return "succeeded" if all(job.ok for job in self._jobs) else "failed"

    @property
    def ok(self) -> bool:
        """True once every job is done and succeeded."""
        return self.status == "succeeded"

    @property
    def failed(self) -> list[ConfidentialJob]:
        """The jobs that are done and did not succeed."""
        return [job for job in self._jobs if job.done and not job.ok]

    def status_of(self, index: int) -> str:
        """Job ``index``'s status in the table: ``waiting`` until a slot frees for it."""
        job = self._jobs[index]
        if index not in self._started and not job.done:
            return "stopping" if self._stopping else "waiting"
        return job.status

    def counts(self) -> Counter[str]:
        """How many jobs have each status."""
        return Counter(self.status_of(i) for i in range(len(self._jobs)))

    def cost(self) -> float | None:
        """NOS: what the jobs cost so far (each job's :attr:`cost`), ``None`` if unknown."""
        costs = [job.cost for job in self._jobs if job.cost is not None]
        return sum(costs) if costs else None

    # -- the table -------------------------------------------------------------------------

    def table(self, *, max_rows: int | None = None) -> Table:
        """The sweep as a :class:`~nosana_magic.table.Table` (what the views and reprs show)."""
        rows = [Row(i, self.params[i], self.status_of(i), job.elapsed, job.cost,
                    dict(job.results), job.address) for i, job in enumerate(self._jobs)]
        return Table(rows) if max_rows is None else Table(rows, max_rows=max_rows)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per job: ``index``, its parameters, ``status``, ``elapsed``, ``cost``,
        its results, ``address`` (the columns of :meth:`to_dataframe`)."""
        result_names = list(dict.fromkeys(n for job in self._jobs for n in job.results))
        out = []
        for i, job in enumerate(self._jobs):
            row: dict[str, Any] = {"index": i, **self.params[i], "status": self.status_of(i),
                                   "elapsed": job.elapsed, "cost": job.cost}
            for name in result_names:
                row[name] = job.results.get(name)
            row["address"] = job.address
            out.append(row)
        return out

    def to_pandas(self) -> Any:
        """The sweep as a ``pandas.DataFrame``, one row per job (needs pandas:
        ``pip install 'nosana_magic[pandas]'``)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_pandas() needs pandas: pip install 'nosana_magic[pandas]' "
                              "(runs.rows() is the same table as a list of dicts)") from None
        return pandas.DataFrame(self.rows()).set_index("index")

    def to_dataframe(self) -> Any:
        """A ``pandas.DataFrame`` when pandas is installed, else :meth:`rows` (a list of
        dicts, one per job)."""
        try:
            return self.to_pandas()
        except ImportError:
            return self.rows()

    def best(self, metric: str, *, mode: Literal["min", "max"] = "min") -> ConfidentialJob:
        """The succeeded job with the lowest (``mode="max"``: highest) ``results[metric]``."""
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        scored = [(job.results[metric], i, job) for i, job in enumerate(self._jobs)
                  if job.ok and isinstance(job.results.get(metric), (int, float))
                  and not isinstance(job.results.get(metric), bool)]
        if not scored:
            have = sorted({n for job in self._jobs for n in job.results})
            raise MissingResult(
                f"no succeeded job of sweep {self.name} has a numeric result {metric!r} "
                f"(results: {', '.join(have) or 'none'}; {self._counts_text()})", metric)
        pick = min if mode == "min" else max
        return pick(scored, key=lambda item: (item[0], item[1]))[2]

    def __repr__(self) -> str:
        return f"<Runs {self.name}: {len(self)} jobs, {self.status}>\n{self.table().text()}"

    def _repr_html_(self) -> str:
        title = f"<b>sweep {self.name}</b>: {len(self)} jobs, {self.status}"
        return f"<div>{_escape(title)}</div>{self.table().html()}"

    def _counts_text(self) -> str:
        return ", ".join(f"{n} {status}" for status, n in sorted(self.counts().items()))

    # -- running ---------------------------------------------------------------------------

    def start(self) -> Runs:
        """Run the sweep on the package's loop (returns at once)."""
        if self._task is None:
            self._task = runner.submit(self._run())
        return self

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.parallel)

        async def one(index: int, job: ConfidentialJob) -> None:
            async with slots:
                if self._stopping:
                    job._set_stop_requested(True)  # it settles "stopped", never listed
                self._started.add(index)
                job.start()
                await job.wait_async()

        try:
            await asyncio.gather(*(one(i, job) for i, job in enumerate(self._jobs)))
        finally:
            if self._owns_network:
                with contextlib.suppress(Exception):  # closing must not hide the outcome
                    await self.network.aclose()
            self._record_status()
            self.future.set_result(self)

    def _record_status(self) -> None:
        if self._store is not None and self.id is not None:
            self._store.update_sweep(self.id, status=self._verdict())

    async def stop_async(self) -> None:
        """Stop every job: running ones on their hosts, queued ones on the ledger; those not
        started never start. Returns once every stop was accepted (or refused)."""
        self._stopping = True
        started = [job for i, job in enumerate(self._jobs)
                   if i in self._started and not job.done]
        results = await asyncio.gather(*(job.stop_async() for job in started),
                                       return_exceptions=True)
        problems = [r for r in results if isinstance(r, BaseException)]
        if problems:
            raise problems[0]

    def stop(self) -> None:
        """:meth:`stop_async`, waited for through Ctrl-C (a stop is not cancelled)."""
        future = runner.shielded(self.stop_async(), STOP_WAIT_S,
                                 interrupted=self._still_stopping)
        if not future.done():
            raise TimeoutError(f"sweep {self.name}: the stops were not answered within "
                               f"{STOP_WAIT_S:g} s (they go on)")
        future.result()

    def _still_stopping(self) -> None:
        print(f"sweep {self.name}: still stopping its jobs (a stop is not cancelled; waiting "
              f"up to {STOP_WAIT_S:g} s)", file=sys.stderr)

    def wait(self, timeout: float | None = None, *,
             each: Callable[[], object] | None = None) -> Runs:
        """Block until every job is done; returns the sweep (check :attr:`ok`, :attr:`failed`).

        ``each()`` is called on this thread about every 0.1 s. Ctrl-C stops every job of the
        sweep, waits (bounded) for their ends, and raises :class:`JobInterrupted`, one line
        saying how the jobs ended.
        """
        try:
            done = runner.wait(self.future, timeout, each=each)
        except KeyboardInterrupt:
            raise self.stop_after_interrupt(each=each) from None
        if not done:
            raise TimeoutError(f"sweep {self.name} still running after {timeout:g} s "
                               f"({self._counts_text()})")
        return self

    def stop_after_interrupt(self, *, each: Callable[[], object] | None = None
                             ) -> JobInterrupted:
        """Ctrl-C while waiting: stop every job, wait (bounded) for their ends, and return
        the :class:`JobInterrupted` to raise."""
        future = runner.shielded(self.stop_async(), STOP_WAIT_S, each=each,
                                 interrupted=self._still_stopping)
        problem = None
        if not future.done():
            problem = f"no answer within {STOP_WAIT_S:g} s (the stops go on)"
        elif future.exception() is not None:
            problem = first_line(future.exception())  # type: ignore[arg-type]
        with contextlib.suppress(KeyboardInterrupt):
            runner.wait(self.future, END_WAIT_S, each=each)
        line = f"sweep {self.name} stopped: {self._counts_text()}"
        if problem is not None:
            line += f"; a stop failed: {problem}"
        return JobInterrupted(line, None, sent=problem is None)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


# --------------------------------------------------------------------------- the entry point


def _definition(definition: str | dict[str, Any] | JobDefinition) -> JobDefinition:
    if isinstance(definition, JobDefinition):
        return definition
    if isinstance(definition, str):
        return parse_job_definition(definition)
    return validate_job_definition(definition)


def _settings(settings: Settings | None, market: str | None,
              timeout: str | int | None) -> Settings:
    base = settings or Settings.from_env()
    if market is not None:
        base = base.with_overrides(market=market)
    if timeout is not None:
        try:
            seconds = timeout if isinstance(timeout, int) else parse_duration(timeout)
        except DurationError as exc:
            raise JobFailed(f"timeout: {exc}") from None
        base = base.with_overrides(timeout=seconds)
    return base


def sweep(
    definition: str | dict[str, Any] | JobDefinition,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | Any,
    *,
    parallel: int = DEFAULT_PARALLEL,
    name: str | None = None,
    market: str | None = None,
    timeout: str | int | None = None,
    network: str | Network | None = None,
    node: str | None = None,
    private: Private = "both",
    wait: bool = True,
    env: Mapping[str, str] | None = None,
    namespace: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Runs:
    """Run ``definition`` once per parameter set, each its own confidential job.

    ``params``: a dict of lists is a grid (``{"lr": [1e-3, 3e-4], "batch": [32, 64]}``: 4
    jobs), a list of dicts (or a DataFrame) one job per row; the values reach the definition
    through its ``${param:NAME}`` references. At most ``parallel`` jobs run at once. ``name``
    names the sweep in the local store (``%nosana jobs --sweep NAME``). The other arguments
    are :func:`~nosana_magic.job.run_confidential`'s, for every job. Every problem with the
    parameters or the definition is raised here, before anything is posted; failed jobs do
    not raise: check ``runs.ok`` and ``runs.failed``. ``wait=False`` returns at once.
    """
    parsed = _definition(definition)
    sets = param_sets(params)
    check_params(parsed.param_names, sets)
    parsed.check_references(env=reference_env() if env is None else env,
                            namespace=namespace or {}, params=sets[0])
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise ParamError(f"parallel: expected a whole number of jobs, at least 1, got "
                         f"{parallel!r}")
    base = _settings(settings, market, timeout)
    runs = _make_runs(parsed, sets, base, name=name or time.strftime("sweep-%Y%m%d-%H%M%S"),
                      parallel=parallel, network=network, node=node, private=private,
                      env=env, namespace=namespace, on_notice=on_notice)
    runs.start()
    return runs.wait() if wait else runs


def _make_runs(definition: JobDefinition, sets: list[ParamSet], base: Settings, *, name: str,
               parallel: int, network: str | Network | None, node: str | None,
               private: Private, env: Mapping[str, str] | None,
               namespace: Mapping[str, Any] | None,
               on_notice: Callable[[str], None] | None) -> Runs:
    """The sweep's handles, recorded in the store, none started."""
    net, owns = _open(network, settings=base, on_notice=on_notice)
    store, sweep_id = _record_sweep(base, name=name, network=net.name, definition=definition,
                                    sets=sets, parallel=parallel)
    jobs = []
    for index, params in enumerate(sets):
        job = ConfidentialJob(definition, net, market=base.market, timeout=base.timeout,
                              node=node, private=private, env=env, namespace=namespace,
                              params=params)
        if store is not None:
            job.record_in(store, sweep_id=sweep_id, sweep_index=index)
        jobs.append(job)
    return Runs(jobs, sets, name=name, parallel=parallel, network=net, owns_network=owns,
                store=store, sweep_id=sweep_id)


def _record_sweep(settings: Settings, *, name: str, network: str, definition: JobDefinition,
                  sets: list[ParamSet], parallel: int) -> tuple[Store | None, str | None]:
    try:
        store = open_store(settings)
    except StoreError as exc:
        log.warning("sweep %s is not recorded in the local store: %s", name, exc)
        return None, None
    sweep_id = store.record_sweep(name=name, network=network, definition=definition.to_dict(),
                                  params=sets, parallel=parallel, status="running")
    return store, sweep_id
