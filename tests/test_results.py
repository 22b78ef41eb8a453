from __future__ import annotations

from typing import Any

import pytest

from nosana_magic.results import (
    FlowState,
    NodeLogEntry,
    NodeLogPending,
    ServiceEndpoint,
    final_status,
    regex_groups,
    result_matches,
)


def _op(op_id: str, status: str, exit_code: int | None = 0, **extra: Any) -> dict[str, Any]:
    return {"operationId": op_id, "status": status, "exitCode": exit_code, **extra}


def _flow(*ops: dict[str, Any], status: str = "waiting-for-result", **extra: Any) -> FlowState:
    return FlowState.model_validate(
        {"status": status, "startTime": 1, "endTime": 2, "opStates": list(ops), **extra}
    )


EXPIRED = {"reason": {"hostShutDown": False, "jobStopped": False, "jobExpired": True}}


@pytest.mark.parametrize(
    ("flow", "reported", "expected"),
    [
        (_flow(_op("a", "success"), _op("b", "success")), None, "success"),
        (_flow(_op("a", "success"), _op("b", "failed", 3)), None, "failed"),
        # The host leaves an op "success" with a non-zero exit code in some paths.
        (_flow(_op("a", "success", 1)), None, "failed"),
        (_flow(_op("a", "success"), _op("b", "stopped", None)), None, "stopped"),
        (_flow(errors=[[{"path": "$input.ops", "expected": "Array"}]]), None, "validation-error"),
        (_flow(), None, "success"),
        # Cut short by the timeout: "success" on the host, whatever the exit codes.
        (_flow(_op("a", "success", 0, diagnostics=EXPIRED)), None, "expired"),
        (_flow(_op("a", "success", 143, diagnostics=EXPIRED)), None, "expired"),
        # A final status the host said before the results window wins ...
        (_flow(_op("a", "success")), "validation-error", "validation-error"),
        # ... and the blank public result keeps the original status.
        (_flow(status="failed"), None, "failed"),
        # Still running or waiting statuses never count as final.
        (_flow(_op("a", "success")), "running", "success"),
    ],
)
def test_final_status(flow: FlowState, reported: str | None, expected: str) -> None:
    assert final_status(flow, reported=reported) == expected


def test_models_read_camel_case_and_ignore_new_fields() -> None:
    flow = FlowState.model_validate({
        "status": "success", "startTime": 1, "endTime": 2, "futureField": {"x": 1},
        "opStates": [_op("train", "success", logs=[
            {"log": "hi\n", "type": "stdout", "timestamp": "2026-11-22T00:00:00Z"}
        ], results={"loss": "0.5"}, newOpField=1)],
    })
    op = flow.op_states[0]
    assert (op.operation_id, op.exit_code, op.results) == ("train", 0, {"loss": "0.5"})
    assert op.logs[0].log == "hi\n"
    wire = flow.to_wire()
    assert wire["opStates"][0]["operationId"] == "train" and "futureField" not in wire


def test_endpoints_and_node_log_entries() -> None:
    url = {"opID": "web", "port": 80, "url": "https://abc.x", "status": "ONLINE"}
    endpoint = ServiceEndpoint.model_validate(url)
    assert endpoint.op_id == "web" and endpoint.status == "ONLINE"
    entry = NodeLogEntry.model_validate({"log": "x", "type": "log", "timestamp": 5, "extra": 1})
    assert (entry.log, entry.type, entry.timestamp) == ("x", "log", 5)


# ---------------------------------------------------------------------- what Nosana hosts send


def test_node_log_entries_of_every_shape_a_host_sends() -> None:
    # A progress line: pending is an object; a container line: no payload, no pending.
    process = NodeLogEntry.model_validate_json(
        '{"method":"JobExternalUtil.validate","job":"J","log":"Validating job definition",'
        '"timestamp":1,"type":"process","pending":{"isPending":true,'
        '"expecting":"JobExternalUtil.validate"}}')
    assert isinstance(process.pending, NodeLogPending)
    assert (process.pending.is_pending, process.pending.expecting) == (
        True, "JobExternalUtil.validate")
    line = NodeLogEntry.model_validate_json(
        '{"method":"NodeRepository.displayLog","job":"J","log":"hi\\n","timestamp":2,"type":"log"}')
    assert (line.log, line.payload, line.pending) == ("hi\n", None, None)
    # Lines outside a job have no job; progress bars carry their own payload.
    bar = NodeLogEntry.model_validate({"method": "ProgressBarReporter.update", "log": "",
                                       "timestamp": 3, "type": "process-bar-update",
                                       "payload": {"current": 5, "payload": {}}})
    assert bar.job is None and bar.payload == {"current": 5, "payload": {}}
    # What older devnodes sent still reads.
    old = NodeLogEntry.model_validate({"log": "x", "type": "info", "pending": False,
                                       "payload": {"opId": "a", "stream": "stdout"}})
    assert old.pending is False and old.payload == {"opId": "a", "stream": "stdout"}
    assert process.to_wire()["pending"] == {"isPending": True,
                                            "expecting": "JobExternalUtil.validate"}


