"""Past runs, from the local store: a finished job's handle with no network, and the listing.

:func:`load` (``nosana_magic.load(address)``, ``%nosana show``) brings back a finished job
from the local store, in any process, after any restart: a
:class:`~nosana_magic.job.ConfidentialJob` whose results, ops, logs, warnings, status and
summary are what the store holds, and which does no I/O (its network is a stand-in that
refuses every call). A job that has not finished is followed with ``%nosana attach``
instead. :func:`jobs_table` is ``%nosana jobs``: the runs of every kernel.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .display import Table
from .errors import JobFailed, NetworkError, StoreError
from .job import ConfidentialJob
from .jobdef import JobDefinition, JobDefinitionError, validate_job_definition
from .joblog import JobLog, OpLines
from .network.base import Market
from .outcome import OpResult, Results
from .params import label
from .protocol import format_duration
from .recording import stored_reader
from .results import ServiceUrl
from .store import Store, StoredJob, open_store
from .table import format_value

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["LoadedJob", "jobs_table", "load"]


class _Offline:
    """The network of a job loaded from the store: its name, and no I/O."""

    wallet: Any = None

    def __init__(self, name: str) -> None:
        self.name = name

    def _refuse(self, *_: object, **__: object) -> Any:
        raise NetworkError(f"this job was loaded from the local store ({self.name}): it "
                           "does not talk to the network; %nosana attach follows a running job")

    node_url = service_domain = _refuse

    async def _refuse_async(self, *_: object, **__: object) -> Any:
        self._refuse()

    pin = markets = market = post = job = watch = stop = extend = _refuse_async

    async def aclose(self) -> None:
        return None


class LoadedJob(ConfidentialJob):
    """A finished job brought back from the local store (see :func:`load`): every attribute
    as the store holds it; ``wait()`` returns at once, ``stop()`` does nothing."""

    def __init__(self, record: StoredJob, store: Store) -> None:
        super().__init__(None, _Offline(record.network),  # type: ignore[arg-type]
                         timeout=record.timeout or 0, address=record.address,
                         params=record.params)
        self.stored = record
        #: Where the job was loaded from.
        self.store = store
        self.placeholder = record.placeholder
        self.node = record.node
        self.price = record.price
        self.started_at = record.started_at
        self.ended_at = record.ended_at
        self.timings = dict(record.timings)
        self.warnings = list(record.warnings)
        if record.market:
            self.market = Market(address="", slug=record.market)
        self._log = JobLog.in_store(record.log_lines, stored_reader(store, record.key))
        self.results = Results(record.results, explain=self._explain_missing)
        self.ops = Results({op_id: self._op(op_id, op) for op_id, op in record.ops.items()},
                           kind="op", explain=self._explain_missing)
        self.urls = [ServiceUrl(u.url, u.port, u.op_id, u.private) for u in record.urls]
        self.phase = "done"
        self._future.set_result(self)

    def _op(self, op_id: str, op: dict[str, Any]) -> OpResult:
        return OpResult(op_id=op_id, host_status=str(op.get("host_status", "")),
                        exit_code=op.get("exit_code"),
                        logs=OpLines(self._log, op_id),
                        results=dict(op.get("results") or {}), ended_by=op.get("ended_by"),
                        ran=bool(op.get("ran", True)))

    @property
    def status(self) -> str:
        """The job's status word, as recorded when it ended."""
        return self.stored.status or "lost"

    @property
    def reason(self) -> str:
        """Why the job did not succeed, as recorded ("" if it did)."""
        return self.stored.error or ""

    @property
    def host_status(self) -> str | None:
        return self.stored.host_status

    @property
    def cost(self) -> float | None:
        return self.stored.cost

    @property
    def definition(self) -> JobDefinition | None:
        """The definition as it was written (its references unresolved)."""
        if self.stored.definition is None:
            return None
        try:
            return validate_job_definition(self.stored.definition)
        except JobDefinitionError:
            return None

    def start(self) -> ConfidentialJob:
        return self  # nothing to run: the job is over

    def extend(self, duration: str | int) -> None:
        raise JobFailed(f"job {self._short()} ended: cannot extend it", self)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + " (from the local store)>"


#: How long a read waits for this process's own records to be committed first.
_FLUSH_S = 2.0


def _open(settings: Settings | None, store: Store | None) -> Store:
    """The store, with what this process handed its writer committed (bounded): a job that
    just ended is listed and loaded as it ended, not as the writer last wrote it."""
    opened = store if store is not None else open_store(settings)
    opened.flush(_FLUSH_S)
    return opened


def load(address: str, *, settings: Settings | None = None,
         store: Store | None = None) -> LoadedJob:
    """A finished job from the local store (by address, or a unique start of one), with no
    network: its results, ops, logs, warnings, status and summary. :class:`StoreError` in
    one line if there is none, or if it has not finished (``%nosana attach`` follows it)."""
    opened = _open(settings, store)
    record = opened.job(address)
    if not record.finished:
        where = ("its kernel is gone: the job may still run on the network" if record.stale
                 else "it is being recorded by another kernel")
        raise StoreError(f"job {record.address or record.key} has not finished ({where}); "
                         f"%nosana attach {record.address or record.key} follows it")
    return LoadedJob(record, opened)


def _status(record: StoredJob) -> str:
    word = record.status or ""
    return f"{word} (kernel gone)" if record.stale else word


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def jobs_table(*, last: int | None = 20, sweep: str | None = None, status: str | None = None,
               settings: Settings | None = None, store: Store | None = None) -> Table:
    """``%nosana jobs``: the recorded runs of every kernel, newest first (a sweep's in its
    order); ``status="running"`` means every job that has not finished."""
    opened = _open(settings, store)
    finished = False if status == "running" else None
    records = opened.jobs(last=last, sweep=sweep, finished=finished,
                          status=None if status in (None, "running") else status)
    rows = []
    for record in records:
        elapsed = (record.ended_at or time.time()) - record.started_at if (
            record.started_at) else None
        place = f"{record.sweep_name} #{record.sweep_index}" if record.sweep_name else ""
        results = " ".join(f"{k}={format_value(v, 12)}"
                           for k, v in list(record.results.items())[:3])
        rows.append([record.address or "(not listed)", record.network, record.market or "",
                     _status(record), _when(record.created_at),
                     "" if elapsed is None else format_duration(max(0.0, elapsed)), place,
                     label(record.params) if record.params else "", results])
    what = f"sweep {sweep}" if sweep else "jobs"
    title = f"nosana {what} in the local store ({opened.path})"
    return Table(["job", "network", "market", "status", "created", "elapsed", "sweep",
                  "params", "results"], rows, title=title,
                 empty="no recorded jobs" + (f" with status {status}" if status else ""))
