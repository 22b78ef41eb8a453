"""A corpus of malformed job-definition cells: each error's exact line, column, path and message.

The cells are realistic notebook bodies (comments, multi-line) with one mistake each, made by a
small edit of one of two working cells, so every row reads as "this cell, but ...".
"""

from __future__ import annotations

import pytest

from nosana_magic.jobdef import JobDefinitionError, parse_job_definition
from nosana_magic.secrets import SecretError

BASE = """\
// Fine-tune a model on a private dataset
{
  "version": "0.1",
  "type": "container",
  "meta": {"trigger": "cli"},
  "ops": [
    {
      "type": "container/run",
      "id": "train",
      "args": {
        "image": "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime",
        "gpu": true,
        "cmd": ["python", "train.py", "--epochs", "3"],
        "env": {
          "HF_TOKEN": "${env:HF_TOKEN}",
          "WANDB_MODE": "offline"
        },
        "expose": [8080, {"port": 6006, "type": "web"}],
        "resources": [
          {"type": "HF", "repo": "acme/llama-mini", "target": "/models"}
        ]
      },
      "results": {"loss": "loss=([0-9.]+)"}
    }
  ]
}
"""

SERVE = """\
{
  "version": "0.1",
  "type": "container",
  "ops": [
    {
      "type": "container/run",
      "id": "vllm",
      "args": {
        "image": "vllm/vllm-openai:v0.5.4",
        "gpu": true,
        "private": true,
        "expose": [
          {
            "port": 8000,
            "type": "api",
            "health_checks": [
              {"type": "http", "path": "/v1/models", "method": "GET",
               "expected_status": 200, "continuous": true}
            ]
          }
        ]
      }
    },
    {
      "type": "container/run",
      "id": "bench",
      "args": {"image": "python:3.11-slim", "cmd": "python bench.py"},
      "execution": {"depends_on": ["vllm"]}
    }
  ]
}
"""


def edit(base: str, old: str, new: str) -> str:
    assert base.count(old) == 1, old
    return base.replace(old, new)


