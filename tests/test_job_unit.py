"""ConfidentialJob's pure parts: results extraction, URLs, messages, reprs (no server)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pytest

from nosana_magic.job import (
    ConfidentialJob,
    JobFailed,
    JobNotFound,
    JobStopped,
    LogLine,
    OpResult,
    find_job,
)
from nosana_magic.network.base import JobInfo, JobState, Market
from nosana_magic.outcome import _decode, _validation_summary
from nosana_magic.results import FlowState, InfoEvent, NodeLogEntry, ServiceUrl, _timestamp_s
from nosana_magic.results import urls_from_secrets as _urls_from_secrets
from nosana_magic.secrets import Redactor
from nosana_magic.wallet import Wallet


class _Net:
    """Just enough of a Network for a handle that is never started."""

    name = "local"

    def __init__(self) -> None:
        self.wallet = Wallet.generate()

    def service_domain(self) -> str | None:
        return None


def _job(**kw: Any) -> ConfidentialJob:
    return ConfidentialJob(None, _Net(), **kw)  # type: ignore[arg-type]


def _done(job: ConfidentialJob) -> None:
    job.phase = "done"


def _reported(job: ConfidentialJob, status: str) -> None:
    """The host's last /info event said ``status``, with its ``endTime``."""
    job._info = InfoEvent.model_validate({"status": status, "endTime": 2})


def _flow(**kw: Any) -> FlowState:
    return FlowState.model_validate({"status": "waiting-for-result", "startTime": 1,
                                     "endTime": 2, **kw})


def test_decode_results_values() -> None:
    assert _decode("0.93") == 0.93
    assert _decode('{"acc": 1}') == {"acc": 1}
    assert _decode("cat") == "cat"
    assert _decode(["1", "x", "true"]) == [1, "x", True]


def test_timestamps_from_docker_iso_and_ms() -> None:
    stamp = _timestamp_s("2024-01-02T03:04:05.123456789Z")
    want = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc).timestamp()
    assert stamp == pytest.approx(want)
    assert _timestamp_s(1_700_000_000_500) == 1_700_000_000.5
    for unknown in (None, "not a date"):  # now: between two readings of the clock
        before = time.time()
        assert before <= _timestamp_s(unknown) <= time.time()


def test_urls_from_the_flows_secrets() -> None:
    private_id, public_id = "p" * 45, "q" * 44
    secrets = {
        "JOB": {
            private_id: {"opID": "web", "port": 8000, "url": "http://h/p", "status": "ONLINE"},
            public_id: {"opID": "api", "port": 80, "url": "http://h/q", "status": "weird"},
            "bad": "not a service",
        },
        "urlmode": "private",
    }
    urls = _urls_from_secrets(secrets, "JOB")
    assert urls == [
        ServiceUrl("http://h/p", 8000, "web", True, "ONLINE", private_id),
        ServiceUrl("http://h/q", 80, "api", False, "UNKNOWN", public_id),
    ]
    assert _urls_from_secrets({}, "JOB") == [] and _urls_from_secrets(secrets, "OTHER") == []


def test_validation_summary_never_shows_values() -> None:
    errors = [[
        {"path": "$input.ops[0].args.image", "expected": "string", "value": "hf_SECRET"},
        {"path": "$input.ops[0].args.gpu", "expected": "boolean", "value": 3},
        {"path": "$input.meta", "expected": "object", "value": None},
        {"path": "$input.global", "expected": "object", "value": None},
    ]]
    summary = _validation_summary(errors)
    assert summary == ("ops[0].args.image: expected string; ops[0].args.gpu: expected boolean; "
                       "meta: expected object (+1 more)")
    assert "SECRET" not in summary


