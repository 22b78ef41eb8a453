"""The devnode's executor: runs the ops of one job definition as local processes.

It plays the part of the Nosana node's TaskManager and container provider (docs/protocol.md
§13, §14, §9) for one job, without Docker:

* an op's ``cmd`` string runs as ``/bin/sh -c <cmd>``; a list runs as argv; ``entrypoint`` is
  prepended the way Docker does (a string entrypoint is *one* argv item, as the node passes it);
* ``env`` is a minimal base (``PATH``, ``HOME``, ``LANG``) + ``global.env`` + op ``env`` +
  ``NOSANA_ID=<job>``; ``image``/``entrypoint``/``work_dir`` fall back to ``global``;
* the image is recorded in a node log line and never pulled; ``gpu`` gets a note that no GPU is
  attached;
* stdout/stderr lines land in the op's ``logs`` (capped, oldest dropped) and in the node log
  stream (``emit``, each entry tagged with ``payload: {opId, stream}`` for the host, which
  decides what of it goes on the wire); ``results`` regexes are applied to those logs when
  the op ends, as the node does (docs/protocol.md §14): per results name, the ``match`` array
  of every matching line, concatenated, ``[]`` when none matched.

Execution order (a documented choice, close to the node's TaskManager):

* ops are grouped by ``execution.group`` (default: the op id); groups run one after another in
  the order they first appear; the ops of a group start together. A failed op does not stop
  later groups, and the flow still ends ``success`` when every group ran, as on the node
  (the op's own status and exit code say it failed).
* an op with ``depends_on`` starts once each dependency is *satisfied*: it ended ``success``,
  or it is *ready* (it exposes health-checked ports and all of their startup checks passed,
  the node's "startup success" that lets a client start beside its server). A dependency that
  ends otherwise (``failed``/``stopped``) means the dependent is not run: it ends ``stopped``,
  with no exit code, and an error saying which dependency ended how. (The node itself starts
  dependents on "startup success" only, which for an op without health checks is as soon as
  its container runs; waiting for success there makes ``depends_on`` useful for pipelines
  and keeps local runs deterministic.)
* a dependency must be in the same group or an earlier one (the node rejects cross-group
  dependencies; an earlier group has simply finished). A dependency on a later group, on an
  unknown op, on itself or a cycle fails the flow before anything runs.
* ``stop_if_dependent_stops``: the op is stopped when a dependency it started beside (a ready
  one) ends.

Stops (``stop(reason)``) map as the node does (docs/protocol.md §9): ``expired`` → ops
``success`` with ``diagnostics.reason.jobExpired``, flow ``success``; ``stopped`` → ``stopped``;
``quit`` → ``failed``. Ops that had not started by then get that status with exit code 0, as on
the node. A running op is stopped the way ``docker stop`` stops a container: SIGTERM to its
main process only, and only if that process handles SIGTERM (a container's PID 1 ignores the
signals it has no handler for), then SIGKILL for all of it after the grace (exit 137); from
the stop on, its output is no longer read, as the node stops following a container's log at
the stop.

Not emulated: ``%%…%%`` literals (left as written), ``resources``, ``restart_policy``,
``aliases`` and image defaults (an op needs a ``cmd`` or ``entrypoint`` to run locally).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import re
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter

from ..jsregex import RegexError, to_python
from ..protocol import now_ms
from ..results import FlowState, NodeLogEntry, OpLog, OpState, ResultValue
from .reaper import kill_job_processes
from .services import ExposedPort, ServiceRegistry

__all__ = ["DEFAULT_LOG_CAP", "MAX_LINE_CHARS", "Executor", "StopReason", "kill_job_processes"]

_log = logging.getLogger(__name__)

StopReason = Literal["stopped", "expired", "quit"]

#: The node keeps at most this many log entries per op (the oldest are dropped first).
DEFAULT_LOG_CAP = 24_999
#: Longer output without a newline is cut into pieces of this size, so one runaway line can
#: never hold unbounded memory.
MAX_LINE_CHARS = 64 * 1024

#: Seconds without output after an op's process ended before its pipes are given up.
OUTPUT_SILENCE_S = 2.0

#: The ``method`` of a host's entry for a container line (docs/protocol.md §7).
OUTPUT_METHOD = "NodeRepository.displayLog"

#: What takes an op's output, a chunk at a time: op id, stream, lines, a timestamp (ms);
#: the next chunk is read once it returns.
OutputSink = Callable[[str, str, list[str], int], Awaitable[None]]

#: Array items the node drops from ``cmd`` (left behind by literals that resolved to nothing).
REMOVE_IF_EMPTY = "__remove-if-empty__"

#: The status of the ops a stop ends, and of the flow (docs/protocol.md §9; they are the same map).
_STATUS_ON_STOP: dict[str, str] = {"expired": "success", "stopped": "stopped", "quit": "failed"}

_DEFAULT_LOG_TYPES = ("stdout", "stderr")

#: Builds a chunk's op log entries in one call (cheaper than one model at a time).
_OP_LOGS: TypeAdapter[list[OpLog]] = TypeAdapter(list[OpLog])


class _OpError(Exception):
    """An op that cannot be started; the node reports these with exit code 2."""

    def __init__(self, event: str, message: str) -> None:
        super().__init__(message)
        self.event = event
        self.message = message


class _PlanError(Exception):
    """An execution plan the node would reject before running anything."""


@dataclass(eq=False)
class _OpRun:
    """The executor's bookkeeping for one op (the OpState is what the outside sees)."""

    index: int
    op: Mapping[str, Any]
    state: OpState
    group: str
    depends_on: list[str]
    stop_with_dependency: bool
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    proc: asyncio.subprocess.Process | None = None
    #: Why we signalled the process: the job's stop reason, or "dependency".
    killed_by: str | None = None
    kill_note: str | None = None
    #: The op is being stopped: its output is no longer recorded (``docker stop`` semantics).
    output_closed: bool = False
    #: Chunks of output read so far, and whether one waits for the host to take it.
    output_chunks: int = 0
    output_waiting: bool = False
    started_iso: str = ""
    services: list[ExposedPort] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.state.operation_id