CASES = [
    # ---- syntax
    ("missing_comma_between_members",
     edit(BASE, '"version": "0.1",', '"version": "0.1"'),
     4, 3, "",
     "expected ',' or '}' after object member"),
    ("missing_comma_between_args",
     edit(BASE, '"gpu": true,', '"gpu": true'),
     13, 9, "",
     "expected ',' or '}' after object member"),
    ("missing_comma_in_array",
     edit(BASE, '"train.py", "--epochs"', '"train.py" "--epochs"'),
     13, 38, "",
     "expected ',' or ']' after array element"),
    ("unclosed_brace",
     BASE.rstrip()[:-1],
     26, 1, "",
     "unexpected end of input: the '{' at line 2, column 1 is not closed"),
    ("unclosed_string",
     edit(BASE, '"offline"', '"offline'),
     16, 25, "",
     "unterminated string"),
    ("stray_character",
     edit(BASE, '"gpu": true,', '"gpu": true,;'),
     12, 21, "",
     "expected a string key or '}'"),
    ("trailing_garbage",
     BASE + "print('done')\n",
     27, 1, "",
     "trailing data after the JSON value"),
    ("second_object",
     BASE + '{"version": "0.1"}\n',
     27, 1, "",
     "trailing data after the JSON value"),
    ("bad_escape",
     edit(BASE, '"loss=([0-9.]+)"', '"loss=(\\d+)"'),
     23, 34, "",
     'invalid escape sequence (valid: \\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)'),
    ("single_quotes",
     edit(BASE, '"WANDB_MODE": "offline"', "'WANDB_MODE': 'offline'"),
     16, 11, "",
     "object keys must be double-quoted strings"),
    ("unquoted_key",
     edit(BASE, '"gpu": true', "gpu: true"),
     12, 9, "",
     "object keys must be double-quoted strings"),
    ("python_true",
     edit(BASE, '"gpu": true', '"gpu": True'),
     12, 16, "",
     "expected a JSON value (string, number, object, array, true, false or null)"),
    ("unterminated_comment",
     edit(BASE, '"meta": {"trigger": "cli"},', '/* "meta": {"trigger": "cli"},'),
     5, 3, "",
     "unterminated /* comment"),
    ("missing_colon",
     edit(BASE, '"id": "train"', '"id" "train"'),
     9, 12, "",
     "expected ':' after object key"),
    ("double_comma",
     edit(BASE, '"train.py", "--epochs"', '"train.py",, "--epochs"'),
     13, 38, "",
     "unexpected ',': expected a value or ']'"),
    ("leading_zero",
     edit(BASE, "[8080,", "[08080,"),
     18, 20, "",
     "invalid number: leading zeros are not allowed"),
    ("empty_cell",
     "\n  // nothing yet\n",
     3, 1, "",
     "empty input: expected a JSON value"),
    # ---- types
    ("version_number",
     edit(BASE, '"version": "0.1"', '"version": 0.1'),
     3, 14, "version",
     'expected "0.1", got number'),
    ("version_0_2",
     edit(BASE, '"version": "0.1"', '"version": "0.2"'),
     3, 14, "version",
     'expected "0.1"'),
    ("type_docker",
     edit(BASE, '"type": "container",', '"type": "docker",'),
     4, 11, "type",
     'expected "container"'),
    ("ops_object",
     edit(SERVE, '"ops": [', '"ops": {"x": 1}, "_": ['),
     4, 10, "ops",
     "expected an array, got object"),
    ("missing_ops",
     '{\n  "version": "0.1",\n  "type": "container"\n}\n',
     1, 1, "ops",
     "field required"),
    ("missing_image",
     edit(BASE, '"image": "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime",', ""),
     10, 15, "ops[0].args.image",
     "field required"),
    ("image_number",
     edit(BASE, '"image": "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime"', '"image": 3'),
     11, 18, "ops[0].args.image",
     "expected a string, got number"),
    ("gpu_string",
     edit(BASE, '"gpu": true', '"gpu": "true"'),
     12, 16, "ops[0].args.gpu",
     "expected a boolean (true or false), got string"),
    ("cmd_number",
     edit(SERVE, '"cmd": "python bench.py"', '"cmd": 42'),
     27, 52, "ops[1].args.cmd",
     "expected a string or an array of strings, got number"),
    ("cmd_array_with_number",
     edit(BASE, '"--epochs", "3"', '"--epochs", 3'),
     13, 51, "ops[0].args.cmd[3]",
     "expected a string, got number"),
    ("env_value_number",
     edit(BASE, '"WANDB_MODE": "offline"', '"WANDB_MODE": 0'),
     16, 25, "ops[0].args.env.WANDB_MODE",
     "expected a string, got number"),
    ("expose_numeric_string",
     edit(BASE, "[8080,", '["8080",'),
     18, 20, "ops[0].args.expose[0]",
     "expected a port number, got string (write the port without quotes)"),
    ("expose_port_range",
     edit(BASE, "[8080,", '["8080-8090",'),
     18, 20, "ops[0].args.expose[0]",
     'port ranges ("start-end") are not accepted by current Nosana '
     "validators; list the ports instead"),
    ("expose_single_object",
     edit(BASE, '"expose": [8080, {"port": 6006, "type": "web"}]', '"expose": {"port": 6006}'),
     18, 19, "ops[0].args.expose",
     "expected a port number, a %%…%% literal, a spread marker or an "
     "array of those, got object (put port objects inside an array)"),
    ("expose_item_boolean",
     edit(BASE, "[8080,", "[true,"),
     18, 20, "ops[0].args.expose[0]",
     "expected a port number, a port object, a %%…%% literal or a spread marker, got boolean"),
    ("service_type_unknown",
     edit(BASE, '"type": "web"', '"type": "grpc"'),
     18, 49, "ops[0].args.expose[1].type",
     'expected one of "web", "api", "webapi", "websocket", "none"'),
    ("health_check_without_continuous",
     edit(SERVE, ', "continuous": true}', "}"),
     17, 15, "ops[0].args.expose[0].health_checks[0].continuous",
     "field required"),
    ("health_check_bad_method",
     edit(SERVE, '"method": "GET"', '"method": "PATCH"'),
     17, 64, "ops[0].args.expose[0].health_checks[0].method",
     'expected one of "GET", "POST", "PUT", "DELETE"'),
    ("health_check_status_string",
     edit(SERVE, '"expected_status": 200', '"expected_status": "200"'),
     18, 35, "ops[0].args.expose[0].health_checks[0].expected_status",
     "expected a number, got string"),
    ("websocket_check_missing_response",
     edit(SERVE,
          '{"type": "http", "path": "/v1/models", "method": "GET",\n'
          '               "expected_status": 200, "continuous": true}',
          '{"type": "websocket", "continuous": true}'),
     17, 15, "ops[0].args.expose[0].health_checks[0].expected_response",
     "field required"),
    ("private_string",
     edit(SERVE, '"private": true', '"private": "yes"'),
     11, 20, "ops[0].args.private",
     "expected a boolean (true or false), got string"),
    ("depends_on_string",
     edit(SERVE, '["vllm"]', '"vllm"'),
     28, 35, "ops[1].execution.depends_on",
     "expected an array, got string"),
    # ---- unknown fields
    ("unknown_top_level",
     edit(BASE, '"type": "container",', '"type": "container",\n  "timeout": 3600,'),
     5, 3, "timeout",
     "unknown field 'timeout'"),
    ("unknown_op_field",
     edit(BASE, '"id": "train",', '"id": "train",\n      "name": "training",'),
     10, 7, "ops[0].name",
     "unknown field 'name'"),
    ("unknown_arg_field",
     edit(BASE, '"gpu": true,', '"gpu": true,\n        "required_vram": 24,'),
     13, 9, "ops[0].args.required_vram",
     "unknown field 'required_vram'"),
    ("unknown_arg_camel",
     edit(SERVE, '"cmd": "python bench.py"', '"command": "python bench.py"'),
     27, 45, "ops[1].args.command",
     "unknown field 'command'"),
    ("unknown_global_field",
     edit(BASE, '"meta": {"trigger": "cli"},', '"global": {"cmd": "echo hi"},'),
     5, 14, "global.cmd",
     "unknown field 'cmd'"),
    ("unknown_health_check_field",
     edit(SERVE, '"continuous": true}', '"continuous": true, "timeout": 5}'),
     18, 60, "ops[0].args.expose[0].health_checks[0].timeout",
     "unknown field 'timeout'"),
    ("unknown_resource_field",
     edit(BASE, '"target": "/models"}', '"target": "/models", "token": "hf_x"}'),
     20, 74, "ops[0].args.resources[0].token",
     "unknown field 'token'"),
    ("snake_case_alias",
     edit(BASE,
          '{"type": "HF", "repo": "acme/llama-mini", "target": "/models"}',
          '{"type": "S3", "url": "s3://b/x", "target": "/data", "allow_write": true}'),
     20, 64, "ops[0].args.resources[0].allow_write",
     "unknown field 'allow_write'"),
    # ---- model rules
    ("duplicate_op_id",
     edit(SERVE, '"id": "bench"', '"id": "vllm"'),
     26, 13, "ops[1].id",
     "duplicate op id: ops[0] has the same id"),
    ("duplicate_port",
     edit(BASE, '{"port": 6006, "type": "web"}', "8080"),
     18, 26, "ops[0].args.expose[1]",
     "duplicate port 8080: expose[0] exposes it already"),
    ("duplicate_port_object",
     edit(BASE, '{"port": 6006, "type": "web"}', '{"port": 8080, "type": "web"}'),
     18, 26, "ops[0].args.expose[1]",
     "duplicate port 8080: expose[0] exposes it already"),
    ("op_id_with_space",
     edit(BASE, '"id": "train"', '"id": "train model"'),
     9, 13, "ops[0].id",
     "op id must not contain spaces"),
    ("stop_if_without_depends_on",
     edit(SERVE, '{"depends_on": ["vllm"]}', '{"stop_if_dependent_stops": true}'),
     28, 48, "ops[1].execution.stop_if_dependent_stops",
     "stop_if_dependent_stops needs depends_on"),
    ("s3_bucket_and_buckets",
     edit(BASE,
          '{"type": "HF", "repo": "acme/llama-mini", "target": "/models"}',
          '{"type": "S3", "bucket": "b", "buckets": [{"url": "s3://c"}], "target": "/d"}'),
     20, 52, "ops[0].args.resources[0].buckets",
     "bucket and buckets cannot both be set"),
    # ---- logistics
    ("logistics_send_only",
     edit(SERVE,
          '"type": "container",',
          '"type": "container",\n  "logistics": {"send": {"type": "api-listen", "args": {}}},'),
     4, 16, "logistics.receive",
     "field required"),
    ("logistics_bad_type",
     edit(SERVE,
          '"type": "container",',
          '"type": "container",\n  "logistics": {\n    "send": {"type": '
          '"http", "args": {}},\n    "receive": {"type": "api-listen", "args": '
          "{}}\n  },"),
     5, 22, "logistics.send.type",
     'expected one of "api", "api-listen"'),
    ("logistics_missing_args",
     edit(SERVE,
          '"type": "container",',
          '"type": "container",\n  "logistics": {\n    "send": {"type": '
          '"api-listen"},\n    "receive": {"type": "api-listen", "args": '
          "{}}\n  },"),
     5, 13, "logistics.send.args",
     "field required"),
    # ---- resources, results, meta
    ("resource_unknown_type",
     edit(BASE, '{"type": "HF", "repo"', '{"type": "GCS", "repo"'),
     20, 20, "ops[0].args.resources[0].type",
     'expected one of "S3", "HF", "Ollama"'),
    ("hf_missing_repo",
     edit(BASE, '"repo": "acme/llama-mini", ', ""),
     20, 11, "ops[0].args.resources[0].repo",
     "field required"),
    ("s3_iam_incomplete",
     edit(BASE,
          '{"type": "HF", "repo": "acme/llama-mini", "target": "/models"}',
          '{"type": "S3", "url": "s3://b", "target": "/d",\n           "IAM": '
          '{"REGION": "eu-west-1", "ACCESS_KEY_ID": "AKIA"}}'),
     21, 19, "ops[0].args.resources[0].IAM.SECRET_ACCESS_KEY",
     "field required"),
    ("log_type_duplicate",
     edit(BASE,
          '{"loss": "loss=([0-9.]+)"}',
          '{"loss": {"regex": "loss=(.*)", "logType": ["stdout", "stdout"]}}'),
     23, 61, "ops[0].results.loss.logType",
     "expected 1 to 4 distinct log types"),
    ("results_number",
     edit(BASE, '{"loss": "loss=([0-9.]+)"}', '{"loss": 1}'),
     23, 27, "ops[0].results.loss",
     "expected a regex string or an object with regex and logType, got number"),
    ("meta_nested",
     edit(BASE, '{"trigger": "cli"}', '{"trigger": "cli", "info": {"a": {"b": "c"}}}'),
     5, 44, "meta.info.a",
     "expected a string, a number or an array of those, got object"),
    ("meta_trigger_number",
     edit(BASE, '{"trigger": "cli"}', '{"trigger": 1}'),
     5, 23, "meta.trigger",
     "expected a string, got number"),
    ("root_array",
     "[\n  {\"version\": \"0.1\"}\n]\n",
     1, 1, "",
     "expected an object, got array"),
    ("malformed_reference",
     edit(BASE, '"${env:HF_TOKEN}"', '"${env:HF-TOKEN}"'),
     15, 23, "ops[0].args.env.HF_TOKEN",
     "malformed reference: write ${env:NAME} or ${var:NAME}, NAME made of "
     "letters, digits and '_' (write $${ for a literal ${)"),
    ("oversize",
     edit(BASE, '"WANDB_MODE": "offline"', '"WANDB_MODE": "' + "x" * 110_000 + '"'),
     1, 1, "",
     "job definition is 110,430 bytes; Nosana hosts accept at most 102,400"),
]

