"""The devnode executor: real processes in a temporary directory, short timings."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nosana_magic.devnode.executor import MAX_LINE_CHARS, Executor, kill_job_processes
from nosana_magic.devnode.services import ServiceRegistry
from nosana_magic.results import FlowState, NodeLogEntry, OpState

from .conftest import processes_of_jobs
from .waiting import PATIENCE, until

PY = sys.executable


# ---------------------------------------------------------------- leak checks


def _alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def processes_of(job: str) -> list[int]:
    """Live processes started for ``job`` (the executor puts ``NOSANA_ID=<job>`` in their env)."""
    return sorted(processes_of_jobs({job}))


@pytest.fixture
def job() -> Iterator[str]:
    name = f"test-job-{uuid.uuid4().hex[:12]}"
    yield name
    deadline = time.monotonic() + PATIENCE
    while processes_of(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of(name) == [], "the executor left processes running"


class Harness:
    def __init__(self, job: str, workdir: Path, definition: dict[str, Any], **kw: Any) -> None:
        self.entries: list[NodeLogEntry] = []
        self.changes = 0
        self.flow = FlowState(status="init")
        self.services = ServiceRegistry(lambda: "http://127.0.0.1:1")
        self.executor = Executor(
            definition=definition,
            job=job,
            workdir=workdir,
            flow=self.flow,
            emit=self.entries.append,
            changed=self._changed,
            services=self.services,
            **kw,
        )

    def _changed(self) -> None:
        self.changes += 1

    async def run(self, timeout: float = PATIENCE) -> str:
        try:
            return await asyncio.wait_for(self.executor.run(), timeout)
        finally:
            await self.services.aclose()

    def op(self, op_id: str) -> OpState:
        return next(state for state in self.flow.op_states if state.operation_id == op_id)

    def text(self, op_id: str, stream: str | None = None) -> str:
        return "".join(
            log.log for log in self.op(op_id).logs if stream is None or log.type == stream
        )

    def node_lines(self) -> list[str]:
        return [entry.log for entry in self.entries if entry.type != "log"]


def definition(*ops: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": "0.1", "type": "container", "ops": list(ops), **top}


def run_op(op_id: str, cmd: Any = None, **args: Any) -> dict[str, Any]:
    extra = {key: args.pop(key) for key in ("results", "execution") if key in args}
    body: dict[str, Any] = {"image": args.pop("image", "ubuntu")}
    if cmd is not None:
        body["cmd"] = cmd
    body.update(args)
    return {"type": "container/run", "id": op_id, "args": body, **extra}


# ---------------------------------------------------------------- commands, env, dirs


async def test_cmd_string_runs_in_a_shell_and_streams_both_outputs(tmp_path: Path, job: str):
    h = Harness(job, tmp_path, definition(run_op("hello", "echo out; echo err >&2; exit 0")))
    assert await h.run() == "success"
    state = h.op("hello")
    assert state.status == "success" and state.exit_code == 0
    assert state.group == "hello"
    assert state.provider_id and state.provider_id.startswith("local-")
    assert state.start_time and state.end_time and state.start_time <= state.end_time
    assert h.text("hello", "stdout") == "out\n"
    assert h.text("hello", "stderr") == "err\n"
    assert all(isinstance(log.timestamp, str) and log.timestamp.endswith("Z") for log in state.logs)
    lines = [entry for entry in h.entries if entry.type == "log"]
    assert {(e.log, e.payload["stream"]) for e in lines} == {
        ("out\n", "stdout"),
        ("err\n", "stderr"),
    }
    assert all(e.method == "NodeRepository.displayLog" and e.job == job for e in lines)
    assert all(e.payload["opId"] == "hello" and isinstance(e.timestamp, int) for e in lines)
    assert h.flow.status == "success" and h.flow.end_time and h.flow.secrets == {}
    assert any(
        "Running op hello (image ubuntu; local executor: image not pulled)" in line
        for line in h.node_lines()
    )
    assert any("exit code 0" in e.log for e in h.entries if e.type == "success")


async def test_cmd_list_and_entrypoint_like_docker(tmp_path: Path, job: str):
    script = "import sys; print(sys.argv[1:])"
    h = Harness(
        job,
        tmp_path,
        definition(
            run_op("argv", [script, "a", "__remove-if-empty__", "b c"], entrypoint=[PY, "-c"]),
            run_op("plain", [PY, "-c", "print('plain')"]),
            run_op("one", ["x y"], entrypoint="/bin/echo"),
            # Docker takes a string entrypoint as one argv item: this cannot start.
            run_op("spaced", ["1"], entrypoint="/bin/echo -n"),
        ),
    )
    assert await h.run() == "success"
    assert h.text("argv") == "['a', 'b c']\n"
    assert h.text("plain") == "plain\n"
    assert h.text("one") == "x y\n"
    assert h.op("spaced").exit_code == 2 and h.op("spaced").status == "failed"


async def test_global_defaults_and_gpu_note(tmp_path: Path, job: str):
    h = Harness(
        job,
        tmp_path,
        definition(
            {"type": "container/run", "id": "g", "args": {"cmd": ["print('from global')"]}},
            run_op("own", ["-c", "print('own')"], entrypoint=PY, image="mine:1", gpu=True),
            **{"global": {"image": "python:3.11", "entrypoint": [PY, "-c"], "gpu": False}},
        ),
    )
    await h.run()
    assert h.text("g") == "from global\n"
    assert h.text("own") == "own\n"  # the op's own entrypoint wins
    lines = h.node_lines()
    assert any("(image python:3.11; local executor: image not pulled)" in x for x in lines)
    assert any("(image mine:1; local executor: image not pulled)" in x for x in lines)
    assert any("Op own asks for a GPU; none is attached locally" in x for x in lines)
    assert not any("Op g asks for a GPU" in x for x in lines)


async def test_env_precedence_nosana_id_and_no_leaks(
    tmp_path: Path, job: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DEVNODE_TEST_HOST_ONLY", "host-secret")
    show = (
        "import os, json; print(json.dumps({k: os.environ.get(k) for k in "
        "['A', 'B', 'C', 'NOSANA_ID', 'HOME', 'DEVNODE_TEST_HOST_ONLY']})); "
        "print('PATH' in os.environ)"
    )
    h = Harness(
        job,
        tmp_path,
        definition(
            run_op("env", [PY, "-c", show], env={"B": "op", "C": "s3cret-value", "NOSANA_ID": "x"}),
            **{"global": {"env": {"A": "global", "B": "global"}}},
        ),
    )
    await h.run()
    import json

    first, second = h.text("env").splitlines()
    assert json.loads(first) == {
        "A": "global",
        "B": "op",
        "C": "s3cret-value",
        "NOSANA_ID": job,
        "HOME": str(tmp_path),
        "DEVNODE_TEST_HOST_ONLY": None,
    }
    assert second == "True"
    # Node log lines (everything but the op's own output) never carry env values.
    assert not any("s3cret-value" in line or "global" in line for line in h.node_lines())


async def test_work_dir_is_mapped_inside_the_job_directory(tmp_path: Path, job: str):
    pwd = [PY, "-c", "import os; print(os.getcwd())"]
    h = Harness(
        job,
        tmp_path,
        definition(
            run_op("default", pwd),
            run_op("absolute", pwd, work_dir="/workspace/app"),
            run_op("relative", pwd, work_dir="rel/dir"),
            run_op("escape", pwd, work_dir="../../etc"),
            {"type": "container/run", "id": "glob", "args": {"image": "x", "cmd": pwd}},
            **{"global": {"work_dir": "/from-global"}},
        ),
    )
    await h.run()
    root = tmp_path.resolve()
    # ``default`` has no work_dir of its own, so the global one applies.
    assert h.text("default").strip() == str(root / "from-global")
    assert h.text("absolute").strip() == str(root / "workspace" / "app")
    assert h.text("relative").strip() == str(root / "rel" / "dir")
    assert h.text("glob").strip() == str(root / "from-global")
    escape = h.op("escape")
    assert escape.status == "failed" and escape.exit_code == 2
    assert "leave the job's directory" in escape.errors[0]["message"]


async def test_volumes_are_created_and_mounted(tmp_path: Path, job: str):
    h = Harness(
        job,
        tmp_path,
        definition(
            {"type": "container/create-volume", "id": "vol", "args": {"name": "data"}},
            run_op(
                "write",
                "echo payload > data/file.txt",
                volumes=[{"name": "data", "dest": "/data"}],
            ),
        ),
    )
    assert await h.run() == "success"
    assert h.op("vol").status == "success" and h.op("vol").exit_code == 0
    assert (tmp_path / "volumes" / "data" / "file.txt").read_text() == "payload\n"
    assert (tmp_path / "data").is_symlink()


# ---------------------------------------------------------------- statuses and errors


async def test_exit_codes_and_missing_executable(tmp_path: Path, job: str):
    h = Harness(
        job,
        tmp_path,
        definition(
            run_op("three", "exit 3"),
            run_op("missing", ["/definitely/not/here", "--flag"]),
            run_op("nocmd"),
        ),
    )
    # A failing op does not fail the flow: the node reports success once every group ran.
    assert await h.run() == "success"
    assert (h.op("three").status, h.op("three").exit_code) == ("failed", 3)
    missing = h.op("missing")
    assert (missing.status, missing.exit_code) == ("failed", 2)
    assert missing.errors and missing.errors[0]["event"] == "start"
    assert "/definitely/not/here" in missing.errors[0]["message"]
    assert [log.type for log in missing.logs] == ["nodeerr"]
    assert any(
        e.type == "error" and e.payload == {"opId": "missing", "stream": "nodeerr"}
        for e in h.entries
    )
    assert h.op("nocmd").exit_code == 2
    assert any("exit code 3" in e.log for e in h.entries if e.type == "error")


async def test_a_bad_value_fails_only_its_op(tmp_path: Path, job: str):
    # A NUL (in env, cmd or work_dir) or a lone surrogate cannot reach a process: that op
    # fails in the node (exit code 2); its sibling in the same group runs to its end.
    secret = "s3cr3t-value"
    h = Harness(
        job,
        tmp_path,
        definition(
            run_op("b", "sleep 0.3; echo done"),
            run_op("nul_env", "echo hi", env={"X": f"{secret}\u0000b"}, execution={"group": "b"}),
            run_op("nul_cmd", f"echo {secret}\u0000", execution={"group": "b"}),
            run_op("nul_dir", "pwd", work_dir="w\u0000x", execution={"group": "b"}),
            run_op("surrogate", "echo hi", env={"X": "\ud800"}, execution={"group": "b"}),
            run_op("surrogate_dir", "pwd", work_dir="\ud800", execution={"group": "b"}),
        ),
    )
    assert await h.run() == "success"
    assert not h.flow.errors
    assert (h.op("b").status, h.op("b").exit_code) == ("success", 0)
    for op_id in ("nul_env", "nul_cmd", "nul_dir", "surrogate", "surrogate_dir"):
        state = h.op(op_id)
        assert (state.status, state.exit_code) == ("failed", 2), op_id
        assert state.errors and state.errors[0]["event"] == "start"
        assert secret not in state.errors[0]["message"]


async def test_a_bug_in_one_op_cancels_its_siblings(
    tmp_path: Path, job: str, monkeypatch: pytest.MonkeyPatch
):
    original = Executor._run_container

    async def buggy(self: Executor, run: Any) -> None:
        if run.id == "a":  # raises while its sibling "b" has just forked
            raise RuntimeError("a bug")
        await original(self, run)

    monkeypatch.setattr(Executor, "_run_container", buggy)
    h = Harness(
        job,
        tmp_path,
        definition(run_op("b", "sleep 1000"), run_op("a", "true", execution={"group": "b"})),
    )
    # The sibling sleeps 1000 s: the run ends within its bound only if it was cancelled.
    assert await h.run() == "failed"
    assert h.flow.errors == ["executor error: RuntimeError: a bug"]
    # The job fixture checks that the sibling's sleep is gone.


async def test_an_unserved_expose_entry_is_logged_without_its_contents(
    tmp_path: Path, job: str
):
    secret = "Bearer s3cr3t-token"
    expose = [
        {"port": "%%ops.a.port%%", "health_checks": [
            {"type": "http", "path": "/", "method": "GET", "expected_status": 200,
             "headers": {"Authorization": secret}}]},
        "8000:8010",
    ]
    h = Harness(job, tmp_path, definition(run_op("a", "true", expose=expose)))
    assert await h.run() == "success"
    lines = [line for line in h.node_lines() if "not served locally" in line]
    assert len(lines) == 2
    assert not any(secret in line or "s3cr3t" in line or "8000" in line for line in lines)
    assert all("%%" not in entry.log and "s3cr3t" not in entry.log for entry in h.entries)


RESULTS_SCRIPT = (
    "import sys\n"
    "print('loss=0.5'); print('loss=0.25'); print('acc=0.9')\n"
    "print('token: abc123', file=sys.stderr)\n"
    "print('model saved to /out/model.bin')\n"
)
RESULTS_RULES = {
    "loss": r"loss=([\d.]+)",
    "acc": r"acc=[\d.]+",
    "token": {"regex": r"token: (\w+)", "logType": ["stderr"]},
    "token_stdout_only": {"regex": r"token: (\w+)", "logType": ["stdout"]},
    "token_default": r"token: (\w+)",
    "missing": "nothing-like-this",
    "broken": "(unclosed",
    "path": r"saved to (\S+)",
    "optional": r"acc=([\d.]+)(%)?",
}


async def test_results_are_the_match_arrays_of_every_matching_line(tmp_path: Path, job: str):
    """As the node makes them: per name, each matching line's whole match then its groups,
    concatenated in log order; every log type unless ``logType`` says; ``[]`` for no match;
    the error's text for a regex that does not compile."""
    h = Harness(job, tmp_path, definition(
        run_op("train", [PY, "-c", RESULTS_SCRIPT], results=RESULTS_RULES),
        run_op("plain", "echo x"),
    ))
    await h.run()
    assert list(h.op("train").results or {}) == list(RESULTS_RULES)  # (in the rules' order)
    results = dict(h.op("train").results or {})
    broken = results.pop("broken")
    assert results == {
        "loss": ["loss=0.5", "0.5", "loss=0.25", "0.25"],
        "acc": ["acc=0.9"],
        "token": ["token: abc123", "abc123"],
        "token_stdout_only": [],
        "token_default": ["token: abc123", "abc123"],
        "missing": [],
        "path": ["saved to /out/model.bin", "/out/model.bin"],
        "optional": ["acc=0.9", "0.9", None],
    }
    assert isinstance(broken, str)
    assert broken.startswith("SyntaxError: Invalid regular expression: /(unclosed/")
    assert h.op("plain").results is None
    assert not h.op("train").errors