def _iso_now() -> str:
    # Docker's log timestamps are RFC 3339 in UTC; milliseconds are plenty here.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pieces(line: str) -> list[str]:
    """A line cut in pieces of at most ``MAX_LINE_CHARS`` (as Docker cuts a runaway line)."""
    return [line[start : start + MAX_LINE_CHARS] for start in range(0, len(line), MAX_LINE_CHARS)]


def _exit_code(returncode: int) -> int:
    # asyncio reports death by signal N as -N; Docker (what the node reads) reports 128 + N.
    return 128 - returncode if returncode < 0 else returncode


def _reason_flags(reason: str | None, *, text: bool = False) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "hostShutDown": reason == "quit",
        "jobStopped": reason == "stopped",
        "jobExpired": reason == "expired",
    }
    if text and reason is not None:
        flags["reason"] = f"Operation stopped due to flow {reason}"
    return {"reason": flags}


def _container_state(exit_code: int, started: str, finished: str) -> dict[str, Any]:
    """What the node copies from ``docker inspect`` into ``diagnostics.state`` at an op's end."""
    return {
        "Status": "exited",
        "Running": False,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 0,
        "ExitCode": exit_code,
        "Error": "",
        "StartedAt": started,
        "FinishedAt": finished,
        "RestartCount": 0,
    }