def test_results_values_of_the_real_shape_read() -> None:
    flow = FlowState.model_validate({"status": "waiting-for-result", "opStates": [
        _op("a", "success", results={"loss": ["loss=0.5", "0.5", "loss=0.25", "0.25"],
                                     "none": [], "opt": ["x", None],
                                     "bad": "SyntaxError: Invalid regular expression"})]})
    assert flow.op_states[0].results == {
        "loss": ["loss=0.5", "0.5", "loss=0.25", "0.25"], "none": [], "opt": ["x", None],
        "bad": "SyntaxError: Invalid regular expression"}


@pytest.mark.parametrize(
    ("pattern", "groups"),
    [
        (r"loss=([0-9.]+)", 1),
        (r"acc=[\d.]+", 0),
        (r"(a)(b(c))", 3),
        (r"(?:a)(?=b)(?!c)(?<=d)(?<!e)", 0),
        (r"(?<name>\d+)-(\w+)", 2),
        (r"\(not a group\)", 0),
        (r"[(]x[)]", 0),
        (r"[\]()](y)", 1),
    ],
)
def test_regex_groups_counts_as_javascript_does(pattern: str, groups: int) -> None:
    assert regex_groups(pattern) == groups


def test_results_regexes_read_javascripts_end_anchor_and_named_groups() -> None:
    from nosana_magic.jsregex import to_python

    # JavaScript's $ never matches before a final newline, and log entries end in one.
    assert to_python(r"loss=([0-9.]+)$").search("loss=0.25\n") is None
    assert to_python(r"loss=([0-9.]+)$").search("loss=0.25") is not None
    assert to_python(r"[$]\$").search("$$") is not None
    match = to_python(r"(?<step>\d+)/(?<total>\d+)").search("step 3/10")
    assert match is not None and match.groups() == ("3", "10")  # in order, as JavaScript


@pytest.mark.parametrize(
    ("value", "groups", "matches"),
    [
        (["loss=0.5", "0.5", "loss=0.25", "0.25"], 1, [["loss=0.5", "0.5"], ["loss=0.25", "0.25"]]),
        (["acc=0.9", "acc=0.8"], 0, [["acc=0.9"], ["acc=0.8"]]),
        (["a-1", "a", "1"], 2, [["a-1", "a", "1"]]),
        (["x", None], 1, [["x", None]]),
        ([], 1, []),
        ("SyntaxError: Invalid regular expression", 1, []),
        (None, 1, []),
        (["odd", "one", "out"], 1, [["odd", "one", "out"]]),  # not a multiple: one match
    ],
)
def test_result_matches_cuts_the_list_per_line(value: Any, groups: int,
                                               matches: list[list[str | None]]) -> None:
    assert result_matches(value, groups) == matches
def test_service_urls_are_made_in_one_place_with_the_private_rule() -> None:
    from nosana_magic.results import ServiceUrl

    private = ServiceUrl.of("p" * 45, url="https://p.x", port=8000, op_id="web", status="ONLINE")
    public = ServiceUrl.of("q" * 44, url="https://q.x", port=80, op_id="api", status="weird")
    assert (private.private, private.status) == (True, "ONLINE")
    assert (public.private, public.status) == (False, "UNKNOWN")


def test_log_lines_from_an_ops_results_log() -> None:
    from nosana_magic.results import LogLine, OpLog

    stdout = OpLog(log="hi there\n", type="stdout", timestamp=1500)
    other = OpLog(log="boom\r\n", type="nodeerr", timestamp="2024-01-02T03:04:05Z")
    coloured = OpLog(log="\x1b[31mred\x1b[0m\n", type="stderr", timestamp="2024-01-02T03:04:05Z")
    first, line, red = LogLine.from_op_logs("a", [stdout, other, coloured])
    assert first == LogLine("a", "stdout", "hi there", 1.5)
    assert (line.stream, line.text, line.timestamp) == ("stderr", "boom", 1704164645.0)
    assert (red.stream, red.text, red.timestamp) == ("stderr", "red", 1704164645.0)