async def test_results_see_node_errors_and_star(tmp_path: Path, job: str):
    h = Harness(job, tmp_path, definition(
        run_op("a", "echo one; echo two", results={"star": "*", "start": r"^(\w)",
                                                    "end": r"(one)$", "named": r"(?<n>tw)o"}),
        {"type": "container/run", "id": "b", "args": {"image": "ubuntu", "cmd": []},
         "results": {"why": "(cmd)", "none": {"regex": "(cmd)", "logType": ["stdout"]}}},
    ))
    await h.run()
    # "*" reads as "/*", which matches the empty text at the start of every line.
    # The regexes read as JavaScript reads them: "$" only at the very end (the entry ends in a
    # newline), "(?<n>…)" a named group.
    assert h.op("a").results == {"star": ["", ""], "start": ["o", "o", "t", "t"], "end": [],
                                 "named": ["two", "tw"]}
    # Without a logType the host's own error lines (nodeerr) are searched too.
    assert h.op("b").results == {"why": ["cmd", "cmd"], "none": []}


async def test_results_extraction_of_older_devnodes(tmp_path: Path, job: str):
    h = Harness(job, tmp_path, definition(
        run_op("train", [PY, "-c", RESULTS_SCRIPT], results=RESULTS_RULES),
        run_op("plain", "echo x"),
    ), results_values=True)
    await h.run()
    results = h.op("train").results
    assert results == {
        "loss": ["0.5", "0.25"],
        "acc": "acc=0.9",
        "token": "abc123",
        "token_default": "abc123",
        "path": "/out/model.bin",
        "optional": "0.9",
    }
    assert any(err["event"] == "results" for err in h.op("train").errors)
    assert h.op("plain").results is None