# Problems that only show when references are resolved (the cell itself is valid).
ENV = {"HF_TOKEN": "hf_abcdefgh"}
NAMESPACE: dict[str, object] = {"RUN": "my run", "BIG": "x" * 200_000}

REFERENCE_CASES = [
    ("missing_env", edit(BASE, '"offline"', '"${env:WANDB_API_KEY}"'), "check",
     16, 25, "ops[0].args.env.WANDB_MODE", "environment variable WANDB_API_KEY is not set"),
    ("missing_var", edit(BASE, '"3"]', '"${var:STEPS}"]'), "check",
     13, 51, "ops[0].args.cmd[3]", "notebook variable STEPS is not defined"),
    ("var_breaks_op_id", edit(BASE, '"id": "train"', '"id": "${var:RUN}"'), "resolve",
     9, 13, "ops[0].id", "op id must not contain spaces (once ${var:RUN} is resolved)"),
    ("resolved_body_oversize", edit(BASE, '"offline"', '"${var:BIG}"'), "resolve",
     1, 1, "", "job definition is 200,426 bytes once its references are resolved "
     "(${var:BIG} adds 200,000); Nosana hosts accept at most 102,400"),
]


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) + len(REFERENCE_CASES) >= 45
    assert len({c[0] for c in CASES} | {c[0] for c in REFERENCE_CASES}) == (
        len(CASES) + len(REFERENCE_CASES))


