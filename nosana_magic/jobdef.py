"""Nosana job definitions (v0.1): pydantic models, located validation errors, the placeholder.

The models follow ``@nosana/types`` 2.1.6, whose verdicts current hosts use (where it and SDK
0.4.69 disagree, types wins): every object rejects unknown keys except ``meta`` and the
string maps, booleans must be JSON booleans, and strings JSON strings.

Errors are for people reading a notebook: each one is located (``line 7, column 12:
ops[0].args.image: field required``), unions report only the branch the input was evidently
meant to be (ops by ``type``, expose items by JSON type, resources and health checks by
``type``), and no message ever contains a string *value* from the definition, since it may be a
secret. All problems are collected, not only the first.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    PrivateAttr,
    Tag,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from .errors import JobDefinitionError
from .jsonc import (
    JsoncDocument,
    JsoncError,
    JsonPath,
    Problem,
    format_path,
    json_type_name,
    parse_jsonc,
    typia_path,
)
from .jsregex import RegexError, check_pattern
from .secrets import (
    Redactor,
    Reference,
    ResolvedDefinition,
    SecretError,
    find_references,
    looks_like_token,
    resolve_references,
    token_name,
)
from .settings import reference_env

__all__ = [
    "MAX_BODY_BYTES",
    "PLACEHOLDER",
    "JobDefinition",
    "JobDefinitionError",
    "Problem",
    "check_body_size",
    "parse_job_definition",
    "validate_job_definition",
]

MAX_BODY_BYTES = 100 * 1024
"""express/body-parser's default ``"100kb"`` limit on the host's JSON routes, in bytes."""

PLACEHOLDER: dict[str, Any] = {
    "version": "0.1",
    "type": "container",
    "meta": {"trigger": "cli"},
    "logistics": {
        "send": {"type": "api-listen", "args": {}},
        "receive": {"type": "api-listen", "args": {}},
    },
    "ops": [],
}
"""The Nosana CLI's public placeholder for confidential jobs (``privateBlankJobDefintion``)."""

_LITERAL = re.compile(r"^%%(ops|global)\.[^%]+%%$")
#: A port written as a notebook variable: the whole string is one ``${var:NAME}`` reference,
#: replaced by the variable's number when the definition is resolved.
_PORT_VARIABLE = re.compile(r"^\$\{var:[A-Za-z_][A-Za-z0-9_]*\}$")
_RANGE = re.compile(r"^[0-9]+-[0-9]+$")
# Resource keys that hold credentials, and how to name them in a message.
_PUBLIC_SECRETS = (("IAM", "S3 credentials"), ("accessToken", "an access token"))
# Union branches are tagged with a NUL prefix, so their tags can be dropped from error paths.
_T = "\x00"


def check_body_size(body: bytes) -> None:
    """Refuse a body larger than a Nosana host accepts (the resolved body, as it will be sent)."""
    if len(body) > MAX_BODY_BYTES:
        raise JobDefinitionError([Problem(
            1, 1, "", f"job definition is {len(body):,} bytes; Nosana hosts accept at most "
            f"{MAX_BODY_BYTES:,}", "$input")])


# --------------------------------------------------------------------------------------------
# Leaf validators. They replace pydantic's own checks so messages say "expected a string, got
# number" (JSON vocabulary, never the value) and so JSON types are strict: true is not 1.


class _JsonNull:
    """Stands in for an explicit JSON ``null`` in an optional field."""

    def __repr__(self) -> str:
        return "null"


_NULL = _JsonNull()
_V = TypeVar("_V")
# An optional field may be absent, but not null (typia: `T | undefined`). pydantic would take
# None for "absent", so null is swapped for a sentinel that the field's own type then rejects.
Opt = Annotated[_V | None, BeforeValidator(lambda v: _NULL if v is None else v)]


def _type_name(value: object) -> str:
    return "null" if isinstance(value, _JsonNull) else json_type_name(value)


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("nosana", "{m}", {"m": message})


