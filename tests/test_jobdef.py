"""JobDefinition: what is kept, the helpers the rest of the package uses, warnings, strictness."""

from __future__ import annotations

import json

import pytest

from nosana_magic.errors import NosanaError
from nosana_magic.jobdef import (
    MAX_BODY_BYTES,
    ContainerRunArgs,
    CreateVolumeArgs,
    JobDefinition,
    JobDefinitionError,
    check_body_size,
    parse_job_definition,
    validate_job_definition,
)

CELL = """\
{
  // two services and a volume
  "version": "0.1",
  "type": "container",
  "global": {"env": {"LOG": "info"}},
  "ops": [
    {"type": "container/create-volume", "id": "cache", "args": {"name": "hf-cache"}},
    {
      "type": "container/run",
      "id": "api",
      "args": {
        "image": "vllm/vllm-openai:v0.5.4",
        "private": true,
        "expose": [8000, {"port": 8001, "type": "api"}, "%%global.variables.PORT%%",
                   {"__spread__": "%%ops.cache.results.ports%%"}],
        "volumes": [{"name": "hf-cache", "dest": "/root/.cache"}],
      },
    },
    {
      "type": "container/run",
      "id": "ui",
      "args": {"image": "ghcr.io/open-webui/open-webui:main", "expose": 3000},
      "execution": {"depends_on": ["api"], "stop_if_dependent_stops": true},
    },
  ],
}
"""


def minimal(**args: object) -> dict[str, object]:
    return {"version": "0.1", "type": "container",
            "ops": [{"type": "container/run", "id": "a", "args": {"image": "x", **args}}]}


def test_parse_builds_models() -> None:
    d = parse_job_definition(CELL)
    assert isinstance(d, JobDefinition)
    assert d.global_ is not None and d.global_.env == {"LOG": "info"}
    assert isinstance(d.ops[0].args, CreateVolumeArgs)
    run = d.ops[1].args
    assert isinstance(run, ContainerRunArgs)
    assert run.image == "vllm/vllm-openai:v0.5.4" and run.private is True
    assert d.warnings == []


def test_to_dict_is_exactly_what_was_written() -> None:
    d = parse_job_definition(CELL)
    written = d.to_dict()
    assert list(written) == ["version", "type", "global", "ops"]
    assert written["ops"][2] == {
        "type": "container/run", "id": "ui",
        "args": {"image": "ghcr.io/open-webui/open-webui:main", "expose": 3000},
        "execution": {"depends_on": ["api"], "stop_if_dependent_stops": True}}
    # no defaults filled in: unset optional fields stay absent
    assert "gpu" not in written["ops"][1]["args"]
    # model_dump by alias with exclude_unset agrees with the source
    assert d.model_dump(mode="json", by_alias=True, exclude_unset=True) == written


def test_to_dict_returns_a_copy() -> None:
    d = parse_job_definition(CELL)
    d.to_dict()["ops"].clear()
    assert len(d.to_dict()["ops"]) == 3


def test_op_helpers() -> None:
    d = parse_job_definition(CELL)
    assert d.op_ids == ["cache", "api", "ui"]
    assert d.expose_ports_for_op(0) == []
    assert d.expose_ports_for_op(1) == [8000, 8001]  # literals and spread markers skipped
    assert d.expose_ports_for_op(2) == [3000]
    assert d.exposed_ports("api") == [8000, 8001]
    with pytest.raises(KeyError):
        d.exposed_ports("nope")
    assert d.has_private_ops is True
    assert validate_job_definition(minimal(expose=80)).has_private_ops is False
    assert validate_job_definition(minimal(expose=80, private=False)).has_private_ops is False


def test_args_is_a_union_whatever_the_op_type() -> None:
    d = validate_job_definition({"version": "0.1", "type": "container", "ops": [
        {"type": "container/create-volume", "id": "v", "args": {"image": "x", "cmd": "y"}},
        {"type": "container/run", "id": "r", "args": {"name": "n"}}]})
    assert isinstance(d.ops[0].args, ContainerRunArgs)
    assert isinstance(d.ops[1].args, CreateVolumeArgs)


def test_create_volume_op_errors_speak_of_volumes() -> None:
    with pytest.raises(JobDefinitionError) as info:
        validate_job_definition({"version": "0.1", "type": "container", "ops": [
            {"type": "container/create-volume", "id": "v", "args": {}}]})
    assert str(info.value) == "ops[0].args.name: field required"


