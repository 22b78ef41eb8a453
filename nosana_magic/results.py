"""What hosts return: FlowState, op states, log entries, service URLs, the final status.

The wire models *ignore* unknown fields: hosts add fields over time and a client must not
break on them. Attributes are snake_case; the wire's camelCase names are aliases.

Beside them, the two records the package makes of what hosts send, each built here only:
:class:`LogLine` (one constructor per source: the live ``/log`` stream, an op's log in the
results) and :class:`ServiceUrl` (from a flow's ``secrets``, or a public service computed
before the job runs).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import Any, Literal, NamedTuple, Protocol, overload

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .jsregex import RegexError, to_python
from .protocol import is_private_expose_id

__all__ = [
    "EndpointStatus",
    "FlowState",
    "InfoEvent",
    "LiveEntry",
    "LogLine",
    "LogStream",
    "NodeLogEntry",
    "NodeLogPending",
    "OpLog",
    "OpState",
    "OutputBatch",
    "OutputEntry",
    "ResultValue",
    "ServiceEndpoint",
    "ServiceUrl",
    "final_status",
    "host_lines",
    "regex_groups",
    "result_matches",
    "strip_ansi",
    "urls_from_secrets",
]


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=False
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=False)


LogType = Literal["stdin", "stdout", "stderr", "nodeerr"]


class OpLog(_Wire):
    """One raw output frame of an op (``{log, type, timestamp}``)."""

    log: str
    type: str = "stdout"
    timestamp: str | int | None = None


#: One results value as a host stores it (docs/protocol.md §14): a list of every matching log
#: line's ``match`` (the whole match, then its groups; ``None`` for a group that took no part),
#: ``[]`` when nothing matched, or the error text of a regex the host could not compile.
#: Older devnodes sent the value of the first group instead (a string, or a list of them).
ResultValue = str | list[str | None]


class OpState(_Wire):
    """The state of one op, in ``ops`` order."""

    operation_id: str
    group: str | None = None
    provider_id: str | None = None
    status: str = "init"  # init | running | success | failed | stopped
    start_time: int | None = None
    end_time: int | None = None
    exit_code: int | None = None
    logs: list[OpLog] = Field(default_factory=list)
    errors: list[Any] = Field(default_factory=list)
    diagnostics: dict[str, Any] | None = None
    results: dict[str, ResultValue] | None = None


class FlowState(_Wire):
    """The host's record of one job: what ``GET /job/{id}/results`` returns."""

    status: str
    start_time: int | None = None
    end_time: int | None = None
    errors: list[Any] = Field(default_factory=list)
    secrets: dict[str, Any] | None = None
    op_states: list[OpState] = Field(default_factory=list)


class InfoEvent(FlowState):
    """One event of the ``/job/{id}/info`` stream: FlowState without logs, plus operations."""

    operations: dict[str, Any] | None = None


class NodeLogPending(_Wire):
    """``pending`` of a host's progress line: it waits for ``expecting`` (a ``Class.method``)."""

    is_pending: bool = False
    expecting: str | None = None


class NodeLogEntry(_Wire):
    """One entry of the ``/log`` WebSocket stream (``type: "log"`` is container output).

    Hosts send ``pending`` as an object on their progress ("process") lines and leave it out
    elsewhere; container lines carry no ``payload`` (docs/protocol.md §7). Older devnodes sent
    ``pending: false`` and a ``payload`` of ``{opId, stream}``: both shapes are read.
    """

    log: str = ""
    method: str | None = None
    type: str = "info"
    pending: NodeLogPending | bool | None = None
    timestamp: int | None = None
    job: str | None = None
    payload: Any = None


EndpointStatus = Literal["ONLINE", "OFFLINE", "UNKNOWN"]


