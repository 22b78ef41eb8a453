"""Whole confidential jobs through ConfidentialJob against the in-process devnode.

These run the way a notebook does: the job's machine on the package's loop thread, the
devnode on its own thread, the test in the main thread using the synchronous handle.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nosana_magic import runner
from nosana_magic.devnode import DevNode, DevNodeConfig
from nosana_magic.job import (
    ConfidentialJob,
    JobEvent,
    JobExpired,
    JobFailed,
    JobInterrupted,
    JobStopped,
    MissingResult,
    find_job,
    jobs,
    run_confidential,
)
from nosana_magic.jobdef import JobDefinition, JobDefinitionError
from nosana_magic.network.api import ApiNetwork
from nosana_magic.network.base import JobState
from nosana_magic.results import NodeLogEntry
from nosana_magic.secrets import ResolvedDefinition, SecretError
from nosana_magic.settings import Settings
from nosana_magic.wallet import Wallet

from .conftest import FAST, PLACEHOLDER, SECRET, definition, free_port, network_for, op, text
from .waiting import PATIENCE, wait_until

log = logging.getLogger(__name__)

ENV = {"HF_TOKEN": SECRET}


@pytest.fixture
def net(devnode: DevNode) -> Iterator[ApiNetwork]:
    network = network_for(devnode)
    yield network
    runner.run_sync(network.aclose(), timeout=10)


def _run(net: ApiNetwork, doc: dict[str, Any] | str, **kw: Any) -> ConfidentialJob:
    kw.setdefault("env", ENV)
    kw.setdefault("timeout", 60)
    source = doc if isinstance(doc, str) else text(doc)
    return run_confidential(source, network=net, **kw)


def _until(check: Any, timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def sent(devnode: DevNode, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every ``/log`` entry each devnode host published, by job (a host clears a job's
    history once the job is done, so the test keeps its own copy)."""
    published: dict[str, list[str]] = {}
    for node_host in devnode.hosts:
        hub = node_host.node_logs
        original = hub.publish_many

        def publish_many(job: str, frames: list[str], original: Any = original) -> None:
            published.setdefault(job, []).extend(json.loads(frame)["data"] for frame in frames)
            original(job, frames)

        monkeypatch.setattr(hub, "publish_many", publish_many)
    return published


def _host_history(sent: dict[str, list[str]], job: ConfidentialJob) -> list[NodeLogEntry]:
    """What the job's host sent over ``/log``."""
    assert job.address and job.node
    return [NodeLogEntry.model_validate_json(item) for item in sent.get(job.address, [])]


def _everything_shown(job: ConfidentialJob) -> str:
    """Every text the handle can show or hand out."""
    parts = [
        repr(job),
        job._repr_html_(),
        str(job.error),
        job.stdout,
        job.stderr,
        "\n".join(line.text for line in job.logs),
        json.dumps(job.flow.to_wire()) if job.flow else "",
        repr(job.ops),
        json.dumps(job.results, default=str),
        repr(job.urls),
        repr(job.warnings),
    ]
    try:
        job.raise_for_status()
    except BaseException as exc:
        parts.append(str(exc))
        render = getattr(exc, "_render_traceback_", None)
        if render is not None:
            parts.extend(render())
    return "\n".join(parts)


# --------------------------------------------------------------------------- success


TRAIN = op(
    "train",
    "echo loading; echo token=$HF_TOKEN; echo 'metrics {\"acc\": 0.93}'; echo 'loss=0.25';"
    " echo warn >&2",
    env={"HF_TOKEN": "${env:HF_TOKEN}"},
    results={"metrics": "metrics (.*)", "loss": "loss=([0-9.]+)", "tok": "token=(.*)"},
)
EVAL = op("eval", "echo 'loss=0.5'; echo 'label=cat'",
          results={"loss": "loss=([0-9.]+)", "label": "label=(.*)"},
          execution={"depends_on": ["train"]})


def test_success_with_results_logs_and_redaction(devnode: DevNode, net: ApiNetwork) -> None:
    job = _run(net, definition(TRAIN, EVAL))
    assert job.done and job.ok, job.error
    assert job.status == "succeeded" and job.host_status == "success"
    assert job.state is JobState.COMPLETED
    assert job.market is not None and job.market.slug == "local-cpu"
    assert job.node in {h.address for h in devnode.hosts}

    train = job.ops["train"]
    assert train.exit_code == 0 and train.status == "succeeded" and train.host_status == "success"
    assert train.results["metrics"] == {"acc": 0.93}  # JSON-decoded
    assert [line.text for line in train.logs if line.stream == "stdout"] == [
        "loading", "token=[secret:HF_TOKEN]", 'metrics {"acc": 0.93}', "loss=0.25"
    ]
    assert [line.text for line in train.logs if line.stream == "stderr"] == ["warn"]
    # Names clash across ops: qualified by op id; unique names stay plain.
    assert job.results == {
        "metrics": {"acc": 0.93},
        "train.loss": 0.25,
        "eval.loss": 0.5,
        "tok": "[secret:HF_TOKEN]",
        "label": "cat",
    }
    assert job.stdout.splitlines()[:2] == ["loading", "token=[secret:HF_TOKEN]"]
    assert "warn" in job.stderr
    assert any(line.text == "Job definition received" for line in job.node_logs)
    assert all(line.stream == "node" for line in job.node_logs)
    assert {line.op_id for line in job.logs if line.stream == "stdout"} == {"train", "eval"}
    assert job.raise_for_status() is job
    assert job.price == pytest.approx(20 / 1e6)
    assert job.cost is not None and job.cost >= 0
    assert job.elapsed is not None and 0 <= job.elapsed < 3 * PATIENCE  # seconds, not ms
    assert job.address is not None and job.node is not None
    assert repr(job).startswith(f"<ConfidentialJob {job.address[:4]}…")
    assert repr(job).endswith(f"local-cpu succeeded node {job.node[:4]}…{job.node[-4:]}>")
    assert job in jobs() and find_job(job.address[:10]) is job