async def test_log_cap_keeps_the_newest_lines(tmp_path: Path, job: str):
    h = Harness(
        job,
        tmp_path,
        definition(run_op("many", [PY, "-c", "for i in range(50): print(i)"])),
        log_cap=10,
    )
    await h.run()
    assert [log.log for log in h.op("many").logs] == [f"{i}\n" for i in range(40, 50)]
    assert len([e for e in h.entries if e.type == "log"]) == 50  # the stream gets every line
    assert h.changes < 15  # not once per log line


async def test_long_lines_are_split(tmp_path: Path, job: str):
    n = MAX_LINE_CHARS * 2 + 10
    h = Harness(
        job,
        tmp_path,
        definition(
            run_op(
                "long", [PY, "-c", f"import sys; sys.stdout.write('x' * {n}); print(); print('é')"]
            )
        ),
    )
    await h.run()
    pieces = [log.log for log in h.op("long").logs]
    assert [len(p) for p in pieces] == [MAX_LINE_CHARS, MAX_LINE_CHARS, 11, 2]
    assert pieces[-1] == "é\n"


async def test_op_ending_kills_what_it_left_behind(tmp_path: Path, job: str):
    h = Harness(job, tmp_path, definition(run_op("bg", "sleep 1000 & echo $! > bg.pid; echo ok")))
    # What it left sleeps 1000 s: the run ends within its bound only if the op's end killed it.
    assert await h.run() == "success"
    pid = int((tmp_path / "bg.pid").read_text())
    await until(lambda: not _alive(pid), what="the left-behind process gone")