WARNED = """\
{
  "version": "0.1",
  "type": "container",
  "ops": [
    {"type": "container/run", "id": "a",
     "args": {"image": "x", "expose": [-1, 8080.5, 70000, {"port": 0}]}},
    {"type": "container/run", "id": "b", "args": {"image": "x", "expose": 8080.25},
     "execution": {"depends_on": ["a"]}},
    {"type": "container/run", "id": "c", "id": "d", "args": {"image": "x"}}
  ]
}
"""


def test_warnings_are_located_and_ordered() -> None:
    d = parse_job_definition(WARNED)
    assert d.warnings == [
        "line 6, column 40: ops[0].args.expose[0]: port -1 is outside 1-65535",
        "line 6, column 44: ops[0].args.expose[1]: port 8080.5 is not a whole number",
        "line 6, column 52: ops[0].args.expose[2]: port 70000 is outside 1-65535",
        "line 6, column 68: ops[0].args.expose[3].port: port 0 is outside 1-65535",
        "line 7, column 75: ops[1].args.expose: port 8080.25 is not a whole number",
        "line 9, column 42: ops[2].id: duplicate key 'id': the last value wins",
    ]
    assert d.op_ids == ["a", "b", "d"]


def test_warnings_without_positions() -> None:
    d = validate_job_definition(minimal(expose=[0]))
    assert d.warnings == ["ops[0].args.expose[0]: port 0 is outside 1-65535"]


def test_errors_without_positions() -> None:
    with pytest.raises(JobDefinitionError) as info:
        validate_job_definition(minimal(gpu=1))
    err = info.value
    assert (err.line, err.column, err.path) == (None, None, "ops[0].args.gpu")
    assert str(err) == "ops[0].args.gpu: expected a boolean (true or false), got number"