def test_logs_equal_the_hosts_line_for_line(devnode: DevNode, net: ApiNetwork,
                                           sent: dict[str, list[str]]) -> None:
    script = "for i in $(seq 1 30); do echo line$i; done"
    job = _run(net, definition(op("a", script)))
    assert job.ok
    history = _host_history(sent, job)
    assert [line.text for line in job.logs] == [entry.log.rstrip("\n") for entry in history]
    # The host's own lines keep their time; op lines take the results' (with their stream).
    assert [line.timestamp for line in job.node_logs] == [
        entry.timestamp / 1000 for entry in history if entry.type != "log"  # type: ignore[operator]
    ]
    assert job.stdout == "\n".join(f"line{i}" for i in range(1, 31))


def test_numbered_stdout_and_stderr_lines_exactly_on_a_nosana_like_host(
    devnode: DevNode, net: ApiNetwork, sent: dict[str, list[str]]
) -> None:
    """The devnode in its default (Nosana host) mode: no op or stream on /log lines, node
    lines coloured, history cleared at the end, results as match arrays. The handle still
    has every stdout and stderr line, in order, and every line the host sent."""
    devnode.config.node_log_colors = True
    script = ("for i in $(seq 1 40); do echo out$i; if [ $((i % 5)) = 0 ]; then "
              "echo err$((i / 5)) >&2; fi; done; echo 'loss=0.5'; echo 'loss=0.25'")
    job = _run(net, definition(op("a", script, results={
        "loss": "loss=([0-9.]+)", "acc": "acc=([0-9.]+)", "line": "out[0-9]+"})))
    assert job.ok, job._error_line()
    assert job.stdout.splitlines() == [f"out{i}" for i in range(1, 41)] + [
        "loss=0.5", "loss=0.25"]
    assert job.stderr.splitlines() == [f"err{i}" for i in range(1, 9)]
    history = _host_history(sent, job)
    strip = re.compile(r"\x1b\[[0-9;]*m")
    node_lines = [strip.sub("", e.log) for e in history if e.type != "log"]
    assert any("\x1b[" in e.log for e in history)  # the host did colour them
    assert [line.text for line in job.node_logs] == node_lines
    assert [line.text for line in job.logs] == [strip.sub("", e.log).rstrip("\n")
                                                for e in history]
    assert {line.op_id for line in job.logs if line.container} == {"a"}
    assert job.log_warnings == []
    # Results: the last match's group, every match, nothing for no match.
    assert job.results == {"loss": 0.25, "line": "out40"}
    assert job.results.all("loss") == [0.5, 0.25] and job.results.all("acc") == []
    assert job.matches["loss"] == [["loss=0.5", "0.5"], ["loss=0.25", "0.25"]]
    assert len(job.matches["line"]) == 40 and job.matches["acc"] == []
    with pytest.raises(MissingResult, match="acc"):
        job.results["acc"]


@pytest.mark.parametrize("last_event", ["waiting-for-result", "final-status"])
def test_either_order_of_the_last_info_event_gives_the_same_handle(
    devnode: DevNode, net: ApiNetwork, last_event: str
) -> None:
    """A Nosana host's last /info event is a race: the final status, or already
    ``waiting-for-result`` with ``operations: null``. The handle reads the same."""
    devnode.config.info_last_event = last_event  # type: ignore[assignment]
    job = _run(net, definition(
        op("a", "echo 'acc=0.5'"),
        op("b", "echo 'acc=0.75'; echo bad >&2; exit 3", results={"acc": "acc=([0-9.]+)"},
           execution={"depends_on": ["a"]})))
    # The host's own word: "success" once every op ran, whatever their exit codes.
    assert job.done and job.status == "failed" and job.host_status == "success"
    assert job.ops["a"].status == "succeeded" and job.ops["b"].exit_code == 3
    assert job.results == {"acc": 0.75} and job.stderr == "bad"
    assert [line.op_id for line in job.logs if line.container] == ["a", "b", "b"]


def test_results_agree_between_the_devnode_and_a_nosana_hosts_shape(
    devnode: DevNode, net: ApiNetwork
) -> None:
    """Single, repeated and non-matching regexes, and one without groups: the values the
    handle gives on the devnode are those of the flat match arrays a Nosana host makes
    (docs/protocol.md §14), with the regexes known or not."""
    from nosana_magic.outcome import ops_and_results, result_groups
    from nosana_magic.results import FlowState

    rules = {"acc": "acc=([0-9.]+)", "loss": "loss=([0-9.]+)", "f1": "f1=(.*)",
             "seen": "loss=[0-9.]+"}
    document = definition(op("a", "echo 'loss=0.5'; echo 'loss=0.25'; echo 'acc=0.9'",
                             results=rules))
    job = _run(net, document)
    assert job.ok, job._error_line()
    # What a Nosana host stores for these lines (whole match, then the groups, per line).
    nosana = {"acc": ["acc=0.9", "0.9"], "loss": ["loss=0.5", "0.5", "loss=0.25", "0.25"],
              "f1": [], "seen": ["loss=0.5", "loss=0.25"]}
    assert job.flow is not None and job.flow.op_states[0].results == nosana
    flow = FlowState.model_validate({"status": "waiting-for-result", "opStates": [{
        "operationId": "a", "status": "success", "exitCode": 0, "results": nosana}]})
    for groups in (result_groups(document), None):
        outcome = ops_and_results(flow, stopped_by_you=False, groups=groups)
        assert outcome.results == dict(job.results) == {"acc": 0.9, "loss": 0.25,
                                                        "seen": "loss=0.25"}
        assert outcome.every == {"acc": [0.9], "loss": [0.5, 0.25], "f1": [],
                                 "seen": ["loss=0.5", "loss=0.25"]}
        assert outcome.matches == dict(job.matches)
    assert job.results.all("loss") == [0.5, 0.25] and job.results.all("f1") == []
    assert job.matches["loss"] == [["loss=0.5", "0.5"], ["loss=0.25", "0.25"]]