DETACH = "setsid sleep 1000 > /dev/null 2>&1 < /dev/null & echo $! >> pids"


async def test_what_an_op_detached_dies_when_the_job_has_no_op_running(tmp_path: Path, job: str):
    # setsid leaves the op's process group: only the NOSANA_ID marker finds it.
    h = Harness(
        job,
        tmp_path,
        definition(
            run_op("daemon", DETACH + "; echo started"),
            run_op("sibling", "sleep 0.5; echo alive", execution={"group": "daemon"}),
        ),
    )
    assert await h.run() == "success"
    # The daemon op's end kills nothing of its running sibling...
    assert (h.op("sibling").status, h.op("sibling").exit_code) == ("success", 0)
    assert h.text("sibling") == "alive\n"
    # ...and once no op runs, the detached process is gone.
    pid = int((tmp_path / "pids").read_text())
    assert not _alive(pid)
    assert processes_of(job) == []


async def test_stop_kills_what_an_op_detached(tmp_path: Path, job: str):
    h = Harness(job, tmp_path, definition(run_op("a", DETACH + "; sleep 1000")), stop_grace=0.5)
    task = asyncio.create_task(h.run())
    pid = (await _wait_for_file_lines(tmp_path / "pids", 1))[0]
    assert _alive(pid)
    await asyncio.wait_for(h.executor.stop("stopped"), PATIENCE)
    assert await task == "stopped"
    assert not _alive(pid)
    assert processes_of(job) == []


