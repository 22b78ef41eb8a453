"""The local store: every job this user runs, kept in one SQLite database in the data dir.

Per job it holds the network, market, address, node and placeholder CID; the definition as
the user wrote it (its ``${…}`` references unresolved: never a secret value); its parameters;
its states and times, cost, results, warnings; its private URLs while they are valid; and its
redacted logs, in compressed chunks. A finished job can then be listed, loaded and read back
in any process, with no network (docs/experiments.md).

Writing. Each process has one writer thread per database, and only it writes job records.
The package's loop thread and the main thread hand it work through a :class:`JobRecorder`
and never wait for the disk: field updates are coalesced, log lines are buffered, and the
writer commits whatever arrived in one transaction at least every :data:`FLUSH_INTERVAL_S`,
so a crash loses at most the last second. The database is in WAL mode with a busy timeout,
so several processes (kernels) of one user write and read it at once; each job's log has one
owner (the process that records it: the last to attach), so two followers never interleave.

Reading. Each read opens its own short-lived connection: any thread may read, and a long log
is read back chunk by chunk (:meth:`Store.iter_logs`), or by line range.

Bounds. A job keeps at most :data:`MAX_LOG_BYTES` of log: the first half and the last half.
The lines between are counted, and reading the log back puts one marker line in their place.

Files: ``runs.sqlite3`` and its ``-wal``/``-shm`` files in the data dir, mode 0600. The schema
has a version (``PRAGMA user_version``) and migrates forward when opened; a database written
by a newer version is refused in one line, never changed.

Nothing secret is written: the job's redactor runs over every text that goes in (log lines,
results, warnings, errors, the definition), and the definition is stored unresolved.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import sqlite3
import struct
import threading
import time
import uuid
import weakref
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import StoreError

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "DB_FILE",
    "FLUSH_INTERVAL_S",
    "MAX_LOG_BYTES",
    "SCHEMA_VERSION",
    "JobRecorder",
    "Store",
    "StoreError",
    "StoredJob",
    "StoredLine",
    "StoredSweep",
    "StoredUrl",
    "default_path",
    "open_store",
]

log = logging.getLogger(__name__)

#: The database's file name in the data dir.
DB_FILE = "runs.sqlite3"
#: The writer commits what arrived at least this often (seconds): a crash loses less than this.
FLUSH_INTERVAL_S = 0.25
#: Log kept per job (bytes of encoded lines, about the text plus 30 bytes a line): the first
#: half and the last half of the log.
MAX_LOG_BYTES = 128 * 2**20
#: A chunk of log is rewritten while it is smaller than this, then a new one starts.
CHUNK_BYTES = 64 * 2**10
#: Lines waiting for the writer, per job, beyond which new lines are counted but dropped (a
#: writer that cannot commit, the database locked for long, must not grow the process without
#: bound). The writer takes several hundred thousand lines a second.
MAX_PENDING_LINES = 200_000
#: zlib's level for log chunks: the fastest (the writer shares the interpreter with the loop
#: thread; the disk is not what is scarce).
_LEVEL = 1
#: Lines waiting that wake the writer before its next tick.
_WAKE_LINES = 20_000
#: How long a connection waits for another process's transaction (seconds).
BUSY_TIMEOUT_S = 10.0
#: A recorder writes at least this often while its job runs, so a record whose writer died
#: (its kernel was killed) is seen as such: :attr:`StoredJob.stale`.
HEARTBEAT_S = 10.0
#: After this long failing to commit, the writer drops what it holds and says so once.
GIVE_UP_S = 60.0
#: The writer thread ends after this long with nothing to write and no job to record (the
#: next record starts it again): a process that ran one job keeps no thread for it.
IDLE_EXIT_S = 2.0


# --------------------------------------------------------------------------- records


class LineLike(Protocol):
    """What the recorder reads of a log line (``job.LogLine`` has these attributes)."""

    @property
    def op_id(self) -> str | None: ...
    @property
    def stream(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def timestamp(self) -> float: ...


@dataclass(frozen=True, slots=True)
class StoredLine:
    """One stored log line. ``index`` counts every line the job printed, kept or not; the
    marker standing for the lines not kept has ``index=None`` and ``stream="store"``."""

    index: int | None
    timestamp: float
    stream: str
    op_id: str | None
    text: str


@dataclass(frozen=True)
class StoredUrl:
    """A service URL of a job, kept until ``expires_at`` (the job's end, or its timeout)."""

    url: str
    port: int | float | str
    op_id: str
    private: bool
    expires_at: float | None = None


@dataclass(frozen=True)
class StoredJob:
    """A job as the store holds it (a snapshot; fields a recorder never set are ``None``)."""

    key: str
    network: str
    created_at: float
    address: str | None = None
    market: str | None = None
    node: str | None = None
    placeholder: str | None = None
    definition: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    status: str | None = None
    phase: str | None = None
    host_status: str | None = None
    finished: bool = False
    started_at: float | None = None
    ended_at: float | None = None
    seen_at: float | None = None
    timeout: int | None = None
    price: float | None = None
    cost: float | None = None
    results: dict[str, Any] = field(default_factory=dict)
    ops: dict[str, Any] = field(default_factory=dict)
    urls: list[StoredUrl] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    log_lines: int = 0
    log_dropped: int = 0
    pid: int | None = None
    hostname: str | None = None
    sweep_id: str | None = None
    sweep_name: str | None = None
    #: The job's place in its sweep (0, 1, …), the order of its parameter sets.
    sweep_index: int | None = None

    @property
    def stale(self) -> bool:
        """Not finished, and its writer has not written for a while (its process died)."""
        last = self.seen_at or self.created_at
        return not self.finished and time.time() - last > 3 * HEARTBEAT_S

    @property
    def log_truncated(self) -> bool:
        """Some of the job's log lines were not kept (see :data:`MAX_LOG_BYTES`)."""
        return self.log_dropped > 0


@dataclass(frozen=True)
class StoredSweep:
    """A sweep: one definition run once per parameter set (its jobs are :class:`StoredJob`
    with this ``sweep_id``)."""

    id: str
    name: str
    created_at: float
    network: str | None = None
    definition: dict[str, Any] | None = None
    params: list[dict[str, Any]] = field(default_factory=list)
    parallel: int | None = None
    estimate: float | None = None
    status: str | None = None


# --------------------------------------------------------------------------- the schema

# Step i migrates from version i to i + 1, in one transaction (statements split at ";", so
# none may hold one in a literal). Never edit a released step: add one.
_MIGRATIONS: tuple[str, ...] = (
    # 1: jobs and their log chunks.
    """
    CREATE TABLE jobs (
        key TEXT PRIMARY KEY,
        network TEXT NOT NULL,
        created_at REAL NOT NULL,
        address TEXT,
        market TEXT,
        node TEXT,
        placeholder TEXT,
        definition TEXT,
        params TEXT,
        status TEXT,
        phase TEXT,
        host_status TEXT,
        finished INTEGER NOT NULL DEFAULT 0,
        started_at REAL,
        ended_at REAL,
        seen_at REAL,
        timeout INTEGER,
        price REAL,
        cost REAL,
        results TEXT,
        ops TEXT,
        urls TEXT,
        urls_expire_at REAL,
        warnings TEXT,
        error TEXT,
        timings TEXT,
        log_lines INTEGER NOT NULL DEFAULT 0,
        log_dropped INTEGER NOT NULL DEFAULT 0,
        writer TEXT,
        pid INTEGER,
        hostname TEXT
    );
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE INDEX jobs_address ON jobs (address);
    CREATE TABLE log_chunks (
        job_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        first_index INTEGER NOT NULL,
        lines INTEGER NOT NULL,
        raw_bytes INTEGER NOT NULL,
        head INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (job_key, seq)
    ) WITHOUT ROWID;
    """,
    # 2: sweeps, and each job's place in its sweep.
    """
    CREATE TABLE sweeps (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        network TEXT,
        definition TEXT,
        params TEXT,
        parallel INTEGER,
        estimate REAL,
        status TEXT
    );
    CREATE INDEX sweeps_name ON sweeps (name, created_at);
    ALTER TABLE jobs ADD COLUMN sweep_id TEXT;
    ALTER TABLE jobs ADD COLUMN sweep_index INTEGER;
    CREATE INDEX jobs_sweep ON jobs (sweep_id, sweep_index);
    """,
)

#: The schema version this code writes.
SCHEMA_VERSION = len(_MIGRATIONS)

#: Job fields a recorder may set, and whether each is stored as JSON.
_FIELDS: dict[str, bool] = {
    "network": False, "address": False, "market": False, "node": False, "placeholder": False,
    "definition": True, "params": True, "status": False, "phase": False,
    "host_status": False, "started_at": False, "ended_at": False, "timeout": False,
    "price": False, "cost": False, "results": True, "ops": True, "urls": True,
    "warnings": True, "error": False, "timings": True, "sweep_id": False,
    "sweep_index": False,
}
_SWEEP_FIELDS: dict[str, bool] = {
    "name": False, "network": False, "definition": True, "params": True, "parallel": False,
    "estimate": False, "status": False,
}
_TEXT_FIELDS = frozenset({"status", "phase", "host_status", "error", "node", "market"})


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema up to :data:`SCHEMA_VERSION` (another process may be doing it too:
    the version is read again inside the write transaction)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the local store {path} has schema version {version}, newer than this "
                f"nosana_magic knows ({SCHEMA_VERSION}): upgrade nosana_magic to read it")
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _private_file(path: Path) -> None:
    """Create ``path`` mode 0600 (SQLite gives its -wal and -shm files the same mode), or
    tighten an existing one: the store is this user's alone."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.name == "posix" and os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, busy timeout."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable across a process crash
        conn.execute("PRAGMA secure_delete = ON")  # forgotten records leave no bytes behind
    except BaseException:
        conn.close()
        raise
    return conn


def _scrub(conn: sqlite3.Connection) -> None:
    """After a removal: move the WAL into the database and empty it, so that removed bytes
    (zeroed in the database by ``secure_delete``) leave the ``-wal`` file too. Best effort,
    briefly: a reader in the middle of a read keeps the WAL until the next removal."""
    conn.execute("PRAGMA busy_timeout = 1000")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.OperationalError as exc:
        log.debug("checkpoint after a removal: %s", exc)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")


def _create(path: Path) -> None:
    """Make a new database beside ``path`` (WAL, current schema, mode 0600) and link it into
    place, unless another process did first: nobody ever sees a half-made file, and no two
    processes race to switch one file to WAL (a switch that does not wait for a busy
    database)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        _private_file(temporary)
        conn = _connect(temporary)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            _migrate(conn, temporary)
        finally:
            conn.close()
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it meanwhile: use theirs
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(temporary, path)
    finally:
        for leftover in path.parent.glob(temporary.name + "*"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _open_database(path: Path) -> None:
    """Create or migrate the database at ``path``; :class:`StoreError` in one line if not."""
    try:
        if not path.exists():
            _create(path)
        _private_file(path)
        conn = _connect(path)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the local store {path}: {_reason(exc)}") from None
    try:
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")  # a file this module did not make
        _migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open the local store {path}: {_reason(exc)}") from None
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(OSError):
            side = path.with_name(path.name + suffix)
            if os.name == "posix" and side.stat().st_mode & 0o077:
                side.chmod(0o600)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


# --------------------------------------------------------------------------- encoding

def _redact_tree(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(k)): _redact_tree(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_tree(v, redact) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """``json.dumps``'s fallback: dataclasses and objects with ``model_dump``/``item``, else
    their text (a stored record is for reading back, never for running)."""
    for name in ("model_dump", "item"):
        method = getattr(value, name, None)
        if callable(method):
            return method()
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return str(value)


def _dumps(value: Any, redact: Callable[[str], str] | None) -> str:
    if redact is not None:
        # Through JSON first, so objects become plain data whose every string is redacted.
        value = _redact_tree(json.loads(json.dumps(value, default=_jsonable)), redact)
    return json.dumps(value, default=_jsonable, ensure_ascii=False)


_NONE = "\x00"  # an op id of None (a host line) in a joined column


def _join(column: Sequence[str | None]) -> tuple[int, bytes]:
    """A text column as newline-joined UTF-8 (one C call; flag 0), or as JSON when one of
    its values holds a newline or is None-like (flag 1)."""
    if _NONE not in column:
        values = [_NONE if v is None else v for v in column] if None in column else column
        joined = "\n".join(values)  # type: ignore[arg-type]
        if joined.count("\n") == len(column) - 1:
            return 0, joined.encode("utf-8", "surrogatepass")
    return 1, json.dumps(list(column), ensure_ascii=False).encode("utf-8", "surrogatepass")


def _split(flag: int, data: bytes, count: int) -> list[Any]:
    if flag == 1:
        values: list[Any] = json.loads(data.decode("utf-8", "surrogatepass"))
        return values
    if count == 0:
        return []
    parts: list[Any] = data.decode("utf-8", "surrogatepass").split("\n")
    return [None if v == _NONE else v for v in parts] if _NONE in parts else parts


@dataclass
class _Columns:
    """Log lines as four columns: how the writer handles, encodes and decodes them, so the
    per-line work is a handful of C-speed calls per chunk."""

    stamps: list[float]
    streams: list[str]
    ops: list[str | None]
    texts: list[str]

    @classmethod
    def of(cls, lines: Sequence[LineLike]) -> _Columns:
        return cls([line.timestamp for line in lines], [line.stream for line in lines],
                   [line.op_id for line in lines], [line.text for line in lines])

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def joined(cls, runs: Sequence[_Columns]) -> _Columns:
        if len(runs) == 1:
            return runs[0]
        joined = cls([], [], [], [])
        for run in runs:
            joined.stamps += run.stamps
            joined.streams += run.streams
            joined.ops += run.ops
            joined.texts += run.texts
        return joined

    def __add__(self, other: _Columns) -> _Columns:
        return _Columns(self.stamps + other.stamps, self.streams + other.streams,
                        self.ops + other.ops, self.texts + other.texts)

    def cut(self, start: int, stop: int) -> _Columns:
        return _Columns(self.stamps[start:stop], self.streams[start:stop],
                        self.ops[start:stop], self.texts[start:stop])

    def pieces(self) -> Iterator[_Columns]:
        """Runs of about :data:`CHUNK_BYTES` (one chunk each)."""
        count = len(self)
        size = sum(map(len, self.texts)) + 24 * count
        per = max(1, count * CHUNK_BYTES // max(size, 1))
        for start in range(0, count, per):
            yield self.cut(start, start + per)

    def encode(self) -> bytes:
        """Version, count, the timestamps as doubles, then the three text columns."""
        parts = [struct.pack("<BI", 1, len(self)), array("d", self.stamps).tobytes()]
        for column in (self.streams, self.ops, self.texts):
            flag, data = _join(column)
            parts += [struct.pack("<BI", flag, len(data)), data]
        return b"".join(parts)

    @classmethod
    def decode(cls, compressed: bytes) -> _Columns:
        data = zlib.decompress(compressed)
        version, count = struct.unpack_from("<BI", data)
        if version != 1:
            raise StoreError(f"a log chunk of an unknown format ({version})")
        at = 5 + 8 * count
        stamps = array("d")
        stamps.frombytes(data[5:at])
        columns: list[list[Any]] = []
        for _ in range(3):
            flag, size = struct.unpack_from("<BI", data, at)
            at += 5
            columns.append(_split(flag, data[at:at + size], count))
            at += size
        return cls(stamps.tolist(), *columns)

    def redacted(self, redact: Callable[[str], str]) -> _Columns:
        """One pass over the batch's text; line by line only when a secret spans lines."""
        joined = "\n".join(self.texts)
        result = redact(joined)
        if result == joined:
            return self
        texts = result.split("\n")
        if len(texts) != len(self.texts):
            texts = [redact(text) for text in self.texts]
        return _Columns(self.stamps, self.streams, self.ops, texts)


# --------------------------------------------------------------------------- recorders


class JobRecorder:
    """Records one job as it goes. Any thread may call it; nothing here waits for the disk.

    Made by :meth:`Store.record` (a new job) or :meth:`Store.take_over` (a job recorded
    before, e.g. by a kernel that restarted). ``redactor`` (anything with ``redact(text)``)
    runs over every text stored; it may be set once the job knows its secrets.
    """

    def __init__(self, store: Store, key: str, redactor: Any = None) -> None:
        self.store = store
        self.key = key
        self.redactor = redactor
        self._lock = threading.Lock()
        self._fields: dict[str, Any] = {}
        #: Lines waiting for the writer, as columns (one run per call): a running job's
        #: lines are not held as objects the garbage collector must follow.
        self._lines: list[_Columns] = []
        self._pending = 0
        self._dropped = 0
        #: The pending lines replace the job's stored log from this index on
        #: (:meth:`replace_logs`), or None.
        self._replacing: int | None = None
        #: Called by the writer thread after each commit with the number of log lines
        #: stored, and whether a replacement (:meth:`replace_logs`) went in with it.
        self.on_commit: Callable[[int, bool], None] | None = None
        self.finished = False
        #: Taken over by another recorder of this process: what comes here is not written.
        self.disowned = False

    def _disown(self) -> None:
        with self._lock:
            self.disowned = True
            self._fields, self._lines, self._pending, self._dropped = {}, [], 0, 0

    def _redact(self) -> Callable[[str], str] | None:
        redactor = self.redactor
        return redactor.redact if redactor else None

    def update(self, **fields: Any) -> None:
        """Set fields of the job's record (the latest value of each is written)."""
        values = self._encode(fields)
        with self._lock:
            if self.disowned:
                return
            self._fields.update(values)
        self.store._writer.touch(self)

    def _encode(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        redact = self._redact()
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if name not in _FIELDS:
                raise TypeError(f"JobRecorder.update: unknown field {name!r}")
            if name == "urls":
                values["urls_expire_at"] = _urls_expiry(value)
            if value is None:
                values[name] = None
            elif _FIELDS[name]:
                values[name] = _dumps(value, redact)
            elif name in _TEXT_FIELDS and redact is not None:
                values[name] = redact(str(value))
            else:
                values[name] = value
        return values

    def append_logs(self, lines: Iterable[LineLike]) -> None:
        """Add log lines (kept as columns until the writer redacts, compresses and writes
        them)."""
        columns = _Columns.of(lines if isinstance(lines, Sequence) else list(lines))
        if not columns:
            return
        with self._lock:
            if self.disowned:
                return
            if self._pending >= MAX_PENDING_LINES:
                self._dropped += len(columns)
                return
            self._lines.append(columns)
            self._pending += len(columns)
            pending = self._pending
        self.store._writer.touch(self, pending)

    def replace_logs(self, lines: Iterable[LineLike], start: int = 0) -> None:
        """The job's log from line ``start`` on, made again (from a host's results): it
        replaces what was stored from the live stream, which could not tell every line's op
        and stream. Lines before ``start`` stay as they are."""
        columns = _Columns.of(list(lines)[:MAX_PENDING_LINES])
        with self._lock:
            if self.disowned:
                return
            self._lines, self._pending = [columns], len(columns)
            self._dropped, self._replacing = 0, start
            pending = self._pending
        self.store._writer.touch(self, pending, urgent=True)

    def finish(self, **fields: Any) -> None:
        """The last fields of a job that ended; the writer commits them at once."""
        self.update(**fields)
        with self._lock:
            self.finished = True
        self.store._writer.touch(self, urgent=True)

    def _take(self) -> tuple[dict[str, Any], _Columns, int, bool, int | None]:
        with self._lock:
            fields, self._fields = self._fields, {}
            lines, self._lines, self._pending = _Columns.joined(self._lines), [], 0
            dropped, self._dropped = self._dropped, 0
            replacing, self._replacing = self._replacing, None
            return fields, lines, dropped, self.finished, replacing

    def _give_back(self, fields: dict[str, Any], lines: _Columns, dropped: int,
                   replacing: int | None) -> None:
        """A batch that could not be committed goes back in front of what came since."""
        with self._lock:
            self._fields = {**fields, **self._fields}
            self._lines = [lines, *self._lines]
            self._pending += len(lines)
            self._dropped += dropped
            if replacing is not None:
                self._replacing = (replacing if self._replacing is None
                                   else min(replacing, self._replacing))

    def __repr__(self) -> str:
        return f"<JobRecorder {self.key[:8]} {self.store.path}>"


def _sweep_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in _SWEEP_FIELDS:
            raise TypeError(f"sweep records have no field {name!r}")
        values[name] = _dumps(value, None) if _SWEEP_FIELDS[name] and value is not None \
            else value
    return values


def _urls_expiry(urls: Any) -> float | None:
    """When a list of URLs stops being valid: the earliest ``expires_at`` of its entries."""
    stamps = [u.get("expires_at") if isinstance(u, Mapping) else getattr(u, "expires_at", None)
              for u in (urls or [])]
    known = [s for s in stamps if isinstance(s, (int, float))]
    return min(known) if known else None


# --------------------------------------------------------------------------- the writer


@dataclass
class _Batch:
    """What one transaction writes."""

    inserts: list[dict[str, Any]]
    takeovers: list[str]
    sweeps: list[tuple[str, dict[str, Any]]]
    jobs: Mapping[str, tuple[JobRecorder, dict[str, Any], _Columns, int, bool,
                             int | None]]


def _insert(conn: sqlite3.Connection, table: str, row: Mapping[str, Any]) -> None:
    # Column names come from this module's field tables, never from callers' text.
    conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                 list(row.values()))


def _update(conn: sqlite3.Connection, table: str, key_column: str, key: str,
            values: Mapping[str, Any]) -> None:
    assignments = ", ".join(f"{name} = ?" for name in values)
    conn.execute(f"UPDATE {table} SET {assignments} WHERE {key_column} = ?",
                 [*values.values(), key])


@dataclass
class _OpenChunk:
    """The job's last chunk while it is small: rewritten with the next lines."""

    seq: int
    first: int
    lines: _Columns
    raw: int
    head: bool


@dataclass
class _LogState:
    """What the writer knows of one job's stored log (read from the database once)."""

    next_index: int
    head_bytes: int
    tail: list[list[int]]  # [seq, lines, raw bytes] of each tail chunk, oldest first
    next_seq: int
    open: _OpenChunk | None = None


class _Writer:
    """The one thread that writes a store's job records, with the one writing connection.

    Started on the first record, it ends once idle (:data:`IDLE_EXIT_S`) and starts again on
    the next one. Every hand-over takes the lock and checks the thread under it, so nothing
    handed over is left without a thread to write it.
    """

    def __init__(self, store: Store, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._dirty: dict[str, JobRecorder] = {}
        self._live: dict[str, JobRecorder] = {}
        self._inserts: list[dict[str, Any]] = []
        self._takeovers: list[str] = []
        self._sweeps: list[tuple[str, dict[str, Any]]] = []  # (id, values), inserts first
        self._waiters: list[threading.Event] = []
        self._logs: dict[str, _LogState] = {}
        self._closing = False
        self._failing_since: float | None = None
        self._last_heartbeat = time.monotonic()
        self._last_purge = 0.0
        self._last_work = time.monotonic()
        self._thread: threading.Thread | None = None
        self._closed = False

    def _ensure_thread(self) -> None:
        """Under the lock: a thread to write what was just handed over."""
        if self._thread is None and not self._closed:
            self._last_work = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="nosana-store",
                                            daemon=True)
            self._thread.start()

    def _idle(self) -> bool:
        """Under the lock: nothing to write, no job to record, for a while."""
        return not (self._inserts or self._takeovers or self._sweeps or self._dirty
                    or self._waiters or self._live) and (
            time.monotonic() - self._last_work >= IDLE_EXIT_S)

    # -- from any thread ------------------------------------------------------------------

    def insert(self, row: dict[str, Any], recorder: JobRecorder) -> None:
        with self._lock:
            self._inserts.append(row)
            self._live[recorder.key] = recorder
            self._ensure_thread()
        self._wake.set()

    def sweep(self, sweep_id: str, values: dict[str, Any]) -> None:
        with self._lock:
            self._sweeps.append((sweep_id, values))
            self._ensure_thread()
        self._wake.set()

    def take_over(self, recorder: JobRecorder) -> None:
        with self._lock:
            self._takeovers.append(recorder.key)
            # Another handle of this process recorded the job so far: from now on only the
            # new one writes (it replays the log from what is committed), as across processes.
            before = self._live.get(recorder.key)
            if before is not None and before is not recorder:
                before._disown()
                if self._dirty.get(recorder.key) is before:
                    del self._dirty[recorder.key]
            self._live[recorder.key] = recorder
            self._ensure_thread()
        self._wake.set()

    def touch(self, recorder: JobRecorder, pending: int = 0, *, urgent: bool = False) -> None:
        if recorder.disowned:
            return
        with self._lock:
            self._dirty[recorder.key] = recorder
            self._ensure_thread()
        if urgent or pending >= _WAKE_LINES:
            self._wake.set()  # a burst: write it now rather than at the next tick

    def flush(self, timeout: float) -> bool:
        """Wait until everything handed over before this call is committed (or failed)."""
        done = threading.Event()
        with self._lock:
            if self._thread is None and not (self._inserts or self._takeovers or self._sweeps
                                             or self._dirty):
                return True  # nothing handed over is waiting
            if self._closed and self._thread is None:
                return False
            self._waiters.append(done)
            self._ensure_thread()
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float) -> None:
        with self._lock:
            self._closing = True
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)

    # -- on the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait(self._interval)
                self._wake.clear()
                closing = self._closing
                try:
                    if conn is None:
                        conn = _connect(self._store.path)
                    self._cycle(conn)
                except Exception as exc:  # never let the thread die: say it, keep going
                    self._failed(exc)
                with self._lock:
                    if closing or self._idle():
                        self._thread = None
                        self._logs.clear()
                        return
        finally:
            if conn is not None:
                conn.close()

    def _cycle(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            inserts, self._inserts = self._inserts, []
            takeovers, self._takeovers = self._takeovers, []
            sweeps, self._sweeps = self._sweeps, []
            dirty, self._dirty = self._dirty, {}
            waiters, self._waiters = self._waiters, []
        batches = {key: (rec, *rec._take()) for key, rec in dirty.items()}
        if inserts or takeovers or sweeps or batches:
            self._last_work = time.monotonic()
        now = time.monotonic()
        heartbeat = now - self._last_heartbeat >= HEARTBEAT_S
        purge = now - self._last_purge >= HEARTBEAT_S
        committed = False
        try:
            if inserts or takeovers or sweeps or batches or heartbeat or purge:
                self._commit(conn, _Batch(inserts, takeovers, sweeps, batches), heartbeat,
                             purge)
            committed = True
            self._failing_since = None
            if heartbeat:
                self._last_heartbeat = now
            if purge:
                self._last_purge = now
        except sqlite3.Error as exc:
            self._logs.clear()  # what the rolled-back transaction wrote is unknown: re-read
            # Busy, locked, disk full: try again later; anything else will not get better.
            if not isinstance(exc, sqlite3.OperationalError) or self._give_up(exc):
                self._failed(exc)
                self._drop(dirty)
            else:
                with self._lock:
                    self._inserts = inserts + self._inserts
                    self._takeovers = takeovers + self._takeovers
                    self._sweeps = sweeps + self._sweeps
                    for key, rec in dirty.items():
                        self._dirty.setdefault(key, rec)
                for rec, fields, lines, dropped, _, replacing in batches.values():
                    rec._give_back(fields, lines, dropped, replacing)
        finally:
            for waiter in waiters:
                waiter.set()
        for key, (rec, _, _, _, finished, replacing) in batches.items():
            state = self._logs.get(key)
            if committed and state is not None and rec.on_commit is not None:
                try:
                    rec.on_commit(state.next_index, replacing is not None)
                except Exception:
                    log.exception("a store commit listener failed (ignored)")
            if finished:
                with self._lock:
                    self._live.pop(key, None)
                self._logs.pop(key, None)

    def _give_up(self, exc: BaseException) -> bool:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            log.warning("the local store %s cannot be written (%s); trying again",
                        self._store.path, _reason(exc))
        if now - self._failing_since < GIVE_UP_S:
            return False
        self._failing_since = None
        return True

    def _drop(self, dirty: Mapping[str, JobRecorder]) -> None:
        for rec in dirty.values():
            rec._take()

    def _failed(self, exc: BaseException) -> None:
        """Say once, in one line, that records were lost (the jobs themselves go on)."""
        self._store.error = f"the local store lost records: {type(exc).__name__}: " \
                            f"{_reason(exc)}"
        log.warning("%s", self._store.error)

    def _commit(self, conn: sqlite3.Connection, batch: _Batch, heartbeat: bool,
                purge: bool) -> None:
        writer = self._store.writer_id
        stamp = time.time()
        purged = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sweep_id, values in batch.sweeps:
                if "created_at" in values:  # a new sweep
                    _insert(conn, "sweeps", {"id": sweep_id, **values})
                elif values:
                    _update(conn, "sweeps", "id", sweep_id, values)
            for row in batch.inserts:
                _insert(conn, "jobs", row)
            for key in batch.takeovers:
                conn.execute("UPDATE jobs SET writer = ?, pid = ?, hostname = ?, seen_at = ? "
                             "WHERE key = ?", (writer, os.getpid(), _HOSTNAME, stamp, key))
                self._logs.pop(key, None)
            for rec, fields, lines, dropped, finished, replacing in batch.jobs.values():
                if replacing is not None:
                    self._clear_log(conn, rec.key, replacing)
                self._write_job(conn, rec, fields, lines, dropped, finished, stamp)
            if heartbeat:
                with self._lock:
                    live = list(self._live)
                conn.executemany("UPDATE jobs SET seen_at = ? WHERE key = ? AND writer = ?",
                                 [(stamp, key, writer) for key in live])
            if purge:  # a private URL is a key to the service: gone once it is dead
                purged = conn.execute(
                    "UPDATE jobs SET urls = NULL, urls_expire_at = NULL "
                    "WHERE urls_expire_at IS NOT NULL AND urls_expire_at < ?",
                    (stamp,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        if purged:
            _scrub(conn)

    def _write_job(self, conn: sqlite3.Connection, rec: JobRecorder, fields: dict[str, Any],
                   lines: _Columns, dropped: int, finished: bool, stamp: float
                   ) -> None:
        key = rec.key
        row = conn.execute("SELECT writer FROM jobs WHERE key = ?", (key,)).fetchone()
        if row is None or row[0] != self._store.writer_id:
            return  # forgotten, or another process records this job now
        values = {**fields, "seen_at": stamp}
        if finished:
            values["finished"] = 1
        _update(conn, "jobs", "key", key, values)
        if lines or dropped:
            self._append(conn, key, lines, dropped, rec._redact())

    # -- log chunks -------------------------------------------------------------------------

    def _clear_log(self, conn: sqlite3.Connection, key: str, start: int = 0) -> None:
        """Remove the job's stored lines from index ``start`` on."""
        if start <= 0:
            conn.execute("DELETE FROM log_chunks WHERE job_key = ?", (key,))
            conn.execute("UPDATE jobs SET log_lines = 0, log_dropped = 0 WHERE key = ?",
                         (key,))
        else:
            conn.execute("DELETE FROM log_chunks WHERE job_key = ? AND first_index >= ?",
                         (key, start))
            for seq, first, data in conn.execute(
                    "SELECT seq, first_index, data FROM log_chunks WHERE job_key = ? AND "
                    "first_index + lines > ?", (key, start)).fetchall():
                kept = _Columns.decode(data).cut(0, start - first)
                payload = kept.encode()
                conn.execute("UPDATE log_chunks SET lines = ?, raw_bytes = ?, data = ? "
                             "WHERE job_key = ? AND seq = ?",
                             (len(kept), len(payload), zlib.compress(payload, _LEVEL), key,
                              seq))
            conn.execute("UPDATE jobs SET log_lines = min(log_lines, ?) WHERE key = ?",
                         (start, key))
        self._logs.pop(key, None)

    def _log_state(self, conn: sqlite3.Connection, key: str) -> _LogState:
        state = self._logs.get(key)
        if state is not None:
            return state
        next_index = conn.execute("SELECT log_lines FROM jobs WHERE key = ?",
                                  (key,)).fetchone()[0]
        head_bytes = 0
        tail: list[list[int]] = []
        next_seq = 0
        for seq, lines, raw, head in conn.execute(
                "SELECT seq, lines, raw_bytes, head FROM log_chunks WHERE job_key = ? "
                "ORDER BY seq", (key,)):
            next_seq = seq + 1
            if head:
                head_bytes += raw
            else:
                tail.append([seq, lines, raw])
        state = _LogState(next_index, head_bytes, tail, next_seq)
        self._logs[key] = state
        return state

    def _append(self, conn: sqlite3.Connection, key: str, lines: _Columns, dropped: int,
                redact: Callable[[str], str] | None) -> None:
        state = self._log_state(conn, key)
        if redact is not None and lines:
            lines = lines.redacted(redact)
        half = self._store.max_log_bytes // 2
        reopen, state.open = state.open, None
        first = reopen.first if reopen else state.next_index
        for piece in (reopen.lines + lines if reopen else lines).pieces():
            payload = piece.encode()
            if reopen is not None:
                seq, head, grown = reopen.seq, reopen.head, len(payload) - reopen.raw
                reopen = None
            else:
                seq, head, grown = state.next_seq, state.head_bytes < half, len(payload)
                state.next_seq += 1
            conn.execute("INSERT OR REPLACE INTO log_chunks (job_key, seq, first_index, lines, "
                         "raw_bytes, head, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (key, seq, first, len(piece), len(payload), int(head),
                          zlib.compress(payload, _LEVEL)))
            if head:
                state.head_bytes += grown
            elif state.tail and state.tail[-1][0] == seq:
                state.tail[-1] = [seq, len(piece), len(payload)]
            else:
                state.tail.append([seq, len(piece), len(payload)])
            state.open = (_OpenChunk(seq, first, piece, len(payload), head)
                          if len(payload) < CHUNK_BYTES else None)
            first += len(piece)
        if dropped:
            state.open = None  # a gap ends the chunk: line indexes stay contiguous in one
        state.next_index = first + dropped
        removed = self._trim(conn, key, state, half)
        conn.execute("UPDATE jobs SET log_lines = ?, log_dropped = log_dropped + ? "
                     "WHERE key = ?", (state.next_index, removed + dropped, key))

    def _trim(self, conn: sqlite3.Connection, key: str, state: _LogState, budget: int) -> int:
        """Delete the oldest tail chunks beyond ``budget`` bytes; the lines they held."""
        removed = 0
        total = sum(raw for _, _, raw in state.tail)
        open_seq = state.open.seq if state.open is not None else None
        while len(state.tail) > 1 and total > budget and state.tail[0][0] != open_seq:
            seq, lines, raw = state.tail.pop(0)
            conn.execute("DELETE FROM log_chunks WHERE job_key = ? AND seq = ?", (key, seq))
            removed += lines
            total -= raw
        return removed


_HOSTNAME = socket.gethostname()


# --------------------------------------------------------------------------- the store


_JOBS = ("SELECT jobs.*, sweeps.name AS sweep_name FROM jobs "
         "LEFT JOIN sweeps ON sweeps.id = jobs.sweep_id")


def _loads(row: sqlite3.Row, name: str, default: Any) -> Any:
    text = row[name]
    return default if text is None else json.loads(text)


def _row_to_record(row: sqlite3.Row) -> StoredJob:
    expiry = row["urls_expire_at"]
    urls = [] if expiry is not None and expiry < time.time() else [
        StoredUrl(u["url"], u["port"], u["op_id"], bool(u["private"]), u.get("expires_at"))
        for u in _loads(row, "urls", []) if isinstance(u, dict) and u.get("url")]
    return StoredJob(
        key=row["key"], network=row["network"], created_at=row["created_at"],
        address=row["address"], market=row["market"], node=row["node"],
        placeholder=row["placeholder"], definition=_loads(row, "definition", None),
        params=_loads(row, "params", None), status=row["status"], phase=row["phase"],
        host_status=row["host_status"], finished=bool(row["finished"]),
        started_at=row["started_at"], ended_at=row["ended_at"], seen_at=row["seen_at"],
        timeout=row["timeout"], price=row["price"], cost=row["cost"],
        results=_loads(row, "results", {}), ops=_loads(row, "ops", {}), urls=urls,
        warnings=_loads(row, "warnings", []), error=row["error"],
        timings=_loads(row, "timings", {}), log_lines=row["log_lines"],
        log_dropped=row["log_dropped"], pid=row["pid"], hostname=row["hostname"],
        sweep_id=row["sweep_id"], sweep_name=row["sweep_name"],
        sweep_index=row["sweep_index"])


def _row_to_sweep(row: sqlite3.Row) -> StoredSweep:
    return StoredSweep(
        id=row["id"], name=row["name"], created_at=row["created_at"], network=row["network"],
        definition=_loads(row, "definition", None), params=_loads(row, "params", []),
        parallel=row["parallel"], estimate=row["estimate"], status=row["status"])


class Store:
    """One user's store of jobs (see the module docstring). Use :func:`open_store`."""

    def __init__(self, path: str | os.PathLike[str], *,
                 flush_interval: float = FLUSH_INTERVAL_S,
                 max_log_bytes: int = MAX_LOG_BYTES) -> None:
        self.path = Path(path).expanduser()
        self.max_log_bytes = max_log_bytes
        #: The last problem writing, one line (``None`` while all is well).
        self.error: str | None = None
        #: This process's identity as the writer of the jobs it records.
        self.writer_id = uuid.uuid4().hex
        _open_database(self.path)
        self._writer = _Writer(self, flush_interval)
        #: This process's recorders, by job key, while something holds them.
        self._recorders: weakref.WeakValueDictionary[str, JobRecorder] = (
            weakref.WeakValueDictionary())

    def __repr__(self) -> str:
        return f"<Store {self.path}>"

    def recorded_here(self, key: str) -> bool:
        """Whether a handle of this process recorded the job to its end (its record is
        whole, even if not yet committed)."""
        recorder = self._recorders.get(key)
        return recorder is not None and recorder.finished and not recorder.disowned

    # -- writing ----------------------------------------------------------------------------

    def record(self, *, network: str, redactor: Any = None, **fields: Any) -> JobRecorder:
        """Start the record of a new job (its other fields as :meth:`JobRecorder.update`;
        ``sweep_id`` and ``sweep_index`` place it in a sweep)."""
        recorder = JobRecorder(self, uuid.uuid4().hex, redactor)
        self._recorders[recorder.key] = recorder
        row = {"key": recorder.key, "network": network, "created_at": time.time(),
               "writer": self.writer_id, "pid": os.getpid(), "hostname": _HOSTNAME,
               "seen_at": time.time(), **recorder._encode(fields)}
        self._writer.insert(row, recorder)
        return recorder

    def take_over(self, ref: str, *, redactor: Any = None) -> JobRecorder:
        """Record an existing job from now on (this process becomes its writer: e.g. after
        a kernel restart, the one that attaches to it)."""
        record = self.job(ref)
        recorder = JobRecorder(self, record.key, redactor)
        self._writer.take_over(recorder)
        self._recorders[recorder.key] = recorder
        return recorder

    def record_sweep(self, *, name: str, **fields: Any) -> str:
        """Start the record of a sweep (fields: ``network``, ``definition`` as written,
        ``params``: the parameter sets in job order, ``parallel``, ``estimate``, ``status``);
        its id, for the jobs' ``sweep_id``."""
        sweep_id = uuid.uuid4().hex
        self._writer.sweep(sweep_id, {"name": name, "created_at": time.time(),
                                      **_sweep_values(fields)})
        return sweep_id

    def update_sweep(self, sweep_id: str, **fields: Any) -> None:
        """Set fields of a sweep's record (``status``, ``estimate``…)."""
        self._writer.sweep(sweep_id, _sweep_values(fields))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far is committed; False after ``timeout``."""
        return self._writer.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is pending and stop the writer thread."""
        self._writer.close(timeout)

    def forget(self, refs: Iterable[str] = (), *, sweep: str | None = None,
               older_than: float | None = None, everything: bool = False) -> int:
        """Remove jobs: by key or address, a whole ``sweep``, those created more than
        ``older_than`` seconds ago, or ``everything``; their logs go with them, and a sweep
        goes with its last job. The number of jobs removed."""
        self.flush()
        keys = [self.job(ref).key for ref in refs]
        sweep_id = self.sweep(sweep).id if sweep is not None else None
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if everything:
                    keys = [k for (k,) in conn.execute("SELECT key FROM jobs")]
                if older_than is not None:
                    keys += [k for (k,) in conn.execute(
                        "SELECT key FROM jobs WHERE created_at < ?",
                        (time.time() - older_than,))]
                if sweep_id is not None:
                    keys += [k for (k,) in conn.execute(
                        "SELECT key FROM jobs WHERE sweep_id = ?", (sweep_id,))]
                    conn.execute("DELETE FROM sweeps WHERE id = ?", (sweep_id,))
                keys = list(dict.fromkeys(keys))
                for key in keys:
                    conn.execute("DELETE FROM log_chunks WHERE job_key = ?", (key,))
                    conn.execute("DELETE FROM jobs WHERE key = ?", (key,))
                conn.execute("DELETE FROM sweeps WHERE NOT EXISTS "
                             "(SELECT 1 FROM jobs WHERE jobs.sweep_id = sweeps.id)")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            _scrub(conn)
        return len(keys)

    # -- reading ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = _connect(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the local store {self.path}: {_reason(exc)}"
                             ) from None
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the local store {self.path}: {_reason(exc)}") from None
        finally:
            conn.close()

    def jobs(self, *, last: int | None = None, status: str | Sequence[str] | None = None,
             sweep: str | None = None, network: str | None = None,
             keys: Sequence[str] | None = None, finished: bool | None = None
             ) -> list[StoredJob]:
        """Recorded jobs, newest first (a ``sweep``'s in sweep order): the ``last`` N, with
        ``status`` (one word or several), of a ``sweep`` (see :meth:`sweep`), on
        ``network``, with the given ``keys``, finished or not."""
        where: list[str] = []
        args: list[Any] = []
        if finished is not None:
            where.append("jobs.finished = ?")
            args.append(int(finished))
        if status is not None:
            words = [status] if isinstance(status, str) else list(status)
            where.append(f"jobs.status IN ({', '.join('?' * len(words))})")
            args += words
        if sweep is not None:
            where.append("jobs.sweep_id = ?")
            args.append(self.sweep(sweep).id)
        if network is not None:
            where.append("jobs.network = ?")
            args.append(network)
        if keys is not None:
            where.append(f"jobs.key IN ({', '.join('?' * len(keys))})")
            args += list(keys)
        sql = _JOBS + (" WHERE " + " AND ".join(where) if where else "")
        sql += (" ORDER BY jobs.sweep_index" if sweep is not None else
                " ORDER BY jobs.created_at DESC, jobs.rowid DESC")
        if last is not None:
            sql += " LIMIT ?"
            args.append(max(0, int(last)))
        with self._connection() as conn:
            return [_row_to_record(row) for row in conn.execute(sql, args)]

    def job(self, ref: str) -> StoredJob:
        """One job by key, address, or the start of either (at least 4 characters)."""
        text = ref.strip()
        with self._connection() as conn:
            rows = conn.execute(f"{_JOBS} WHERE jobs.key = ? OR jobs.address = ? "
                                "ORDER BY jobs.created_at DESC", (text, text)).fetchall()
            if not rows and len(text) >= 4:  # a prefix: exact and case-sensitive (base58)
                rows = conn.execute(
                    f"{_JOBS} WHERE substr(jobs.key, 1, ?) = ? OR substr(jobs.address, 1, ?) "
                    "= ? ORDER BY jobs.created_at DESC",
                    (len(text), text, len(text), text)).fetchall()
        if not rows:
            raise StoreError(f"no job {text!r} in the local store")
        records = [_row_to_record(row) for row in rows]
        if len({r.address or r.key for r in records}) > 1:
            shown = ", ".join((r.address or r.key)[:12] for r in records[:4])
            more = ", …" if len(records) > 4 else ""
            raise StoreError(f"{text!r} matches {len(records)} jobs in the local store "
                             f"({shown}{more}): give more of the address")
        return records[0]

    def sweeps(self, *, last: int | None = None, name: str | None = None
               ) -> list[StoredSweep]:
        """Recorded sweeps, newest first (the ``last`` N, or those called ``name``)."""
        sql = "SELECT * FROM sweeps" + (" WHERE name = ?" if name is not None else "")
        sql += " ORDER BY created_at DESC, rowid DESC"
        args: list[Any] = [name] if name is not None else []
        if last is not None:
            sql += " LIMIT ?"
            args.append(max(0, int(last)))
        with self._connection() as conn:
            return [_row_to_sweep(row) for row in conn.execute(sql, args)]

    def sweep(self, ref: str) -> StoredSweep:
        """One sweep: by id, else the latest with that name, else by the start of its id."""
        text = ref.strip()
        with self._connection() as conn:
            row = conn.execute("SELECT * FROM sweeps WHERE id = ? UNION ALL SELECT * FROM "
                               "(SELECT * FROM sweeps WHERE name = ? ORDER BY created_at "
                               "DESC LIMIT 1)", (text, text)).fetchone()
            if row is None and len(text) >= 4:
                rows = conn.execute("SELECT * FROM sweeps WHERE substr(id, 1, ?) = ?",
                                    (len(text), text)).fetchall()
                row = rows[0] if len(rows) == 1 else None
        if row is None:
            raise StoreError(f"no sweep {text!r} in the local store")
        return _row_to_sweep(row)

    def iter_logs(self, key: str, start: int = 0, stop: int | None = None
                  ) -> Iterator[StoredLine]:
        """The job's stored log lines with ``start <= index < stop``, one chunk in memory at
        a time; a marker line stands for each run of lines not kept."""
        with self._connection() as conn:
            found = conn.execute("SELECT log_lines FROM jobs WHERE key = ?", (key,)).fetchone()
            chunks = conn.execute(
                "SELECT seq, first_index FROM log_chunks WHERE job_key = ? AND "
                "first_index + lines > ? AND (? IS NULL OR first_index < ?) ORDER BY seq",
                (key, start, stop, stop)).fetchall()
            expected, stamp = start, 0.0
            for seq, first in chunks:
                # fetchall: each read is its own short transaction, never one held open
                rows = conn.execute("SELECT data FROM log_chunks WHERE job_key = ? AND seq = ?",
                                    (key, seq)).fetchall()
                if not rows:
                    continue  # trimmed meanwhile: the gap shows as a marker
                lines = _Columns.decode(rows[0][0])
                if first > expected and lines:
                    yield _marker(expected, first, lines.stamps[0])
                skip = max(0, start - first)
                take = len(lines) if stop is None else max(0, min(len(lines), stop - first))
                for offset, stamp, stream, op_id, text in zip(
                        range(skip, take), lines.stamps[skip:take], lines.streams[skip:take],
                        lines.ops[skip:take], lines.texts[skip:take], strict=True):
                    yield StoredLine(first + offset, stamp, stream, op_id, text)
                expected = max(expected, first + len(lines))
        end = found[0] if found is not None else expected
        if stop is not None:
            end = min(end, stop)
        if end > expected:
            yield _marker(expected, end, stamp)

    def logs(self, key: str, start: int = 0, stop: int | None = None) -> list[StoredLine]:
        """:meth:`iter_logs` as a list."""
        return list(self.iter_logs(key, start, stop))


def _marker(first: int, end: int, stamp: float) -> StoredLine:
    count = end - first
    return StoredLine(None, stamp, "store", None,
                     f"[… {count:,} log line{'s' if count != 1 else ''} not kept by the local "
                     "store …]")


# --------------------------------------------------------------------------- one per process

_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def default_path(settings: Settings | None = None) -> Path:
    """The store's file: ``runs.sqlite3`` in the data dir (``NOSANA_DATA_DIR``, or the
    platform's user data dir), where the local wallet lives too."""
    from .network.local import data_dir
    from .settings import Settings

    return data_dir(settings or Settings.from_env()) / DB_FILE


def open_store(settings: Settings | None = None, *, path: str | os.PathLike[str] | None = None
               ) -> Store:
    """This process's store for the data dir of ``settings`` (or for ``path``): opened,
    created or migrated on first use, then shared by every caller."""
    target = Path(path).expanduser() if path is not None else default_path(settings)
    target = target.resolve()
    with _stores_lock:
        store = _stores.get(target)
        if store is None:
            store = _stores[target] = Store(target)
        return store


def _close_all() -> None:
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        store.close(timeout=2.0)


atexit.register(_close_all)
