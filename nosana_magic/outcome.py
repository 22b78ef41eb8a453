"""What a job came to, decided from what the host, the ledger and the machine saw.

Pure decisions, no I/O: the one status word (:func:`verdict`), the one-line reason a job did
not succeed (:func:`reason`), and the records made of the host's results (:class:`OpResult`
per op, and :class:`Results`, the dict of results values that says why a name is missing).
The handle (:mod:`nosana_magic.job`) hands these functions its facts on every read, so
nothing here is stored and the view, the summary, the repr and ``%nosana`` say the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .errors import MissingResult
from .protocol import JobState, format_duration
from .results import FlowState, LogLine, OpState, final_status

__all__ = [
    "FINAL_STATUSES",
    "Facts",
    "Failure",
    "MissingResult",
    "OpResult",
    "Phase",
    "Results",
    "ops_and_results",
    "reason",
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
    logs: list[LogLine]
    results: dict[str, Any]
    ended_by: EndedBy | None = None
    #: False when the op never started (the job ended first).
    ran: bool = True

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

    ``explain(kind, key, names)`` words that line (the job knows its own state).
    """

    def __init__(self, items: Mapping[str, _V] | None = None, *, kind: str = "result",
                 explain: Callable[[str, str, list[str]], str] | None = None) -> None:
        super().__init__(items or {})
        self._kind = kind
        self._explain = explain

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


def ops_and_results(flow: FlowState, *, stopped_by_you: bool,
                    ) -> tuple[dict[str, OpResult], dict[str, Any]]:
    """Each op's outcome by op id, and every results value by name: a name two ops share
    is qualified by op (``train.loss``); values are JSON-decoded."""
    ops: dict[str, OpResult] = {}
    owners: dict[str, list[str]] = {}
    for op in flow.op_states:
        decoded = {name: _decode(value) for name, value in (op.results or {}).items()}
        ops[op.operation_id] = OpResult(
            op_id=op.operation_id,
            host_status=op.status,
            exit_code=op.exit_code,
            logs=[LogLine.from_op_log(op.operation_id, entry) for entry in op.logs],
            results=decoded,
            ended_by=op_ended_by(op, stopped_by_you),
            ran=op.start_time is not None or op.status == "running",
        )
        for name in decoded:
            owners.setdefault(name, []).append(op.operation_id)
    merged = {
        (name if len(owners[name]) == 1 else f"{op_id}.{name}"): value
        for op_id, op_result in ops.items()
        for name, value in op_result.results.items()
    }
    return ops, merged


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
            if op.exit_code is not None:
                return f"op {op.operation_id} exited with {op.exit_code}"
            return f"op {op.operation_id} {op.status}"
    if flow.errors:
        first = flow.errors[0]
        text = first if isinstance(first, str) else json.dumps(first)[:200]
        return f"the host says {outcome}: {redact(text)}"
    return f"the host says {facts.reported or flow.status}"


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
