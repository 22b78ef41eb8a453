"""What a job came to, decided from what the host, the ledger and the machine saw.

Pure decisions, no I/O: the one status word (:func:`verdict`), the one-line reason a job did
not succeed (:func:`reason`), and the records made of the host's results (:class:`OpResult`
per op, and :class:`Results`, the dict of results values that says why a name is missing).
The handle (:mod:`nosana_magic.job`) hands these functions its facts on every read, so
nothing here is stored and the view, the summary, the repr and ``%nosana`` say the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .errors import MissingResult
from .protocol import JobState, format_duration
from .results import (
    FlowState,
    LogLine,
    OpState,
    ResultValue,
    final_status,
    regex_groups,
    result_matches,
)
from .transport import one_line

__all__ = [
    "FINAL_STATUSES",
    "Facts",
    "Failure",
    "FlowOutcome",
    "MissingResult",
    "OpResult",
    "Phase",
    "Results",
    "ops_and_results",
    "reason",
    "result_groups",
    "verdict",
]

Phase = Literal[
    "validating",
    "pinning",
    "listing",
    "queued",
    "sending-definition",
    "running",
    "collecting-results",
    "done",
]
#: The verdicts a job's status can end with.
FINAL_STATUSES = ("succeeded", "failed", "stopped", "expired", "lost")

#: Exit codes of a process ended by SIGTERM / SIGKILL (Docker's 128 + N): how a stop ends one.
_STOP_EXIT_CODES = frozenset({137, 143})
#: The host's final flow words, in the package's.
_HOST_OUTCOME = {"success": "succeeded", "expired": "expired", "stopped": "stopped"}

EndedBy = Literal["stop", "expiry", "host"]


# --------------------------------------------------------------------------- records


class Failure(Exception):
    """Why a job's machine gave up on it; the handle words it as ``JobFailed`` or, when
    ``lost``, as ``JobLost`` (the host or the ledger stopped answering)."""

    def __init__(self, message: str, *, lost: bool = False) -> None:
        super().__init__(message)
        self.lost = lost


@dataclass(frozen=True)
class OpResult:
    """One op's outcome, from the host's private results.

    ``host_status`` is the host's own word (``init``, ``running``, ``success``, ``failed``,
    ``stopped``); ``ended_by`` says what cut the op short, from the host's diagnostics:
    ``"stop"`` (yours; a host reports a stop through its API as an expiry), ``"expiry"`` (the
    job's timeout) or ``"host"`` (the host shut down). :attr:`status` is the package's word.
    """

    op_id: str
    host_status: str
    exit_code: int | None
    #: Its stdout and stderr lines (read from the job's log once the job is done).
    logs: Sequence[LogLine]
    #: Each results name's value: the last match's first group (the whole match for a
    #: regex without groups), JSON-decoded.
    results: dict[str, Any]
    ended_by: EndedBy | None = None
    #: False when the op never started (the job ended first).
    ran: bool = True
    #: Each results name's every match, one ``[whole match, group 1, …]`` list per matching
    #: line, as the host found them (strings; ``None`` for a group that took no part).
    matches: dict[str, list[list[str | None]]] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``succeeded``, ``failed`` (a non-zero exit), ``stopped``, ``expired``, ``lost``,
        ``not run``, or the host's word while it runs."""
        if self.ended_by == "stop":
            return "stopped"
        if self.ended_by == "expiry":
            return "expired"
        if self.ended_by == "host":
            return "lost"
        if self.host_status == "failed" or self.exit_code not in (None, 0):
            return "failed"
        if not self.ran:
            return "not run"
        return {"success": "succeeded"}.get(self.host_status, self.host_status)

    @property
    def stdout(self) -> str:
        return "\n".join(line.text for line in self.logs if line.stream == "stdout")

    @property
    def stderr(self) -> str:
        return "\n".join(line.text for line in self.logs if line.stream == "stderr")


_V = TypeVar("_V")


class Results(dict[str, _V]):
    """A job's results (or its ops) by name: a plain dict, except that a missing name raises
    :class:`MissingResult` saying which names exist and, if the job did not succeed, why.

    ``explain(kind, key, names)`` words that line (the job knows its own state). For results,
    :meth:`all` gives a name's value in every match, not only the last one.
    """

    def __init__(self, items: Mapping[str, _V] | None = None, *, kind: str = "result",
                 explain: Callable[[str, str, list[str]], str] | None = None,
                 every: Mapping[str, list[Any]] | None = None) -> None:
        super().__init__(items or {})
        self._kind = kind
        self._explain = explain
        self._every = dict(every or {})

    def all(self, key: str) -> list[Any]:
        """``key``'s value in every match, in the order the op printed them (each the
        match's first group, or the whole match, JSON-decoded): a loss per epoch, say.
        ``[]`` when the pattern matched nothing; a name no op has raises
        :class:`MissingResult`."""
        if key in self._every:
            return list(self._every[key])
        if key in self:
            return [self[key]]
        self.__missing__(key)
        return []

    def __missing__(self, key: str) -> _V:
        names = [str(name) for name in self]
        if self._explain is not None:
            raise MissingResult(self._explain(self._kind, key, names), key)
        have = f"there are {', '.join(names)}" if names else f"there are no {self._kind}s"
        raise MissingResult(f"no {self._kind} {key!r}: {have}", key)

    def __reduce__(self) -> tuple[type[dict[str, _V]], tuple[dict[str, _V]]]:
        # Copies and pickles are plain dicts: the explanation belongs to the live job.
        return dict, (dict(self),)


def _decode(value: Any) -> Any:
    """A results value JSON-decoded when it parses (``"0.93"`` → ``0.93``), else as it is."""
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def redact_flow(flow: FlowState, redact: Callable[[str], str]) -> FlowState:
    """``flow`` with every string in it passed through ``redact``."""

    def tree(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [tree(item) for item in value]
        if isinstance(value, dict):
            return {key: tree(item) for key, item in value.items()}
        return value

    return FlowState.model_validate(tree(flow.to_wire()))


def op_ended_by(op: OpState, stopped_by_you: bool) -> EndedBy | None:
    """What cut an op short, from its diagnostics (and the exit code of a stopped process)."""
    cause = (op.diagnostics or {}).get("reason")
    cause = cause if isinstance(cause, Mapping) else {}
    if cause.get("jobStopped") is True:
        return "stop"
    if cause.get("jobExpired") is True:
        # A host ends a job stopped through its API as an expiry: the stop was ours.
        return "stop" if stopped_by_you else "expiry"
    if cause.get("hostShutDown") is True:
        return "host"
    if stopped_by_you and op.exit_code in _STOP_EXIT_CODES:
        return "stop"
    return None


@dataclass(frozen=True)
class FlowOutcome:
    """What a flow's results come to: each op's outcome and the results values by name (a
    name two ops share is qualified by op, ``train.loss``)."""

    ops: dict[str, OpResult]
    #: Each name's value (the last match's).
    results: dict[str, Any]
    #: Each name's value in every match.
    every: dict[str, list[Any]]
    #: Each name's every match, as the host found them.
    matches: dict[str, list[list[str | None]]]
    #: Results the host could not extract (a regex it refused), one line each.
    problems: list[str]


def result_groups(definition: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Each op's results regexes' group counts (by op id, then name), from a definition."""
    groups: dict[str, dict[str, int]] = {}
    for op in definition.get("ops") or []:
        rules = op.get("results") if isinstance(op, Mapping) else None
        if not isinstance(rules, Mapping):
            continue
        counts = groups.setdefault(str(op.get("id")), {})
        for name, rule in rules.items():
            pattern = rule if isinstance(rule, str) else (
                rule.get("regex") if isinstance(rule, Mapping) else None)
            if isinstance(pattern, str):
                counts[str(name)] = 0 if pattern == "*" else regex_groups(pattern)
    return groups


def match_value(match: list[str | None]) -> Any:
    """The value a match stands for: its first group, else the whole match, JSON-decoded."""
    return _decode(match[1] if len(match) > 1 else match[0])


def guess_groups(value: list[str | None]) -> int:
    """How many groups the regex that made ``value`` has, when its definition is not known:
    the largest count under which the list cuts evenly into matches whose groups are each
    found in their whole match (usually true of a match), else none."""
    for groups in range(min(len(value) - 1, 9), 0, -1):
        size = groups + 1
        if len(value) % size:
            continue
        chunks = [value[start : start + size] for start in range(0, len(value), size)]
        if all(isinstance(chunk[0], str) and all(
                group is None or group in chunk[0] for group in chunk[1:]) for chunk in chunks):
            return groups
    return 0


def _op_values(op: OpState, groups: Mapping[str, int],
               ) -> tuple[dict[str, Any], dict[str, list[Any]],
                          dict[str, list[list[str | None]]], list[str]]:
    """An op's results: each name's last value, every value, every match; and what the host
    could not extract. ``groups``: each name's regex group count, where known."""
    last: dict[str, Any] = {}
    every: dict[str, list[Any]] = {}
    matches: dict[str, list[list[str | None]]] = {}
    problems: list[str] = []
    raw: Mapping[str, ResultValue] = op.results or {}
    for name, value in raw.items():
        if isinstance(value, str):
            why = value.splitlines()[0][:200] if value else "no reason given"
            problems.append(f"results.{name} of op {op.operation_id}: the host could not use "
                            f"the pattern ({why})")
            continue
        count = groups.get(name)
        found = result_matches(value, guess_groups(value) if count is None else count)
        matches[name] = found
        every[name] = [match_value(match) for match in found]
        if found:
            last[name] = every[name][-1]
    return last, every, matches, problems


def ops_and_results(flow: FlowState, *, stopped_by_you: bool,
                    groups: Mapping[str, Mapping[str, int]] | None = None) -> FlowOutcome:
    """Each op's outcome by op id, and every results value by name (docs/protocol.md §14).

    A host keeps, per name, every matching line's match (the whole match, then the groups,
    all in one flat list): the value of a name is its last match's first group (or the whole
    match, for a regex without groups), JSON-decoded; every match's is in ``every``. Where
    one match ends is known from the regex's group count, ``groups[op id][name]`` (from the
    definition), or else guessed. A name with no match has no value. A name two ops share
    is qualified by op (``train.loss``).
    """
    ops: dict[str, OpResult] = {}
    owners: dict[str, list[str]] = {}
    per_op: dict[str, tuple[dict[str, Any], dict[str, list[Any]],
                            dict[str, list[list[str | None]]]]] = {}
    problems: list[str] = []
    for op in flow.op_states:
        last, every, matches, trouble = _op_values(op, (groups or {}).get(op.operation_id, {}))
        problems += trouble
        per_op[op.operation_id] = (last, every, matches)
        ops[op.operation_id] = OpResult(
            op_id=op.operation_id,
            host_status=op.status,
            exit_code=op.exit_code,
            logs=LogLine.from_op_logs(op.operation_id, op.logs),
            results=last,
            ended_by=op_ended_by(op, stopped_by_you),
            ran=op.start_time is not None or op.status == "running",
            matches=matches,
        )
        for name in matches:
            owners.setdefault(name, []).append(op.operation_id)

    def key(op_id: str, name: str) -> str:
        return name if len(owners[name]) == 1 else f"{op_id}.{name}"

    merged: dict[str, Any] = {}
    every_of: dict[str, list[Any]] = {}
    matches_of: dict[str, list[list[str | None]]] = {}
    for op_id, (last, every, matches) in per_op.items():
        for name in matches:
            if name in last:
                merged[key(op_id, name)] = last[name]
            every_of[key(op_id, name)] = every[name]
            matches_of[key(op_id, name)] = matches[name]
    return FlowOutcome(ops, merged, every_of, matches_of, problems)


# --------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Facts:
    """What the verdict is worked out from: the handle's state as one snapshot."""

    done: bool
    phase: Phase
    #: A stop was asked for (and not refused).
    stopping: bool
    error: BaseException | None
    #: The error says the host or the ledger stopped answering.
    error_lost: bool
    flow: FlowState | None
    node: str | None
    state: JobState | None
    #: The status of the host's last ``/info`` event, once it had ``endTime``.
    reported: str | None
    timeout: int


def verdict(facts: Facts) -> str:
    """The one word the package says about a job.

    While the job runs: its phase, or ``stopping`` once a stop was sent. Once it is done:

    * ``lost``: an error saying the host or the ledger stopped answering, or the job ended
      without results and without its host's verdict (a host that quit);
    * ``failed``: any other error (it never ran, or the host refused it), or the results say
      an op exited non-zero or failed, or the host rejected the definition;
    * ``stopped``: you stopped it (a host reports such a stop as an expiry, so the stop wins
      over that) — unless the results show it had finished on its own; also a job stopped
      on the ledger before any host took it;
    * ``expired``: its timeout cut its ops short;
    * ``succeeded``: every op that ran exited 0.
    """
    if not facts.done:
        return "stopping" if facts.stopping else facts.phase
    if facts.error is not None:
        return "lost" if facts.error_lost else "failed"
    flow = facts.flow
    if flow is None:
        if facts.stopping or facts.node is None:
            return "stopped"  # delisted before it ran, or stopped with nothing to collect
        reported = _HOST_OUTCOME.get(facts.reported or "")
        if reported is not None and facts.state is not JobState.STOPPED:
            return reported
        return "lost"
    ended_by = {op_ended_by(op, facts.stopping) for op in flow.op_states}
    if "host" in ended_by:
        return "lost"
    if facts.stopping and ("stop" in ended_by or not flow.op_states):
        return "stopped"
    word = _HOST_OUTCOME.get(final_status(flow, reported=_specific(facts)), "failed")
    if facts.stopping and word in ("expired", "stopped"):
        return "stopped"
    return word


def reason(facts: Facts, redact: Callable[[str], str]) -> str:
    """Why the job did not succeed, in one line ("" while it runs, or once it succeeded)."""
    status = verdict(facts)
    if not facts.done or status == "succeeded":
        return ""
    if facts.error is not None:
        return redact(first_line(facts.error))
    if status == "stopped":
        return "stopped by you" if facts.stopping else "stopped by its project"
    flow = facts.flow
    if status == "lost":
        if flow is None and facts.state is JobState.STOPPED:
            return "ended STOPPED on the ledger without results (the host quit)"
        return "the host did not serve the job's results, so how it ended is unknown"
    if status == "expired":
        return (f"it reached its timeout ({format_duration(facts.timeout)}); its ops were "
                "cut short")
    if flow is None:
        return f"the host says {facts.reported or 'nothing'}"
    outcome = final_status(flow, reported=_specific(facts))
    if outcome == "validation-error":
        detail = _validation_summary(flow.errors)
        return "the host rejected the job definition" + (f": {detail}" if detail else "")
    for op in flow.op_states:
        if op.status == "failed" or op.exit_code not in (None, 0):
            said = op_failure(op, redact)
            why = f": {said}" if said else ""
            if op.exit_code is not None:
                return f"op {op.operation_id} exited with {op.exit_code}{why}"
            return f"op {op.operation_id} {op.status}{why}"
    if flow.errors:
        first = flow.errors[0]
        text = first if isinstance(first, str) else json.dumps(first)
        # Redacted whole, then cut: a cut would leave a piece of a secret unrecognised.
        return f"the host says {outcome}: {one_line(redact(text))}"
    return f"the host says {facts.reported or flow.status}"


def op_failure(op: OpState, redact: Callable[[str], str]) -> str:
    """What the host said about an op it could not run, in one line ("" if nothing): the
    first error it recorded (an op that could not start: exit code 2), else its last
    ``nodeerr`` log line (its arguments could not be resolved), else the diagnostics' reason
    (docs/protocol.md §14). A process's own exit code needs no words from the host."""
    for error in op.errors:
        message = error.get("message") if isinstance(error, Mapping) else error
        if isinstance(message, str) and message.strip():
            return one_line(redact(message), 160)
    node_lines = [entry.log for entry in op.logs if entry.type == "nodeerr" and entry.log.strip()]
    if node_lines:
        return one_line(redact(node_lines[-1]), 160)
    reason = (op.diagnostics or {}).get("reason")
    said = reason.get("reason") if isinstance(reason, Mapping) else None
    if isinstance(said, str) and said.strip() and op.exit_code not in (0, None):
        return one_line(redact(said), 160)
    return ""


def first_line(error: BaseException) -> str:
    """An error's first line, or its type's name when it has no message."""
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _specific(facts: Facts) -> str | None:
    """The final status the host reported, when it says more than ``success`` (a host's
    flow ``success`` means its task manager finished, not that every op succeeded)."""
    return None if facts.reported == "success" else facts.reported


def _validation_summary(errors: list[Any]) -> str:
    """The host's validation errors as ``path: expected type`` (values are never shown)."""
    items: list[Any] = []
    for error in errors:
        items.extend(error if isinstance(error, list) else [error])
    parts: list[str] = []
    for item in items[:3]:
        if isinstance(item, Mapping) and "path" in item:
            path = str(item.get("path", "")).removeprefix("$input").lstrip(".") or "(top level)"
            expected = item.get("expected")
            parts.append(f"{path}: expected {expected}" if expected else path)
        elif isinstance(item, str):
            parts.append(item)
    more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
    return "; ".join(parts) + more
