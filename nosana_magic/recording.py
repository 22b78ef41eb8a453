"""Every job recorded in the local store as it goes (docs/experiments.md §3).

:func:`record_job` subscribes one listener to a job's record before its machine starts. On
the package's loop thread each change becomes a field update, and each log line an append,
handed to the store's writer: nothing here waits for the disk, and nothing here can fail a
job (a store that cannot be written says so once, in the job's warnings).

What goes in is what the handle shows: the status word, the times, the cost, the results and
each op's outcome, the service URLs until the job ends, the log lines (already redacted by
the job) and, once known, the definition as written, its ``${…}`` references unresolved.
The job's own redactor runs over it all again in the store.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .joblog import StoredReader
from .protocol import EXPIRY_MARGIN_S
from .record import JobEvent, JobRecord
from .results import LogLine
from .secrets import Redactor, find_references
from .settings import reference_env
from .store import JobRecorder, Store, StoreError

if TYPE_CHECKING:
    from .jobdef import JobDefinition
    from .results import ServiceUrl

__all__ = ["record_job", "stored_reader"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _JobRedactor:
    """The job's redactor as it is when the store writes (it is known only once the
    definition is resolved, after the record began)."""

    job: JobRecord

    def redact(self, text: str) -> str:
        return self.job._redactor.redact(text)

    def __bool__(self) -> bool:
        return bool(self.job._redactor)


def _url(url: ServiceUrl, expires_at: float) -> dict[str, Any]:
    return {"url": url.url, "port": url.port, "op_id": url.op_id, "private": url.private,
            "expires_at": expires_at}


def _ops(job: JobRecord) -> dict[str, dict[str, Any]]:
    return {op_id: {"status": op.status, "host_status": op.host_status,
                    "exit_code": op.exit_code, "ended_by": op.ended_by, "ran": op.ran,
                    "results": op.results}
            for op_id, op in job.ops.items()}


class _Recording:
    """The listener: the job's changes as store updates (loop thread)."""

    def __init__(self, job: JobRecord, recorder: JobRecorder,
                 definition: Callable[[], JobDefinition | None], *, skip: int = 0,
                 skip_until: float = 0.0) -> None:
        self.job = job
        self.recorder = recorder
        self._definition = definition
        self._definition_written = False
        #: A job taken over from an earlier record: the host replays its log from the
        #: start, and the lines the store has already are not written twice.
        self._skip = skip
        self._skip_until = skip_until

    def __call__(self, event: JobEvent) -> None:
        if event.kind == "log" and event.lines:
            lines = event.lines
            while self._skip and lines and lines[0].timestamp <= self._skip_until:
                self._skip -= 1
                lines = lines[1:]
            if lines:
                self._skip = 0
                self.recorder.append_logs(lines)
        elif event.kind == "logs":
            # The live lines could not all say their op and stream; the results' can. They
            # replace the lines the job had in memory, the last of its log.
            self._skip = 0
            self.recorder.replace_logs(event.lines,
                                       start=len(self.job.logs) - len(event.lines))
        elif event.kind == "done":
            self.finish()
        else:
            self.recorder.update(**self.fields(urls=event.kind == "urls"))

    def fields(self, *, urls: bool = False) -> dict[str, Any]:
        job = self.job
        values: dict[str, Any] = {
            "status": job.status, "phase": job.phase, "address": job.address,
            "node": job.node, "placeholder": job.placeholder, "timeout": job.timeout,
            "market": job.market.slug if job.market is not None else None,
            "started_at": job.started_at, "ended_at": job.ended_at, "price": job.price,
            "cost": job.cost, "host_status": job.host_status, "timings": dict(job.timings),
        }
        if not self._definition_written:
            definition = self._definition()
            if definition is not None:
                values["definition"] = definition.to_dict()  # as written: nothing resolved
                self._definition_written = True
        if urls:
            # A URL is good while the job runs: until its expiry (and the margin a job may
            # take past it to end), or its end.
            expiry = (job.expires_at or time.time() + job.timeout) + EXPIRY_MARGIN_S
            values["urls"] = [_url(url, expiry) for url in job.urls]
        return values

    def finish(self) -> None:
        job = self.job
        values = self.fields()
        ended = job.ended_at or time.time()
        values.update(
            results=dict(job.results), ops=_ops(job), warnings=list(job.warnings),
            error=job.reason or None, urls=[_url(url, ended) for url in job.urls])
        self.recorder.finish(**values)


