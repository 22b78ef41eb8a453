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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ConfigDict, Json, TypeAdapter, ValidationError, with_config
from pydantic_core import from_json
from typing_extensions import Required, TypedDict

from .results import LiveEntry, NodeLogEntry, OutputBatch, OutputEntry

__all__ = ["LOG_BATCH", "LogReader"]

log = logging.getLogger(__name__)

#: A timestamp in an entry's text, for an entry that could not be read otherwise.
_TIMESTAMP = re.compile(r'"timestamp"\s*:\s*(\d+)')

#: How many ``/log`` entries are handed over at most at once (a burst is cut in batches).
LOG_BATCH = 5_000

@with_config(ConfigDict(extra="forbid"))
class _PlainEntry(TypedDict, total=False):
    """A plain container line's entry: its fields typed as :class:`NodeLogEntry` types
    them (so read alike), no others (no ``pending``, no ``payload``)."""

    log: Required[str]
    type: Required[Literal["log"]]
    timestamp: int | None
    method: str | None
    job: str | None


#: Reads the entries of frames that arrived together in one call, each on its own (one that
#: is not a plain container line fails the call). The dicts it makes hold no container, so
#: the garbage collector does not follow them (a log is many small objects).
_PLAIN_ENTRIES: TypeAdapter[list[_PlainEntry]] = TypeAdapter(list[Json[_PlainEntry]])


def _log_data(raw: str | bytes) -> str:
    """The entry text of a ``/log`` frame; ValueError for any other frame."""
    if type(raw) is not str:
        raise ValueError("not text")
    frame = from_json(raw)
    data = frame.get("data") if type(frame) is dict and frame.get("path") == "log" else None
    if type(data) is not str:
        raise ValueError("not a log entry")
    return data


#: What tells two entries apart: a plain container line itself (or the plain tuple of its
#: fields, equal to it), any other entry's text.
Key = str | OutputEntry | tuple[str, str, int | None, str | None, str | None]
def _plain_batch(frames: list[str | bytes]) -> OutputBatch | None:
    """The entries of frames when every one is a plain container line (nearly always),
    read in one call, without a model or an object each; None otherwise."""
    try:
        plain = _PLAIN_ENTRIES.validate_python(list(map(_log_data, frames)))
    except ValueError:  # (a ValidationError too): not all plain lines
        return None
    return OutputBatch([fields["log"] for fields in plain],
                       [fields.get("timestamp") for fields in plain],
                       [fields.get("method") for fields in plain],
                       [fields.get("job") for fields in plain])