def test_results_per_op_and_merged_with_clashes_qualified() -> None:
    job = _job(address="JOB")
    job._redactor = Redactor({"TOKEN": "tok-value-123"})
    _reported(job, "success")  # a host's "success" does not hide a failed op
    flow = _flow(opStates=[
        {"operationId": "a", "status": "success", "exitCode": 0,
         "results": {"loss": ["loss=0.5", "0.5"], "tag": ["tag=x", "x", "tag=2", "2"]},
         "logs": [{"log": "hi tok-value-123\n", "type": "stdout",
                   "timestamp": "2024-01-02T03:04:05.000000001Z"},
                  {"log": "oops\n", "type": "nodeerr", "timestamp": None}]},
        {"operationId": "b", "status": "failed", "exitCode": 1,
         "results": {"loss": ["loss=0.7", "0.7"], "acc": []}},
    ])
    job._machine._take_flow(flow, {"a": {"loss": 1, "tag": 1}, "b": {"loss": 1, "acc": 1}})
    _done(job)
    assert job.status == "failed"
    # The last match's first group, JSON-decoded; every match by .all and .matches; a
    # pattern that matched nothing has no value.
    assert job.results == {"a.loss": 0.5, "b.loss": 0.7, "tag": 2}
    assert job.results.all("tag") == ["x", 2] and job.results.all("acc") == []
    assert job.matches["tag"] == [["tag=x", "x"], ["tag=2", "2"]] and job.matches["acc"] == []
    a = job.ops["a"]
    assert a.results == {"loss": 0.5, "tag": 2}
    assert [(line.stream, line.text) for line in a.logs] == [
        ("stdout", "hi [secret:TOKEN]"), ("stderr", "oops")
    ]
    assert a.stdout == "hi [secret:TOKEN]" and a.stderr == "oops"
    assert job.flow is not None and "tok-value-123" not in job.flow.model_dump_json()
    with pytest.raises(JobFailed, match=r"^job JOB failed: op b exited with 1$"):
        job.raise_for_status()


def test_reported_specific_status_wins() -> None:
    job = _job(address="JOB")
    _reported(job, "validation-error")
    job._machine._take_flow(_flow(errors=[[{"path": "$input.ops", "expected": "array"}]]))
    _done(job)
    assert job.status == "failed" and job.host_status == "validation-error"
    with pytest.raises(JobFailed) as info:
        job.raise_for_status()
    assert str(info.value) == (
        "job JOB failed: the host rejected the job definition: ops: expected array"
    )


def test_log_lines_from_node_entries() -> None:
    redact = Redactor({"T": "secret-value"}).redact
    container = NodeLogEntry(log="x secret-value\n", type="log", timestamp=1500,
                             payload={"opId": "a", "stream": "stderr"})
    node = NodeLogEntry(log="Job definition received", type="success", timestamp=2000)
    assert LogLine.from_log_entry(container, redact) == LogLine("a", "stderr", "x [secret:T]", 1.5)
    assert LogLine.from_log_entry(node, redact) == LogLine(None, "node", "Job definition received",
                                                           2.0)
    bare = NodeLogEntry(log="plain\r\n", type="log", timestamp=None)
    line = LogLine.from_log_entry(bare, redact)
    assert line.stream == "output" and line.text == "plain" and line.op_id is None


def test_repr_html_and_messages() -> None:
    job = _job()
    assert repr(job) == "<ConfidentialJob (not listed) validating>"
    job.address = "7xKXabcdefq3"
    job.market = Market(address="M", slug="local-gpu", price_per_second=115)
    job.ledger = JobInfo(address="7xKXabcdefq3", state=JobState.RUNNING)
    job.phase = "running"
    job.node = "9fNode"
    job.price = 115 / 1e6
    job.started_at = time.time() - 5
    job.urls = [ServiceUrl('http://h/"><script>', 80, "web", True)]
    assert repr(job) == "<ConfidentialJob 7xKX…efq3 local-gpu running node 9fNode>"
    html = job._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "(private)" in html and "at most" in html
    # A running job's table is a snapshot (notebooks save it as the cell's output).
    assert "as of" in html and "while the job ran" in html
    assert job.cost == pytest.approx(115 / 1e6 * 1800)
    # Done: the real cost from the ledger's times.
    job.ledger = JobInfo(address="7xKXabcdefq3", state=JobState.COMPLETED, time_start=100,
                         time_end=160, price=115)
    _done(job)
    job._stop_requested = True
    assert job.cost == pytest.approx(60 * 115 / 1e6)
    with pytest.raises(JobStopped, match=r"^job 7xKXabcdefq3 stopped$"):
        job.raise_for_status()
    assert "as of" not in job._repr_html_()


