"""Reading a host's ``/log`` stream: each frame decoded, a new connection's replay aligned
with what was seen before, the entries handed over in batches (docs/protocol.md §7).

:class:`LogReader` does this for one job's :class:`~nosana_magic.host.HostClient`; the client
owns the connection and its retries. A batch is what arrived together: the reader hands it
over once it has read every frame the socket had (it waits for the next), or on a long burst
every :data:`LOG_BATCH` entries, or when a connection ends. So the per-entry work is only the
decoding; the rest (the job's lines, their redaction, the store, the views) is done once per
batch by whoever takes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

from .results import LiveEntry, NodeLogEntry, OutputEntry

__all__ = ["LOG_BATCH", "LogReader"]

log = logging.getLogger(__name__)

#: A timestamp in an entry's text, for an entry that could not be read otherwise.
_TIMESTAMP = re.compile(r'"timestamp"\s*:\s*(\d+)')

#: How many ``/log`` entries are handed over at most at once (a burst is cut in batches).
LOG_BATCH = 5_000

#: Reads a plain container line's entry (no ``pending``, no ``payload``) into an
#: :class:`OutputEntry`: its fields typed as :class:`NodeLogEntry` types them, no others.
_OUTPUT_ENTRY: TypeAdapter[OutputEntry] = TypeAdapter(OutputEntry)


def _output_entry(data: str) -> OutputEntry | None:
    """A plain container line's entry, or None for any other entry."""
    if not data.startswith("{"):  # (a named tuple would also take a JSON array)
        return None
    try:
        return _OUTPUT_ENTRY.validate_json(data)
    except ValidationError:
        return None


class LogReader:
    """One job's ``/log`` entries, across every connection to its host.

    Call :meth:`connected` when a new connection is subscribed, :meth:`frame` with each of
    its frames, and :meth:`hand_over` when a connection ends (so the position is up to date
    before a new connection's replay is aligned with it). ``on_entries`` gets the batches.
    """

    def __init__(self, host: str) -> None:
        self._host = host
        self.on_entries: Callable[[list[LiveEntry]], None] = _ignore
        self._position = _LogPosition()
        self._replay: _Replay | None = None
        self._pending: list[tuple[LiveEntry, str]] = []
        #: Entries handed over so far.
        self.count = 0
        #: Reconnects after which lines may be missing: the new replay started after the
        #: last entry seen (the host's history was cut, cleared or replaced meanwhile).
        self.gaps = 0
        #: Entries that could not be read as node log entries (kept as raw text).
        self.unreadable = 0
        #: Entries the open connection sent so far (its replay included).
        self.connection_entries = 0

    def connected(self) -> None:
        self.hand_over()
        self.connection_entries = 0
        self._replay = self._position.replay()

    def frame(self, raw: str | bytes) -> bool:
        """Take one frame; True when it starts a new batch (the host is answering)."""
        found = self._read(raw)
        if found is None:
            return False
        self.connection_entries += 1
        replay = self._replay
        if replay is not None:  # until the replay passed what was seen before
            entry, key = found
            if replay.seen_before(key, entry.timestamp):
                return False
            if replay.gap(key, entry.timestamp):
                self.gaps += 1
                log.warning("host %s: the /log replay after a reconnect starts after the "
                            "last line seen: lines may be missing", self._host)
            self._replay = None
        pending = self._pending
        pending.append(found)
        if len(pending) == 1:
            asyncio.get_running_loop().call_soon(self.hand_over)
            return True
        if len(pending) >= LOG_BATCH:
            self.hand_over()
        return False

    def hand_over(self) -> None:
        """Hand what was read over (a no-op when nothing was)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self._position.add_many(batch)
        self.count = self._position.count
        try:
            self.on_entries([entry for entry, _key in batch])
        except Exception:
            log.exception("a /log listener failed (its entries are lost to it)")

    def _read(self, raw: str | bytes) -> tuple[LiveEntry, str] | None:
        """A ``/log`` frame's entry and its text (what tells two entries apart), or None for
        a frame of another path.

        A plain container line (nearly every entry) is read as an :class:`OutputEntry`
        when its fields are exactly what :class:`NodeLogEntry` takes as they are, without
        building a model; any other entry goes through :meth:`_entry`.
        """
        if type(raw) is str:
            try:
                frame = from_json(raw)
            except ValueError:
                frame = None
            if type(frame) is dict and frame.get("path") == "log":
                data = frame.get("data")
                if isinstance(data, str) and (entry := _output_entry(data)) is not None:
                    return entry, data
        return self._entry(raw)

    def _entry(self, raw: str | bytes) -> tuple[NodeLogEntry, str] | None:
        """A ``/log`` frame's entry and its text (what tells two entries apart), or None for
        a frame of another path. What cannot be read is kept as an ``unreadable`` entry
        holding the raw text."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            frame = json.loads(text)
        except ValueError:
            frame = None
        if isinstance(frame, dict) and frame.get("path") not in ("log", None):
            return None
        data = frame.get("data") if isinstance(frame, dict) else None
        key = data if isinstance(data, str) else text
        try:
            if isinstance(data, str):
                return NodeLogEntry.model_validate_json(data), key
            if isinstance(data, dict):
                return NodeLogEntry.model_validate(data), key
        except ValidationError:
            pass
        self.unreadable += 1
        stamp = _TIMESTAMP.search(key)
        return NodeLogEntry(log=key, type="unreadable", method=None,
                            timestamp=int(stamp.group(1)) if stamp else None), key