class LogReader:
    """One job's ``/log`` entries, across every connection to its host.

    Call :meth:`connected` when a new connection is subscribed, :meth:`frame` with each of
    its frames, and :meth:`hand_over` when a connection ends (so the position is up to date
    before a new connection's replay is aligned with it). ``on_entries`` gets the batches.

    What tells two entries apart (to align a replay) is the entry itself for a plain
    container line, its text for any other.
    """

    def __init__(self, host: str) -> None:
        self._host = host
        self.on_entries: Callable[[Sequence[LiveEntry]], None] = _ignore
        self._position = _LogPosition()
        self._replay: _Replay | None = None
        #: Read one at a time (a replay being aligned), and frames not read yet.
        self._pending: list[tuple[LiveEntry, Key]] = []
        self._frames: list[str | bytes] = []
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
        if self._replay is not None:  # until the replay passed what was seen before
            return self._replayed(raw, self._replay)
        frames = self._frames
        frames.append(raw)
        if len(frames) == 1 and not self._pending:
            asyncio.get_running_loop().call_soon(self.hand_over)
            return True
        if len(frames) >= LOG_BATCH:
            self.hand_over()
        return False

    def _replayed(self, raw: str | bytes, replay: _Replay) -> bool:
        found = self._read(raw)
        if found is None:
            return False
        self.connection_entries += 1
        entry, key = found
        if replay.seen_before(key, entry.timestamp):
            return False
        if replay.gap(key, entry.timestamp):
            self.gaps += 1
            log.warning("host %s: the /log replay after a reconnect starts after the last "
                        "line seen: lines may be missing", self._host)
        self._replay = None
        self._pending.append(found)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self.hand_over)
            return True
        return False

    def hand_over(self) -> None:
        """Hand what was read over (a no-op when nothing was)."""
        batch: Sequence[LiveEntry]
        read, self._pending = self._pending, []  # (counted as they were read)
        plain = None
        if self._frames:
            frames, self._frames = self._frames, []
            plain = _plain_batch(frames)
            found: list[tuple[LiveEntry, Key]] = []
            if plain is None:
                found = [entry for raw in frames if (entry := self._read(raw)) is not None]
            elif read:  # (after a replay's first entries: rare)
                found, plain = [(entry, entry) for entry in plain], None
            self.connection_entries += len(plain) if plain is not None else len(found)
            read += found
        if plain is not None:
            batch = plain
            self._position.add_many(plain.stamps, plain.as_tuples())
        elif read:
            batch = [entry for entry, _key in read]
            self._position.add_many([entry.timestamp for entry in batch],
                                    [key for _entry, key in read])
        else:
            return
        self.count = self._position.count
        try:
            self.on_entries(batch)
        except Exception:
            log.exception("a /log listener failed (its entries are lost to it)")

    def _read(self, raw: str | bytes) -> tuple[LiveEntry, Key] | None:
        """One frame's entry and its key, or None for a frame of another path."""
        plain = _plain_batch([raw])
        if plain is not None:
            entry = plain[0]
            return entry, entry
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


def _ignore(_entries: Sequence[LiveEntry]) -> None:
    pass


@dataclass
class _LogPosition:
    """How far a client got in a job's ``/log`` history: enough to align a new connection's
    replay with it (entries are timestamped in order; several may share a millisecond)."""

    count: int = 0
    first: Key | None = None
    last_ts: int | None = None
    #: The entries seen at ``last_ts``, by text, with how many times each.
    at_last: Counter[Key] = field(default_factory=Counter)

    def add_many(self, stamps: Sequence[int | None], keys: Sequence[Key]) -> None:
        """Entries (their timestamps and keys) seen after those before, in order."""
        count = len(stamps)
        if not count:
            return
        self.count += count
        if self.first is None:
            self.first = keys[0]
        last = stamps[-1]
        if last is not None and list(stamps).count(last) == count:
            # The whole batch at one millisecond (a burst): counted at C speed.
            at_last = Counter(keys)
            if last == self.last_ts:
                self.at_last.update(at_last)
            else:
                self.last_ts, self.at_last = last, at_last
            return
        # Only the entries at the newest timestamp are remembered: walk back to them.
        last, at_last = None, Counter[Key]()
        for index in range(count - 1, -1, -1):
            stamp = stamps[index]
            if stamp is None:
                continue
            if last is None:
                last = stamp
            elif stamp != last:
                break
            at_last[keys[index]] += 1
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

    def seen_before(self, key: Key, timestamp: int | None) -> bool:
        """Whether this entry was seen before (an old entry the replay repeats)."""
        if not self._replaying or timestamp is None or self._last_ts is None:
            return False
        if timestamp < self._last_ts or (timestamp == self._last_ts and self._left[key] > 0):
            self._left[key] -= timestamp == self._last_ts
            self._fresh = False
            return True
        self._replaying = False
        return False

    def gap(self, key: Key, timestamp: int | None) -> bool:
        """For a new entry: whether lines may be missing before it. That is when it is the
        connection's very first entry (the replay repeated nothing seen before), not the
        job's first line, and newer than the last line seen."""
        fresh, self._fresh = self._fresh, False
        position = self._position
        if not fresh or position.count == 0 or key == position.first:
            return False
        return timestamp is None or self._last_ts is None or timestamp > self._last_ts