def test_op_result_record() -> None:
    line = LogLine("a", "stdout", "hello", 1.0)
    result = OpResult("a", "success", 0, [line], {"x": 1})
    assert result.stdout == "hello" and str(line) == "hello"


def test_find_job_needs_a_unique_prefix() -> None:
    with pytest.raises(JobNotFound, match="no job reference"):
        find_job(" ")
    with pytest.raises(JobNotFound, match="no job of this session matches 'zzzz-none'"):
        find_job("zzzz-none")


def test_wait_on_an_unstarted_handle_times_out() -> None:
    job = _job()
    with pytest.raises(TimeoutError, match=r"still validating after 0\.05 s"):
        job.wait(0.05)
    assert job.raise_for_status() is job  # not done: nothing to raise


def test_stream_retry_bound_follows_an_extension() -> None:
    import asyncio

    import nosana_magic.machine as machine_module
    from nosana_magic.host import Backoff, Retry

    job = _job(timeout=100)
    job.started_at = time.time()
    base = 100 + machine_module.EXPIRY_MARGIN_S
    # The bounds count from the job's start: whatever time passed since is off them, exactly.
    streams = machine_module.HostStreams(job, Retry())
    total = streams._stream_retry().total
    assert base - (time.time() - job.started_at) <= total <= base
    resume = Backoff(Retry(first=0.001, cap=0.001, attempts=100_000), total=base)
    resume.started -= base + 1  # a loop whose original bound is over...
    job.timeout += 3600  # ...of a job that was extended meanwhile
    assert asyncio.run(streams._resume(resume)) is True
    remaining = resume.remaining  # until the new expiry and margin
    spent = time.time() - job.started_at  # (0.01: the loop's clock is not the wall clock)
    assert base + 3600 - spent - 0.01 <= remaining <= base + 3600 + 0.01


EXPIRED = {"reason": {"jobExpired": True, "jobStopped": False, "hostShutDown": False}}


def _op(status: str, exit_code: int | None, diagnostics: dict[str, Any] | None = None,
        op_id: str = "a") -> dict[str, Any]:
    return {"operationId": op_id, "status": status, "exitCode": exit_code, "startTime": 1,
            "endTime": 2, "diagnostics": diagnostics}


@pytest.mark.parametrize(("ops", "stopped_by_you", "word", "op_word"), [
    # A host ends a job stopped through its API as an expiry: with our stop, it is "stopped".
    ([_op("success", 143, EXPIRED)], True, "stopped", "stopped"),
    ([_op("success", 143, EXPIRED)], False, "expired", "expired"),
    # Stopped, but it had finished on its own first.
    ([_op("success", 0)], True, "succeeded", "succeeded"),
    ([_op("failed", 3)], True, "failed", "failed"),
    # A stop that killed the process, without the host's diagnostics.
    ([_op("failed", 137)], True, "stopped", "stopped"),
    ([_op("failed", 1, {"reason": {"hostShutDown": True}})], False, "lost", "lost"),
    ([_op("stopped", None, {"reason": {"jobStopped": True}})], False, "stopped", "stopped"),
    ([_op("success", 0), _op("success", 3, op_id="b")], False, "failed", "succeeded"),
])
def test_the_verdict_is_worked_out_from_the_facts(
        ops: list[dict[str, Any]], stopped_by_you: bool, word: str, op_word: str) -> None:
    job = _job(address="JOB")
    job.node = "Node"
    job._stop_requested = stopped_by_you
    _reported(job, "success")
    job._machine._take_flow(_flow(opStates=ops))
    assert job.status == ("stopping" if stopped_by_you else "validating")  # not done yet
    _done(job)
    assert job.status == word and job.ok is (word == "succeeded")
    assert job.ops["a"].status == op_word
    assert job.host_status == "success"  # the host's own word, whatever the verdict