def _fail(expected: str, hint: Callable[[object], str] | None = None) -> Callable[[object], Any]:
    def fail(value: object) -> NoReturn:
        extra = hint(value) if hint else ""
        raise _error(f"expected {expected}, got {_type_name(value)}{extra}")
    return fail


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise _error(f"expected a string, got {_type_name(value)}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _error(f"expected a boolean (true or false), got {_type_name(value)}")
    return value


def _number(value: object) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error(f"expected a number, got {_type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _error("expected a finite number")
    return value


def _one_of(*choices: str) -> Callable[[object], Any]:
    expected = (f'"{choices[0]}"' if len(choices) == 1
                else "one of " + ", ".join(f'"{c}"' for c in choices))

    def check(value: object) -> str:
        if not isinstance(value, str):
            raise _error(f"expected {expected}, got {_type_name(value)}")
        if value not in choices:
            raise _error(f"expected {expected}")
        return value
    return check


def _literal_string(what: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        text = _str(value)
        if _LITERAL.match(text) or (what == "port" and _PORT_VARIABLE.match(text)):
            return text
        if what == "port" and _RANGE.match(text):
            raise _error('port ranges ("start-end") are not accepted by current Nosana '
                         "validators; list the ports instead")
        if what == "port" and text.strip().isdigit():
            raise _error("expected a port number, got string (write the port without quotes)")
        prefix = "a port number, a ${var:NAME} or " if what == "port" else ""
        raise _error(f"expected {prefix}a literal like %%ops.<id>.<name>%% or "
                     "%%global.<name>%%")
    return check


def _port_number(value: object) -> int | float | str:
    """An exposed port object's ``port``: a number, or (ours) a whole ``${var:NAME}``."""
    if isinstance(value, str):
        if _PORT_VARIABLE.match(value):
            return value
        hint = " (write the port without quotes)" if value.strip().isdigit() else ""
        raise _error(f"expected a port number or a ${{var:NAME}}, got string{hint}")
    return _number(value)


def _op_id(value: object) -> str:
    text = _str(value)
    if " " in text:
        raise _error("op id must not contain spaces")
    return text


def _log_types(value: list[str]) -> list[str]:
    if not 1 <= len(value) <= 4 or len(set(value)) != len(value):
        raise _error("expected 1 to 4 distinct log types")
    return value


Str = Annotated[str, PlainValidator(_str)]
Bool = Annotated[bool, PlainValidator(_bool)]
Number = Annotated[int | float, PlainValidator(_number)]
OpId = Annotated[str, PlainValidator(_op_id)]
PortLiteral = Annotated[str, PlainValidator(_literal_string("port"))]
PlaceholderLiteral = Annotated[str, PlainValidator(_literal_string("spread"))]
ServiceType = Annotated[Literal["web", "api", "webapi", "websocket", "none"],
                        PlainValidator(_one_of("web", "api", "webapi", "websocket", "none"))]
LogType = Annotated[Literal["stdin", "stdout", "stderr", "nodeerr"],
                    PlainValidator(_one_of("stdin", "stdout", "stderr", "nodeerr"))]
RemoveIfEmpty = Annotated[Literal["__remove-if-empty__"],
                          PlainValidator(_one_of("__remove-if-empty__"))]


def _kind(value: object) -> str:
    """JSON type of an input, or the class name of an already-built model (on serialization)."""
    if isinstance(value, BaseModel):
        return type(value).__name__
    return _type_name(value)


def _tag_json_type(value: object) -> str:
    return _T + _kind(value)


StrOrNumber = Annotated[
    Annotated[Str, Tag(_T + "string")]
    | Annotated[Number, Tag(_T + "number")]
    | Annotated[object, PlainValidator(_fail("a string or a number")), Tag(_T + "bad")],
    Discriminator(lambda v: _tag_json_type(v) if _kind(v) in ("string", "number") else _T + "bad"),
]
StrOrStrList = Annotated[
    Annotated[Str, Tag(_T + "string")]
    | Annotated[list[Str], Tag(_T + "array")]
    | Annotated[object, PlainValidator(_fail("a string or an array of strings")), Tag(_T + "bad")],
    Discriminator(lambda v: _tag_json_type(v) if _kind(v) in ("string", "array") else _T + "bad"),
]


class _Model(BaseModel):
    # Only the wire names (aliases) are accepted: Nosana rejects `allow_write` for `allowWrite`,
    # so validating by attribute name (populate_by_name) would accept definitions hosts refuse.
    model_config = ConfigDict(extra="forbid", strict=True, validate_by_alias=True,
                              validate_by_name=False, serialize_by_alias=True)


# --------------------------------------------------------------------------------------------
# logistics, meta, global


class LogisticArgs(_Model):
    """``logistics.send.args`` / ``logistics.receive.args``."""

    endpoint: Opt[Str] = None


class Logistic(_Model):
    """How the host gets the definition (``send``) or returns results (``receive``)."""

    type: Annotated[Literal["api", "api-listen"], PlainValidator(_one_of("api", "api-listen"))]
    args: LogisticArgs


class Logistics(_Model):
    """``logistics``: both sides are required by ``@nosana/types``."""

    send: Logistic
    receive: Logistic


MetaLeaf = Annotated[
    Annotated[Str, Tag(_T + "string")]
    | Annotated[Number, Tag(_T + "number")]
    | Annotated[list[StrOrNumber], Tag(_T + "array")]
    | Annotated[object, PlainValidator(_fail("a string, a number or an array of those")),
                Tag(_T + "bad")],
    Discriminator(lambda v: _tag_json_type(v) if _kind(v) in ("string", "number", "array")
                  else _T + "bad"),
]
MetaValue = Annotated[
    Annotated[MetaLeaf, Tag(_T + "leaf")]
    | Annotated[dict[str, MetaLeaf], Tag(_T + "object")],
    Discriminator(lambda v: _T + "object" if _kind(v) == "object" else _T + "leaf"),
]


class Meta(_Model):
    """``meta``: free-form, but other keys hold strings, numbers, arrays or one-level records."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, MetaValue] = Field(init=False)

    trigger: Opt[Str] = None
    system_resources: Opt[dict[str, StrOrNumber]] = None


class Global(_Model):
    """``global``: defaults the host applies to every op."""

    image: Opt[Str] = None
    gpu: Opt[Bool] = None
    entrypoint: Opt[StrOrStrList] = None
    env: Opt[dict[str, Str]] = None
    work_dir: Opt[Str] = None
    variables: Opt[dict[str, Str]] = None


# --------------------------------------------------------------------------------------------
# expose


class HttpHealthCheck(_Model):
    """An HTTP health check of an exposed port. ``continuous`` is required by the validators."""

    type: Annotated[Literal["http"], PlainValidator(_one_of("http", "websocket"))]
    path: Str
    method: Annotated[Literal["GET", "POST", "PUT", "DELETE"],
                      PlainValidator(_one_of("GET", "POST", "PUT", "DELETE"))]
    expected_status: Number
    headers: Opt[dict[str, Str]] = None
    body: Any = None
    continuous: Bool


class WebSocketHealthCheck(_Model):
    """A WebSocket health check of an exposed port."""

    type: Annotated[Literal["websocket"], PlainValidator(_one_of("http", "websocket"))]
    expected_response: Str
    continuous: Bool


class _UnknownHealthCheck(BaseModel):
    # Reports only the bad `type` of a health check, not the fields of a guessed branch.
    model_config = ConfigDict(extra="allow", strict=True)
    type: Annotated[str, PlainValidator(_one_of("http", "websocket"))]


def _health_tag(value: object) -> str:
    kind = _kind(value)
    if kind in ("HttpHealthCheck", "WebSocketHealthCheck"):
        return _T + kind
    if isinstance(value, dict) and value.get("type") not in ("http", "websocket"):
        return _T + "unknown"
    if isinstance(value, dict) and value.get("type") == "websocket":
        return _T + "WebSocketHealthCheck"
    return _T + "HttpHealthCheck"  # also reports a value that is not an object


HealthCheck = Annotated[
    Annotated[HttpHealthCheck, Tag(_T + "HttpHealthCheck")]
    | Annotated[WebSocketHealthCheck, Tag(_T + "WebSocketHealthCheck")]
    | Annotated[_UnknownHealthCheck, Tag(_T + "unknown")],
    Discriminator(_health_tag),
]


class ExposedPort(_Model):
    """An exposed port object: ``{port, type?, health_checks?}``."""

    port: Annotated[int | float | str, PlainValidator(_port_number)]
    type: Opt[ServiceType] = None
    health_checks: Opt[list[HealthCheck]] = None


class SpreadMarker(_Model):
    """``{"__spread__": "%%…%%"}``: a JSON array/object resolved on the host at run time."""

    spread: PlaceholderLiteral = Field(alias="__spread__")
    chunked: Opt[Bool] = None


def _expose_item_tag(value: object) -> str:
    kind = _kind(value)
    if kind == "object":
        return _T + ("spread" if "__spread__" in value else "object")  # type: ignore[operator]
    if kind in ("number", "string", "ExposedPort"):
        return _T + {"ExposedPort": "object"}.get(kind, kind)
    if kind == "SpreadMarker":
        return _T + "spread"
    return _T + "bad"


ExposeItem = Annotated[
    Annotated[Number, Tag(_T + "number")]
    | Annotated[PortLiteral, Tag(_T + "string")]
    | Annotated[ExposedPort, Tag(_T + "object")]
    | Annotated[SpreadMarker, Tag(_T + "spread")]
    | Annotated[object, PlainValidator(_fail("a port number, a port object, a %%…%% literal or "
                                             "a spread marker")), Tag(_T + "bad")],
    Discriminator(_expose_item_tag),
]


def _expose_tag(value: object) -> str:
    kind = _kind(value)
    if kind == "object":
        return _T + ("spread" if "__spread__" in value else "bad")  # type: ignore[operator]
    if kind in ("number", "string", "array"):
        return _T + kind
    if kind == "SpreadMarker":
        return _T + "spread"
    return _T + "bad"


Expose = Annotated[
    Annotated[Number, Tag(_T + "number")]
    | Annotated[PortLiteral, Tag(_T + "string")]
    | Annotated[SpreadMarker, Tag(_T + "spread")]
    | Annotated[list[ExposeItem], Tag(_T + "array")]
    | Annotated[object, PlainValidator(_fail(
        "a port number, a %%…%% literal, a spread marker or an array of those",
        lambda v: " (put port objects inside an array)" if isinstance(v, dict) else "")),
        Tag(_T + "bad")],
    Discriminator(_expose_tag),
]


# --------------------------------------------------------------------------------------------
# resources, volumes, authentication, restart policy


class S3Auth(_Model):
    """S3 IAM credentials (secrets: never in the placeholder)."""

    region: Str = Field(alias="REGION")
    access_key_id: Str = Field(alias="ACCESS_KEY_ID")
    secret_access_key: Str = Field(alias="SECRET_ACCESS_KEY")


class S3Bucket(_Model):
    """One entry of an S3 resource's ``buckets``."""

    url: Str
    files: Opt[list[Str]] = None


class S3Resource(_Model):
    """An S3 resource (``bucket`` and ``buckets`` exclude each other)."""

    type: Annotated[Literal["S3"], PlainValidator(_one_of("S3", "HF", "Ollama"))]
    target: Str
    url: Opt[Str] = None
    files: Opt[list[Str]] = None
    allow_write: Opt[Bool] = Field(default=None, alias="allowWrite")
    bucket: Opt[Str] = None
    buckets: Opt[list[S3Bucket]] = None
    iam: Opt[S3Auth] = Field(default=None, alias="IAM")


class HFResource(_Model):
    """A Hugging Face repository resource."""

    type: Annotated[Literal["HF"], PlainValidator(_one_of("S3", "HF", "Ollama"))]
    target: Str
    repo: Str
    revision: Opt[Str] = None
    files: Opt[list[Str]] = None
    access_token: Opt[Str] = Field(default=None, alias="accessToken")


class OllamaResource(_Model):
    """An Ollama model resource."""

    type: Annotated[Literal["Ollama"], PlainValidator(_one_of("S3", "HF", "Ollama"))]
    model: Str
    target: Opt[Str] = None


class _UnknownResource(BaseModel):
    # Reports only the bad `type` of a resource, not the fields of a guessed branch.
    model_config = ConfigDict(extra="allow", strict=True)
    type: Annotated[str, PlainValidator(_one_of("S3", "HF", "Ollama"))]


def _resource_tag(value: object) -> str:
    kind = _kind(value)
    if isinstance(value, dict):
        if "__spread__" in value:
            return _T + "spread"
        rtype = value.get("type")
        return _T + (rtype if rtype in ("S3", "HF", "Ollama") else "unknown")
    return _T + {"S3Resource": "S3", "HFResource": "HF", "OllamaResource": "Ollama",
                 "SpreadMarker": "spread", "string": "marker"}.get(kind, "bad")


ResourceItem = Annotated[
    Annotated[S3Resource, Tag(_T + "S3")]
    | Annotated[HFResource, Tag(_T + "HF")]
    | Annotated[OllamaResource, Tag(_T + "Ollama")]
    | Annotated[SpreadMarker, Tag(_T + "spread")]
    | Annotated[RemoveIfEmpty, Tag(_T + "marker")]
    | Annotated[_UnknownResource, Tag(_T + "unknown")]
    | Annotated[object, PlainValidator(_fail("a resource object, a spread marker or "
                                             '"__remove-if-empty__"')), Tag(_T + "bad")],
    Discriminator(_resource_tag),
]


class Volume(_Model):
    """A volume mount of a ``container/run`` op."""

    name: Str
    dest: Str


class DockerAuth(_Model):
    """Registry credentials (the password is a secret)."""

    username: Opt[Str] = None
    password: Opt[Str] = None
    email: Opt[Str] = None
    server: Opt[Str] = None


class Authentication(_Model):
    """``args.authentication``."""

    docker: Opt[DockerAuth] = None


class RestartPolicyObject(_Model):
    """``{"policy": "on-failure", "restart_tries"?: n}``."""

    policy: Annotated[Literal["on-failure"], PlainValidator(_one_of("on-failure"))]
    restart_tries: Opt[Number] = None


RestartPolicy = Annotated[
    Annotated[Literal["no", "always", "unless-stopped", "on-failure"],
              PlainValidator(_one_of("no", "always", "unless-stopped", "on-failure")),
              Tag(_T + "string")]
    | Annotated[RestartPolicyObject, Tag(_T + "object")]
    | Annotated[object, PlainValidator(_fail("a restart policy name or an object")),
                Tag(_T + "bad")],
    Discriminator(lambda v: _T + {"string": "string", "object": "object",
                                  "RestartPolicyObject": "object"}.get(_kind(v), "bad")),
]


# --------------------------------------------------------------------------------------------
# ops


class ContainerRunArgs(_Model):
    """``args`` of a ``container/run`` op."""

    image: Str
    cmd: Opt[StrOrStrList] = None
    entrypoint: Opt[StrOrStrList] = None
    env: Opt[dict[str, Str]] = None
    work_dir: Opt[Str] = None
    gpu: Opt[Bool] = None
    expose: Opt[Expose] = None
    private: Opt[Bool] = None
    aliases: Opt[StrOrStrList] = None
    volumes: Opt[list[Volume]] = None
    resources: Opt[list[ResourceItem]] = None
    authentication: Opt[Authentication] = None
    restart_policy: Opt[RestartPolicy] = None


class CreateVolumeArgs(_Model):
    """``args`` of a ``container/create-volume`` op."""

    name: Str


def _args_tag(prefer_volume: bool) -> Callable[[object], str]:
    # The validators type `args` as a union of both shapes whatever the op type, so both are
    # accepted; the op type only decides which shape's errors to report.
    def tag(value: object) -> str:
        kind = _kind(value)
        if kind in ("ContainerRunArgs", "CreateVolumeArgs"):
            return _T + kind
        if isinstance(value, dict):
            if prefer_volume:
                return _T + ("ContainerRunArgs" if "image" in value else "CreateVolumeArgs")
            if "name" in value and "image" not in value:
                return _T + "CreateVolumeArgs"
        return _T + ("CreateVolumeArgs" if prefer_volume else "ContainerRunArgs")
    return tag


_ArgsUnion = (Annotated[ContainerRunArgs, Tag(_T + "ContainerRunArgs")]
              | Annotated[CreateVolumeArgs, Tag(_T + "CreateVolumeArgs")])
RunOpArgs = Annotated[_ArgsUnion, Discriminator(_args_tag(prefer_volume=False))]
VolumeOpArgs = Annotated[_ArgsUnion, Discriminator(_args_tag(prefer_volume=True))]


class ResultPattern(_Model):
    """A result regex with the log streams it applies to."""

    regex: Str
    log_type: Annotated[list[LogType], AfterValidator(_log_types)] = Field(alias="logType")


ResultValue = Annotated[
    Annotated[Str, Tag(_T + "string")]
    | Annotated[ResultPattern, Tag(_T + "object")]
    | Annotated[object, PlainValidator(_fail("a regex string or an object with regex and "
                                             "logType")), Tag(_T + "bad")],
    Discriminator(lambda v: _T + {"string": "string", "object": "object",
                                  "ResultPattern": "object"}.get(_kind(v), "bad")),
]


class Execution(_Model):
    """``execution``: grouping and dependencies."""

    group: Opt[Str] = None
    depends_on: Opt[list[Str]] = None
    stop_if_dependent_stops: Opt[Bool] = None


OpType = Annotated[Literal["container/run", "container/create-volume"],
                   PlainValidator(_one_of("container/run", "container/create-volume"))]


class _OpBase(_Model):
    type: OpType
    id: OpId
    results: Opt[dict[str, ResultValue]] = None
    execution: Opt[Execution] = None


class RunOp(_OpBase):
    """A ``container/run`` op (also the branch that reports an unknown op type)."""

    args: RunOpArgs


class VolumeOp(_OpBase):
    """A ``container/create-volume`` op."""

    args: VolumeOpArgs


def _op_tag(value: object) -> str:
    if isinstance(value, VolumeOp) or (
            isinstance(value, dict) and value.get("type") == "container/create-volume"):
        return _T + "volume"
    return _T + "run"


Op = Annotated[Annotated[RunOp, Tag(_T + "run")] | Annotated[VolumeOp, Tag(_T + "volume")],
               Discriminator(_op_tag)]


# --------------------------------------------------------------------------------------------
# the definition


class JobDefinition(_Model):
    """A validated Nosana job definition (v0.1).

    Build it with :func:`parse_job_definition` (cell text, located errors) or
    :func:`validate_job_definition` (already-parsed JSON). It keeps the JSON exactly as
    written (:meth:`to_dict`), so what the host receives is what the user wrote, with only
    ``${env:…}``/``${var:…}``/``${param:…}`` references resolved (:meth:`resolve`).
    """

    version: Annotated[Literal["0.1"], PlainValidator(_one_of("0.1"))]
    type: Annotated[Literal["container"], PlainValidator(_one_of("container"))]
    ops: list[Op]
    logistics: Opt[Logistics] = None
    deployment_id: Opt[Str] = None
    meta: Opt[Meta] = None
    global_: Opt[Global] = Field(default=None, alias="global")

    _source: Any = PrivateAttr(default=None)
    _doc: Opt[JsoncDocument] = PrivateAttr(default=None)
    _warnings: list[Problem] = PrivateAttr(default_factory=list)
    _notes: list[Problem] = PrivateAttr(default_factory=list)
    _references: list[Reference] = PrivateAttr(default_factory=list)

    # -- what was written ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The definition as the user wrote it (a deep copy): no defaults filled in."""
        if self._source is not None:
            source: dict[str, Any] = copy.deepcopy(self._source)
            return source
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    @property
    def warnings(self) -> list[str]:
        """Located warnings: a credential typed into the definition (never its value), odd
        ports, unknown ``depends_on`` targets, duplicate JSON keys."""
        return [str(w) for w in self._warnings]

    @property
    def notes(self) -> list[str]:
        """Located notes on what the definition does that is easy to miss: a service exposed
        without ``private: true`` has a public URL anyone can work out."""
        return [str(n) for n in self._notes]

    @property
    def references(self) -> list[Reference]:
        """Every ``${env:NAME}``/``${var:NAME}``/``${param:NAME}`` reference, in document
        order."""
        return list(self._references)

    # -- ops and ports ---------------------------------------------------------------------

    @property
    def op_ids(self) -> list[str]:
        """Op ids in ``ops`` order (create-volume ops included, as the host counts them)."""
        return [op.id for op in self.ops]

    @property
    def has_private_ops(self) -> bool:
        """True if any op runs with ``private: true`` (its service URLs are random)."""
        return any(isinstance(op.args, ContainerRunArgs) and op.args.private is True
                   for op in self.ops)

    def expose_ports_for_op(self, index: int) -> list[int | float]:
        """Concrete ports exposed by ``ops[index]``: numbers and object ports, in order.

        ``%%…%%`` literals and spread markers are skipped: the host resolves them at run time;
        so is a ``${var:NAME}`` port, resolved when the definition is sent.
        """
        args = self.ops[index].args
        if not isinstance(args, ContainerRunArgs) or args.expose is None:
            return []
        items = args.expose if isinstance(args.expose, list) else [args.expose]
        ports: list[int | float] = []
        for item in items:
            if isinstance(item, ExposedPort):
                if not isinstance(item.port, str):  # a ${var:…} is known only when sent
                    ports.append(item.port)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                ports.append(item)
        return ports

    def exposed_ports(self, op_id: str) -> list[int | float]:
        """Concrete ports exposed by the op with id ``op_id`` (``KeyError`` if there is none)."""
        try:
            index = self.op_ids.index(op_id)
        except ValueError:
            raise KeyError(op_id) from None
        return self.expose_ports_for_op(index)

    # -- secrets ---------------------------------------------------------------------------

    def _positions(self) -> Mapping[JsonPath, tuple[int, int]] | None:
        return self._doc.positions if self._doc is not None else None

    @property
    def param_names(self) -> list[str]:
        """The names of the ``${param:NAME}`` references, each once, in document order."""
        return list(dict.fromkeys(r.name for r in self._references if r.kind == "param"))

    def check_references(self, *, env: Mapping[str, str] | None = None,
                         namespace: Mapping[str, object] | None = None,
                         params: Mapping[str, object] | None = None) -> None:
        """Raise :class:`SecretError` naming every unresolvable reference; build nothing."""
        resolve_references(self.to_dict(), env=reference_env() if env is None else env,
                           namespace=namespace or {}, params=params,
                           positions=self._positions())

    def missing_references(self, *, env: Mapping[str, str] | None = None,
                           namespace: Mapping[str, object] | None = None,
                           params: Mapping[str, object] | None = None) -> list[str]:
        """Names of the variables that cannot be resolved (empty when all resolve)."""
        try:
            self.check_references(env=env, namespace=namespace, params=params)
        except SecretError as err:
            return err.names
        return []

    def check_resolved(self, *, env: Mapping[str, str] | None = None,
                       namespace: Mapping[str, object] | None = None,
                       params: Mapping[str, object] | None = None) -> None:
        """Raise what :meth:`resolve` would raise, keeping nothing it resolved.

        Every reference must resolve (:class:`SecretError`), and the definition *as it will
        be sent* must be one a host runs (:class:`JobDefinitionError`): valid, at most
        100 kB, no NUL character for a container, dependencies that can run, results
        patterns JavaScript compiles. Call it before pinning and listing: a job whose
        definition the host then refuses is paid for all the same, and the host's validation
        errors, which quote the refused values, go into its public result
        (docs/protocol.md §11). A problem that only a reference's value makes names the
        reference, never the value.
        """
        self._resolved_body(env=env, namespace=namespace, params=params)

    def resolve(self, *, env: Mapping[str, str] | None = None,
                namespace: Mapping[str, object] | None = None,
                params: Mapping[str, object] | None = None) -> ResolvedDefinition:
        """The body to POST to the host: references resolved, compact JSON, checked as
        :meth:`check_resolved` checks it.

        ``env`` defaults to the process environment; ``namespace`` (notebook variables) to
        empty; ``params`` are the job's sweep parameters (``None``: not part of a sweep).
        The result's ``redactor`` hides the resolved ``${env:…}`` values in host text.
        """
        body, secrets = self._resolved_body(env=env, namespace=namespace, params=params)
        return ResolvedDefinition(body, Redactor(secrets), tuple(sorted(secrets)))

    def _resolved_body(self, *, env: Mapping[str, str] | None,
                       namespace: Mapping[str, object] | None,
                       params: Mapping[str, object] | None = None
                       ) -> tuple[bytes, dict[str, str]]:
        source = self.to_dict()
        sizes: dict[str, int] = {}
        resolved, secrets = resolve_references(
            source, env=reference_env() if env is None else env,
            namespace=namespace or {}, params=params, positions=self._positions(),
            sizes=sizes)
        _number_ports(source, resolved, self._doc)
        # A ${var:…}/${param:…} value can make a field invalid (an op id with a space, say):
        # check again, against the original positions, before anything is sent.
        try:
            _validate(resolved, self._doc, resolved=True)
            problems = _host_problems(resolved, self._doc)
            if problems:
                raise JobDefinitionError(problems)
        except JobDefinitionError as err:
            raise JobDefinitionError([self._blame(p) for p in err.problems]) from None
        try:
            body = json.dumps(resolved, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate escape: keep it escaped
            body = json.dumps(resolved, separators=(",", ":")).encode()
        if len(body) > MAX_BODY_BYTES:
            # The references that add the most (a kilobyte or more: a short value's size
            # says too much of a secret).
            largest = sorted(sizes.items(), key=lambda item: -item[1])[:3]
            blamed = ", ".join(f"{ref} adds {size:,}" for ref, size in largest if size >= 1024)
            raise JobDefinitionError([Problem(
                1, 1, "", f"job definition is {len(body):,} bytes once its references are "
                f"resolved{f' ({blamed})' if blamed else ''}; Nosana hosts accept at most "
                f"{MAX_BODY_BYTES:,}", "$input")])
        return body, secrets

    def _blame(self, problem: Problem) -> Problem:
        """``problem``, found once the references were resolved, naming those that made it."""
        refs = dict.fromkeys(f"${{{ref.kind}:{ref.name}}}" for ref in self._references
                             if _within(ref.path, problem.path))
        if not refs:
            return problem
        return dataclasses.replace(
            problem, message=f"{problem.message} (once {', '.join(refs)} is resolved)")

    # -- the public placeholder ------------------------------------------------------------

    def placeholder(self, *, send: bool = True, receive: bool = True) -> dict[str, Any]:
        """The public job definition to pin to IPFS for this (confidential) job.

        * ``send=True, receive=True`` (the default): exactly the Nosana CLI's constant
          placeholder. Nothing of the real definition is in it; the real one is POSTed to the
          host, and the results stay on the host until fetched.
        * ``send=True, receive=False`` (private input, public results): the same constant with
          only ``logistics.send``. The host reads ``logistics`` from the pinned placeholder and
          never validates it (it validates the definition it is then sent), so this one-sided
          form works even though ``@nosana/types`` would reject it as a definition of its own.
          With no ``receive``, the host pins the full results (logs included) publicly.
        * ``send=False, receive=True`` (public input, private results): the real definition,
          as written, is published. A host validates a pinned definition that has no ``send``
          step, and ``@nosana/types`` requires both sides of ``logistics`` (vector
          ``logistics_send_only``), so a receive-only document would fail on current hosts.
          This variant therefore keeps both sides as ``api-listen``: the host still waits for
          the definition to be POSTed (the same one), and the results stay private. Because
          the definition becomes public, it must hold no secret: ``${…}`` references, docker
          passwords, S3 IAM keys, Hugging Face tokens or ``private: true`` ops raise
          :class:`JobDefinitionError`.

        Raises ``ValueError`` if both ``send`` and ``receive`` are false.
        """
        if not send and not receive:
            raise ValueError("a placeholder needs send, receive, or both")
        if send:
            blank = copy.deepcopy(PLACEHOLDER)
            if not receive:
                del blank["logistics"]["receive"]
            return blank
        problems = self._public_problems()
        if problems:
            raise JobDefinitionError(problems)
        public = self.to_dict()
        public["logistics"] = copy.deepcopy(PLACEHOLDER["logistics"])
        return public

    def _public_problems(self) -> list[Problem]:
        doc = self._doc
        found: list[Problem] = []

        def add(path: JsonPath, what: str) -> None:
            loc = doc.locate(path) if doc else None
            found.append(Problem(loc[0] if loc else None, loc[1] if loc else None,
                                 format_path(path),
                                 f"{what} cannot go in a public (receive-only) placeholder",
                                 typia_path(path)))

        for ref in self._references:
            found.append(Problem(ref.line, ref.column, ref.path,
                                 f"a ${{{ref.kind}:…}} reference cannot go in a public "
                                 "(receive-only) placeholder"))
        source = self.to_dict()
        for i, op in enumerate(source.get("ops", [])):
            args = op.get("args", {}) if isinstance(op, dict) else {}
            if args.get("private") is True:
                add(("ops", i, "args", "private"), "a private op")
            docker = args.get("authentication", {}).get("docker") or {}
            if "password" in docker:
                add(("ops", i, "args", "authentication", "docker", "password"),
                    "a registry password")
            for k, res in enumerate(args.get("resources") or []):
                if isinstance(res, dict):
                    for key, what in _PUBLIC_SECRETS:
                        if key in res:
                            add(("ops", i, "args", "resources", k, key), what)
        found.sort(key=lambda p: (p.line or 0, p.column or 0))
        return found


# --------------------------------------------------------------------------------------------
# parsing and validation


def parse_job_definition(text: str, *, first_line: int = 1) -> JobDefinition:
    """Parse and validate cell text (JSON with comments and trailing commas).

    Raises :class:`JobDefinitionError` with every problem located by line and column.
    Lines count from ``first_line``: 1 (the default) for plain text; the cell magic passes 2,
    so that a location is the line the notebook editor shows (its own line is line 1).
    """
    try:
        doc = parse_jsonc(text, first_line=first_line)
    except JsoncError as err:
        raise JobDefinitionError([Problem(err.line, err.column, "", err.message, "$input")]
                                 ) from None
    return _validate(doc.value, doc)


def _non_finite(value: object, path: JsonPath) -> Iterator[JsonPath]:
    """Paths of NaN/Infinity anywhere (parsed JSON never has them; a Python dict may)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*path, index))


def validate_job_definition(obj: object) -> JobDefinition:
    """Validate already-parsed JSON (problems carry paths but no line/column)."""
    return _validate(obj, None)


def _validate(obj: object, doc: JsoncDocument | None, *, resolved: bool = False
              ) -> JobDefinition:
    """Validate ``obj``; ``resolved`` means references are already substituted (and the
    caller checks the size of the exact body it sends)."""
    problems: list[Problem] = []
    model: Opt[JobDefinition] = None
    try:
        model = JobDefinition.model_validate(obj)
    except ValidationError as err:
        problems.extend(_translate(err, obj, doc))
    problems.extend(_rule_problems(obj, doc))
    problems.extend(_problem(doc, path, "expected a finite number")
                    for path in _non_finite(obj, ()) if not resolved)
    refs, malformed = ([], []) if resolved else find_references(
        obj, doc.positions if doc else None)
    problems.extend(malformed)
    if not resolved and isinstance(obj, dict) and not problems:
        try:
            check_body_size(json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
                            .encode("utf-8", "surrogatepass"))
        except JobDefinitionError as err:
            problems.extend(err.problems)
    if problems:
        if doc is not None:
            problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        raise JobDefinitionError(_dedupe(problems))
    assert model is not None
    # Parsed text is ours alone; a caller's object is copied so later changes to it do not leak.
    model._source = obj if doc is not None else copy.deepcopy(obj)
    model._doc = doc
    model._references = refs
    model._warnings = [*(doc.warnings if doc else []), *_warnings(obj, doc),
                       *_credential_warnings(obj, doc)]
    model._notes = _notes(obj, doc)
    if doc is not None:
        model._warnings.sort(key=lambda p: (p.line or 0, p.column or 0))
    return model


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out


def _problem(doc: JsoncDocument | None, path: JsonPath, message: str, *,
             at: JsonPath | None = None, at_key: bool = False) -> Problem:
    """A problem about ``path``, located at ``at`` (default: the value at ``path``)."""
    loc = None
    if doc is not None:
        target = path if at is None else at
        loc = doc.key_positions.get(target) if at_key else None
        loc = loc or doc.locate(target)
    return Problem(loc[0] if loc else None, loc[1] if loc else None, format_path(path),
                   message, typia_path(path))


def _translate(err: ValidationError, obj: object, doc: JsoncDocument | None) -> list[Problem]:
    out: list[Problem] = []
    for e in err.errors(include_url=False, include_input=True):
        path: JsonPath = tuple(p for p in e["loc"]
                               if not (isinstance(p, str) and p.startswith(_T)))
        kind = e["type"]
        value = e.get("input")
        if kind == "missing":
            out.append(_problem(doc, path, "field required", at=path[:-1]))
        elif kind == "extra_forbidden":
            out.append(_problem(doc, path, f"unknown field '{path[-1]}'", at_key=True))
        elif kind == "nosana":
            out.append(_problem(doc, path, str(e["ctx"]["m"])))
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            out.append(_problem(doc, path, f"expected an object, got {_type_name(value)}"))
        elif kind in ("list_type", "tuple_type"):
            out.append(_problem(doc, path, f"expected an array, got {_type_name(value)}"))
        else:  # not expected with the models above; pydantic's text never shows the input
            out.append(_problem(doc, path, e["msg"]))
    return out


def _ops(obj: object) -> Iterator[tuple[int, dict[str, Any]]]:
    ops = obj.get("ops") if isinstance(obj, dict) else None
    if isinstance(ops, list):
        for i, op in enumerate(ops):
            if isinstance(op, dict):
                yield i, op


def _args(op: dict[str, Any]) -> dict[str, Any]:
    args = op.get("args")
    return args if isinstance(args, dict) else {}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _expose_ports(args: dict[str, Any]) -> Iterator[tuple[JsonPath, int | float]]:
    """(path below args, port) for every concrete port of an op's ``expose``."""
    expose = args.get("expose")
    if isinstance(expose, int | float) and not isinstance(expose, bool):
        yield ("expose",), expose
    elif isinstance(expose, list):
        for k, item in enumerate(expose):
            if _is_number(item):
                yield ("expose", k), item
            elif isinstance(item, dict) and "__spread__" not in item and _is_number(
                    item.get("port")):
                yield ("expose", k, "port"), item["port"]


def _port_variables(obj: object) -> Iterator[JsonPath]:
    """Paths of the expose ports written as ``${var:NAME}``."""
    for i, op in _ops(obj):
        expose = _args(op).get("expose")
        base: JsonPath = ("ops", i, "args", "expose")
        items = enumerate(expose) if isinstance(expose, list) else [(None, expose)]
        for k, item in items:
            path = base if k is None else (*base, k)
            if isinstance(item, dict):
                item, path = item.get("port"), (*path, "port")
            if isinstance(item, str) and _PORT_VARIABLE.match(item):
                yield path


def _number_ports(source: object, resolved: Any, doc: JsoncDocument | None) -> None:
    """In ``resolved``, turn each port written as ``${var:NAME}`` into the number it names
    (a notebook variable holding a port, e.g. a free one picked at run time)."""
    problems: list[Problem] = []
    for path in _port_variables(source):
        parent = _value_at(resolved, path[:-1])
        text = parent[path[-1]]
        if isinstance(text, str) and text.isascii() and text.isdigit():
            parent[path[-1]] = int(text)
        else:
            name = str(_value_at(source, path))[len("${var:"):-1]
            problems.append(_problem(doc, path, f"notebook variable {name} must hold a port "
                                                "number (an int)"))
    if problems:
        raise JobDefinitionError(problems)


def _value_at(obj: Any, path: JsonPath) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _within(inner: str, outer: str) -> bool:
    """Whether the formatted path ``inner`` is ``outer`` or lies below it."""
    return not outer or inner == outer or inner.startswith((outer + ".", outer + "["))


def _rule_problems(obj: object, doc: JsoncDocument | None) -> list[Problem]:
    """The rules pydantic's field types cannot express (they look across values)."""
    out: list[Problem] = []
    first_index: dict[str, int] = {}
    for i, op in _ops(obj):
        op_id = op.get("id")
        if isinstance(op_id, str):
            if op_id in first_index:
                out.append(_problem(doc, ("ops", i, "id"),
                                    f"duplicate op id: ops[{first_index[op_id]}] has the same id"))
            else:
                first_index[op_id] = i
        args = _args(op)
        seen: dict[int | float, str] = {}
        for sub, port in _expose_ports(args):
            where = format_path(sub[:2])
            if port in seen:
                out.append(_problem(doc, ("ops", i, "args", *sub[:2]),
                                    f"duplicate port {port}: {seen[port]} exposes it already"))
            else:
                seen[port] = where
        execution = op.get("execution")
        if isinstance(execution, dict) and "stop_if_dependent_stops" in execution and (
                "depends_on" not in execution):
            out.append(_problem(doc, ("ops", i, "execution", "stop_if_dependent_stops"),
                                "stop_if_dependent_stops needs depends_on"))
        resources = args.get("resources")
        for k, res in enumerate(resources if isinstance(resources, list) else []):
            if isinstance(res, dict) and res.get("type") == "S3" and "bucket" in res and (
                    "buckets" in res):
                out.append(_problem(doc, ("ops", i, "args", "resources", k, "buckets"),
                                    "bucket and buckets cannot both be set"))
    return out


def _host_problems(obj: object, doc: JsoncDocument | None) -> list[Problem]:
    """What a host refuses only once it runs the job, although its validator accepted the
    definition: dependencies it cannot plan, results patterns JavaScript cannot compile, NUL
    characters a container cannot take. Checked on the resolved definition."""
    problems = [*_dependency_problems(obj, doc), *_pattern_problems(obj, doc),
                *_nul_problems(obj, doc)]
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0)) if doc else problems


def _group(op: dict[str, Any]) -> object:
    execution = op.get("execution")
    return execution.get("group") if isinstance(execution, dict) else None


def _dependency_problems(obj: object, doc: JsoncDocument | None) -> list[Problem]:
    """``depends_on`` a host refuses (an unknown op, the op itself, an op of another
    execution group: docs/protocol.md §13), or that can never run (a cycle: the ops would wait
    for each other until the job's timeout)."""
    out: list[Problem] = []
    index = {op["id"]: i for i, op in _ops(obj) if isinstance(op.get("id"), str)}
    ops = dict(_ops(obj))
    edges: dict[int, list[tuple[int, JsonPath]]] = {}
    for i, op in ops.items():
        execution = op.get("execution")
        depends = execution.get("depends_on") if isinstance(execution, dict) else None
        for k, name in enumerate(depends if isinstance(depends, list) else []):
            path: JsonPath = ("ops", i, "execution", "depends_on", k)
            if not isinstance(name, str):
                continue
            if name == op.get("id"):
                out.append(_problem(doc, path, "an op cannot depend on itself"))
            elif name not in index:
                out.append(_problem(doc, path, "depends_on names no op of this definition"))
            elif _group(ops[index[name]]) != _group(op):
                out.append(_problem(doc, path, f"ops[{index[name]}] is in another execution "
                                               "group: hosts refuse a dependency across groups"))
            else:
                edges.setdefault(i, []).append((index[name], path))
    out.extend(_problem(doc, path, f"depends_on makes a cycle ({cycle}): these ops would wait "
                                   "for each other until the job's timeout")
               for cycle, path in _cycles(edges))
    return out


def _cycles(edges: dict[int, list[tuple[int, JsonPath]]]) -> list[tuple[str, JsonPath]]:
    """Each dependency cycle once, as ``ops[0] → ops[2] → ops[0]``, with the path of the
    ``depends_on`` entry that closes it."""
    found: list[tuple[str, JsonPath]] = []
    done: set[int] = set()

    def visit(node: int, trail: list[int]) -> None:
        for target, path in edges.get(node, []):
            if target in trail:
                loop = [*trail[trail.index(target):], target]
                found.append((" → ".join(f"ops[{i}]" for i in loop), path))
            elif target not in done:
                visit(target, [*trail, target])
        done.add(node)

    for start in sorted(edges):
        if start not in done:
            visit(start, [start])
    return found


def _pattern_problems(obj: object, doc: JsoncDocument | None) -> list[Problem]:
    """Results patterns JavaScript's ``RegExp`` refuses: a host would put the error's text in
    place of the result (docs/protocol.md §14)."""
    out: list[Problem] = []
    for i, op in _ops(obj):
        results = op.get("results")
        for name, rule in (results.items() if isinstance(results, dict) else []):
            path: JsonPath = ("ops", i, "results", name)
            pattern = rule
            if isinstance(rule, dict):
                pattern, path = rule.get("regex"), (*path, "regex")
            if not isinstance(pattern, str):
                continue
            try:
                check_pattern(pattern)
            except RegexError as err:
                out.append(_problem(doc, path, f"results pattern: {err}"))
    return out


def _nul_problems(obj: object, doc: JsoncDocument | None) -> list[Problem]:
    """A NUL character in what becomes a container's image, command, environment or paths:
    no container can take it, so the op would fail to start."""
    out: list[Problem] = []

    def walk(value: object, path: JsonPath) -> None:
        if isinstance(value, str):
            if "\x00" in value:
                out.append(_problem(doc, path, "a NUL character cannot be passed to a container"))
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    out.append(_problem(doc, (*path, key), "a NUL character cannot be passed "
                                                           "to a container", at_key=True))
                walk(item, (*path, key))
        elif isinstance(value, list):
            for k, item in enumerate(value):
                walk(item, (*path, k))

    if isinstance(obj, dict):
        for i, op in _ops(obj):
            walk(op.get("args"), ("ops", i, "args"))
        walk(obj.get("global"), ("global",))
    return out


def _warnings(obj: object, doc: JsoncDocument | None) -> list[Problem]:
    out: list[Problem] = []
    for i, op in _ops(obj):
        for sub, port in _expose_ports(_args(op)):
            path = ("ops", i, "args", *sub)
            if not math.isfinite(port):
                continue  # refused by validation already
            if port != int(port):
                out.append(_problem(doc, path, f"port {port} is not a whole number"))
            elif not 1 <= port <= 65535:
                out.append(_problem(doc, path, f"port {port} is outside 1-65535"))
    return out


#: Fields that hold a credential whatever it looks like, and the variable to keep it in.
_CREDENTIAL_FIELDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("authentication", "docker", "password"): ("a registry password", "DOCKER_PASSWORD"),
    ("accessToken",): ("an access token", "HF_TOKEN"),
    ("IAM", "SECRET_ACCESS_KEY"): ("an S3 secret key", "AWS_SECRET_ACCESS_KEY"),
    ("IAM", "ACCESS_KEY_ID"): ("an S3 access key id", "AWS_ACCESS_KEY_ID"),
}


def _string_leaves(value: object, path: JsonPath = ()) -> Iterator[tuple[JsonPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_leaves(item, (*path, index))


def _credential_warnings(obj: object, doc: JsoncDocument | None) -> list[Problem]:
    """A credential typed into the definition: the notebook file and IPython's history keep
    the cell, so say where it is (never what it is) and how to reference it instead."""
    out: list[Problem] = []
    for path, text in _string_leaves(obj):
        if not text or "${env:" in text or "${var:" in text or "${param:" in text:
            continue  # a reference (or nothing) is not a literal credential
        what, name = None, None
        for tail, (field, variable) in _CREDENTIAL_FIELDS.items():
            if path[-len(tail):] == tail:
                what, name = field, variable
        key = path[-1] if path else None
        if what is None and len(path) >= 2 and path[-2] == "env" and looks_like_token(text):
            what = "a value that looks like a token"
            name = key if isinstance(key, str) and key.isidentifier() else None
        if what is None and token_name(text) is not None:
            what = "what looks like a token"
        if what is None:
            continue
        name = name or token_name(text) or "SECRET"
        out.append(_problem(doc, path, f"{what} is written in the cell, where the notebook "
                                       f"and its history keep it: set it in the environment "
                                       f"and write \"${{env:{name}}}\" instead"))
    return out


def _notes(obj: object, doc: JsoncDocument | None) -> list[Problem]:
    out: list[Problem] = []
    for i, op in _ops(obj):
        args = _args(op)
        if "expose" in args and args.get("private") is not True:
            out.append(_problem(doc, ("ops", i, "args", "expose"),
                                "this service's URL is public and predictable (worked out "
                                "from the job address and the port): anyone can reach it; "
                                'add "private": true for a random URL only you learn'))
    if doc is not None:
        out.sort(key=lambda p: (p.line or 0, p.column or 0))
    return out