class ServiceEndpoint(BaseModel):
    """One entry of ``GET /job/{id}/endpoints`` ``urls`` (the host spells ``opID``)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    op_id: str = Field(alias="opID")
    port: int | float | str
    url: str
    status: EndpointStatus = "UNKNOWN"


@dataclass(frozen=True)
class ServiceUrl:
    """A service a job exposes: where to reach it and whether only its owner knows the URL."""

    url: str
    port: int | float | str
    op_id: str
    private: bool
    status: EndpointStatus = "UNKNOWN"
    expose_id: str = ""

    def __str__(self) -> str:
        return self.url

    @classmethod
    def of(cls, expose_id: str, *, url: str, port: int | float | str, op_id: str,
           status: object = "UNKNOWN") -> ServiceUrl:
        """The service ``expose_id``: private exactly when its id is a host-made random one
        (docs/protocol.md §12); a status other than the host's three words is ``UNKNOWN``."""
        known: EndpointStatus = (
            "ONLINE" if status == "ONLINE" else "OFFLINE" if status == "OFFLINE" else "UNKNOWN")
        return cls(url, port, op_id, is_private_expose_id(expose_id), known, expose_id)


def urls_from_secrets(secrets: Mapping[str, Any] | None, job: str) -> list[ServiceUrl]:
    """The service URLs in a flow's ``secrets`` (``{job: {exposeId: {opID, port, url,
    status}}}``, from ``/info`` or the results), private ones included."""
    entries = (secrets or {}).get(job)
    if not isinstance(entries, Mapping):
        return []
    return [
        ServiceUrl.of(str(expose_id), url=item["url"], port=item.get("port", ""),
                      op_id=str(item.get("opID") or item.get("opId") or ""),
                      status=item.get("status"))
        for expose_id, item in entries.items()
        if isinstance(item, Mapping) and isinstance(item.get("url"), str)
    ]


# --------------------------------------------------------------------------- log lines


def _same(text: str) -> str:
    return text


def _strip_newline(text: str) -> str:
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


#: ANSI escape sequences (CSI, such as chalk's colours, OSC, and two-character escapes): a host
#: run in a terminal colours its own lines (docs/protocol.md §4), and programs colour theirs.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    """``text`` without its ANSI escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