def test_reaction_times_are_well_under_a_second(devnode: DevNode, net: ApiNetwork,
                                                sent: dict[str, list[str]]) -> None:
    """Correctness bound (catches a return to multi-second polling), not a benchmark."""
    job = _run(net, definition(op("a", "echo hi")))
    assert job.ok
    history = _host_history(sent, job)
    waiting = next(e.timestamp for e in history if e.log == "Waiting for job definition")
    received = next(e.timestamp for e in history if e.log == "Job definition received")
    assert waiting is not None and received is not None
    to_definition = (received - waiting) / 1000
    assert job.flow is not None and job.flow.end_time is not None
    to_results = job.timings["results"] - job.flow.end_time / 1000
    log.info("waiting-for-job-definition -> definition received: %.3f s", to_definition)
    log.info("endTime -> results in hand: %.3f s", to_results)
    print(f"\nwaiting-for-definition->received {to_definition:.3f}s, "
          f"endTime->results {to_results:.3f}s")
    # About 0.1 s each, even on a loaded machine; polling every few seconds (the Nosana CLI
    # polls every 5 s) shows as seconds. The figures themselves: benchmarks/bench_local.py.
    assert to_definition < 2.0
    assert to_results < 2.0


def test_private_service_url_is_known_and_reachable(devnode: DevNode, net: ApiNetwork) -> None:
    port = free_port()
    serve_once = (
        "import http.server as h\n"
        f"s = h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler)\n"
        "s.timeout = 120\n"
        "s.handle_request()\n"
        "print('served')\n"
    )
    web = op("web", ["python3", "-c", serve_once], expose=port, private=True)
    job = _run(net, definition(web), wait=False)
    _until(lambda: bool(job.urls) or job.done)
    [url] = job.urls
    assert url.private and url.op_id == "web" and url.port == port
    deadline = time.monotonic() + PATIENCE
    with httpx.Client(trust_env=False, timeout=PATIENCE) as client:
        while True:  # 502 until the server listens
            try:
                response = client.get(url.url + "/")
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert response is not None and response.status_code == 200
    job.wait(PATIENCE)
    assert job.ok, job._error_line()
    assert job.ops["web"].logs[-1].text == "served"
    assert job.urls == [url] or job.urls[0].url == url.url  # kept after the flow cleared them


# --------------------------------------------------------------------------- failures


def test_failing_op(devnode: DevNode, net: ApiNetwork) -> None:
    job = _run(net, definition(op("train", "echo before; exit 3"), op("after", "echo never",
                                   execution={"depends_on": ["train"]})))
    assert job.done and not job.ok
    assert job.status == "failed" and job.phase == "done"
    assert job.ops["train"].exit_code == 3
    with pytest.raises(JobFailed) as info:
        job.raise_for_status()
    assert str(info.value) == f"job {job.address} failed: op train exited with 3"
    assert info.value._render_traceback_() == [f"JobFailed: {info.value}"]


@pytest.mark.parametrize(("args", "said"), [
    ({"cmd": ["/nonexistent/trainer", "--epochs", "3"]},
     "cannot start '/nonexistent/trainer': No such file or directory"),
    ({"cmd": "true", "work_dir": "../../elsewhere"},
     "work_dir '../../elsewhere' would leave the job's directory"),
    ({"cmd": [], "entrypoint": []},
     "no cmd or entrypoint: the local executor cannot run an image's default command"),
])
def test_an_op_the_host_could_not_run_says_why(devnode: DevNode, net: ApiNetwork,
                                               args: dict[str, Any], said: str) -> None:
    # "op a exited with 2" alone does not say that the host never started it, nor why.
    job = _run(net, definition({"type": "container/run", "id": "a",
                                "args": {"image": "ubuntu", **args}}))
    assert job.done and job.status == "failed" and job.ops["a"].exit_code == 2
    with pytest.raises(JobFailed) as info:
        job.raise_for_status()
    assert str(info.value) == f"job {job.address} failed: op a exited with 2: {said}"
    assert job.reason == f"op a exited with 2: {said}"


def test_why_an_op_failed_is_redacted(devnode: DevNode, net: ApiNetwork) -> None:
    job = _run(net, definition({"type": "container/run", "id": "a",
                                "args": {"image": "ubuntu", "cmd": ["/opt/${env:HF_TOKEN}"]}}))
    assert job.reason == ("op a exited with 2: cannot start '/opt/[secret:HF_TOKEN]': No such "
                          "file or directory")


