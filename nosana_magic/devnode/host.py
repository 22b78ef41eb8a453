"""An emulated Nosana host: its keypair, its flows, and the job lifecycle of docs/protocol.md §9.

One :class:`EmulatedHost` runs at most one job at a time (a busy host takes no other job).
For each job it keeps a :class:`JobRecord`: the flow (``FlowState``) the node API serves, the
real job definition, the node log history and the node-state history the WebSocket routes
replay. Ops are run by :class:`~nosana_magic.devnode.executor.Executor` as local processes.

Everything here runs on the devnode's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from ..jobdef import JobDefinitionError, validate_job_definition
from ..protocol import now_ms
from ..results import FlowState, NodeLogEntry, NodeLogPending
from ..wallet import Wallet
from .config import DevNodeConfig
from .executor import OUTPUT_METHOD, Executor
from .ipfs import IpfsStore
from .ledger import Ledger, LedgerJob, Market
from .reaper import Reaper
from .services import ServiceRegistry

__all__ = ["EmulatedHost", "JobRecord", "LogHub", "Subscription", "flow_wire"]

_log = logging.getLogger(__name__)

EndReason = Literal["stopped", "expired", "quit"]
T = TypeVar("T")

#: What the node pushes into ``errors`` when nobody collected the results in the window.
NOT_COLLECTED = "Results were not collected before the timeout."

#: Node op progress statuses (``GET /job/{id}/ops``) by op status.
_PROGRESS = {
    "init": "init",
    "running": "running",
    "success": "finished",
    "failed": "failed",
    "stopped": "stopped",
}


#: chalk's colours by node log type (a host run in a terminal writes them; docs/protocol.md §4).
_COLOURS = {"success": 32, "error": 31, "stop": 32}
_CYAN = 36


def coloured(kind: str, text: str, bold: str | None = None) -> str:
    """``text`` as chalk colours it for a node log line of type ``kind`` (``bold`` inside)."""
    if bold:
        text = text.replace(bold, f"\x1b[1m{bold}\x1b[22m")
    return f"\x1b[{_COLOURS.get(kind, _CYAN)}m{text}\x1b[39m"


def flow_wire(flow: FlowState) -> dict[str, Any]:
    """The flow as a host stores and serves it: JSON leaves out what was never set, so there
    is no ``errors`` key until an error was added, and no ``results`` on an op without
    results rules (docs/protocol.md §14)."""
    wire = flow.model_dump(by_alias=True)
    if not wire.get("errors"):
        wire.pop("errors", None)
    for op in wire.get("opStates") or []:
        if op.get("results") is None:
            op.pop("results", None)
    return wire


def compact_json(value: Any) -> str:
    """JSON as JavaScript's ``JSON.stringify`` writes it (no spaces).

    Should the text hold something UTF-8 cannot encode (a lone surrogate, from a
    ``"\\ud800"`` escape in a body), it is written with ASCII ``\\u`` escapes instead, so
    that every answer can be sent.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    return text


def log_frame(entry_text: str) -> str:
    """The ``/log`` frame of one entry: ``{"path":"log","data":"<the entry's JSON>"}``."""
    return f'{{"path":"log","data":{json.dumps(entry_text, ensure_ascii=False)}}}'


#: How long an op's output waits at most for a slow ``/log`` subscriber (one that reads
#: nothing for that long is then dropped when its backlog overflows).
SLOW_READER_WAIT_S = 30.0

#: Stands for the line in an output template (JSON escapes none of its characters).
_LINE_MARK = "<<line>>"


def _twice_escaped(line: str) -> str:
    """``line`` as it stands in a frame: escaped in the entry's JSON, and again as the
    frame's ``data`` string (JSON escaping works character by character, so pieces join)."""
    return encode_basestring(encode_basestring(line))[3:-3]


# ---------------------------------------------------------------------- log streams