def test_kill_job_processes_spares_other_jobs(job: str):
    import subprocess

    def sleeper(job_id: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["sleep", "1000"], env={**os.environ, "NOSANA_ID": job_id})

    # Another job whose id starts with ours, a prefix of ours, an empty id, someone else's.
    others = [sleeper(job + "-other"), sleeper(job[:-1]), sleeper(""), sleeper("someone-else")]
    mine = sleeper(job)
    try:
        assert kill_job_processes(job) == [mine.pid]
        assert mine.wait(PATIENCE) == -9
        assert all(other.poll() is None for other in others)
        with pytest.raises(ValueError):
            kill_job_processes("")
        assert all(other.poll() is None for other in others)
    finally:
        for process in [*others, mine]:
            process.kill()
            process.wait()


def test_an_executor_needs_a_job_id(tmp_path: Path):
    with pytest.raises(ValueError, match="job id"):
        Harness("", tmp_path, definition(run_op("a", "true")))


# ---------------------------------------------------------------- groups and depends_on


async def test_groups_run_in_order_and_their_ops_together(tmp_path: Path, job: str):
    h = Harness(
        job,
        tmp_path,
        definition(
            # Each waits for the other to be up: they end only if they run at the same time.
            run_op("a", "touch a.up; while [ ! -e b.up ]; do sleep 0.02; done",
                   execution={"group": "first"}),
            run_op("c", "true", execution={"group": "second"}),
            run_op("b", "touch b.up; while [ ! -e a.up ]; do sleep 0.02; done",
                   execution={"group": "first"}),
        ),
    )
    assert await h.run() == "success"
    a, b, c = h.op("a"), h.op("b"), h.op("c")
    assert [s.operation_id for s in h.flow.op_states] == ["a", "c", "b"]  # ops order
    assert (a.group, b.group, c.group) == ("first", "first", "second")
    assert (a.exit_code, b.exit_code) == (0, 0)
    assert c.start_time >= max(a.end_time, b.end_time)