def test_definition_failing_the_hosts_validation(
    devnode: DevNode, net: ApiNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Our own validator agrees with the host's, so make the body invalid after it passed.
    from nosana_magic.secrets import Redactor

    def bad_resolve(self: JobDefinition, **kw: Any) -> ResolvedDefinition:
        body = definition({"type": "container/run", "id": "x", "args": {"cmd": "true"}})
        return ResolvedDefinition(json.dumps(body).encode(), Redactor.empty())

    monkeypatch.setattr(JobDefinition, "resolve", bad_resolve)
    job = _run(net, definition(op("x", "true")))
    assert job.done and job.status == "failed" and job.host_status == "validation-error"
    assert job.ops == {}
    with pytest.raises(JobFailed) as info:
        job.raise_for_status()
    message = str(info.value)
    assert message.startswith(f"job {job.address} failed: the host rejected the job definition")
    assert "image" in message


def test_missing_secret_posts_nothing(devnode: DevNode, net: ApiNetwork) -> None:
    job = _run(net, definition(TRAIN), env={})
    assert job.done and job.status == "failed" and job.address is None
    assert isinstance(job.error, SecretError)
    assert "HF_TOKEN" in str(job.error)
    with pytest.raises(SecretError):
        job.raise_for_status()
    assert devnode.ledger.jobs == {} and len(devnode.ipfs) == 0


def test_invalid_definition_posts_nothing(devnode: DevNode, net: ApiNetwork) -> None:
    job = _run(net, '{"version": "0.1", "type": "container", "ops": [{"type": "container/run",'
                    ' "id": "a", "args": {}}]}')
    assert isinstance(job.error, JobDefinitionError)
    assert "ops[0].args.image" in str(job.error)
    with pytest.raises(JobDefinitionError):
        job.raise_for_status()
    assert devnode.ledger.jobs == {} and len(devnode.ipfs) == 0


def test_host_faults_500s_and_dropped_log_socket(devnode: DevNode, net: ApiNetwork,
                                                 sent: dict[str, list[str]]) -> None:
    faults = devnode.config.faults
    faults.fail_requests = 4  # spread over whichever node routes come first
    faults.drop_ws_after_frames = 6
    stop = threading.Event()

    def drop_mid_stream() -> None:
        # Every new /log subscription is cut 6 frames past what the client has seen.
        seen = 0
        while not stop.is_set():
            job = next(iter(jobs()[-1:]), None)
            host = job._machine._host if job is not None else None
            if host is not None and host.log_connections != seen:
                seen = host.log_connections
                faults.drop_ws_after_frames = host.log_cursor + 6 if seen < 5 else None
            time.sleep(0.002)

    dropper = threading.Thread(target=drop_mid_stream, daemon=True)
    dropper.start()
    try:
        script = "for i in $(seq 1 40); do echo line$i; sleep 0.005; done"
        job = _run(net, definition(op("a", script)))
    finally:
        stop.set()
        dropper.join(2)
    assert job.ok, job._error_line()
    assert faults.fail_requests == 0
    host = job._machine._host
    assert host is not None and host.log_connections >= 3
    history = _host_history(sent, job)
    # Every op line, from the live log or put back from the results, in order.
    assert job.stdout == "\n".join(f"line{i}" for i in range(1, 41))
    assert [line.text for line in job.logs if line.container] == [
        e.log.rstrip("\n") for e in history if e.type == "log"]
    # The host's own lines: all of them, or a warning that the last ones may be missing (a
    # host does not replay a finished job's log to a socket that reconnects too late).
    sent_node = [e.log for e in history if e.type != "log"]
    got_node = [line.text for line in job.node_logs]
    assert got_node == sent_node[: len(got_node)]
    assert got_node == sent_node or any("last lines may be missing" in warning
                                        for warning in job.log_warnings)


@pytest.mark.parametrize("devnode_config",
                         [DevNodeConfig(**{**FAST, "log_history": 40})])  # type: ignore[arg-type]
def test_reconnect_after_the_replay_cap_loses_no_line(devnode: DevNode, net: ApiNetwork,
                                                       sent: dict[str, list[str]]) -> None:
    """The host keeps the last 40 entries: a reconnect's replay starts there, not at line
    one. Skipping the replay by count would lose what came since; aligned by time, every
    line is there once, in order."""
    faults = devnode.config.faults
    stop = threading.Event()

    def drop_mid_stream() -> None:
        # Each new connection: the (capped) replay, then 20 new entries, then cut.
        seen = 0
        while not stop.is_set():
            job = next(iter(jobs()[-1:]), None)
            host = job._machine._host if job is not None else None
            if host is not None and host.log_connections != seen:
                seen = host.log_connections
                faults.drop_ws_after_frames = 60 if seen < 4 else None
            time.sleep(0.002)

    dropper = threading.Thread(target=drop_mid_stream, daemon=True)
    dropper.start()
    try:
        script = "for i in $(seq 1 300); do echo line$i; sleep 0.01; done"
        job = _run(net, definition(op("a", script)))
    finally:
        stop.set()
        dropper.join(2)
    assert job.ok, job._error_line()
    host = job._machine._host
    assert host is not None and host.log_connections >= 3
    lines = [f"line{i}" for i in range(1, 301)]
    assert job.stdout.splitlines() == lines
    assert [line.text for line in job.logs if line.stream != "node"] == lines
    sent_node = [NodeLogEntry.model_validate_json(item).log for item in sent[job.address or ""]]
    got_node = [line.text for line in job.node_logs]
    assert got_node == [text for text in sent_node if not text.startswith("line")][
        : len(got_node)]


def test_a_log_socket_cut_every_500_frames_still_gives_every_line(
    devnode: DevNode, net: ApiNetwork
) -> None:
    """Every /log connection is cut 500 frames into its replay: the live log never gets past
    its 500th entry. Once the results are in, the handle has all 2,000 lines, in order, each
    with its op and stream, and says what it could not get back."""
    devnode.config.faults.drop_ws_after_frames = 500
    job = _run(net, definition(op("a", "seq 1 1000; seq 1001 2000 >&2")))
    assert job.ok, job._error_line()
    assert job.stdout.splitlines() == [str(i) for i in range(1, 1001)]
    assert job.stderr.splitlines() == [str(i) for i in range(1001, 2001)]
    container = [line for line in job.logs if line.container]
    assert len(container) == 2000 and {line.op_id for line in container} == {"a"}
    assert {line.stream for line in container} == {"stdout", "stderr"}
    # The host's closing lines came after the 500th entry: gone, and said so.
    assert not any(line.text.startswith("Job result published") for line in job.node_logs)
    assert any("last lines may be missing" in warning for warning in job.log_warnings)
    assert any("last lines may be missing" in warning for warning in job.warnings)


def test_host_quits_mid_run(devnode: DevNode, net: ApiNetwork) -> None:
    devnode.config.faults.host_quits_after = 0.3
    job = _run(net, definition(op("a", "echo started; sleep 20")))
    assert job.done and not job.ok
    assert job.state is JobState.STOPPED and job.status == "lost"
    with pytest.raises(JobFailed) as info:
        job.raise_for_status()
    assert not isinstance(info.value, JobStopped)
    assert "ended STOPPED on the ledger" in str(info.value)
    assert any(line.text == "Host is quitting" for line in job.node_logs)


def test_slow_pickup(devnode: DevNode, net: ApiNetwork) -> None:
    devnode.config.pickup_delay = 1.0
    phases: list[str] = []
    job = _run(net, definition(op("a", "echo hi")), wait=False)
    job.subscribe(lambda event: phases.append(event.job.phase) if event.kind == "phase" else None)
    job.wait(PATIENCE)
    assert job.ok
    assert job.timings["running"] - job.timings["listed"] >= 0.9
    assert phases[-1] == "done"


# --------------------------------------------------------------------------- stop, Ctrl-C


def test_stop_while_queued(devnode: DevNode, net: ApiNetwork) -> None:
    devnode.config.pickup_delay = None
    job = _run(net, definition(op("a", "echo never")), wait=False)
    _until(lambda: job.phase == "queued")
    job.stop()
    job.wait(PATIENCE)
    assert job.status == "stopped" and job.state is JobState.STOPPED
    assert job.node is None and not job.ok and job.cost == 0.0
    with pytest.raises(JobStopped, match=f"^job {job.address} stopped$"):
        job.raise_for_status()


def test_stop_while_running_keeps_the_results(devnode: DevNode, net: ApiNetwork) -> None:
    # The op outlives the job's 60-s timeout: only the stop ends it within the wait's bound.
    job = _run(net, definition(op("a", "echo started; sleep 300")), wait=False)
    _until(lambda: any(line.text == "started" for line in job.logs))
    job.stop()
    job.wait(PATIENCE)
    assert job.status == "stopped" and not job.ok
    assert job.flow is not None
    assert job.ops["a"].logs[0].text == "started"
    # A host ends a job stopped through its API as an expiry ("success", jobExpired): the
    # stop was ours, and the op reads so. The host's raw words stay available.
    stopped = job.ops["a"]
    assert stopped.status == "stopped" and stopped.exit_code in (137, 143)
    assert stopped.host_status == "success" and stopped.ended_by == "stop"
    assert not any("expired" in line.text.lower() for line in job.node_logs)
    assert job.node is not None and repr(job).endswith(
        f" stopped node {job.node[:4]}…{job.node[-4:]}>")


def test_a_job_past_its_timeout_expired(devnode: DevNode, net: ApiNetwork) -> None:
    """The host ends a job at its timeout ("success", jobExpired): it expired, it did not
    succeed, and the host says so in its own log."""
    job = _run(net, definition(op("a", "echo started; sleep 30")), timeout=2)
    assert job.done and job.status == "expired" and not job.ok
    assert job.ops["a"].status == "expired" and job.ops["a"].ended_by == "expiry"
    assert job.host_status == "success"  # the host's raw word, kept apart
    assert any(line.text == "Job expired" for line in job.node_logs)
    with pytest.raises(JobExpired, match=f"^job {job.address} expired: it reached its timeout"):
        job.raise_for_status()


def test_ctrl_c_while_waiting_stops_the_job(devnode: DevNode, net: ApiNetwork) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    job = _run(net, definition(op("a", "echo started; sleep 300")), wait=False)
    _until(lambda: job.phase == "running")

    timer = threading.Timer(0.2, signal.raise_signal, args=(signal.SIGINT,))
    timer.start()
    start = time.monotonic()
    with pytest.raises(JobInterrupted) as info:
        job.wait()
    # Not the job's end (its 60-s expiry at the earliest): the Ctrl-C's.
    assert time.monotonic() - start < PATIENCE
    assert str(info.value) == f"job {job.address} stopped"
    assert info.value._render_traceback_() == [f"job {job.address} stopped"]
    assert isinstance(info.value, KeyboardInterrupt)
    job.wait(PATIENCE)
    assert job.status == "stopped"


def test_a_second_ctrl_c_does_not_cancel_the_stop(
    devnode: DevNode, net: ApiNetwork, capsys: pytest.CaptureFixture[str]
) -> None:
    """The host's /stop fails for a while and Ctrl-C comes twice: the stop still goes
    through (on the ledger), and one JobInterrupted line says so."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    job = _run(net, definition(op("a", "echo started; sleep 60")), wait=False)
    _until(lambda: any(line.text == "started" for line in job.logs))
    faults = devnode.config.faults
    faults.fail_routes, faults.fail_requests = r"/stop$", 10**6
    threading.Timer(0.2, signal.raise_signal, args=(signal.SIGINT,)).start()
    threading.Timer(1.0, signal.raise_signal, args=(signal.SIGINT,)).start()
    raised: BaseException | None = None
    try:
        job.wait(30)
    except BaseException as exc:  # a raw KeyboardInterrupt must not escape
        raised = exc
    faults.fail_requests = 0
    assert isinstance(raised, JobInterrupted), repr(raised)
    assert str(raised) == f"job {job.address} stopped"
    assert "still stopping it" in capsys.readouterr().err
    job.wait(PATIENCE)
    assert job.status == "stopped" and job._stop_requested
    assert job.address is not None and devnode.job(job.address).state is JobState.STOPPED


def test_a_ctrl_c_during_stop_does_not_cancel_it(
    devnode: DevNode, net: ApiNetwork, capsys: pytest.CaptureFixture[str]
) -> None:
    """run.stop() while the host's /stop fails for a while, and Ctrl-C twice meanwhile: the
    stop goes through all the same (on the ledger) and stop() returns."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    job = _run(net, definition(op("a", "echo started; sleep 60")), wait=False)
    _until(lambda: any(line.text == "started" for line in job.logs))
    faults = devnode.config.faults
    faults.fail_routes, faults.fail_requests = r"/stop$", 10**6
    threading.Timer(0.2, signal.raise_signal, args=(signal.SIGINT,)).start()
    threading.Timer(0.8, signal.raise_signal, args=(signal.SIGINT,)).start()
    try:
        job.stop()  # a KeyboardInterrupt escaping here would fail the test
    finally:
        faults.fail_requests = 0
    assert capsys.readouterr().err.count("still stopping it") >= 1
    job.wait(PATIENCE)
    assert job.status == "stopped"
    assert job.address is not None and devnode.job(job.address).state is JobState.STOPPED


def test_ctrl_c_whose_stop_fails_says_the_job_still_runs(
    devnode: DevNode, net: ApiNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    from nosana_magic.host import HostClient, HostError
    from nosana_magic.network.base import NetworkError

    job = _run(net, definition(op("a", "echo started; sleep 60")), wait=False)
    _until(lambda: any(line.text == "started" for line in job.logs))

    async def host_refuses(self: HostClient, *, timeout: float = 10.0) -> None:
        raise HostError(self.base_url, "POST /stop", "refused")

    async def ledger_down(address: str) -> None:
        raise NetworkError("local network: POST /stop: 503")

    monkeypatch.setattr(HostClient, "stop", host_refuses)
    monkeypatch.setattr(net, "stop", ledger_down)
    threading.Timer(0.2, signal.raise_signal, args=(signal.SIGINT,)).start()
    with pytest.raises(JobInterrupted) as info:
        job.wait(30)
    assert str(info.value) == (
        f"job {job.address}: stop requested, still running: local network: POST /stop: 503"
    )
    assert not job._stop_requested and job.phase == "running"
    monkeypatch.undo()
    job.stop()
    job.wait(PATIENCE)
    assert job.status == "stopped"


def test_ctrl_c_while_queued_delists(devnode: DevNode, net: ApiNetwork) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    devnode.config.pickup_delay = None
    job = _run(net, definition(op("a", "echo never")), wait=False)
    _until(lambda: job.phase == "queued")
    threading.Timer(0.1, signal.raise_signal, args=(signal.SIGINT,)).start()
    with pytest.raises(JobInterrupted):
        job.wait()
    job.wait(PATIENCE)
    assert job.state is JobState.STOPPED and job.node is None


# --------------------------------------------------------------------------- extend, attach


def test_extend(devnode: DevNode, net: ApiNetwork) -> None:
    job = _run(net, definition(op("a", "sleep 30")), wait=False)
    _until(lambda: job.phase == "running")
    job.extend("1m")
    assert job.timeout == 120
    assert job.address is not None and devnode.job(job.address).timeout == 120
    job.extend(30)  # an int is seconds
    assert devnode.job(job.address).timeout == 150
    job.stop()
    job.wait(PATIENCE)
    with pytest.raises(JobFailed, match="is not running"):
        job.extend("1m")


def test_extend_past_the_original_expiry_finishes_ok(
    devnode: DevNode, net: ApiNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for the end follows the extension: no early results GET, no stop."""
    import nosana_magic.machine as machine_module

    monkeypatch.setattr(machine_module, "EXPIRY_MARGIN_S", 0.5)
    # The op runs until the test lets it end, once the original expiry and every margin the
    # client's wait could have used are past.
    work = "while [ ! -e go ]; do sleep 0.05; done; echo done"
    job = ConfidentialJob(None, net, source=text(definition(op("a", work))),
                          timeout=5, results_timeout=1.0)
    job.start()
    _until(lambda: job.phase == "running")
    job.extend(60)
    started = job.started_at
    assert started is not None and job.address is not None and devnode.workdir is not None
    _until(lambda: time.time() > started + 5 + 0.5 + 1.0 + 1.0)
    # Neither a results GET nor a stop came at the original expiry.
    assert job.phase == "running" and not job.done, job.phase
    (devnode.workdir / job.address / "go").touch()
    job.wait(PATIENCE)
    assert job.ok, job._error_line()
    assert job.status == "succeeded" and job.host_status == "success"
    assert job.ops["a"].logs[-1].text == "done"
    assert not any("stopped" in w for w in job.warnings), job.warnings
    assert job.address is not None
    _until(lambda: devnode.job(job.address or "").state is JobState.COMPLETED)


def test_attach_streams_the_history_and_collects_the_results(
    devnode: DevNode, net: ApiNetwork
) -> None:
    script = "for i in $(seq 1 10); do echo line$i; done; sleep 1; echo 'acc=0.9'"
    original = _run(net, definition(op("a", script, results={"acc": "acc=(.*)"})),
                    wait=False, private="both")
    _until(lambda: any(line.text == "line10" for line in original.logs))
    assert original.address is not None
    # Another kernel: the same wallet, a new network object, no knowledge of the definition.
    other = network_for(devnode, wallet=net.wallet)
    attached = ConfidentialJob.attach(original.address, other)
    assert attached is not original
    attached.wait(PATIENCE)
    original.wait(PATIENCE)
    assert attached.ok and attached.results == {"acc": 0.9}
    assert [line.text for line in attached.logs][:5] == [
        line.text for line in original.logs
    ][:5]
    assert "line1" in attached.stdout and "acc=0.9" in attached.stdout


def test_attach_to_a_finished_job_replays_a_long_log_whole(
    devnode: DevNode, net: ApiNetwork
) -> None:
    script = "i=0; while [ $i -lt 15000 ]; do echo line$i; i=$((i+1)); done"
    original = _run(net, definition(op("a", script)))
    assert original.ok and original.address is not None
    other = network_for(devnode, wallet=net.wallet)
    attached = ConfidentialJob.attach(original.address, other)
    attached.wait(60)
    # Its ~1 MB result may take seconds to arrive on a busy machine: still collected.
    assert attached.ok, attached._error_line()
    # The replay outlasts a fixed drain time; the drain follows it to the last line.
    assert attached.stdout == original.stdout
    assert attached.stdout.count("\n") == 14_999


def test_attach_with_another_wallet_is_refused(devnode: DevNode, net: ApiNetwork) -> None:
    devnode.config.pickup_delay = None
    job = _run(net, definition(op("a", "true")), wait=False)
    _until(lambda: job.phase == "queued")
    stranger = network_for(devnode)
    attached = ConfidentialJob.attach(job.address or "", stranger)
    attached.wait(PATIENCE)
    assert attached.status == "failed"
    assert "not by this wallet" in str(attached.error)
    job.stop()
    job.wait(PATIENCE)


# --------------------------------------------------------------------------- variants, API


def test_send_only_reads_the_public_result(devnode: DevNode, net: ApiNetwork) -> None:
    job = _run(net, definition(op("a", "echo public-out", results={"o": "(public-.*)"})),
               private="input")
    assert job.ok, job._error_line()
    assert job.results == {"o": "public-out"}
    pinned = [json.loads(content) for content in devnode.ipfs.all().values()]
    assert {"version": "0.1", "type": "container", "meta": {"trigger": "cli"},
            "logistics": {"send": {"type": "api-listen", "args": {}}}, "ops": []} in pinned


def test_listeners_get_events_and_cannot_break_the_job(devnode: DevNode, net: ApiNetwork) -> None:
    events: list[JobEvent] = []
    threads: set[str] = set()

    def listen(event: JobEvent) -> None:
        events.append(event)
        threads.add(threading.current_thread().name)

    def broken(event: JobEvent) -> None:
        raise RuntimeError("listener bug")

    job = _run(net, definition(op("a", "echo hi")), wait=False)
    job.subscribe(broken)
    unsubscribe = job.subscribe(listen)
    job.wait(PATIENCE)
    assert job.ok
    kinds = [event.kind for event in events]
    assert kinds[-1] == "done" and "log" in kinds and "state" in kinds
    assert threads == {"nosana-magic-loop"}
    assert [e.lines[-1].text for e in events if e.kind == "log"][-1] == job.logs[-1].text
    assert all(e.lines for e in events if e.kind == "log")
    unsubscribe()


def test_run_confidential_opens_the_configured_local_network(
    devnode: DevNode, tmp_path: Any
) -> None:
    settings = Settings.from_env({}, devnode_url=devnode.url, data_dir=str(tmp_path))
    job = run_confidential(text(definition(op("a", "echo hi"))), settings=settings,
                           network="local", timeout="2m")
    assert job.ok and job.timeout == 120 and job.network_name == "local"


def test_secrets_never_leave_the_machine(devnode: DevNode, net: ApiNetwork) -> None:
    leaky = op(
        "leak",
        "echo start $HF_TOKEN; echo \"{\\\"t\\\": \\\"$HF_TOKEN\\\"}\"; "
        "echo $HF_TOKEN >&2; exit 7",
        env={"HF_TOKEN": "${env:HF_TOKEN}"},
        results={"t": "start (.*)"},
    )
    job = _run(net, definition(leaky))
    assert job.done and job.status == "failed"
    shown = _everything_shown(job)
    assert SECRET not in shown
    assert "[secret:HF_TOKEN]" in shown
    # The public side: only the CLI's placeholder and the blank result were pinned.
    for content in devnode.ipfs.all().values():
        assert SECRET.encode() not in content
    pinned = [json.loads(content) for content in devnode.ipfs.all().values()]
    assert PLACEHOLDER in pinned
    # The handle keeps no reference to the environment once done.
    assert job._machine._env is None and job._machine._namespace is None


def test_wallet_of_the_network_signs(devnode: DevNode, net: ApiNetwork) -> None:
    job = _run(net, definition(op("a", "true")))
    assert job.address is not None
    assert devnode.job(job.address).project == net.wallet.address
    assert isinstance(net.wallet, Wallet)


def test_stop_while_the_definition_is_being_sent(devnode: DevNode, net: ApiNetwork) -> None:
    faults = devnode.config.faults
    faults.stall_route = "job-definition$"
    faults.stall_seconds = 3 * PATIENCE  # ends when the devnode stops
    job = _run(net, definition(op("a", "echo never")), wait=False)
    _until(lambda: job.phase == "sending-definition")
    job.stop()
    job.wait(PATIENCE)
    assert job.status == "stopped" and job.error is None
    assert job.state is not None and job.state.done
    assert not any(line.text == "never" for line in job.logs)


def test_losing_the_ledger_while_queued_fails_within_the_retry_bound(
    devnode: DevNode, net: ApiNetwork
) -> None:
    from nosana_magic.host import Retry

    devnode.config.pickup_delay = None
    job = ConfidentialJob(None, net, source=text(definition(op("a", "true"))), timeout=60,
                          retry=Retry(first=0.05, cap=0.1, attempts=100, total=0.5))
    job.start()
    _until(lambda: job.phase == "queued")
    assert job.address is not None
    del devnode.ledger.jobs[job.address]  # the ledger forgets the job: 404 from now on
    job.wait(PATIENCE)
    assert job.status == "lost"
    assert str(job.error).startswith(f"lost track of job {job.address}: local network: GET ")
    assert "404 job not found" in str(job.error)


def test_a_ledger_that_fails_after_each_first_answer_is_given_up_on(
    devnode: DevNode, net: ApiNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each new watch() answers the current state, then fails: no progress, so the retry
    bound runs out and the job fails with "lost track"."""
    from collections.abc import AsyncIterator

    from nosana_magic.host import Retry
    from nosana_magic.network.base import JobInfo, NetworkError

    devnode.config.pickup_delay = None
    job = ConfidentialJob(None, net, source=text(definition(op("a", "true"))), timeout=60,
                          retry=Retry(first=0.05, cap=0.1, attempts=100, total=0.5))

    async def flaky_watch(address: str) -> AsyncIterator[JobInfo]:
        yield await net.job(address)
        raise NetworkError("local network: GET /api/jobs: 502")

    monkeypatch.setattr(net, "watch", flaky_watch)
    job.start()
    job.wait(PATIENCE)
    assert job.status == "lost"
    assert str(job.error) == (
        f"lost track of job {job.address}: local network: GET /api/jobs: 502"
    )


def test_a_dead_info_stream_is_resumed_and_the_results_still_collected(
    devnode: DevNode, net: ApiNetwork
) -> None:
    from nosana_magic.host import Retry

    faults = devnode.config.faults
    faults.fail_routes = "/info$"
    faults.fail_requests = 8  # more than one retry streak of the client can absorb
    # The op runs until every failure was served (the test then lets it end).
    work = "while [ ! -e go ]; do sleep 0.05; done; echo done"
    job = ConfidentialJob(None, net, source=text(definition(op("a", work))),
                          timeout=60, retry=Retry(first=0.05, cap=0.1, attempts=4, total=5))
    job.start()
    _until(lambda: faults.fail_requests == 0 and job.phase == "running")
    assert job.address is not None and devnode.workdir is not None
    (devnode.workdir / job.address / "go").touch()
    job.wait(PATIENCE)
    assert job.ok, job._error_line()
    assert any(w.startswith("/info interrupted (resuming)") for w in job.warnings)
    assert job.ops["a"].logs[-1].text == "done"


def _run_with_info_dead(devnode: DevNode, net: ApiNetwork) -> ConfidentialJob:
    """A job whose host answers 500 on /info for good."""
    faults = devnode.config.faults
    faults.fail_routes, faults.fail_requests = "/info$", 10**6
    job = _run(net, definition(op("a", "echo 'loss=0.25'; echo oops >&2",
                                  results={"loss": "loss=([0-9.]+)"})))
    assert job.ok, job._error_line()
    assert job.results == {"loss": 0.25} and job.stdout == "loss=0.25" and job.stderr == "oops"
    assert not any("not collected" in error for error in (job.flow.errors if job.flow else []))
    return job


def test_results_are_collected_when_info_fails_for_good(devnode: DevNode,
                                                        net: ApiNetwork) -> None:
    """/log's line that the host resolves the results, /status, the results poll: any of
    them starts the collection inside the window."""
    _run_with_info_dead(devnode, net)


def test_results_are_collected_by_status_alone_when_info_and_log_fail(
    devnode: DevNode, net: ApiNetwork
) -> None:
    # /log is cut 3 frames into every replay: its end-of-run lines never arrive.
    devnode.config.faults.drop_ws_after_frames = 3
    job = _run_with_info_dead(devnode, net)
    assert not any(line.text.startswith("Waiting for the results") for line in job.node_logs)


def test_results_are_collected_by_polling_them_when_every_stream_fails(
    devnode: DevNode, net: ApiNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nosana_magic.host import HostClient, HostError

    async def no_status(self: HostClient) -> Any:
        raise HostError(self.base_url, "WS /status", "gave up", gave_up=True)
        yield  # (an async generator)

    monkeypatch.setattr(HostClient, "states", no_status, raising=False)
    devnode.config.faults.drop_ws_after_frames = 3
    job = _run_with_info_dead(devnode, net)
    assert any(w.startswith("/info failing (500") for w in job.warnings), job.warnings


def test_a_failure_while_running_stops_the_job_on_the_host_first(
    devnode: DevNode, net: ApiNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger's stop may not fit the cleanup's budget (Solana): the host's /stop does."""
    from nosana_magic.host import HostClient, HostError
    from nosana_magic.network.base import NetworkError

    send = HostClient.send_definition

    async def answer_lost(self: HostClient, body: bytes, *, timeout: float = 60.0) -> None:
        await send(self, body, timeout=timeout)  # the host has it and runs the ops...
        raise HostError(self.base_url, "POST /job-definition", "refused")  # ...we fail

    async def ledger_too_slow(address: str) -> None:
        raise NetworkError("local network: the stop transaction did not confirm")

    monkeypatch.setattr(HostClient, "send_definition", answer_lost)
    monkeypatch.setattr(net, "stop", ledger_too_slow)
    devnode.config.results_window = 1.0  # nobody collects: the ledger ends after the window
    job = _run(net, definition(op("a", "echo started; sleep 60")), wait=False)
    job.wait(30)
    assert job.status == "failed" and "refused" in str(job.error)
    assert f"job {job.address} was stopped after the failure" in job.warnings, job.warnings
    assert job.address is not None
    _until(lambda: devnode.job(job.address or "").state.done)


def test_stop_while_the_machine_is_finishing_is_a_no_op(
    devnode: DevNode, net: ApiNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() after the machine closed its host client (ending a failed, still RUNNING job)
    does nothing rather than hit the closed client."""
    import asyncio

    from nosana_magic.host import HostClient, HostError

    send, aclose = HostClient.send_definition, HostClient.aclose
    closed, release = threading.Event(), threading.Event()

    async def answer_lost(self: HostClient, body: bytes, *, timeout: float = 60.0) -> None:
        await send(self, body, timeout=timeout)
        raise HostError(self.base_url, "POST /job-definition", "refused")

    async def slow_close(self: HostClient) -> None:
        await aclose(self)
        closed.set()
        # The machine is still finishing, until the test has called stop() (bounded).
        deadline = time.monotonic() + PATIENCE
        while not release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    monkeypatch.setattr(HostClient, "send_definition", answer_lost)
    monkeypatch.setattr(HostClient, "aclose", slow_close)
    job = _run(net, definition(op("a", "echo started; sleep 60")), wait=False)
    assert closed.wait(PATIENCE)
    assert not job.done and job.state is JobState.RUNNING
    job.stop()  # no RuntimeError from the closed client
    release.set()
    job.wait(PATIENCE)
    assert job.status == "failed" and "refused" in str(job.error)


def test_interpreter_exit_with_a_running_job_is_prompt(tmp_path: Any) -> None:
    """A script that exits while its job runs: the job is stopped, nothing hangs; the local
    network service it started runs on."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "exit_while_running.py"
    script.write_text(
        "import time\n"
        "from nosana_magic import run_confidential\n"
        "from nosana_magic.settings import Settings\n"
        f"settings = Settings.from_env({{}}, data_dir={str(tmp_path)!r})\n"
        "job = run_confidential('{\"version\": \"0.1\", \"type\": \"container\", \"ops\": "
        "[{\"type\": \"container/run\", \"id\": \"a\", \"args\": {\"image\": \"x\", "
        "\"cmd\": \"echo up; sleep 60\"}}]}', settings=settings, wait=False,\n"
        "                       on_notice=print)\n"
        "while not any(line.text == 'up' for line in job.logs):\n"
        "    time.sleep(0.05)\n"
        "print('running', job.address, flush=True)\n"
    )
    root = Path(__file__).resolve().parents[1]
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120,
        cwd=root, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root),
                       "TMPDIR": os.environ.get("TMPDIR", "/tmp")},  # the session's
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Started the local Nosana network at http://127.0.0.1:")
    assert lines[1].startswith("running ")
    # Not the op's end (60 s): the exit stopped it. A slow machine may take a while to start.
    assert elapsed < 45
    # The job's processes do not outlive the script: it stopped the job as it exited.
    from nosana_magic.network.local import stop_local_service

    from .conftest import processes_of_jobs
    from .waiting import wait_until

    address = lines[1].split()[1]
    wait_until(lambda: not processes_of_jobs({address}), what="the job's processes gone")
    assert stop_local_service(Settings.from_env({}, data_dir=str(tmp_path))) is not None


def test_a_finished_jobs_log_is_read_back_from_the_store(
    devnode: DevNode, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its lines leave memory once the store has them; the handle reads them back, all."""
    from nosana_magic import joblog

    monkeypatch.setattr(joblog, "LOG_WINDOW", 500)  # a running job keeps its last 500
    settings = Settings.from_env({}, devnode_url=devnode.url, data_dir=str(tmp_path))
    job = run_confidential(definition(op("a", "seq 1 3000; echo oops >&2")),
                           settings=settings, timeout=300)
    assert job.ok, job.reason
    wait_until(lambda: "0 in memory" in repr(job.logs), what="the log left memory")
    assert [line.text for line in job.logs if line.container] == [
        *map(str, range(1, 3001)), "oops"]
    assert job.stdout.splitlines() == [str(i) for i in range(1, 3001)]
    assert job.stderr == "oops" and job.ops["a"].logs[-1].text == "oops"
    assert job.logs[-1].stream == "node" and len(job.logs[-5:]) == 5
    assert not any(entry.type in ("stdout", "stderr")  # kept once: in the log
                   for state in job.flow.op_states for entry in state.logs)
