"""What hosts return: FlowState, op states, log entries, service URLs, the final status.

These models *ignore* unknown fields: hosts add fields over time and a client must not break
on them. Attributes are snake_case; the wire's camelCase names are aliases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "EndpointStatus",
    "Endpoints",
    "FlowState",
    "InfoEvent",
    "NodeLogEntry",
    "OpLog",
    "OpState",
    "ServiceEndpoint",
    "ServiceUrl",
    "final_status",
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
    results: dict[str, str | list[str]] | None = None


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


class NodeLogEntry(_Wire):
    """One entry of the ``/log`` WebSocket stream (``type: "log"`` is container output)."""

    log: str = ""
    method: str | None = None
    type: str = "info"
    pending: bool | None = None
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


class Endpoints(BaseModel):
    """The body of ``GET /job/{id}/endpoints``."""

    model_config = ConfigDict(extra="ignore")

    urls: dict[str, ServiceEndpoint] = Field(default_factory=dict)
    status: Literal["ONLINE", "OFFLINE"] = "OFFLINE"


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