def _handles(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (Linux ``/proc``; True elsewhere).

    A container's PID 1 gets only the signals it handles: the kernel drops the others, so a
    shell or a program without a SIGTERM handler ignores ``docker stop`` until the SIGKILL.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return True


async def _wait_any(*events: asyncio.Event) -> None:
    """Until one of ``events`` is set (the caller bounds the wait by stopping the job)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _port_kind(port: object) -> str:
    """What an ``expose`` port is, in words that never include a text value."""
    if isinstance(port, bool) or port is None:
        return "no port number"
    if isinstance(port, (int, float)):
        return f"port {port}"
    if isinstance(port, str):
        return "a port given as text: a literal, spread or range"
    return f"a port of type {type(port).__name__}"


def _describe(exc: BaseException) -> str:
    """Why an op could not start, without echoing the value (it may come from a secret)."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, UnicodeError):
        return "a value is not valid text (a lone surrogate)"
    return str(exc) or type(exc).__name__


def _factory(protocol: asyncio.StreamReaderProtocol) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: protocol


def _killpg(pgid: int, sig: int) -> None:
    # The group outlives its leader while any member lives, and Linux does not hand out a pid
    # that is still some group's id, so this reaches exactly the op's processes.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _stop_op(run: _OpRun, grace: float, *, term_group: bool) -> None:
    """Stop an op as ``docker stop`` stops a container: SIGTERM to its main process if it
    handles it, SIGKILL to the whole group after the grace; then reap the leader.

    From the stop on, the op's output is no longer recorded. (``term_group``: the devnode's
    older stop, SIGTERM to the whole group, output kept.)
    """
    proc = run.proc
    if proc is None:
        return
    if term_group:
        _killpg(proc.pid, signal.SIGTERM)
    else:
        run.output_closed = True
        if proc.returncode is None and _handles(proc.pid, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                proc.send_signal(signal.SIGTERM)  # (it checks the process is not reaped)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=grace)
    _killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=5.0)


def _extract_results(run: _OpRun, *, legacy: bool = False) -> dict[str, ResultValue] | None:
    """Apply the op's ``results`` regexes to its logs, as the node does.

    Every results name starts as ``[]``; for each log entry (in order) whose type the rule
    takes (every type when it names none), the regex's first match in that entry (no ``g``
    flag) adds its whole match and then its groups (``None`` for a group that took no part).
    A regex that does not compile gives the error's text instead, once an entry is examined.
    ``"*"`` is read as ``"/*"``, as the node reads it, and the regex is read as JavaScript
    reads it (``$`` only at the very end of an entry, which usually ends in a newline).
    ``legacy``: the devnode's older values (``DevNodeConfig.results_values``).
    """
    spec = run.op.get("results")
    if not spec:
        return None
    if legacy:
        return _legacy_results(run, spec)
    results: dict[str, ResultValue] = {str(name): [] for name in spec}
    rules: list[tuple[str, re.Pattern[str] | None, tuple[str, ...] | None, str]] = []
    for name, rule in spec.items():
        if isinstance(rule, str):
            pattern, types = rule, None
        else:
            pattern = str(rule.get("regex", ""))
            types = tuple(rule["logType"]) if rule.get("logType") is not None else None
        try:
            regex: re.Pattern[str] | None = to_python(pattern)  # as JavaScript matches it
            error = ""
        except RegexError as exc:
            regex, error = None, (f"SyntaxError: Invalid regular expression: /{pattern}/: "
                                  f"{exc.reason}")
        rules.append((str(name), regex, types, error))
    for log in run.state.logs:
        if not log.log:
            continue
        for name, regex, types, error in rules:
            if types is not None and log.type not in types:
                continue
            if regex is None:
                results[name] = error
                continue
            match = regex.search(log.log)
            value = results[name]
            if match is not None and isinstance(value, list):
                value.extend([match.group(0), *match.groups()])
    return results


def _legacy_results(run: _OpRun, spec: Mapping[str, Any]) -> dict[str, ResultValue]:
    """The devnode's older results values: a capture group picks its first group, else the
    whole match; one match gives a string, several a list; no match leaves the name out;
    ``logType`` defaults to stdout + stderr; an invalid regex is an op error."""
    results: dict[str, ResultValue] = {}
    for name, rule in spec.items():
        if isinstance(rule, str):
            pattern, types = rule, _DEFAULT_LOG_TYPES
        else:
            pattern = str(rule.get("regex", ""))
            types = tuple(rule.get("logType") or _DEFAULT_LOG_TYPES)
        try:
            regex = to_python(pattern)
        except RegexError as exc:
            run.state.errors.append(
                {"event": "results", "message": f"results.{name}: invalid regex: {exc}"}
            )
            continue
        found: list[str | None] = list(
            _matches(regex, (log for log in run.state.logs if log.type in types)))
        if len(found) == 1:
            results[str(name)] = str(found[0])
        elif found:
            results[str(name)] = found
    return results


def _matches(regex: re.Pattern[str], logs: Iterable[OpLog]) -> Iterable[str]:
    for log in logs:
        for match in regex.finditer(log.log):
            yield match.group(1) if regex.groups else match.group(0)


def _plan(runs: Mapping[str, _OpRun]) -> list[list[_OpRun]]:
    """The ops in groups, in order; refused when a dependency is unknown, runs later or
    makes a cycle."""
    groups: dict[str, list[_OpRun]] = {}
    for run in runs.values():
        groups.setdefault(run.group, []).append(run)
    order = {name: position for position, name in enumerate(groups)}
    problems: list[str] = []
    for run in runs.values():
        for dep in run.depends_on:
            target = runs.get(dep)
            if dep == run.id:
                problems.append(f"op '{run.id}' depends on itself")
            elif target is None:
                problems.append(f"op '{run.id}' depends on unknown op '{dep}'")
            elif order[target.group] > order[run.group]:
                problems.append(
                    f"op '{run.id}' (group '{run.group}') depends on '{dep}' "
                    f"of the later group '{target.group}'"
                )
    if not problems:
        problems.extend(_cycles(runs))
    if problems:
        raise _PlanError("; ".join(problems))
    return list(groups.values())

def _cycles(runs: Mapping[str, _OpRun]) -> list[str]:
    visiting: set[str] = set()
    done: set[str] = set()
    found: list[str] = []

    def visit(op_id: str, path: list[str]) -> None:
        if op_id in done:
            return
        if op_id in visiting:
            cycle = [*path[path.index(op_id) :], op_id]
            found.append("dependency cycle: " + " -> ".join(cycle))
            return
        visiting.add(op_id)
        for dep in runs[op_id].depends_on:
            visit(dep, [*path, op_id])
        visiting.discard(op_id)
        done.add(op_id)

    for op_id in runs:
        visit(op_id, [])
    return found


class _Sandbox:
    """Where one job's ops run on this machine: its own directory (``workdir``), and each
    op's argv, environment, working directory and volumes, placed inside that directory."""

    def __init__(self, workdir: Path, job: str, global_args: Mapping[str, Any]) -> None:
        self.workdir = workdir
        self.job = job
        self._global = global_args

    def launch(self, args: Mapping[str, Any]) -> tuple[list[str], dict[str, str], Path]:
        """An op's argv, environment and working directory, its volumes mounted."""
        argv = self.argv(args)
        env = self.env(args)
        self.mount_volumes(args)
        return argv, env, self.work_dir(args)

    def argv(self, args: Mapping[str, Any]) -> list[str]:
        entrypoint = args.get("entrypoint", self._global.get("entrypoint"))
        cmd = args.get("cmd")
        # Docker (and so the node) reads a string entrypoint as a single argv item.
        head = [entrypoint] if isinstance(entrypoint, str) else list(entrypoint or [])
        tail = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd or [])
        argv = [str(item) for item in [*head, *tail] if item != REMOVE_IF_EMPTY]
        if not argv:
            raise _OpError(
                "start",
                "no cmd or entrypoint: the local executor cannot run an image's default command",
            )
        return argv

    def env(self, args: Mapping[str, Any]) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self.workdir),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        for source in (self._global.get("env") or {}, args.get("env") or {}):
            env.update({str(key): str(value) for key, value in source.items()})
        env["NOSANA_ID"] = self.job
        return env

    def path(self, path: str, what: str) -> Path:
        """Where a container path lives for this job: always inside ``workdir``.

        We never let a job's paths point outside its own directory: an absolute container path
        (``/workspace``) is re-rooted in ``workdir`` (``workdir/workspace``), a relative one is
        taken from ``workdir``, and one that climbs out (``../..``) is refused. (This places
        the working directory and volumes; it is not a security boundary: the processes run
        as this user and can still name absolute paths themselves.)
        """
        root = self.workdir.resolve()
        candidate = (root / path.lstrip("/")).resolve()
        if candidate != root and root not in candidate.parents:
            raise _OpError("start", f"{what} {path!r} would leave the job's directory")
        return candidate

    def work_dir(self, args: Mapping[str, Any]) -> Path:
        work_dir = args.get("work_dir") or self._global.get("work_dir")
        path = self.path(str(work_dir), "work_dir") if work_dir else self.workdir
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _OpError(
                "start", f"cannot create work_dir {work_dir!r}: {exc.strerror}"
            ) from None
        return path

    def volume_dir(self, name: str) -> Path:
        if not name or "/" in name or name in (".", ".."):
            raise _OpError("create-volume", f"invalid volume name {name!r}")
        return self.workdir / "volumes" / name

    def mount_volumes(self, args: Mapping[str, Any]) -> None:
        for volume in args.get("volumes") or []:
            name = str(volume.get("name", ""))
            dest = str(volume.get("dest", ""))
            source = self.volume_dir(name)
            target = self.path(dest, "volume dest")
            if target == self.workdir.resolve():
                raise _OpError("start", f"volume dest {dest!r} may not be the job directory")
            try:
                # Docker creates a named volume on first use; so do we.
                source.mkdir(parents=True, exist_ok=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink():
                    target.unlink()
                elif target.is_dir() and not any(target.iterdir()):
                    target.rmdir()
                elif target.exists():
                    raise _OpError("start", f"volume dest {dest!r} already holds files")
                target.symlink_to(source.resolve(), target_is_directory=True)
            except OSError as exc:
                raise _OpError("start", f"cannot mount volume {name!r}: {exc.strerror}") from None


class _OpOutput:
    """An op's output streams read into its log (the results) and handed to the host, a
    chunk at a time."""

    def __init__(self, run: _OpRun, *, log_cap: int, sink: OutputSink | None,
                 emit: Callable[[NodeLogEntry], None], job: str) -> None:
        self._run = run
        self._log_cap = log_cap
        self._sink = sink
        self._emit = emit
        self._job = job

    async def read_all(self, readers: list[asyncio.Task[None]]) -> None:
        """Until the op's output is all read (its process is gone). A pipe that gives
        nothing for ``OUTPUT_SILENCE_S`` is held open by a process the op left behind, and is
        given up; output waiting for a slow reader to take it is not silence."""
        while readers:
            chunks = self._run.output_chunks
            _done, pending = await asyncio.wait(readers, timeout=OUTPUT_SILENCE_S)
            if not pending:
                return
            if self._run.output_chunks == chunks and not self._run.output_waiting:
                for task in pending:
                    task.cancel()
                return

    async def pump(self, reader: asyncio.StreamReader, stream: str) -> None:
        """Read one output stream as it arrives, a chunk at a time; the lines of a chunk are
        handled together (a host stamps and sends each, but the work per chunk is done
        once). Runaway lines are split at ``MAX_LINE_CHARS``."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while True:
            chunk = await reader.read(MAX_LINE_CHARS)
            final = not chunk
            pending += decoder.decode(chunk, final=final)
            *complete, pending = pending.split("\n")
            lines = [line + "\n" for line in complete]
            if len(pending) >= MAX_LINE_CHARS or (final and pending):
                keep = 0 if final else len(pending) % MAX_LINE_CHARS
                lines.append(pending[: len(pending) - keep])
                pending = pending[len(pending) - keep :]
            if lines:
                if max(map(len, lines)) > MAX_LINE_CHARS:
                    lines = [piece for line in lines for piece in _pieces(line)]
                await self._take(lines, stream)
            if final:
                return

    async def _take(self, lines: list[str], stream: str) -> None:
        """Lines one op printed on ``stream``, read in one chunk: kept in its log (the
        results) and handed to the host, all with one timestamp."""
        if self._run.output_closed:
            return
        self._run.output_chunks += 1
        stamp = _iso_now()
        logs = self._run.state.logs
        logs.extend(_OP_LOGS.validate_python(
            [{"log": line, "type": stream, "timestamp": stamp} for line in lines]))
        excess = len(logs) - self._log_cap
        if excess > 0:
            del logs[:excess]
        if self._sink is not None:
            self._run.output_waiting = True
            try:
                await self._sink(self._run.id, stream, lines, now_ms())
            except Exception:  # a listener's fault must not end the job
                _log.exception("output callback failed")
            finally:
                self._run.output_waiting = False
            return
        for line in lines:
            self._emit(
                NodeLogEntry(
                    type="log",
                    method=OUTPUT_METHOD,
                    log=line,
                    timestamp=now_ms(),
                    job=self._job,
                    payload={"opId": self._run.id, "stream": stream},
                )
            )


class Executor:
    """Runs one job definition's ops as local processes and keeps ``flow`` up to date.

    ``definition`` is a validated job definition (JSON dict); ``workdir`` is a fresh directory
    for this job, created by the host; ``emit`` receives node log entries (progress, and
    container lines unless ``output`` takes those a chunk at a time); ``changed`` is called
    whenever the flow changed other than by a log line.
    """

    def __init__(
        self,
        *,
        definition: dict[str, Any],
        job: str,
        workdir: Path,
        flow: FlowState,
        emit: Callable[[NodeLogEntry], None],
        changed: Callable[[], None],
        services: ServiceRegistry,
        output: OutputSink | None = None,
        log_cap: int = DEFAULT_LOG_CAP,
        stop_grace: float = 2.0,
        term_process_group: bool = False,
        results_values: bool = False,
    ) -> None:
        if log_cap < 1:
            raise ValueError("log_cap must be at least 1")
        if not job:
            raise ValueError("an Executor needs a job id (its processes are found by it)")
        self.definition = definition
        self.job = job
        self.workdir = Path(workdir)
        self.flow = flow
        self.log_cap = log_cap
        self.stop_grace = stop_grace
        #: The devnode's older stop: SIGTERM to the op's whole process group, output kept.
        self.term_process_group = term_process_group
        #: The devnode's older results values (see ``_legacy_results``).
        self.results_values = results_values
        self._emit_cb = emit
        #: Where container lines go in batches; without it, one ``emit`` entry per line.
        self._output_cb = output
        self._changed_cb = changed
        self._services = services
        self._global: Mapping[str, Any] = definition.get("global") or {}
        self._sandbox = _Sandbox(self.workdir, job, self._global)
        self._ops: list[Mapping[str, Any]] = list(definition.get("ops") or [])
        self._runs: dict[str, _OpRun] = {}
        self._stop_reason: str | None = None
        self._stop_event = asyncio.Event()
        self._started = False
        self._finished = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Ops whose process is being started or runs: when it drops to 0, whatever the job
        #: left behind (detached processes included) is killed.
        self._live = 0

    # ------------------------------------------------------------------ public API

    async def run(self) -> str:
        """Run every op; returns the flow status: ``"success"``, ``"failed"`` or ``"stopped"``."""
        if self._started:
            raise RuntimeError("an Executor runs once")
        self._started = True
        status = "failed"
        try:
            self._prepare_flow()
            groups = _plan(self._runs)
            self.flow.status = "running"
            self.flow.start_time = self.flow.start_time or now_ms()
            self._changed()
            for group in groups:
                await self._run_group(group)
            status = _STATUS_ON_STOP[self._stop_reason] if self._stop_reason else "success"
        except _PlanError as exc:
            self.flow.errors.append(str(exc))
            self._info("error", f"Execution plan rejected: {exc}")
        except asyncio.CancelledError:
            status = "failed"
            raise
        except Exception as exc:  # a bug here must still end the flow and free the processes
            _log.exception("executor for job %s failed", self.job)
            self.flow.errors.append(f"executor error: {type(exc).__name__}: {exc}")
        finally:
            await self._cleanup()
            self.flow.status = status
            self.flow.end_time = now_ms()
            # The node clears the secrets (service URLs) when the flow ends.
            self.flow.secrets = {}
            self._finished.set()
            self._changed()
        return status

    async def stop(self, reason: StopReason, *, announce: bool = True) -> None:
        """Stop the job: running ops get SIGTERM (whole process group), SIGKILL after the grace.

        The first reason wins. Returns once ``run()`` has finished (bounded wait), or at once
        when ``run()`` has not been started (it will then end every op with the stop status).
        ``announce=False``: no "Stopping job" line (a node stopped through its API only moves
        the expiry, and says nothing of it).
        """
        if reason not in _STATUS_ON_STOP:
            raise ValueError(f"unknown stop reason {reason!r}")
        if self._stop_reason is None and not self._finished.is_set():
            self._stop_reason = reason
            self._stop_event.set()
            if announce:
                self._info("stop", f"Stopping job ({reason})")
        effective = self._stop_reason or reason
        await asyncio.gather(
            *(self._terminate(run, effective) for run in list(self._runs.values())),
            return_exceptions=True,
        )
        if self._started:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._finished.wait(), timeout=self.stop_grace + 10)
        self._sweep()

    # ------------------------------------------------------------------ plan

    def _prepare_flow(self) -> None:
        """One OpState per op, in ``ops`` order (the node's ``createInitialFlow``)."""
        existing = {state.operation_id: state for state in self.flow.op_states}
        states: list[OpState] = []
        for index, op in enumerate(self._ops):
            op_id = str(op.get("id", index))
            execution = op.get("execution") or {}
            group = str(execution.get("group") or op_id)
            state = existing.get(op_id) or OpState(operation_id=op_id)
            state.group = group
            state.status = "init"
            state.diagnostics = _reason_flags(None)
            states.append(state)
            self._runs[op_id] = _OpRun(
                index=index,
                op=op,
                state=state,
                group=group,
                depends_on=[str(dep) for dep in execution.get("depends_on") or []],
                stop_with_dependency=bool(execution.get("stop_if_dependent_stops")),
            )
        self.flow.op_states = states

    # ------------------------------------------------------------------ one op

    async def _run_group(self, group: list[_OpRun]) -> None:
        """Run the ops of one group together. Should one of them raise (a bug), its siblings
        are cancelled (their ``finally`` kills their process groups) before it propagates."""
        tasks = [asyncio.ensure_future(self._run_op(run)) for run in group]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_op(self, run: _OpRun) -> None:
        try:
            if not await self._wait_for_dependencies(run):
                return
            if self._stop_reason is not None:
                self._end_unstarted(run)
                return
            if run.op.get("type") == "container/create-volume":
                self._create_volume(run)
            else:
                await self._run_container(run)
        finally:
            run.ready.set()
            run.ended.set()

    async def _wait_for_dependencies(self, run: _OpRun) -> bool:
        """True when the op may start; otherwise its state has been ended here."""
        for dep_id in run.depends_on:
            dep = self._runs[dep_id]
            while not dep.ended.is_set() and not dep.ready.is_set():
                if self._stop_reason is not None:
                    break
                await _wait_any(dep.ended, dep.ready, self._stop_event)
            if self._stop_reason is not None:
                self._end_unstarted(run)
                return False
            if dep.ended.is_set() and dep.state.status != "success":
                now = now_ms()
                state = run.state
                state.status = "stopped"
                state.start_time = state.end_time = now
                message = f"not run: dependency '{dep_id}' ended {dep.state.status}"
                state.errors.append({"event": "dependency", "message": message})
                self._info("error", f"Op {run.id} {message}", op=run.id)
                self._changed()
                return False
        return True

    def _end_unstarted(self, run: _OpRun) -> None:
        # As on the node: an op reached after the stop gets the stop status and exit code 0.
        reason = self._stop_reason
        now = now_ms()
        state = run.state
        state.status = _STATUS_ON_STOP[reason] if reason else "stopped"
        state.exit_code = 0
        state.start_time = state.start_time or now
        state.end_time = now
        if self.term_process_group:
            state.diagnostics = _reason_flags(reason)
        # (On the node only a running op hears the stop: the others keep their flags unset.)
        self._changed()

    def _create_volume(self, run: _OpRun) -> None:
        now = now_ms()
        state = run.state
        state.start_time = now
        try:
            name = str((run.op.get("args") or {}).get("name", ""))
            self._sandbox.volume_dir(name).mkdir(parents=True, exist_ok=True)
        except (_OpError, OSError) as exc:
            self._fail_in_node(run, getattr(exc, "event", "create-volume"), str(exc))
            return
        state.status = "success"
        state.exit_code = 0
        state.end_time = now_ms()
        self._info("success", f"Volume {name} created", op=run.id)
        self._changed()

    def _launch(self, run: _OpRun) -> tuple[list[str], dict[str, str], Path] | None:
        """The op's argv, environment and working directory (``None``: it failed to start,
        and says why); the node's "Running op" lines."""
        args: Mapping[str, Any] = run.op.get("args") or {}
        try:
            launch = self._sandbox.launch(args)
        except _OpError as exc:
            self._fail_in_node(run, exc.event, exc.message)
            return None
        except (OSError, ValueError) as exc:  # a NUL or a lone surrogate in a value or path
            self._fail_in_node(run, "start", f"invalid op arguments: {_describe(exc)}")
            return None
        image = str(args.get("image") or self._global.get("image") or "")
        # The command line is not logged: it may carry values taken from secrets.
        self._info(
            "info",
            f"Running op {run.id} (image {image}; local executor: image not pulled)",
            op=run.id,
        )
        if args.get("gpu", self._global.get("gpu")):
            self._info("info", f"Op {run.id} asks for a GPU; none is attached locally", op=run.id)
        return launch

    async def _read_output(self, run: _OpRun, output: _OpOutput, read_fds: list[int],
                           transports: list[asyncio.BaseTransport],
                           readers: list[asyncio.Task[None]]) -> None:
        """Read the op's stdout and stderr pipes into its log (each read end taken from
        ``read_fds`` once it is owned by a transport in ``transports``)."""
        loop = asyncio.get_running_loop()
        for stream in ("stdout", "stderr"):
            reader = asyncio.StreamReader(limit=MAX_LINE_CHARS * 4)
            protocol = asyncio.StreamReaderProtocol(reader)
            pipe = os.fdopen(read_fds.pop(0), "rb", 0)
            try:
                read_transport, _ = await loop.connect_read_pipe(_factory(protocol), pipe)
            except BaseException:
                pipe.close()
                raise
            transports.append(read_transport)
            readers.append(asyncio.create_task(output.pump(reader, stream)))

    async def _run_container(self, run: _OpRun) -> None:
        launch = self._launch(run)
        if launch is None:
            return
        argv, env, cwd = launch
        read_fds: list[int] = []
        write_fds: list[int] = []
        transports: list[asyncio.BaseTransport] = []
        readers: list[asyncio.Task[None]] = []
        counted = False
        try:
            for _ in range(2):  # stdout, stderr
                read_fd, write_fd = os.pipe()
                read_fds.append(read_fd)
                write_fds.append(write_fd)
            self._live += 1
            counted = True
            try:
                # Our own pipes rather than subprocess.PIPE: when the op leaves a process
                # behind that holds them open, we can still close our ends and move on.
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=cwd,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=write_fds[0],
                    stderr=write_fds[1],
                    start_new_session=True,  # its own process group, so a stop reaches all
                )
            except (OSError, ValueError) as exc:  # ValueError: a NUL or surrogate in argv/env
                self._fail_in_node(run, "start", f"cannot start {argv[0]!r}: {_describe(exc)}")
                return
            finally:
                while write_fds:
                    os.close(write_fds.pop())
            # At once: from here on a stop, a sibling's failure or a cancel can reach it.
            run.proc = proc
            output = _OpOutput(run, log_cap=self.log_cap, sink=self._output_cb,
                               emit=self._emit, job=self.job)
            await self._read_output(run, output, read_fds, transports, readers)

            state = run.state
            state.provider_id = f"local-{proc.pid}"
            state.status = "running"
            state.start_time = now_ms()
            run.started_iso = _iso_now()
            self._changed()
            if self._stop_reason is not None:  # stopped while the process was starting
                self._spawn(self._terminate(run, self._stop_reason))
            self._expose(run)
            self._watch_dependencies(run)

            returncode = await proc.wait()
            # Like a container: once its main process is gone, nothing else of it may run.
            _killpg(proc.pid, signal.SIGKILL)
            counted = False
            self._process_ended()
            await output.read_all(readers)
            self._finish(run, _exit_code(returncode))
        finally:
            if run.proc is not None and run.proc.returncode is None:
                # Cancelled (the host tore us down): no grace, but still reap.
                _killpg(run.proc.pid, signal.SIGKILL)
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(run.proc.wait()), timeout=5.0)
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            for transport in transports:
                transport.close()
            for fd in (*read_fds, *write_fds):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if counted:
                self._process_ended()
            await self._close_services(run)

    def _process_ended(self) -> None:
        self._live -= 1
        if self._live == 0:
            # No op of the job runs, so nothing of it may (a container's processes die with
            # it; what detached from an op's process group is found by its NOSANA_ID).
            self._sweep()

    def _finish(self, run: _OpRun, exit_code: int) -> None:
        state = run.state
        state.exit_code = exit_code
        state.end_time = now_ms()
        if run.killed_by == "dependency":
            state.status = "stopped"
            state.diagnostics = _reason_flags(None)
            state.diagnostics["reason"]["reason"] = run.kill_note or "dependency ended"
        elif run.killed_by is not None:
            state.status = _STATUS_ON_STOP[run.killed_by]
            state.diagnostics = _reason_flags(run.killed_by, text=not self.term_process_group)
        else:
            state.status = "success" if exit_code == 0 else "failed"
        if not self.term_process_group and state.diagnostics is not None:
            state.diagnostics["state"] = _container_state(
                exit_code, run.started_iso, _iso_now())
        results = _extract_results(run, legacy=self.results_values)
        if results is not None:
            state.results = results
        if state.status == "success":
            self._info("success", f"Op {run.id} finished (exit code {exit_code})", op=run.id)
        elif state.status == "stopped":
            self._info("stop", f"Op {run.id} stopped (exit code {exit_code})", op=run.id)
        else:
            self._info("error", f"Op {run.id} failed (exit code {exit_code})", op=run.id)
        self._changed()

    def _fail_in_node(self, run: _OpRun, event: str, message: str) -> None:
        """An error on our side of the op (the node's exit code 2 and ``nodeerr`` log)."""
        now = now_ms()
        state = run.state
        state.start_time = state.start_time or now
        state.end_time = now
        state.exit_code = 2
        state.status = "failed"
        state.errors.append({"event": event, "message": message})
        self._append_log(state, OpLog(log=message + "\n", type="nodeerr", timestamp=_iso_now()))
        self._emit(
            NodeLogEntry(
                type="error",
                log=f"Op {run.id}: {message}",
                timestamp=now,
                job=self.job,
                payload={"opId": run.id, "stream": "nodeerr"},
            )
        )
        results = _extract_results(run, legacy=self.results_values)
        if results is not None:
            state.results = results
        self._changed()

    # ------------------------------------------------------------------ op arguments

    # ------------------------------------------------------------------ logs and results

    def _append_log(self, state: OpState, entry: OpLog) -> None:
        state.logs.append(entry)
        excess = len(state.logs) - self.log_cap
        if excess > 0:
            del state.logs[:excess]

    # ------------------------------------------------------------------ services

    def _expose(self, run: _OpRun) -> None:
        args: Mapping[str, Any] = run.op.get("args") or {}
        expose = args.get("expose")
        if expose is None:
            return
        private = args.get("private") is True
        items = expose if isinstance(expose, list) else [expose]
        for position, item in enumerate(items):
            port: object = item.get("port") if isinstance(item, Mapping) else item
            checks: list[dict[str, Any]] = []
            if isinstance(item, Mapping):
                checks = [dict(check) for check in item.get("health_checks") or []]
            if isinstance(port, float) and port.is_integer():
                port = int(port)
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                # Literals, spreads and port ranges are resolved by a real node only. Never log
                # the entry itself: its health checks may carry headers with resolved secrets.
                self._info(
                    "info",
                    f"Op {run.id}: expose entry {position} ({_port_kind(port)}) not served "
                    "locally",
                    op=run.id,
                )
                continue
            exposed = self._services.expose(
                job=self.job,
                op_id=run.id,
                op_index=run.index,
                port=port,
                private=private,
                health_checks=checks,
                on_change=self._services_changed,
            )
            run.services.append(exposed)
            self._info(
                "info",
                f"Op {run.id}: port {port} exposed ({'private' if private else 'public'})",
                op=run.id,
            )
        if run.services:
            self._services_changed()
            checked = [service for service in run.services if service.health_checks]
            if checked:
                self._spawn(self._ready_when_healthy(run, checked))

    async def _ready_when_healthy(self, run: _OpRun, services: list[ExposedPort]) -> None:
        # The node's "startup success": dependents of a server may start beside it.
        await asyncio.gather(*(service.started.wait() for service in services))
        run.ready.set()

    def _services_changed(self) -> None:
        if not self._finished.is_set():
            self.flow.secrets = self._services.secrets(self.job)
            self._changed()

    async def _close_services(self, run: _OpRun) -> None:
        if run.services:
            run.services = []
            await self._services.close_op(self.job, run.id)
            self._services_changed()

    def _watch_dependencies(self, run: _OpRun) -> None:
        if not run.stop_with_dependency:
            return
        running = [self._runs[dep] for dep in run.depends_on if not self._runs[dep].ended.is_set()]
        if running:
            self._spawn(self._stop_when_dependency_ends(run, running))

    async def _stop_when_dependency_ends(self, run: _OpRun, deps: list[_OpRun]) -> None:
        await _wait_any(*(dep.ended for dep in deps))
        ended = next(dep for dep in deps if dep.ended.is_set())
        if run.killed_by is None and run.proc is not None and run.proc.returncode is None:
            run.killed_by = "dependency"
            run.kill_note = f"dependency '{ended.id}' ended {ended.state.status}"
            self._info("stop", f"Stopping op {run.id}: {run.kill_note}", op=run.id)
            await self._signal_group(run)

    # ------------------------------------------------------------------ stopping

    async def _terminate(self, run: _OpRun, reason: str) -> None:
        proc = run.proc
        if proc is None or proc.returncode is not None:
            return
        if run.killed_by is None:
            run.killed_by = reason
        await self._signal_group(run)

    async def _signal_group(self, run: _OpRun) -> None:
        await _stop_op(run, self.stop_grace, term_group=self.term_process_group)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cleanup(self) -> None:
        for run in self._runs.values():
            if run.proc is not None and run.proc.returncode is None:
                _killpg(run.proc.pid, signal.SIGKILL)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sweep()
        await self._services.close_job(self.job)

    def _sweep(self) -> None:
        killed = kill_job_processes(self.job)
        if killed:
            self._info("stop", f"Killed {len(killed)} process(es) the job left behind")

    # ------------------------------------------------------------------ callbacks

    def _info(self, kind: str, message: str, *, op: str | None = None) -> None:
        self._emit(
            NodeLogEntry(
                type=kind,
                log=message,
                timestamp=now_ms(),
                job=self.job,
                payload={"opId": op} if op else None,
            )
        )

    def _emit(self, entry: NodeLogEntry) -> None:
        try:
            self._emit_cb(entry)
        except Exception:  # a listener's fault must not end the job
            _log.exception("emit callback failed")

    def _changed(self) -> None:
        try:
            self._changed_cb()
        except Exception:
            _log.exception("changed callback failed")