def test_every_base_cell_is_valid() -> None:
    for cell in (BASE, SERVE):
        parse_job_definition(cell).check_references(env=ENV, namespace=NAMESPACE)


@pytest.mark.parametrize(("name", "text", "line", "column", "path", "message"), CASES,
                         ids=[c[0] for c in CASES])
def test_malformed_cell(name: str, text: str, line: int, column: int, path: str,
                        message: str) -> None:
    with pytest.raises(JobDefinitionError) as info:
        parse_job_definition(text)
    err = info.value
    assert (err.line, err.column, err.path, err.message) == (line, column, path, message)
    first = f"line {line}, column {column}: " + (f"{path}: {message}" if path else message)
    assert str(err).startswith(first)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(("name", "text", "mode", "line", "column", "path", "message"),
                         REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
def test_reference_problem(name: str, text: str, mode: str, line: int, column: int, path: str,
                           message: str) -> None:
    definition = parse_job_definition(text)
    err: SecretError | JobDefinitionError
    if mode == "check":
        with pytest.raises(SecretError) as secret_info:
            definition.check_references(env=ENV, namespace=NAMESPACE)
        err = secret_info.value
    else:
        with pytest.raises(JobDefinitionError) as def_info:
            definition.resolve(env=ENV, namespace=NAMESPACE)
        err = def_info.value
    [problem] = err.problems
    assert (problem.line, problem.column, problem.path, problem.message) == (
        line, column, path, message)


def test_all_problems_are_collected() -> None:
    text = edit(edit(edit(BASE, '"gpu": true', '"gpu": "yes"'), '"cli"', "7"),
                '"WANDB_MODE": "offline"', '"WANDB_MODE": "offline", "N": 1')
    with pytest.raises(JobDefinitionError) as info:
        parse_job_definition(text)
    err = info.value
    assert [(p.line, p.column, p.path) for p in err.problems] == [
        (5, 23, "meta.trigger"), (12, 16, "ops[0].args.gpu"), (16, 41, "ops[0].args.env.N")]
    assert str(err) == ("line 5, column 23: meta.trigger: expected a string, got number "
                        "(and 2 more problems)")
    assert err._render_traceback_() == [
        "JobDefinitionError: line 5, column 23: meta.trigger: expected a string, got number",
        "  line 12, column 16: ops[0].args.gpu: expected a boolean (true or false), got string",
        "  line 16, column 41: ops[0].args.env.N: expected a string, got number",
    ]
    assert [p.typia_path for p in err.problems] == [
        "$input.meta.trigger", "$input.ops[0].args.gpu", "$input.ops[0].args.env.N"]


def test_one_more_problem_is_singular() -> None:
    with pytest.raises(JobDefinitionError) as info:
        parse_job_definition(edit(SERVE, '"ops": [', '"ops": {"x": 1}, "_": ['))
    assert str(info.value).endswith("(and 1 more problem)")


def test_messages_never_contain_string_values() -> None:
    secret = "sk-live-0123456789abcdef"
    cells = [
        edit(BASE, '"gpu": true', f'"gpu": "{secret}"'),
        edit(BASE, '"type": "web"', f'"type": "{secret}"'),
        edit(BASE, '"version": "0.1"', f'"version": "{secret}"'),
        edit(BASE, '[8080,', f'["{secret}",'),
        edit(BASE, '"offline"', "offline-" + secret),
        edit(BASE, '"offline"', '"${env:' + secret + '}"'),
        edit(BASE, '"HF", "repo"', f'"{secret}", "repo"'),
        edit(SERVE, '"method": "GET"', f'"method": "{secret}"'),
        edit(SERVE, '"id": "bench"', f'"id": "vllm", "x": "{secret}"'),
    ]
    for cell in cells:
        with pytest.raises(JobDefinitionError) as info:
            parse_job_definition(cell)
        rendered = "\n".join([str(info.value), *info.value._render_traceback_(),
                              *(str(p) for p in info.value.problems)])
        assert secret not in rendered, rendered


def test_missing_references_name_every_variable_but_no_value() -> None:
    text = edit(edit(BASE, '"offline"', '"${env:WANDB_API_KEY}"'), '"3"]', '"${var:STEPS}"]')
    definition = parse_job_definition(text)
    assert definition.missing_references(env={}, namespace={}) == [
        "STEPS", "HF_TOKEN", "WANDB_API_KEY"]
    assert definition.missing_references(env={"HF_TOKEN": "v", "WANDB_API_KEY": "w"},
                                         namespace={"STEPS": 5}) == []
    with pytest.raises(SecretError) as info:
        definition.check_references(env={"HF_TOKEN": "hf_abcdefgh"}, namespace={})
    assert info.value.names == ["STEPS", "WANDB_API_KEY"]
    assert str(info.value).splitlines() == [
        "line 13, column 51: ops[0].args.cmd[3]: notebook variable STEPS is not defined",
        "line 16, column 25: ops[0].args.env.WANDB_MODE: environment variable WANDB_API_KEY is "
        "not set",
        "set WANDB_API_KEY in the kernel's environment: export WANDB_API_KEY=… before starting "
        "Jupyter, or run os.environ['WANDB_API_KEY'] = getpass.getpass() in a cell",
    ]
    assert "hf_abcdefgh" not in str(info.value)
