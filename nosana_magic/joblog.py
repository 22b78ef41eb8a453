"""A job's log made whole: the live ``/log`` lines reconciled with the results' per-op logs.

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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .results import LogLine

__all__ = ["OP_LOG_CAP", "Reconciled", "reconcile"]

#: How many lines of each op a host keeps in the results, the oldest dropped first.
OP_LOG_CAP = 24_999


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
              cap: int = OP_LOG_CAP) -> Reconciled:
    """The job's log from its ``live`` lines and each op's lines in the results (``ops``,
    by op id, in the results' order). See the module's docstring."""
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
            taken = op_lines.take(at)
            restored += len(taken) - 1
            out.extend(taken)
        last_container = len(out) - 1
    rest = sorted((line for op_lines in per_op.values() for line in op_lines.rest()),
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
        if len(op_lines.lines) >= cap and not op_lines.first_seen
    ]
    return Reconciled(out, restored, not_in_results, missing)


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
