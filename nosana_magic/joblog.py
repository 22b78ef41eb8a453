"""A job's log: its lines kept in bounded memory (:class:`JobLog`), and made whole once the
results are in (:func:`reconcile`).

Where the lines are: while a job runs, its newest :data:`LOG_WINDOW` lines stay in memory (the
live view and the reconciliation below need them); the local store (docs/experiments.md) has
every line, and older ones are read back from it when asked for. Once the job is done and the
store has committed its log, no line stays in memory. Without a store (it could not be
opened), every line stays in memory.

Made whole: the live ``/log`` lines reconciled with the results' per-op logs.

What the live stream lacks (docs/protocol.md §7): a Nosana host does not say which op or which
stream (stdout/stderr) a container line came from, and the client can miss lines (a dropped
socket whose replay starts after the last line it saw, a history the host capped, cleared,
or that a fault cut short). The results hold each op's lines with their stream, the last
24,999 of each op (docs/protocol.md §14). So once the results are in, the job's log is
rebuilt by :func:`reconcile`:

* every container line the results hold is in it exactly once, with its op and stream: a
  live line found in the results takes the results' op and stream; a line the live stream
  missed is put back from the results, before the next line of its op that did arrive;
* the host's own lines stay where they arrived;
* a live container line the results do not hold (an op printed more than the host keeps)
  stays as it came, its stream ``output`` (not known) unless the host said it;
* when lines may be missing from both (the live stream missed lines the results no longer
  hold), a warning says of which op, and before when.

Pure: lines in, lines and counts out.
"""

from __future__ import annotations

import bisect
import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import overload

from .results import LogLine

__all__ = ["LOG_WINDOW", "OP_LOG_CAP", "JobLog", "OpLines", "Reconciled", "reconcile"]

#: How many lines of each op a host keeps in the results, the oldest dropped first.
OP_LOG_CAP = 24_999

#: Lines of a running job kept in memory: enough for the results of a few ops to be matched
#: against what arrived live (about 13 MB for short lines).
LOG_WINDOW = 4 * OP_LOG_CAP

#: Reads stored lines ``start <= index < stop`` (``stop`` None: to the end), in order.
StoredReader = Callable[[int, "int | None"], Iterator[LogLine]]


class JobLog(Sequence[LogLine]):
    """A job's log lines in order, as a read-only sequence: ``len``, indexing, slicing (a
    list), iterating. The newest lines are in memory, older ones in the local store (read
    back a chunk at a time when asked for: see the module's docstring). Any thread may read;
    the job's loop thread writes.

    Equal to any sequence of the same lines (``job.logs == []`` for a job with no line).
    """

    def __init__(self, *, window: int | None = None) -> None:
        self._lock = threading.Lock()
        self._window = LOG_WINDOW if window is None else window
        #: The lines from index ``_start`` on, as four columns (op ids, streams, texts,
        #: timestamps): a running job holds many, and no object per line is then kept for
        #: the garbage collector to follow.
        self._lines = _Columns()
        self._start = 0
        #: Reads lines back from the store; how many of them it has committed.
        self._reader: StoredReader | None = None
        self._committed = 0
        #: The lines in memory were made again; the store has not committed them yet.
        self._replacing = False
        self._done = False

    @classmethod
    def in_store(cls, count: int, reader: StoredReader) -> JobLog:
        """The log of a job read back from the store: ``count`` lines, none in memory."""
        log = cls()
        log._reader, log._start, log._committed, log._done = reader, count, count, True
        return log

    # -- written by the job ------------------------------------------------------------------

    def keep_in(self, reader: StoredReader) -> None:
        """The store records this log: lines it committed may leave memory."""
        with self._lock:
            self._reader = reader

    def committed(self, count: int, replaced: bool = False) -> None:
        """The store committed the first ``count`` lines, a replacement of the lines in
        memory with them if ``replaced`` (the store's writer thread calls this)."""
        with self._lock:
            if self._replacing and not replaced:
                return  # committed before the replacement: it says nothing of the new lines
            self._replacing = False
            self._committed = max(self._committed, count)
            self._release()

    def extend(self, lines: Sequence[LogLine]) -> None:
        with self._lock:
            self._lines.extend(lines)
            self._release()

    def tail(self, count: int) -> tuple[int, list[LogLine]]:
        """The last ``count`` lines (read back from the store as needed), and the index of
        the first of them."""
        size = len(self)
        start = max(0, size - count)
        return start, self._range(start, size)

    def replace_from(self, start: int, lines: Sequence[LogLine]) -> None:
        """The lines from index ``start`` on, made again (:func:`reconcile`); they stay in
        memory until the store has them."""
        with self._lock:
            self._lines.cut(max(0, start - self._start))
            self._start = min(self._start, start)
            self._lines.extend(lines)
            self._committed = min(self._committed, start)
            self._replacing = self._reader is not None

    def done(self) -> None:
        """The job is done: once the store committed its lines, none stays in memory."""
        with self._lock:
            self._done = True
            self._release()

    def _release(self) -> None:
        if self._reader is None:
            return
        keep = 0 if self._done else self._window
        drop = min(len(self._lines) - keep, self._committed - self._start)
        if drop > 0:
            self._lines.drop(drop)
            self._start += drop

    # -- read --------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return self._start + len(self._lines)

    def _range(self, start: int, stop: int) -> list[LogLine]:
        with self._lock:
            first, reader = self._start, self._reader
            lines = self._lines.lines(max(0, start - first), max(0, stop - first))
        out: list[LogLine] = []
        if start < first and reader is not None:
            out += islice(reader(start, min(stop, first)), min(stop, first) - start)
        return out + lines

    @overload
    def __getitem__(self, index: int) -> LogLine: ...

    @overload
    def __getitem__(self, index: slice) -> list[LogLine]: ...

    def __getitem__(self, index: int | slice) -> LogLine | list[LogLine]:
        size = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(size)
            if step != 1:
                return self._range(0, size)[index]
            return self._range(start, stop) if start < stop else []
        at = index + size if index < 0 else index
        if not 0 <= at < size:
            raise IndexError("log line index out of range")
        return self._range(at, at + 1)[0]

    def __iter__(self) -> Iterator[LogLine]:
        with self._lock:
            first, reader = self._start, self._reader
            lines = self._lines.lines(0, len(self._lines))
        if first and reader is not None:
            yield from islice(reader(0, first), first)
        yield from lines

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=False))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        with self._lock:
            held = len(self._lines)
            total = self._start + held
        return f"<JobLog {total:,} lines, {held:,} in memory>"