def test_the_verdict_without_results() -> None:
    from nosana_magic.host import HostError
    from nosana_magic.job import JobLost

    delisted = _job(address="JOB")
    _done(delisted)
    assert delisted.status == "stopped"  # no host ever took it: stopped on the ledger
    quit_host = _job(address="JOB")
    quit_host.node = "Node"
    quit_host.ledger = JobInfo(address="JOB", state=JobState.STOPPED)
    _done(quit_host)
    assert quit_host.status == "lost" and "the host quit" in quit_host.reason
    for error, word in ((JobLost("lost track of job JOB: 502"), "lost"),
                        (HostError("h", "GET /x", "down", gave_up=True), "lost"),
                        (HostError("h", "POST /x", "refused", status=400), "failed"),
                        (JobFailed("the local network has no market"), "failed")):
        job = _job(address="JOB")
        job.error = error
        _done(job)
        assert job.status == word, error


def test_results_copy_and_pickle_as_plain_dicts() -> None:
    import copy
    import pickle

    from nosana_magic.job import MissingResult

    job = _job(address="JOB")
    job._machine._take_flow(_flow(opStates=[
        _op("success", 0) | {"results": {"loss": ["loss=0.5", "0.5"]}}]))
    _done(job)
    for copied in (copy.deepcopy(job.results), pickle.loads(pickle.dumps(job.results)),
                   copy.copy(job.results)):
        assert type(copied) is dict and copied == {"loss": 0.5}
    with pytest.raises(MissingResult, match=r"^no result 'acc' in job JOB: its results are loss$"):
        job.results["acc"]


def test_result_is_a_deprecated_alias_of_flow() -> None:
    job = _job(address="JOB")
    job._machine._take_flow(_flow(opStates=[_op("success", 0)]))
    with pytest.warns(DeprecationWarning, match=r"use \.flow"):
        assert job.result is job.flow
    assert job.flow is not None and job.flow.op_states[0].operation_id == "a"


def test_what_is_kept_private_is_one_value() -> None:
    from nosana_magic.job import run_confidential

    assert _job().private == "both"
    assert _job(private="input").private == "input"
    for wrong in ("everything", True):
        with pytest.raises(JobFailed, match=r"^private: expected 'both', 'input' or 'results'"):
            run_confidential("{}", private=wrong)  # type: ignore[arg-type]


def test_help_lists_every_public_attribute_with_one_line() -> None:
    import pydoc
    import textwrap

    job = _job(address="JOB")
    public = {name for name in vars(job) if not name.startswith("_")}
    public |= {name for cls in ConfidentialJob.__mro__ for name, value in vars(cls).items()
               if isinstance(value, property) and not name.startswith("_")}
    assert {"address", "status", "phase", "results", "urls", "ops", "logs", "flow"} <= public
    section = textwrap.dedent((ConfidentialJob.__doc__ or "").split("Attributes:\n")[1])
    lines = [line for line in section.splitlines() if line]
    assert not any(line.startswith(" ") for line in lines)  # one line each
    entries = [line.split(maxsplit=1) for line in lines]
    assert {name for name, _ in entries} == public
    assert all(len(words) == 2 and words[1].strip() for words in entries)
    shown = pydoc.render_doc(ConfidentialJob, renderer=pydoc.plaintext)
    for name, line in entries:
        assert f"{name}" in shown and line.strip() in shown


def test_the_handle_settles_one_future() -> None:
    import asyncio
    import concurrent.futures

    job = _job(address="JOB")
    heard: list[ConfidentialJob] = []
    job.add_done_callback(heard.append)
    assert not job.future.cancel()  # running from the start: a wait cannot cancel the job
    with pytest.raises(TimeoutError, match=r"still validating after 0\.05 s"):
        asyncio.run(job.wait_async(0.05))
    assert not job.future.done() and heard == []
    job._settle()
    assert job.done and job.future.result(0) is job and heard == [job]
    assert concurrent.futures.wait([job.future], 0).done == {job.future}
    assert asyncio.run(job.wait_async(1)) is job and job.wait(1) is job
    later: list[ConfidentialJob] = []
    job.add_done_callback(later.append)  # done already: called at once
    assert later == [job]
