"""The local network service's runtime file, and the lock that lets one start at a time.

The local network runs as one service per user (:mod:`.service`). Like a Jupyter server, it
says where it is in a runtime file in the user's data dir, ``local-network.json``: its URL,
its pid, the token a client presents on the ledger, IPFS and control routes (header
:data:`TOKEN_HEADER`) and the API key it issued (the credits path). The file is written
whole (a private temporary file, renamed) by the service once it listens, with mode 0600,
and removed by it when it stops; a file that someone
else owns or may read is not trusted. ``local-network.lock`` serialises starts, so that two
kernels starting at once start one service; it is an advisory lock held on an open file, so
a process that dies drops it.

Standard library and pydantic only: a client reads this without loading the server.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.metadata
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

__all__ = [
    "LOCK_FILE",
    "LOG_FILE",
    "RUNTIME_FILE",
    "TOKEN_HEADER",
    "ServiceInfo",
    "package_version",
    "pid_alive",
    "read_runtime",
    "remove_runtime",
    "start_lock",
    "write_runtime",
]

#: File names inside the data dir.
RUNTIME_FILE = "local-network.json"
LOCK_FILE = "local-network.lock"
LOG_FILE = "local-network.log"

#: The request header that carries the service's token.
TOKEN_HEADER = "x-nosana-local-token"


class ServiceInfo(BaseModel):
    """What the runtime file says about a running local network service."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    #: ``http://127.0.0.1:PORT``: the ledger, IPFS and the control routes (``/_devnode/…``).
    url: str
    #: The node API of each host, with ``{node}``.
    node_url_template: str
    pid: int
    #: What a client presents in :data:`TOKEN_HEADER` (never shown: not in the repr).
    token: str = Field(repr=False)
    #: The API key the service issued (``nos_…``, with its starting credits): what a client
    #: pays with on the local network when the user set none (never shown either).
    api_key: str = Field(default="", repr=False)
    #: When it started (Unix seconds).
    started: float
    #: Seconds without a job or a request after which it stops itself (0: never).
    idle_timeout: float = 0
    #: The package version that started it.
    version: str = ""


@functools.cache
def package_version() -> str:
    """The installed nosana_magic's version ("" when it is not installed, e.g. run from a
    checkout on ``PYTHONPATH``)."""
    try:
        return importlib.metadata.version("nosana_magic")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _private_file(path: Path) -> int:
    """A new file at ``path`` that only this user may read or write (an old one replaced)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                   0o600)


def _data_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


def write_runtime(directory: Path, info: ServiceInfo) -> Path:
    """Write the runtime file whole: a reader sees the old file or the new one, never half."""
    path = _data_dir(directory) / RUNTIME_FILE
    temporary = directory / f".{RUNTIME_FILE}.{os.getpid()}"
    fd = _private_file(temporary)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(info.model_dump(), indent=1))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path


def read_runtime(directory: Path) -> ServiceInfo | None:
    """The service the runtime file names, or ``None`` when there is no usable file: none,
    not this user's own and private (mode 0600), or not readable as one. Whether the service
    still runs there is for the caller to check."""
    path = directory / RUNTIME_FILE
    try:
        # Non-blocking: a FIFO put there must not hang the read (it is refused below).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symlink (ELOOP), no permission
        log.warning("ignoring the runtime file %s: %s", path, exc.strerror)
        return None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):  # a directory, a FIFO, a device
        os.close(fd)
        log.warning("ignoring the runtime file %s: not a regular file", path)
        return None
    with os.fdopen(fd, "rb") as handle:
        if status.st_uid != os.getuid() or status.st_mode & 0o077:
            log.warning("ignoring the runtime file %s: not private to this user (mode %o)",
                        path, status.st_mode & 0o777)
            return None
        raw = handle.read(64 * 1024)
    try:
        return ServiceInfo.model_validate_json(raw)
    except ValidationError:
        log.warning("ignoring the runtime file %s: not a runtime file", path)
        return None


def remove_runtime(directory: Path, pid: int) -> None:
    """Remove the runtime file if it still names ``pid`` (a newer service keeps its own)."""
    try:
        with start_lock(directory, timeout=5.0):
            _remove_if(directory, pid)
    except TimeoutError:  # a start holds the lock for long: better a stale file than none
        _remove_if(directory, pid)


def _remove_if(directory: Path, pid: int) -> None:
    info = read_runtime(directory)
    if info is not None and info.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            (directory / RUNTIME_FILE).unlink()


@contextlib.contextmanager
def start_lock(directory: Path, *, timeout: float) -> Iterator[None]:
    """Hold the data dir's start lock (waiting at most ``timeout`` s: ``TimeoutError``)."""
    import fcntl

    path = _data_dir(directory) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{path} stayed locked for {timeout:g} s")
            time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process of this user (a zombie is not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or someone else's
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): signal 0 is all there is
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