#: A LogLine from its fields' tuple.
_as_line = functools.partial(tuple.__new__, LogLine)


class _Columns:
    """Log lines as four lists (op ids, streams, texts, timestamps)."""

    __slots__ = ("ops", "stamps", "streams", "texts")

    def __init__(self) -> None:
        self.ops: list[str | None] = []
        self.streams: list[str] = []
        self.texts: list[str] = []
        self.stamps: list[float] = []

    def __len__(self) -> int:
        return len(self.texts)

    def extend(self, lines: Sequence[LogLine]) -> None:
        if lines:
            ops, streams, texts, stamps = zip(*lines, strict=True)
            self.ops += ops
            self.streams += streams
            self.texts += texts
            self.stamps += stamps

    def drop(self, count: int) -> None:
        """Without the first ``count``."""
        for column in (self.ops, self.streams, self.texts, self.stamps):
            del column[:count]

    def cut(self, count: int) -> None:
        """The first ``count`` only."""
        for column in (self.ops, self.streams, self.texts, self.stamps):
            del column[count:]

    def lines(self, start: int, stop: int) -> list[LogLine]:
        return list(map(_as_line, zip(self.ops[start:stop], self.streams[start:stop],
                                      self.texts[start:stop], self.stamps[start:stop],
                                      strict=True)))


class OpLines(Sequence[LogLine]):
    """One op's stdout and stderr lines of a job's log, read when asked for (the op's log
    is not kept twice)."""

    def __init__(self, log: Sequence[LogLine], op_id: str) -> None:
        self._log = log
        self._op_id = op_id

    def _lines(self) -> list[LogLine]:
        return [line for line in self._log if line.op_id == self._op_id
                and line.stream in ("stdout", "stderr")]

    def __len__(self) -> int:
        return len(self._lines())

    @overload
    def __getitem__(self, index: int) -> LogLine: ...

    @overload
    def __getitem__(self, index: slice) -> list[LogLine]: ...

    def __getitem__(self, index: int | slice) -> LogLine | list[LogLine]:
        return self._lines()[index]

    def __iter__(self) -> Iterator[LogLine]:
        return iter(self._lines())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return self._lines() == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._lines())


@dataclass(frozen=True)
class Reconciled:
    """The job's log, made whole as far as the results allow."""

    lines: list[LogLine]
    #: Lines the live stream missed, put back from the results.
    restored: int = 0
    #: Live container lines that the results do not hold (kept as they came).
    not_in_results: int = 0
    #: Why lines may still be missing, one line each (empty when the log is complete).
    missing: list[str] = field(default_factory=list)