@pytest.mark.parametrize(("args", "path", "message"), [
    ({"gpu": 1}, "ops[0].args.gpu", "expected a boolean (true or false), got number"),
    ({"gpu": "true"}, "ops[0].args.gpu", "expected a boolean (true or false), got string"),
    ({"expose": True}, "ops[0].args.expose",
     "expected a port number, a %%…%% literal, a spread marker or an array of those, got "
     "boolean"),
    ({"expose": [{"port": True}]}, "ops[0].args.expose[0].port", "expected a number, got boolean"),
    ({"work_dir": None}, "ops[0].args.work_dir", "expected a string, got null"),
    ({"private": None}, "ops[0].args.private", "expected a boolean (true or false), got null"),
    ({"authentication": None}, "ops[0].args.authentication", "expected an object, got null"),
    ({"cmd": None}, "ops[0].args.cmd", "expected a string or an array of strings, got null"),
    ({"env": {"A": None}}, "ops[0].args.env.A", "expected a string, got null"),
    ({"env": []}, "ops[0].args.env", "expected an object, got array"),
    ({"volumes": {}}, "ops[0].args.volumes", "expected an array, got object"),
    ({"authentication": "x"}, "ops[0].args.authentication", "expected an object, got string"),
    ({"restart_policy": 3}, "ops[0].args.restart_policy",
     "expected a restart policy name or an object, got number"),
    ({"resources": [5]}, "ops[0].args.resources[0]",
     'expected a resource object, a spread marker or "__remove-if-empty__", got number'),
    ({"resources": ["__remove_if_empty__"]}, "ops[0].args.resources[0]",
     'expected "__remove-if-empty__"'),
    ({"expose": [{"__spread__": "%%ops.a.b%%", "x": 1}]}, "ops[0].args.expose[0].x",
     "unknown field 'x'"),
    ({"expose": [{"port": 1, "health_checks": [{"type": "tcp"}]}]},
     "ops[0].args.expose[0].health_checks[0].type", 'expected one of "http", "websocket"'),
    ({"expose": [{"port": 1, "health_checks": [7]}]},
     "ops[0].args.expose[0].health_checks[0]", "expected an object, got number"),
])
def test_strict_json_types(args: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(JobDefinitionError) as info:
        validate_job_definition(minimal(**args))
    assert (info.value.path, info.value.message) == (path, message)


def test_attribute_names_are_not_accepted_for_wire_names() -> None:
    with pytest.raises(JobDefinitionError) as info:
        validate_job_definition({**minimal(), "global_": {}})
    assert info.value.message == "unknown field 'global_'"


def test_accepted_shapes() -> None:
    d = validate_job_definition({
        **minimal(
            cmd=["a", "__remove-if-empty__"], entrypoint="/bin/sh", aliases=["x", "y"],
            restart_policy={"policy": "on-failure", "restart_tries": 3},
            resources=[{"type": "Ollama", "model": "llama3"},
                       {"type": "S3", "target": "/d", "buckets": [{"url": "s3://b"}]},
                       {"__spread__": "%%global.variables.R%%"}, "__remove-if-empty__"],
            expose=[{"port": 1, "health_checks": [
                {"type": "websocket", "expected_response": "pong", "continuous": False},
                {"type": "http", "path": "/", "method": "DELETE", "expected_status": 204,
                 "headers": {"a": "b"}, "body": [1, {"x": None}], "continuous": True}]}]),
        "meta": {"trigger": "x", "system_resources": {"vram": 4, "disk": "10GB"},
                 "tags": ["a", 1], "extra": {"k": [1, "2"], "n": 3}, "note": "s"},
        "logistics": {"send": {"type": "api", "args": {"endpoint": "https://e"}},
                      "receive": {"type": "api-listen", "args": {}}},
        "deployment_id": "dep",
    })
    assert d.meta is not None and d.meta.model_extra == {
        "tags": ["a", 1], "extra": {"k": [1, "2"], "n": 3}, "note": "s"}


def test_error_is_a_nosana_error_and_a_value_error() -> None:
    with pytest.raises(JobDefinitionError) as info:
        parse_job_definition("{")
    err = info.value
    assert isinstance(err, NosanaError) and isinstance(err, ValueError)
    assert err.problems[0].typia_path == "$input"
    assert err._render_traceback_() == [
        "JobDefinitionError: line 1, column 2: unexpected end of input: the '{' at line 1, "
        "column 1 is not closed"]


def test_body_size_limit_is_body_parser_100kb() -> None:
    assert MAX_BODY_BYTES == 102_400
    check_body_size(b"x" * 102_400)
    with pytest.raises(JobDefinitionError) as info:
        check_body_size(b"x" * 123_456)
    assert info.value.message == ("job definition is 123,456 bytes; Nosana hosts accept at "
                                  "most 102,400")


def test_size_counts_compact_json_not_comments_or_whitespace() -> None:
    body = json.dumps(minimal(cmd="y" * 100_000))
    padded = "// " + "c" * 5000 + "\n" + body.replace(",", ",\n" + " " * 2000)
    assert len(padded.encode()) > MAX_BODY_BYTES
    parse_job_definition(padded)  # the compact JSON that is sent is under the limit


def test_size_counts_utf8_bytes() -> None:
    with pytest.raises(JobDefinitionError) as info:
        validate_job_definition(minimal(cmd="é" * 51_200))  # 102,400 bytes of string alone
    assert "Nosana hosts accept at most 102,400" in info.value.message


def test_parsing_a_100kb_cell() -> None:
    ops = [{"type": "container/run", "id": f"op-{i}",
            "args": {"image": "ubuntu:22.04", "cmd": ["sh", "-c", f"echo {i}"],
                     "env": {f"K{j}": "v" * 8 for j in range(4)}, "expose": [9000 + i]}}
           for i in range(330)]
    text = json.dumps({"version": "0.1", "type": "container", "ops": ops}, indent=1)
    assert 80_000 < len(text) < 102_400
    d = parse_job_definition(text)  # speed: benchmarks/bench_parse.py
    assert len(d.op_ids) == 330


@pytest.mark.parametrize(("key", "message"), [
    ("logistics", "expected an object, got null"),
    ("meta", "expected an object, got null"),
    ("global", "expected an object, got null"),
    ("deployment_id", "expected a string, got null"),
])
def test_optional_top_level_fields_may_be_absent_but_not_null(key: str, message: str) -> None:
    validate_job_definition(minimal())
    with pytest.raises(JobDefinitionError) as info:
        validate_job_definition({**minimal(), key: None})
    assert (info.value.path, info.value.message) == (key, message)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_from_python_are_refused(bad: float) -> None:
    # Parsed JSON never holds them, but a dict built in Python (or read by a lenient JSON
    # parser) may; json.dumps would then send "Infinity", which no host can parse.
    for where, document in (
        ("ops[0].args.expose", minimal(expose=bad)),
        ("meta.x", {**minimal(), "meta": {"x": bad}}),
    ):
        with pytest.raises(JobDefinitionError) as info:
            validate_job_definition(document)
        assert info.value.path == where
        assert info.value.message == "expected a finite number"


def test_locations_count_from_first_line() -> None:
    text = '{\n  "version": "0.1",\n  "type": "container",\n  "ops": [{"id": "a"}]\n}'
    with pytest.raises(JobDefinitionError) as plain:
        parse_job_definition(text)
    with pytest.raises(JobDefinitionError) as in_cell:
        parse_job_definition(text, first_line=2)  # under the magic's own line
    assert plain.value.line == 4 and in_cell.value.line == 5
    assert str(in_cell.value).startswith("line 5, column ")


PORT_CELL = json.dumps({"version": "0.1", "type": "container", "ops": [
    {"type": "container/run", "id": "serve",
     "args": {"image": "python:3.12-slim", "cmd": "serve", "private": True,
              "env": {"PORT": "${var:PORT}"},
              "expose": [{"port": "${var:PORT}", "health_checks": []}]}},
    {"type": "container/run", "id": "api",
     "args": {"image": "api", "cmd": "api", "expose": "${var:API_PORT}"}}]}, indent=2)


def test_a_port_can_be_a_notebook_variable() -> None:
    definition = parse_job_definition(PORT_CELL)
    assert definition.expose_ports_for_op(0) == []  # known only when sent
    body = json.loads(definition.resolve(namespace={"PORT": 41234, "API_PORT": "8080"}).body)
    assert body["ops"][0]["args"]["expose"] == [{"port": 41234, "health_checks": []}]
    assert body["ops"][0]["args"]["env"] == {"PORT": "41234"}  # strings stay strings
    assert body["ops"][1]["args"]["expose"] == 8080


def test_a_port_variable_must_hold_a_port_number() -> None:
    definition = parse_job_definition(PORT_CELL)
    with pytest.raises(JobDefinitionError) as info:
        definition.resolve(namespace={"PORT": "http", "API_PORT": 8080})
    [problem] = info.value.problems
    assert problem.path == "ops[0].args.expose[0].port" and problem.line is not None
    assert problem.message == "notebook variable PORT must hold a port number (an int)"
    with pytest.raises(JobDefinitionError, match=r"port number, a \$\{var:NAME\} or a literal"):
        parse_job_definition(PORT_CELL.replace('"${var:API_PORT}"', '"${env:API_PORT}"'))


@pytest.mark.parametrize(("args", "path", "name"), [
    ({"authentication": {"docker": {"username": "u", "password": "pw-typed-here"}}},
     "ops[0].args.authentication.docker.password", "DOCKER_PASSWORD"),
    ({"env": {"HF_TOKEN": "hf_" + "a1" * 15}}, "ops[0].args.env.HF_TOKEN", "HF_TOKEN"),
    ({"env": {"GH": "ghp_" + "B2" * 15}}, "ops[0].args.env.GH", "GH"),
    ({"env": {"OPENAI": "sk-" + "c3" * 15}}, "ops[0].args.env.OPENAI", "OPENAI"),
    ({"env": {"NOSANA": "nos_" + "d4" * 10}}, "ops[0].args.env.NOSANA", "NOSANA"),
    ({"env": {"AWS_KEY": "AKIAIOSFODNN7EXAMPLE"}}, "ops[0].args.env.AWS_KEY", "AWS_KEY"),
    ({"env": {"AWS_SECRET": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}},
     "ops[0].args.env.AWS_SECRET", "AWS_SECRET"),
    ({"cmd": "login --token hf_" + "e5" * 15}, "ops[0].args.cmd", "HF_TOKEN"),
])
def test_a_literal_credential_is_a_warning_naming_the_field(
        args: dict[str, object], path: str, name: str) -> None:
    op = {"type": "container/run", "id": "a", "args": {"image": "img", "cmd": "true", **args}}
    text = json.dumps({"version": "0.1", "type": "container", "ops": [op]}, indent=2)
    definition = parse_job_definition(text)
    [warning] = definition.warnings
    assert warning.startswith("line ") and f": {path}: " in warning
    assert f'"${{env:{name}}}"' in warning
    secret = next(v for v in json.loads(text)["ops"][0]["args"].values() if v != "img")
    for value in json.dumps(secret).split('"'):
        if len(value) > 8:
            assert value not in warning


def test_ordinary_values_and_references_are_not_credentials() -> None:
    op = {"type": "container/run", "id": "a", "args": {
        "image": "pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime", "cmd": "python train.py",
        "env": {"TOKEN": "${env:TOKEN}", "MODEL": "meta-llama/Llama-3.1-8B-Instruct",
                "MODE": "offline", "PATH_X": "/usr/local/cuda-12.1/bin"},
        "authentication": {"docker": {"username": "me", "password": "${env:REGISTRY_PW}"}}}}
    definition = parse_job_definition(json.dumps({"version": "0.1", "type": "container",
                                                  "ops": [op]}))
    assert definition.warnings == [] and definition.notes == []