def _ignore(_entries: list[LiveEntry]) -> None:
    pass


@dataclass
class _LogPosition:
    """How far a client got in a job's ``/log`` history: enough to align a new connection's
    replay with it (entries are timestamped in order; several may share a millisecond)."""

    count: int = 0
    first: str | None = None
    last_ts: int | None = None
    #: The entries seen at ``last_ts``, by text, with how many times each.
    at_last: Counter[str] = field(default_factory=Counter)

    def add_many(self, found: list[tuple[LiveEntry, str]]) -> None:
        """Entries (and their texts) seen after those before, in order."""
        if not found:
            return
        self.count += len(found)
        if self.first is None:
            self.first = found[0][1]
        # Only the entries at the newest timestamp are remembered: walk back to them.
        last, at_last = None, Counter[str]()
        for entry, key in reversed(found):
            if entry.timestamp is None:
                continue
            if last is None:
                last = entry.timestamp
            elif entry.timestamp != last:
                break
            at_last[key] += 1
        else:  # every stamped entry of the batch is at ``last``: it may go on the last ms
            if last is None:
                return
            if last == self.last_ts:
                self.at_last.update(at_last)
                return
        self.last_ts, self.at_last = last, at_last

    def replay(self) -> _Replay:
        return _Replay(self)


class _Replay:
    """One connection's replay, against what was seen before it."""

    def __init__(self, position: _LogPosition) -> None:
        self._position = position
        self._last_ts = position.last_ts
        self._left = Counter(position.at_last)
        self._replaying = position.count > 0
        #: Nothing came on this connection yet.
        self._fresh = True

    def seen_before(self, key: str, timestamp: int | None) -> bool:
        """Whether this entry was seen before (an old entry the replay repeats)."""
        if not self._replaying or timestamp is None or self._last_ts is None:
            return False
        if timestamp < self._last_ts or (timestamp == self._last_ts and self._left[key] > 0):
            self._left[key] -= timestamp == self._last_ts
            self._fresh = False
            return True
        self._replaying = False
        return False

    def gap(self, key: str, timestamp: int | None) -> bool:
        """For a new entry: whether lines may be missing before it. That is when it is the
        connection's very first entry (the replay repeated nothing seen before), not the
        job's first line, and newer than the last line seen."""
        fresh, self._fresh = self._fresh, False
        position = self._position
        if not fresh or position.count == 0 or key == position.first:
            return False
        return timestamp is None or self._last_ts is None or timestamp > self._last_ts