class _OpLines:
    """One op's lines in the results, and how far the live lines matched them."""

    def __init__(self, lines: Sequence[LogLine]) -> None:
        self.lines = list(lines)
        self.next = 0
        self.positions: dict[str, list[int]] = {}
        for index, line in enumerate(self.lines):
            self.positions.setdefault(line.text, []).append(index)
        #: Whether the op's first line in the results came over the live stream.
        self.first_seen = False

    def find(self, text: str) -> int | None:
        """Where ``text`` next appears among the lines not matched yet."""
        found = self.positions.get(text)
        if not found:
            return None
        at = bisect.bisect_left(found, self.next)
        return found[at] if at < len(found) else None

    def take(self, upto: int) -> list[LogLine]:
        """The lines before ``upto`` not matched yet (the live stream missed them), and
        ``upto`` itself: the line that matched."""
        if upto == 0:
            self.first_seen = True
        taken = self.lines[self.next : upto + 1]
        self.next = upto + 1
        return taken

    def rest(self) -> list[LogLine]:
        taken = self.lines[self.next :]
        self.next = len(self.lines)
        return taken


def reconcile(live: Sequence[LogLine], ops: Mapping[str, Sequence[LogLine]], *,
              cap: int = OP_LOG_CAP, after_more: bool = False) -> Reconciled:
    """The job's log from its ``live`` lines and each op's lines in the results (``ops``,
    by op id, in the results' order). See the module's docstring.

    ``after_more``: ``live`` is the end of the log only (the lines before it are not in
    memory). An op's lines in the results before its first one found there are then taken
    to be among those earlier lines, not put back, and neither is an op none of whose lines
    is found."""
    whole = _whole_in_order(live, ops)
    if whole is not None:
        return whole
    per_op = {op_id: _OpLines(lines) for op_id, lines in ops.items()}
    out: list[LogLine] = []
    restored = not_in_results = 0
    last_container = -1
    for line in live:
        if not line.container:
            out.append(line)
            continue
        match = _best_match(line, per_op)
        if match is None:
            out.append(line)
            not_in_results += 1
        else:
            op_lines, at = match
            if after_more and op_lines.next == 0:
                op_lines.next = at  # the lines before it are in the earlier part
            taken = op_lines.take(at)
            restored += len(taken) - 1
            out.extend(taken)
        last_container = len(out) - 1
    rest = sorted((line for op_lines in per_op.values()
                   if not (after_more and op_lines.next == 0) for line in op_lines.rest()),
                  key=lambda line: line.timestamp)
    restored += len(rest)
    # What never arrived comes after the output that did, and after the host's lines older
    # than it (the host's closing lines, newer, stay after it).
    at = last_container + 1
    if rest:
        while at < len(out) and out[at].timestamp <= rest[0].timestamp:
            at += 1
    out[at:at] = rest
    missing = [
        f"lines of op {op_id} before {_clock(op_lines.lines[0])} may be missing: it printed "
        f"more than a host keeps ({cap:,} lines) and the live log did not get them all"
        for op_id, op_lines in per_op.items()
        if len(op_lines.lines) >= cap and not op_lines.first_seen and not after_more
    ]
    return Reconciled(out, restored, not_in_results, missing)


def _whole_in_order(live: Sequence[LogLine], ops: Mapping[str, Sequence[LogLine]]
                    ) -> Reconciled | None:
    """The common case at C speed: one op, whose lines in the results are the last container
    lines that arrived, in order (nothing missed): those take the results' op and stream,
    the rest stays as it came. None when it is not that case."""
    if len(ops) != 1:
        return None
    [(op_id, results)] = ops.items()
    at = [index for index, line in enumerate(live) if line.stream != "node"]
    if len(at) < len(results):
        return None
    tail = at[len(at) - len(results):]
    if ([live[index].text for index in tail] != [line.text for line in results]
            or any(live[index].op_id not in (None, op_id) for index in tail)):
        return None
    out = list(live)
    for index, line in zip(tail, results, strict=True):
        out[index] = line
    return Reconciled(out, 0, len(at) - len(results))


def _best_match(line: LogLine, per_op: Mapping[str, _OpLines]) -> tuple[_OpLines, int] | None:
    """The op (its own, when known) and position where a live line next appears, the nearest
    one when several ops printed the same text."""
    own = per_op.get(line.op_id) if line.op_id is not None else None
    if own is not None:
        at = own.find(line.text)
        if at is not None:
            return own, at
    # Not where the live stream put it (its op was a guess from a late /info): any op.
    best: tuple[_OpLines, int] | None = None
    for op_lines in per_op.values():
        at = op_lines.find(line.text)
        if at is not None and (best is None or at - op_lines.next < best[1] - best[0].next):
            best = (op_lines, at)
    return best


def _clock(line: LogLine) -> str:
    """A line's time of day, as the warning names it."""
    return time.strftime("%H:%M:%S", time.localtime(line.timestamp))