class Subscription(Generic[T]):
    """A live feed of one job's entries for one subscriber (bounded)."""

    def __init__(self, cap: int) -> None:
        self._items: deque[T] = deque()
        self._cap = cap
        self._event = asyncio.Event()
        self._drained = asyncio.Event()
        #: The subscriber fell more than ``cap`` entries behind: it must give up.
        self.overflowed = False

    def __len__(self) -> int:
        """Entries waiting to be sent."""
        return len(self._items)

    def push_many(self, items: list[T]) -> None:
        # Full already: the subscriber stopped reading. (One chunk of output may pass the
        # cap on its own; the op then waits for room, see LogHub.room.)
        if len(self._items) >= self._cap:
            self.overflowed = True
        else:
            self._items.extend(items)
        self._event.set()

    async def next_batch(self, timeout: float) -> list[T]:
        """The entries that arrived since the last call (empty after ``timeout`` seconds)."""
        if not self._items and not self.overflowed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()
        batch = list(self._items)
        self._items.clear()
        self._drained.set()
        return batch

    async def drained(self, timeout: float) -> None:
        """Until the entries waiting now were taken (or ``timeout`` seconds)."""
        if self._items:
            self._drained.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)


class LogHub(Generic[T]):
    """Per-job history plus live subscribers: replay, then stream.

    The history of a job keeps at most ``history_cap`` entries and, when ``size`` is given,
    at most ``byte_cap`` of their total size (oldest dropped first; the newest entry is
    always kept).
    """

    def __init__(
        self,
        history_cap: int,
        subscriber_cap: int = 50_000,
        *,
        byte_cap: int | None = None,
        size: Callable[[T], int] | None = None,
    ) -> None:
        self._history: dict[str, deque[T]] = {}
        self._bytes: dict[str, int] = {}
        self._subscribers: dict[str, set[Subscription[T]]] = {}
        self._history_cap = history_cap
        self._subscriber_cap = subscriber_cap
        self._byte_cap = byte_cap
        self._size = size

    def publish(self, job: str, item: T) -> None:
        self.publish_many(job, [item])

    def publish_many(self, job: str, items: list[T]) -> None:
        """Entries in order: kept in the history and pushed to every subscriber at once."""
        history = self._history.setdefault(job, deque())
        history.extend(items)
        size = self._size
        total = self._bytes.get(job, 0) + (sum(map(size, items)) if size is not None else 0)
        while len(history) > 1 and (
            len(history) > self._history_cap
            or (self._byte_cap is not None and total > self._byte_cap)
        ):
            dropped = history.popleft()
            total -= size(dropped) if size is not None else 0
        self._bytes[job] = total
        for sub in self._subscribers.get(job, ()):
            sub.push_many(items)

    async def room(self, job: str, timeout: float) -> None:
        """Until no subscriber of ``job`` has more than half its cap waiting, or ``timeout``
        seconds: a slow reader slows the job's output down (its pipe fills, and the op
        waits to write) rather than falling so far behind that it must be dropped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            behind = [sub for sub in self._subscribers.get(job, ())
                      if len(sub) > self._subscriber_cap // 2]
            left = deadline - loop.time()
            if not behind or left <= 0:
                return
            await behind[0].drained(left)

    def subscribe(self, job: str) -> tuple[list[T], Subscription[T]]:
        """The job's history so far and a subscription to what comes next (no gap: both are
        taken in one step of the event loop)."""
        sub: Subscription[T] = Subscription(self._subscriber_cap)
        self._subscribers.setdefault(job, set()).add(sub)
        return list(self._history.get(job, ())), sub

    def unsubscribe(self, job: str, sub: Subscription[T]) -> None:
        subs = self._subscribers.get(job)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[job]

    def history(self, job: str) -> list[T]:
        return list(self._history.get(job, ()))

    def forget(self, job: str) -> None:
        self._history.pop(job, None)
        self._bytes.pop(job, None)


# ---------------------------------------------------------------------- one job on one host


class JobRecord:
    """A host's record of one job: the flow and the phase gates of the node API."""

    def __init__(self, job: LedgerJob, expiry_at: float, *,
                 info_last_event: str = "waiting-for-result") -> None:
        self.job = job
        self.placeholder: dict[str, Any] | None = None
        #: The real definition as received (``POST /job/{id}/job-definition``).
        self.definition: Any = None
        self.definition_received = False
        self.flow: FlowState | None = None
        #: waiting | validating | running | finishing | window | done
        self.phase = "claiming"
        self.expiry_at = expiry_at
        self.end_reason: EndReason | None = None
        self.end_event = asyncio.Event()
        self.definition_event = asyncio.Event()
        self.results_collected = asyncio.Event()
        self.expiry_changed = asyncio.Event()
        #: ``POST /job/{id}/stop`` moved the expiry to now (the job then ends as expired).
        self.stopped_through_api = False
        self.executor: Executor | None = None
        #: ``"final-status"``: the ``/info`` payload when ``endTime`` was first set, which is
        #: then the last event of every stream (``DevNodeConfig.info_last_event``).
        self.final_info: str | None = None
        self._info_at_end_time = info_last_event == "final-status"
        #: The host has worked out what to do with the results (the results window is open,
        #: or there is none): the ``/info`` stream sends its last event.
        self.results_resolved = False
        #: A startup health check of one of the job's ports passed: ``/endpoints`` says
        #: ``ONLINE`` (docs/protocol.md §5).
        self.service_url_ready = False
        self._changed = asyncio.Event()

    @property
    def address(self) -> str:
        return self.job.address

    @property
    def running(self) -> bool:
        """The node's TaskManager is registered (ops may run)."""
        return self.phase == "running"

    def end(self, reason: EndReason) -> None:
        """Expiry, a stop or a quit: the first reason wins."""
        if self.end_reason is None:
            self.end_reason = reason
        self.end_event.set()

    # -- change notification (SSE) --------------------------------------------------------

    def notify(self) -> None:
        """Wake every ``/info`` stream (in ``final-status`` order, take the final event at
        once when the flow ended)."""
        if (self._info_at_end_time and self.final_info is None and self.flow is not None
                and self.flow.end_time is not None):
            self.final_info = compact_json(self.info_payload())
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def info_ended(self) -> bool:
        """The ``/info`` stream's next event is its last (docs/protocol.md §6).

        A host's stream ends at the first poll that sees ``endTime``; by then the host has
        most often overwritten the final status with ``waiting-for-result`` (the results
        window opened), so the devnode waits for that overwrite, unless ``final-status``
        order was asked for.
        """
        if self.flow is None or self.flow.end_time is None:
            return False
        return self.final_info is not None or self.results_resolved

    def info_event(self) -> str | None:
        """The ``/info`` event to send now, or None while the host is between setting
        ``endTime`` and resolving the results (no poll of the real host lands there as
        the devnode runs it)."""
        if self.final_info is not None:
            return self.final_info
        if self.flow is not None and self.flow.end_time is not None and not self.info_ended:
            return None
        return compact_json(self.info_payload())

    def change_event(self) -> asyncio.Event:
        return self._changed

    def info_payload(self) -> dict[str, Any]:
        """The ``/info`` event: the flow without op logs/providerId, with ``operations``."""
        assert self.flow is not None
        payload = self.flow.model_dump(by_alias=True)
        for op in payload.get("opStates") or []:
            op.pop("logs", None)
            op.pop("providerId", None)
        payload["errors"] = payload.get("errors") or []
        payload["operations"] = self.operations()
        return payload

    # -- operations (the TaskManager's view) ----------------------------------------------

    def op_progress(self) -> dict[str, str]:
        if self.flow is None:
            return {}
        return {op.operation_id: _PROGRESS.get(op.status, op.status) for op in self.flow.op_states}

    def groups(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        progress = self.op_progress()
        for op in self.flow.op_states if self.flow is not None else []:
            out.setdefault(op.group or op.operation_id, {})[op.operation_id] = progress[
                op.operation_id
            ]
        return out

    def current_group(self) -> str | None:
        groups = self.groups()
        for name, ops in groups.items():
            if any(status in ("init", "running") for status in ops.values()):
                return name
        return None

    def operations(self) -> dict[str, Any] | None:
        if not self.running:
            return None
        current = self.current_group()
        statuses = self.groups().get(current or "", {})
        group_status = "running" if any(s == "running" for s in statuses.values()) else "pending"
        return {"all": self.op_progress(), "currentGroup": current, "currentGroupStatus":
                group_status if current else None}


# ---------------------------------------------------------------------- the host


class EmulatedHost:
    """One emulated node: keypair, market, flows, log streams and the job lifecycle."""

    def __init__(
        self,
        *,
        market: Market,
        ledger: Ledger,
        ipfs: IpfsStore,
        services: ServiceRegistry,
        config: DevNodeConfig,
        workdir: Callable[[], Path],
        wallet: Wallet | None = None,
        reaper: Reaper | None = None,
    ) -> None:
        self.wallet = wallet or Wallet.generate()
        #: Kills a job's processes should this process die while they run.
        self._reaper = reaper
        self._market = market
        self._ledger = ledger
        self._ipfs = ipfs
        self._services = services
        self._config = config
        self._workdir = workdir
        self.records: OrderedDict[str, JobRecord] = OrderedDict()
        self.current: JobRecord | None = None
        self._idle_since = time.time()
        #: Each entry as its ``/log`` frame, made once for every subscriber.
        self.node_logs: LogHub[str] = LogHub(
            config.log_history, byte_cap=config.log_history_bytes, size=_text_size)
        self.task_logs: LogHub[dict[str, Any]] = LogHub(
            config.log_history, byte_cap=config.log_history_bytes, size=_task_log_size)
        self.node_states: LogHub[dict[str, Any]] = LogHub(1_000)
        self._state_index = 0
        self._last_task_ts = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._closing_event = asyncio.Event()
        self.started_at = time.time()

    # -- identity (HostSlot) -------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.wallet.address

    @property
    def market(self) -> Market:
        return self._market

    @property
    def busy(self) -> bool:
        return self.current is not None

    @property
    def idle_since(self) -> float:
        return self._idle_since

    def record(self, job: str) -> JobRecord | None:
        return self.records.get(job)

    def __repr__(self) -> str:
        return f"EmulatedHost({self.address}, market={self._market.slug!r}, busy={self.busy})"

    # -- ledger events -------------------------------------------------------------------

    def start_job(self, job: LedgerJob) -> None:
        """The market matched this host with ``job`` (the run exists): start the lifecycle."""
        started = job.started_at if job.started_at is not None else time.time()
        record = JobRecord(job, expiry_at=started + job.timeout,
                           info_last_event=self._config.info_last_event)
        self.records[job.address] = record
        self.records.move_to_end(job.address)
        while len(self.records) > max(1, self._config.keep_flows):
            old, _ = self.records.popitem(last=False)
            self.node_logs.forget(old)
            self.task_logs.forget(old)
            self.node_states.forget(old)
            # Its files go with its flow (off the event loop: a job may leave many).
            self._spawn(asyncio.to_thread(shutil.rmtree, self._workdir() / old, True),
                        f"remove the directory of job {old}")
        self.current = record
        self._spawn(self._lifecycle(record), f"job {job.address}")

    def end_job(self, job: str) -> None:
        """The project ended the job on the ledger."""
        record = self.records.get(job)
        if record is not None and record.phase not in ("window", "done"):
            self._node_log(record, "Job stopped by its project", kind="stop")
            record.end("stopped")

    def job_extended(self, job: str) -> None:
        record = self.records.get(job)
        if record is not None and record.job.started_at is not None:
            record.expiry_at = record.job.started_at + record.job.timeout
            record.expiry_changed.set()

    def stop_now(self, record: JobRecord) -> None:
        """``POST /job/{id}/stop``: the job expires now (the flow ends ``success``)."""
        record.stopped_through_api = True
        record.expiry_at = time.time()
        record.expiry_changed.set()

    def definition_posted(self, record: JobRecord, definition: Any) -> None:
        """``POST /job/{id}/job-definition`` accepted (the route checked the phase)."""
        record.definition = definition
        record.definition_received = True
        record.phase = "validating"
        record.definition_event.set()

    def results_served(self, record: JobRecord) -> None:
        record.results_collected.set()

    async def shutdown(self, timeout: float) -> None:
        """The devnode stops: kill every process, end every lifecycle (no results window)."""
        self._closing = True
        self._closing_event.set()
        for record in list(self.records.values()):
            record.end("quit")
            record.notify()
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)

    # -- node log, task log and state streams ----------------------------------------------

    def emit(self, record: JobRecord, entry: NodeLogEntry) -> None:
        """A node log entry for ``record`` (from the executor or the host itself).

        What goes on the wire is what a Nosana host sends (docs/protocol.md §7): a progress
        ("process") line says what it waits for in a ``pending`` object, other lines have no
        ``pending``, and no line has the ``payload`` by which the executor says which op and
        stream it came from (unless ``log_payload``); the host's own lines are coloured when
        ``node_log_colors`` is set.
        """
        self.node_logs.publish(record.address, log_frame(self._entry_text(record, entry)))
        if record.running:
            self._task_log(record, entry)

    async def emit_output(self, record: JobRecord, op_id: str, stream: str, lines: list[str],
                          timestamp: int) -> None:
        """Container lines of one op, read in one chunk. Each is sent as its own entry, the
        text :meth:`emit` makes of it, but made from one template per chunk: the line is the
        only part that differs. Returns once the ``/log`` subscribers have room for more
        (at most ``SLOW_READER_WAIT_S``)."""
        entry = NodeLogEntry(type="log", method=OUTPUT_METHOD, log=_LINE_MARK,
                             timestamp=timestamp, job=record.address,
                             payload={"opId": op_id, "stream": stream})
        head, _, tail = log_frame(self._entry_text(record, entry)).partition(_LINE_MARK)
        self.node_logs.publish_many(record.address,
                                    [head + _twice_escaped(line) + tail for line in lines])
        if record.running:
            group = self._group_of(record, op_id)
            first = max(now_ms(), self._last_task_ts + 1)  # strictly increasing, as a node's
            self._last_task_ts = first + len(lines) - 1
            self.task_logs.publish_many(record.address, [
                {"opId": op_id, "group": group, "type": "container", "timestamp": first + i,
                 "message": line} for i, line in enumerate(lines)])
        await self.node_logs.room(record.address, SLOW_READER_WAIT_S)

    def _entry_text(self, record: JobRecord, entry: NodeLogEntry) -> str:
        """What a Nosana host sends of ``entry`` (docs/protocol.md §7)."""
        if entry.job is None:
            entry.job = record.address
        if entry.timestamp is None:
            entry.timestamp = now_ms()
        data = entry.model_dump(by_alias=True, exclude_none=True)
        if entry.type == "process" and entry.pending is None:
            data["pending"] = NodeLogPending(
                is_pending=True, expecting=entry.method or "").to_wire()
        if not self._config.log_payload:
            data.pop("payload", None)
        if self._config.node_log_colors and entry.type != "log" and entry.log:
            data["log"] = coloured(entry.type, entry.log, bold=record.address)
        return compact_json(data)

    def _group_of(self, record: JobRecord, op_id: str) -> str:
        if record.flow is not None:
            for op in record.flow.op_states:
                if op.operation_id == op_id:
                    return op.group or op_id
        return op_id

    def _task_log(self, record: JobRecord, entry: NodeLogEntry) -> None:
        payload = entry.payload if isinstance(entry.payload, dict) else {}
        op_id = payload.get("opId")
        if not isinstance(op_id, str):
            return
        group = self._group_of(record, op_id)
        kind = "container" if entry.type == "log" else (
            "error" if entry.type in ("error", "nodeerr") else "info"
        )
        # The node's TaskLog timestamps are strictly increasing.
        stamp = max(now_ms(), self._last_task_ts + 1)
        self._last_task_ts = stamp
        self.task_logs.publish(
            record.address,
            {"opId": op_id, "group": group, "type": kind, "timestamp": stamp,
             "message": entry.log},
        )

    def _node_log(
        self, record: JobRecord, text: str, *, kind: str = "info", method: str = "JobHandler"
    ) -> None:
        self.emit(record, NodeLogEntry(log=text, type=kind, method=method, job=record.address,
                                       timestamp=now_ms()))

    def _state(self, record: JobRecord, status: str, **extra: Any) -> None:
        self._state_index += 1
        self.node_states.publish(
            record.address,
            {"status": status, "state": {"job": record.address, **extra},
             "timestamp": now_ms(), "index": self._state_index},
        )

    # -- the lifecycle (docs/protocol.md §9) -----------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lifecycle(self, record: JobRecord) -> None:
        expiry = asyncio.get_running_loop().create_task(self._expiry_timer(record))
        try:
            self._state(record, "claiming-job")
            self._node_log(record, f"Claimed job {record.address}", kind="success")
            self._state(record, "claiming-job-success")
            if time.time() >= record.expiry_at:
                # Already past its time: straight to finishing (an empty result).
                record.flow = FlowState(status="failed", start_time=now_ms(), end_time=now_ms())
                record.notify()
            else:
                await self._resolve_and_run(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must still end the job on the ledger
            _log.exception("devnode host %s: job %s failed", self.address, record.address)
            self._fail_flow(record, f"host error: {type(exc).__name__}: {exc}")
        finally:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
        try:
            if not self._closing:
                await self._finish(record)
        finally:
            record.phase = "done"
            record.notify()
            if self.current is record:
                self.current = None
                self._idle_since = time.time()
                self._ledger.wake()

    def _fail_flow(self, record: JobRecord, message: str) -> None:
        if record.flow is None:
            record.flow = FlowState(status="failed", start_time=now_ms(), op_states=[])
        record.flow.errors.append(message)
        if record.flow.end_time is None:
            record.flow.status = "failed"
            record.flow.end_time = now_ms()
        self._node_log(record, message, kind="error")
        record.notify()

    async def _expiry_timer(self, record: JobRecord) -> None:
        # Bounded by the job: it ends when the job expires or the lifecycle cancels it.
        while not record.end_event.is_set():
            remaining = record.expiry_at - time.time()
            if remaining <= 0:
                if not record.stopped_through_api:
                    # A real node writes nothing when a stop through its API ends the job (it
                    # only moves the expiry): say "expired" only when the timeout was reached.
                    self._node_log(record, "Job expired", kind="stop")
                record.end("expired")
                return
            record.expiry_changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(record.expiry_changed.wait(), remaining)

    def _fetch_placeholder(self, record: JobRecord) -> dict[str, Any]:
        # The same process holds the IPFS store; still go by the CID the ledger holds.
        self._node_log(record, "Resolving job definition", kind="process",
                       method="JobExternalUtil.resolveJobDefinition")
        try:
            document = self._ipfs.get_json(record.job.ipfs_job)
        except KeyError:
            raise LookupError(f"job definition {record.job.ipfs_job} not found on IPFS") from None
        if not isinstance(document, dict):
            raise LookupError(f"job definition {record.job.ipfs_job} is not a JSON object")
        self._node_log(record, "Job definition retrieved successfully", kind="success",
                       method="JobExternalUtil.resolveJobDefinition")
        return document

    async def _resolve_and_run(self, record: JobRecord) -> None:
        try:
            placeholder = self._fetch_placeholder(record)
        except LookupError as exc:
            self._fail_flow(record, str(exc))
            return
        record.placeholder = placeholder
        send = _logistics_type(placeholder, "send")
        start = now_ms()
        if send == "api-listen":
            record.flow = FlowState(status="waiting-for-job-definition", start_time=start,
                                    op_states=[])
            record.phase = "waiting"
            record.notify()
            self._state(record, "awaiting-job-definition")
            self._node_log(record, "Waiting for job definition", kind="process",
                           method="ApiListenJobDefinitionStrategy.load")
            await _first(record.definition_event, record.end_event)
            if not record.definition_event.is_set():
                # Only expiry (or a stop) ends this wait; the status stays as it was.
                self._state(record, "awaiting-job-definition-failed")
                record.flow.end_time = now_ms()
                record.notify()
                return
            self._state(record, "awaiting-job-definition-success")
            self._node_log(record, "Job definition received", kind="success")
            definition = record.definition
        elif send is None:
            # A public job: the pinned definition is the definition.
            record.flow = FlowState(status="init", start_time=start, op_states=[])
            definition = placeholder
            record.definition = definition
            record.definition_received = True
        else:
            record.flow = FlowState(status="logistics-error", start_time=start, op_states=[])
            self._fail_flow(record, f"logistics.send.type {send!r} is not supported by the devnode")
            record.flow.status = "logistics-error"
            return

        record.phase = "validating"
        self._state(record, "job-validating")
        self._node_log(record, "Validating job definition", kind="process",
                       method="JobExternalUtil.validate")
        try:
            validate_job_definition(definition)
        except JobDefinitionError as exc:
            # The node pushes the whole typia error array as ONE element.
            record.flow.errors.append(
                [{"path": p.typia_path, "expected": p.message} for p in exc.problems]
            )
            record.flow.status = "validation-error"
            record.flow.end_time = now_ms()
            self._state(record, "job-validating-failed")
            self._node_log(record, "Job definition validation failed", kind="error",
                           method="JobExternalUtil.validate")
            record.notify()
            return
        self._state(record, "job-validating-success")
        self._node_log(record, "Job definition validated", kind="success",
                       method="JobExternalUtil.validate")
        await self._run(record, definition)

    async def _run(self, record: JobRecord, definition: dict[str, Any]) -> None:
        assert record.flow is not None
        flow = record.flow
        flow.status = "init"
        workdir = self._workdir() / record.address
        workdir.mkdir(parents=True, exist_ok=True)
        executor = Executor(
            definition=definition,
            job=record.address,
            workdir=workdir,
            flow=flow,
            emit=lambda entry: self.emit(record, entry),
            output=lambda op, stream, lines, stamp: self.emit_output(record, op, stream, lines,
                                                                     stamp),
            changed=lambda: self._flow_changed(record),
            services=self._services,
            log_cap=self._config.op_log_cap,
            stop_grace=self._config.stop_grace,
            term_process_group=self._config.term_process_group,
            results_values=self._config.results_values,
        )
        record.executor = executor
        record.phase = "running"
        record.notify()
        self._state(record, "job-running")
        quitter = None
        if self._config.faults.host_quits_after is not None:
            quitter = asyncio.get_running_loop().create_task(
                self._quit_after(record, self._config.faults.host_quits_after)
            )
        if self._reaper is not None:
            self._reaper.watch(record.address)
        run = asyncio.get_running_loop().create_task(executor.run(), name=f"ops {record.address}")
        try:
            ended = asyncio.get_running_loop().create_task(record.end_event.wait())
            try:
                await asyncio.wait({run, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
            if not run.done():
                reason = record.end_reason or "quit"
                if self._closing:
                    executor.stop_grace = 0.0  # the devnode itself stops: no grace
                bound = self._config.stop_grace + self._config.stop_timeout
                await asyncio.wait_for(
                    executor.stop(reason, announce=not record.stopped_through_api), bound)
                await asyncio.wait({run}, timeout=bound)
            if not run.done():
                run.cancel()
                await asyncio.wait({run}, timeout=2.0)
                self._fail_flow(record, "the job's processes did not stop in time")
            elif run.exception() is not None:
                self._fail_flow(record, f"executor error: {run.exception()}")
        except BaseException:
            # Cancelled (the devnode is going down): never leave processes behind.
            if not run.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(executor.stop("quit"),
                                           self._config.stop_grace + self._config.stop_timeout)
                run.cancel()
            raise
        finally:
            if quitter is not None:
                quitter.cancel()
        if self._reaper is not None and run.done():
            self._reaper.forget(record.address)  # its processes are gone (else: the reaper's)
        if flow.end_time is None:
            flow.end_time = now_ms()
        flow.secrets = {}
        record.phase = "finishing"
        record.notify()
        await self._services.close_job(record.address)
        self._node_log(record, f"Job finished with status {flow.status}",
                       kind="success" if flow.status == "success" else "info")

    async def _quit_after(self, record: JobRecord, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._node_log(record, "Host is quitting", kind="stop")
        record.job.host_quit = True
        record.end("quit")

    def _flow_changed(self, record: JobRecord) -> None:
        flow = record.flow
        if flow is not None and flow.end_time is None:
            secrets = self._services.secrets(record.address)
            flow.secrets = secrets
            ready = self._services.ready(record.address)
            if ready is not None and not record.service_url_ready:
                # A host says its service is ready once a startup health check passed.
                record.service_url_ready = True
                self._state(record, "service-url-ready", url=ready.url)
        record.notify()

    async def _finish(self, record: JobRecord) -> None:
        """``finish``: the results window (``receive: api-listen``), the public result, the
        ledger."""
        flow = record.flow
        if flow is None:
            flow = record.flow = FlowState(status="failed", start_time=now_ms(),
                                           end_time=now_ms())
        if flow.end_time is None:
            flow.end_time = now_ms()
        record.phase = "finishing"
        original = flow.status
        receive = _logistics_type(record.placeholder, "receive") if record.placeholder else None
        document: dict[str, Any]
        if record.job.host_quit:
            # The host is gone: nobody serves results; the ledger records a stopped job.
            flow.errors.append("The host quit while the job ran.")
            document = _blank(flow, original)
        elif receive == "api-listen":
            flow.status = "waiting-for-result"
            record.phase = "window"
            record.results_resolved = True
            record.notify()
            self._state(record, "awaiting-result-send")
            self._node_log(record, "Waiting for the results to be collected", kind="process",
                           method="JobExternalUtil.resolveResult")
            # The devnode stopping ends the window too (it then publishes nothing).
            await _first(record.results_collected, self._closing_event,
                         timeout=max(0.0, self._config.results_window))
            if self._closing:
                return
            if not record.results_collected.is_set():
                # The host adds the error to the flow and to its public copy; when the flow
                # already had errors, the two share one list, so it lands there twice.
                flow.errors.extend([NOT_COLLECTED] * (2 if flow.errors else 1))
                if self._config.close_results_window:
                    flow.status = original  # the window closes for late GETs too
                self._state(record, "awaiting-result-send-failed")
                self._node_log(record, NOT_COLLECTED, kind="error")
            else:
                self._state(record, "awaiting-result-send-success")
                self._node_log(record, "Results collected", kind="success")
            document = _blank(flow, original)
        elif receive is None:
            # A public job: the whole result goes to IPFS.
            document = flow_wire(flow)
        else:
            flow.errors.append(f"logistics.receive.type {receive!r} is not supported")
            document = _blank(flow, original)
        record.results_resolved = True
        record.notify()
        cid: str | None
        try:
            cid = self._ipfs.put_json(document)
        except Exception as exc:  # the job must still end on the ledger
            _log.exception("devnode host %s: job %s: result not pinned", self.address,
                           record.address)
            cid = None
            self._node_log(record, f"Job result could not be published ({type(exc).__name__}); "
                           "the job is completed without one", kind="error")
        self._ledger.complete(record.address, cid)
        if cid is not None:
            self._node_log(record, f"Job result published: {cid}", kind="success")
        if not self._config.keep_log_history:
            # A host clears its log and state streams when it goes back to its loop after a
            # job (docs/protocol.md §7): a later subscriber gets nothing.
            self.node_logs.forget(record.address)
            self.node_states.forget(record.address)
            self.task_logs.forget(record.address)


def _text_size(text: str) -> int:
    return len(text.encode("utf-8", "replace"))


def _task_log_size(entry: dict[str, Any]) -> int:
    # The message plus about what the other fields take once written as JSON.
    return _text_size(str(entry.get("message", ""))) + 100


def _blank(flow: FlowState, status: str) -> dict[str, Any]:
    """The public result of a confidential job: no ops, logs, results or secrets."""
    return {
        "status": status,
        "startTime": flow.start_time,
        "endTime": flow.end_time,
        "opStates": [],
        "errors": list(flow.errors),
    }


def _logistics_type(definition: dict[str, Any] | None, which: str) -> str | None:
    logistics = definition.get("logistics") if isinstance(definition, dict) else None
    part = logistics.get(which) if isinstance(logistics, dict) else None
    kind = part.get("type") if isinstance(part, dict) else None
    return kind if isinstance(kind, str) else None


async def _first(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Until one of ``events`` is set or ``timeout`` passes (without a timeout, the callers'
    events include one that the job's expiry or the devnode's stop sets)."""
    waiters = [asyncio.get_running_loop().create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