def record_job(job: JobRecord, store: Store, *,
               definition: Callable[[], JobDefinition | None],
               take_over: bool = False, **placement: Any) -> JobRecorder | None:
    """Record ``job`` in ``store`` from now on; call before its machine starts.

    ``take_over``: the job (its address) may be in the store already, recorded by a kernel
    that is gone: this process records it from now on, and the lines the store holds are
    not stored again when the host replays them. ``placement``: ``sweep_id`` and
    ``sweep_index`` for a job of a sweep. Returns the recorder, or ``None`` when the store
    could not be used (the job says so in its warnings and runs as ever).
    """
    redactor = _JobRedactor(job)
    skip, skip_until = 0, 0.0
    try:
        recorder: JobRecorder | None = None
        if take_over and job.address is not None:
            try:
                stored = store.job(job.address)
            except StoreError:
                stored = None
            if stored is not None and (stored.finished or store.recorded_here(stored.key)):
                # Its record is whole (and another handle may read its log from it): this
                # handle keeps what it follows in memory and writes nothing.
                return None
            if stored is not None:
                _redact_as_recorded(job, stored.definition)
                recorder = store.take_over(stored.key, redactor=redactor)
                skip = stored.log_lines
                skip_until = _last_stamp(store, stored.key, stored.log_lines)
        if recorder is None:
            recorder = store.record(network=job.network_name, redactor=redactor,
                                    params=job.params, timeout=job.timeout,
                                    address=job.address, status=job.status, **placement)
    except StoreError as exc:
        job._warn(f"not recorded in the local store: {exc}")
        log.warning("job %s is not recorded in the local store: %s", job.address, exc)
        return None
    job.subscribe(_Recording(job, recorder, definition, skip=skip, skip_until=skip_until))
    if not skip:
        # The store's line numbers are the log's: the lines it committed may leave memory.
        # (A job taken over keeps its log in memory: the host's replay may not match what
        # the store holds line for line.)
        job._log.keep_in(stored_reader(store, recorder.key))
        recorder.on_commit = job._log.committed
    return recorder


def stored_reader(store: Store, key: str) -> StoredReader:
    """Reads a job's lines back from the store, as the log's lines."""
    return functools.partial(_stored_lines, store, key)


def _stored_lines(store: Store, key: str, start: int, stop: int | None) -> Iterator[LogLine]:
    for line in store.iter_logs(key, start, stop):
        yield LogLine(line.op_id, line.stream, line.text, line.timestamp)


def _redact_as_recorded(job: JobRecord, definition: dict[str, Any] | None) -> None:
    """A job followed again knows no secret values (its definition was sent by another
    kernel), but its record keeps the definition as written: the values its ``${env:NAME}``
    references have here (the same user's environment, as a rule) are redacted from what
    the host sends back, in the handle and in the store."""
    if definition is None or job._redactor:
        return
    refs, _ = find_references(definition)
    env = reference_env()
    values = {r.name: env[r.name] for r in refs if r.is_secret and env.get(r.name)}
    if values:
        job._set_redactor(Redactor(values))


def _last_stamp(store: Store, key: str, count: int) -> float:
    """The timestamp of the last line the store holds of a job (0 without one)."""
    if count <= 0:
        return 0.0
    last = store.logs(key, count - 1, count)
    return last[-1].timestamp if last else 0.0
