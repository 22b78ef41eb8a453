from __future__ import annotations

from typing import Any

import pytest

from nosana_magic.results import FlowState, NodeLogEntry, ServiceEndpoint, final_status


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


def test_service_urls_are_made_in_one_place_with_the_private_rule() -> None:
    from nosana_magic.results import ServiceUrl

    private = ServiceUrl.of("p" * 45, url="https://p.x", port=8000, op_id="web", status="ONLINE")
    public = ServiceUrl.of("q" * 44, url="https://q.x", port=80, op_id="api", status="weird")
    assert (private.private, private.status) == (True, "ONLINE")
    assert (public.private, public.status) == (False, "UNKNOWN")


def test_log_lines_from_an_ops_results_log() -> None:
    from nosana_magic.results import LogLine, OpLog

    stdout = OpLog(log="hi secret\n", type="stdout", timestamp=1500)
    other = OpLog(log="boom\r\n", type="nodeerr", timestamp="2024-01-02T03:04:05Z")
    assert LogLine.from_op_log("a", stdout, lambda text: text.replace("secret", "[s]")) == (
        LogLine("a", "stdout", "hi [s]", 1.5))
    line = LogLine.from_op_log("a", other)
    assert (line.stream, line.text, line.timestamp) == ("stderr", "boom", 1704164645.0)