async def test_depends_on_waits_for_success(tmp_path: Path, job: str):
    h = Harness(
        job,
        tmp_path,
        definition(
            run_op("after", "echo after", execution={"group": "g", "depends_on": ["before"]}),
            run_op("before", "sleep 0.3; echo before", execution={"group": "g"}),
        ),
    )
    assert await h.run() == "success"
    assert h.op("after").start_time >= h.op("before").end_time
    assert h.op("after").status == "success"


async def test_a_failed_dependency_means_not_run(tmp_path: Path, job: str):
    h = Harness(
        job,
        tmp_path,
        definition(
            run_op("setup", "exit 1", execution={"group": "g"}),
            run_op("main", "touch ran", execution={"group": "g", "depends_on": ["setup"]}),
            run_op("later", "echo later", execution={"group": "h", "depends_on": ["setup"]}),
            run_op("independent", "echo yes", execution={"group": "h"}),
        ),
    )
    assert await h.run() == "success"
    main = h.op("main")
    assert main.status == "stopped" and main.exit_code is None
    assert main.errors == [
        {"event": "dependency", "message": "not run: dependency 'setup' ended failed"}
    ]
    assert not (tmp_path / "ran").exists()
    assert h.op("later").status == "stopped"  # an earlier group's op may be depended on
    assert h.op("independent").status == "success"  # later groups still run


async def test_invalid_plans_fail_before_running(tmp_path: Path, job: str):
    for ops in (
        [run_op("a", "touch ran", execution={"depends_on": ["b"]}), run_op("b", "true")],
        [run_op("a", "touch ran", execution={"group": "g", "depends_on": ["a"]})],
        [
            run_op("a", "touch ran", execution={"group": "g", "depends_on": ["b"]}),
            run_op("b", "touch ran", execution={"group": "g", "depends_on": ["a"]}),
        ],
    ):
        h = Harness(job, tmp_path, definition(*ops))
        assert await h.run() == "failed"
        assert h.flow.errors and h.flow.end_time
        assert all(state.status == "init" for state in h.flow.op_states)
        assert not (tmp_path / "ran").exists()


# ---------------------------------------------------------------- stop, expiry, quit


SPAWNER = "sleep 1000 & echo $! >> pids; sleep 1000 & echo $! >> pids; echo ready; wait"