def _timestamp_s(value: str | int | float | None) -> float:
    """Seconds from the host's ms integers (or their text) or docker's ISO strings (``now``
    if unknown)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1000.0
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        # Docker writes nanoseconds; datetime takes microseconds.
        head, dot, rest = text.partition(".")
        if dot:
            digits = "".join(c for c in rest if c.isdigit())
            tail = rest[len(digits):]
            text = f"{head}.{digits[:6]}{tail}"
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    return time.time()


#: The streams of a log line: an op's ``stdout`` or ``stderr``; ``output`` for container
#: output whose stream the host did not say (its live ``/log`` never does, docs/protocol.md
#: §7); ``node`` for the host's own lines.
LogStream = Literal["stdout", "stderr", "output", "node"]


def _shown(raw: str, redact: Callable[[str], str]) -> str:
    """A host's text as a log line shows it: redacted, then without ANSI escapes. Redacted
    first, because a secret may hold an escape sequence itself; again after, for one that a
    colour code interrupted."""
    text = redact(_strip_newline(raw))
    plain = strip_ansi(text)
    return text if plain is text else redact(plain)


class _Redacts(Protocol):
    def redact(self, text: str) -> str: ...
    def redact_many(self, texts: list[str]) -> list[str]: ...


def _shown_many(raws: list[str], redactor: _Redacts) -> list[str]:
    """:func:`_shown` of each text, in order, the work done once for the batch where the
    texts hold no escape sequence and no carriage return (nearly always)."""
    joined = "".join(raws)
    if "\x1b" in joined or "\r" in joined:
        return [_shown(raw, redactor.redact) for raw in raws]
    return redactor.redact_many([raw[:-1] if raw.endswith("\n") else raw for raw in raws])


class _NoRedaction:
    def redact(self, text: str) -> str:
        return text

    def redact_many(self, texts: list[str]) -> list[str]:
        return texts


_NO_REDACTION = _NoRedaction()


class OutputEntry(NamedTuple):
    """A plain container line of the ``/log`` stream (``type: "log"`` with no ``pending`` and
    no ``payload``: what nearly every entry is), read without a :class:`NodeLogEntry`: all
    that such an entry says."""

    log: str
    type: Literal["log"]
    timestamp: int | None = None
    method: str | None = None
    job: str | None = None


#: One entry of the ``/log`` stream as the client reads it.
LiveEntry = NodeLogEntry | OutputEntry


class OutputBatch(Sequence[OutputEntry]):
    """Plain container lines that arrived together, kept as columns: each item is the
    :class:`OutputEntry` of one line, made when asked for (a long log makes no object per
    line on its way, which the garbage collector would have to follow)."""

    __slots__ = ("jobs", "logs", "methods", "stamps")

    def __init__(self, logs: list[str], stamps: list[int | None], methods: list[str | None],
                 jobs: list[str | None]) -> None:
        self.logs, self.stamps, self.methods, self.jobs = logs, stamps, methods, jobs

    def __len__(self) -> int:
        return len(self.logs)

    @overload
    def __getitem__(self, index: int) -> OutputEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[OutputEntry]: ...

    def __getitem__(self, index: int | slice) -> OutputEntry | list[OutputEntry]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return OutputEntry(self.logs[index], "log", self.stamps[index], self.methods[index],
                           self.jobs[index])

    def __iter__(self) -> Iterator[OutputEntry]:
        return map(_new_output, self.as_tuples())

    def as_tuples(self) -> list[tuple[str, str, int | None, str | None, str | None]]:
        """Each entry as the plain tuple of its fields (equal to the entry, and not an
        object the garbage collector keeps following)."""
        return list(zip(self.logs, repeat("log"), self.stamps, self.methods, self.jobs,
                        strict=False))  # (repeat() is endless; the columns are as long)


#: A new OutputEntry from a tuple of its fields.
_new_output = functools.partial(tuple.__new__, OutputEntry)


def host_lines(entries: Sequence[LiveEntry]) -> list[LiveEntry]:
    """The entries of a batch that are not container output (the host's own lines)."""
    if type(entries) is OutputBatch:
        return []
    return [entry for entry in entries if entry.type != "log"]


class LogLine(NamedTuple):
    """One line of a job's log: an op's output (``stdout``, ``stderr``, or ``output`` when the
    host did not say which) or a host ``node`` line. ``op_id`` is ``None`` when the line's op
    is not known. The text has no ANSI escapes and no final newline, and was redacted.

    Immutable; a named tuple, since a long job makes a million of them."""

    op_id: str | None
    stream: str
    text: str
    timestamp: float

    def __str__(self) -> str:
        return self.text

    @property
    def container(self) -> bool:
        """True for an op's output (not a host line)."""
        return self.stream != "node"

    @classmethod
    def from_log_entry(cls, entry: NodeLogEntry, redact: Callable[[str], str] = _same, *,
                       op_id: str | None = None) -> LogLine:
        """A line of the live ``/log`` stream: container output (``type: "log"``) or the
        host's own progress line (``node``).

        A Nosana host does not say which op or which stream a container line came from, so
        its stream is ``output`` and its op ``op_id`` (what the caller could tell, else
        ``None``). Older devnodes named both in a ``payload``, which is then used.
        """
        return cls._of_entry(entry, _shown(entry.log, redact), op_id)

    @classmethod
    def from_live_entries(cls, entries: Sequence[LiveEntry], redactor: _Redacts, *,
                          op_id: str | None = None) -> list[LogLine]:
        """The lines of entries that arrived together, as :meth:`from_log_entry` makes each
        (texts redacted as a batch)."""
        now = time.time()
        if type(entries) is OutputBatch:  # nearly always: no object per entry
            texts = _shown_many(entries.logs, redactor)
            seconds = [stamp / 1000.0 if stamp else now for stamp in entries.stamps]
            return list(map(_new_line, zip(repeat(op_id), repeat("output"), texts, seconds)))
        texts = _shown_many([entry.log for entry in entries], redactor)
        seconds = [entry.timestamp / 1000.0 if entry.timestamp else now for entry in entries]
        lines = list(map(_new_line, zip(repeat(op_id), repeat("output"), texts, seconds)))
        for index, entry in enumerate(entries):
            if type(entry) is NodeLogEntry:  # a host's line, or one with a payload: rare
                lines[index] = cls._of_entry(entry, texts[index], op_id)
        return lines

    @classmethod
    def _of_entry(cls, entry: NodeLogEntry, text: str, op_id: str | None) -> LogLine:
        payload = entry.payload if isinstance(entry.payload, Mapping) else {}
        named = payload.get("opId") or payload.get("op_id") or payload.get("operationId")
        stream: str = "node"
        if entry.type == "log":
            said = payload.get("stream") or payload.get("type")
            stream = said if said in ("stdout", "stderr") else "output"
            op_id = named if isinstance(named, str) else op_id
        else:
            op_id = named if isinstance(named, str) else None
        stamp = entry.timestamp if entry.timestamp else None
        return cls(op_id, stream, text, _timestamp_s(stamp))

    @classmethod
    def from_op_logs(cls, op_id: str, entries: list[OpLog]) -> list[LogLine]:
        """Lines of an op's log in the results (already redacted; any stream but stdout is
        shown as stderr), made as a batch: an op's
        log in the results is up to 24,999 lines, a few timestamps shared by many."""
        texts = _shown_many([entry.log for entry in entries], _NO_REDACTION)
        seconds: dict[str | int | None, float] = {}
        for entry in entries:
            if entry.timestamp not in seconds:
                seconds[entry.timestamp] = _timestamp_s(entry.timestamp)
        return list(map(_new_line, zip(
            repeat(op_id),
            [entry.type if entry.type in ("stdout", "stderr") else "stderr"
             for entry in entries],
            texts, [seconds[entry.timestamp] for entry in entries])))



#: A new LogLine from a tuple of its fields (without the named tuple's Python-level
#: constructor: this runs for every line).
_new_line = functools.partial(tuple.__new__, LogLine)


#: Flow statuses a host reports while the job has not finished.
RUNNING_STATUSES = frozenset({"init", "running", "waiting-for-job-definition"})


def final_status(flow: FlowState, *, reported: str | None = None) -> str:
    """The outcome of a finished flow.

    A host hands out results while its status reads ``waiting-for-result`` (it overwrites the
    real status before serving them), so the outcome is worked out from the op states. When
    the host said a final status before that (the last ``/info`` event), ``reported`` wins.

    A job that reached its timeout ends ``success`` on the host, its ops too (docs/protocol.md §9),
    with ``diagnostics.reason.jobExpired``: that is reported as ``expired``, since the ops were
    cut short whatever their exit codes say.
    """
    for status in (reported, flow.status):
        if status and status != "waiting-for-result" and status not in RUNNING_STATUSES:
            return status
    states = [op.status for op in flow.op_states]
    if not states:
        # No op ran: the definition never started (a validation error is the usual cause).
        return "validation-error" if flow.errors else "success"
    if any(_expired(op) for op in flow.op_states):
        return "expired"
    if "failed" in states or any(op.exit_code not in (None, 0) for op in flow.op_states):
        return "failed"
    if "stopped" in states:
        return "stopped"
    if all(state == "success" for state in states):
        return "success"
    return "failed"


def _expired(op: OpState) -> bool:
    reason = (op.diagnostics or {}).get("reason")
    return isinstance(reason, dict) and reason.get("jobExpired") is True


# ---------------------------------------------------------------------- results values


def regex_groups(pattern: str) -> int:
    """How many capturing groups a results regex has, read as JavaScript reads it (the host
    runs it as a JavaScript ``RegExp``, docs/protocol.md §14); 0 for one it refuses."""
    try:
        return to_python(pattern).groups
    except RegexError:
        return 0


def result_matches(value: ResultValue | None, groups: int) -> list[list[str | None]]:
    """The matches in a results value: one ``[whole match, group 1, …]`` list per matching line.

    A host concatenates the match arrays of every matching line (docs/protocol.md §14), so the
    list is cut in pieces of ``groups + 1``. A string (a regex the host could not compile) has
    no match; a list that does not divide evenly is taken as one match.
    """
    if not isinstance(value, list) or not value:
        return []
    size = groups + 1
    if groups < 0 or len(value) % size:
        return [list(value)]
    return [list(value[start : start + size]) for start in range(0, len(value), size)]