async def _until(condition: Any, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


async def _wait_for_file_lines(path: Path, count: int, timeout: float = PATIENCE) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().split()
            if len(lines) >= count:
                return [int(x) for x in lines]
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never got {count} lines")


async def test_stop_is_dockers_a_shell_ignores_sigterm_until_the_kill(tmp_path: Path, job: str):
    """``docker stop``: PID 1 gets SIGTERM only if it handles it; a shell does not, so the
    op and everything it started die of SIGKILL after the grace (exit 137)."""
    h = Harness(
        job,
        tmp_path,
        definition(run_op("spawner", SPAWNER), run_op("next", "touch ran")),
        stop_grace=0.5,
    )
    task = asyncio.create_task(h.run())
    pids = await _wait_for_file_lines(tmp_path / "pids", 2)
    started = time.monotonic()
    await asyncio.wait_for(h.executor.stop("stopped"), PATIENCE)
    assert time.monotonic() - started >= 0.5  # nothing ended it before the grace
    assert await task == "stopped"
    assert not any(_alive(pid) for pid in pids)
    spawner = h.op("spawner")
    assert spawner.status == "stopped" and spawner.exit_code == 128 + 9
    assert spawner.diagnostics is not None
    assert spawner.diagnostics["reason"] == {
        "hostShutDown": False, "jobStopped": True, "jobExpired": False,
        "reason": "Operation stopped due to flow stopped"}
    state = spawner.diagnostics["state"]
    assert (state["Status"], state["ExitCode"], state["RestartCount"]) == ("exited", 137, 0)
    assert state["StartedAt"] <= state["FinishedAt"]
    # The op reached after the stop: stop status, exit code 0, never run, and (as on the
    # node, where only running ops hear the stop) no stop flags.
    after = h.op("next")
    assert (after.status, after.exit_code) == ("stopped", 0)
    assert after.diagnostics is not None and after.diagnostics["reason"]["jobStopped"] is False
    assert not (tmp_path / "ran").exists()


async def test_stop_sends_sigterm_to_a_main_process_that_handles_it(tmp_path: Path, job: str):
    handler = (
        "import signal, sys, time\n"
        "def bye(*_): print('bye', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(1000)\n"
    )
    h = Harness(job, tmp_path, definition(run_op("polite", [PY, "-c", handler])),
                stop_grace=3 * PATIENCE)
    task = asyncio.create_task(h.run())
    await _until(lambda: bool(h.flow.op_states) and bool(h.op("polite").logs))
    # Within a bound well below the grace: the stop returns once the process exited.
    await asyncio.wait_for(h.executor.stop("expired"), PATIENCE)
    assert await task == "success"
    polite = h.op("polite")
    assert (polite.status, polite.exit_code) == ("success", 0)
    # From the stop on the op's output is no longer read (the node stops following it).
    assert [log.log for log in polite.logs] == ["ready\n"]
    assert not any(entry.log == "bye\n" for entry in h.entries)


async def test_older_stop_kills_the_whole_process_group(tmp_path: Path, job: str):
    h = Harness(
        job,
        tmp_path,
        definition(run_op("spawner", SPAWNER), run_op("next", "touch ran")),
        stop_grace=3 * PATIENCE,
        term_process_group=True,
    )
    task = asyncio.create_task(h.run())
    pids = await _wait_for_file_lines(tmp_path / "pids", 2)
    assert all(_alive(pid) for pid in pids)
    # Within a bound well below the grace: the stop returns once the group died of SIGTERM.
    await asyncio.wait_for(h.executor.stop("stopped"), PATIENCE)
    assert task.done() and task.result() == "stopped"
    assert not any(_alive(pid) for pid in pids)
    spawner = h.op("spawner")
    assert spawner.status == "stopped" and spawner.exit_code == 128 + 15
    assert spawner.diagnostics == {
        "reason": {"hostShutDown": False, "jobStopped": True, "jobExpired": False}
    }
    # The op after it is reached after the stop: stop status, exit code 0, never run.
    assert (h.op("next").status, h.op("next").exit_code) == ("stopped", 0)
    assert not (tmp_path / "ran").exists()
    assert h.flow.status == "stopped"


async def test_stop_escalates_to_sigkill(tmp_path: Path, job: str):
    stubborn = "trap '' TERM; sleep 1000 & echo $! >> pids; echo $$ >> pids; wait; wait"
    h = Harness(job, tmp_path, definition(run_op("stubborn", stubborn)), stop_grace=0.3)
    task = asyncio.create_task(h.run())
    pids = await _wait_for_file_lines(tmp_path / "pids", 2)
    await asyncio.wait_for(h.executor.stop("stopped"), PATIENCE)
    assert await task == "stopped"
    assert not any(_alive(pid) for pid in pids)
    assert h.op("stubborn").exit_code == 128 + 9


async def test_expiry_ends_ops_as_success(tmp_path: Path, job: str):
    h = Harness(
        job,
        tmp_path,
        definition(
            run_op("serve", "echo up; sleep 1000", results={"up": "up"}),
            run_op("after", "touch ran", execution={"group": "later"}),
        ),
        stop_grace=0.5,
    )
    task = asyncio.create_task(h.run())
    await _until(lambda: bool(h.flow.op_states) and bool(h.op("serve").logs))
    await h.executor.stop("expired")
    assert await task == "success"
    serve = h.op("serve")
    assert serve.status == "success"
    assert serve.diagnostics["reason"]["jobExpired"] is True
    assert serve.results == {"up": ["up"]}
    assert (h.op("after").status, h.op("after").exit_code) == ("success", 0)
    assert not (tmp_path / "ran").exists()


async def test_quit_fails_the_flow(tmp_path: Path, job: str):
    h = Harness(job, tmp_path, definition(run_op("long", "sleep 1000")), stop_grace=0.5)
    task = asyncio.create_task(h.run())
    await _until(lambda: bool(h.flow.op_states) and h.op("long").status == "running")
    await h.executor.stop("quit")
    assert await task == "failed"
    assert h.op("long").status == "failed"
    assert h.op("long").diagnostics["reason"]["hostShutDown"] is True


async def test_stop_racing_run(tmp_path: Path, job: str):
    # stop() before run(): nothing is started, every op gets the stop status.
    h = Harness(job, tmp_path, definition(run_op("a", "touch ran")))
    await h.executor.stop("stopped")
    assert await h.run() == "stopped"
    assert (h.op("a").status, h.op("a").exit_code) == ("stopped", 0)

    # stop() while run() is spawning its first process.
    for _ in range(5):
        h = Harness(job, tmp_path, definition(run_op("b", "sleep 1000"), run_op("c", "touch ran")))
        task = asyncio.create_task(h.run())
        await asyncio.sleep(0)
        await asyncio.wait_for(h.executor.stop("stopped"), PATIENCE)
        assert await asyncio.wait_for(task, PATIENCE) == "stopped"
        assert {s.status for s in h.flow.op_states} == {"stopped"}
    assert not (tmp_path / "ran").exists()

    # stop() after the end changes nothing; a second stop keeps the first reason.
    h = Harness(job, tmp_path, definition(run_op("d", "true")))
    assert await h.run() == "success"
    await h.executor.stop("quit")
    assert h.flow.status == "success" and h.op("d").status == "success"


async def test_cancelling_run_kills_processes(tmp_path: Path, job: str):
    h = Harness(job, tmp_path, definition(run_op("spawner", SPAWNER)))
    task = asyncio.create_task(h.executor.run())
    pids = await _wait_for_file_lines(tmp_path / "pids", 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await h.services.aclose()
    await until(lambda: not any(_alive(pid) for pid in pids), what="the processes gone")


async def test_a_broken_listener_does_not_break_the_job(tmp_path: Path, job: str):
    def boom(_entry: NodeLogEntry) -> None:
        raise RuntimeError("listener bug")

    flow = FlowState(status="init")
    services = ServiceRegistry(lambda: "http://127.0.0.1:1")
    executor = Executor(
        definition=definition(run_op("a", "echo hi")),
        job=job,
        workdir=tmp_path,
        flow=flow,
        emit=boom,
        changed=lambda: None,
        services=services,
    )
    assert await executor.run() == "success"
    assert flow.op_states[0].logs[0].log == "hi\n"
    await services.aclose()
    with pytest.raises(RuntimeError):
        await executor.run()
