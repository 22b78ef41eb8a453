"""The public placeholder: exact shapes of the three modes, and that it never carries the job."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nosana_magic.jobdef import (
    PLACEHOLDER,
    JobDefinitionError,
    parse_job_definition,
    validate_job_definition,
)

CLI_PLACEHOLDER = {
    "version": "0.1", "type": "container", "meta": {"trigger": "cli"},
    "logistics": {"send": {"type": "api-listen", "args": {}},
                  "receive": {"type": "api-listen", "args": {}}},
    "ops": [],
}

PUBLIC_CELL = """\
{
  "version": "0.1",
  "type": "container",
  "meta": {"trigger": "notebook"},
  "ops": [
    {"type": "container/run", "id": "hello",
     "args": {"image": "ubuntu:22.04", "cmd": "echo $${HOME}", "expose": 8080}}
  ]
}
"""


def test_default_is_exactly_the_cli_placeholder() -> None:
    definition = parse_job_definition(PUBLIC_CELL)
    placeholder = definition.placeholder()
    assert placeholder == CLI_PLACEHOLDER == PLACEHOLDER
    # same key order as the CLI constant, so the pinned JSON text is the same too
    assert json.dumps(placeholder) == json.dumps(CLI_PLACEHOLDER)
    assert "global" not in placeholder and "deployment_id" not in placeholder


def test_default_passes_our_validator() -> None:
    validate_job_definition(parse_job_definition(PUBLIC_CELL).placeholder())


def test_send_only_has_only_send() -> None:
    placeholder = parse_job_definition(PUBLIC_CELL).placeholder(receive=False)
    assert placeholder == {
        "version": "0.1", "type": "container", "meta": {"trigger": "cli"},
        "logistics": {"send": {"type": "api-listen", "args": {}}},
        "ops": [],
    }


def test_send_only_is_not_a_valid_definition_of_its_own() -> None:
    # Documented: hosts read `logistics` from the pinned placeholder but validate only the
    # definition they are then sent, so this one-sided form works although types rejects it.
    placeholder = parse_job_definition(PUBLIC_CELL).placeholder(receive=False)
    with pytest.raises(JobDefinitionError) as info:
        validate_job_definition(placeholder)
    assert str(info.value) == "logistics.receive: field required"


def test_receive_only_publishes_the_definition_with_both_logistics() -> None:
    definition = parse_job_definition(PUBLIC_CELL)
    placeholder = definition.placeholder(send=False)
    assert placeholder == {
        "version": "0.1", "type": "container", "meta": {"trigger": "notebook"},
        "ops": [{"type": "container/run", "id": "hello",
                 "args": {"image": "ubuntu:22.04", "cmd": "echo $${HOME}", "expose": 8080}}],
        "logistics": {"send": {"type": "api-listen", "args": {}},
                      "receive": {"type": "api-listen", "args": {}}},
    }
    validate_job_definition(placeholder)  # a host validates a pinned definition: it must pass


def test_receive_only_replaces_user_logistics() -> None:
    cell = PUBLIC_CELL.replace('"meta"', '"logistics": {"send": {"type": "api", "args": '
                                         '{"endpoint": "https://x"}}, "receive": {"type": '
                                         '"api", "args": {}}},\n  "meta"')
    placeholder = parse_job_definition(cell).placeholder(send=False)
    assert placeholder["logistics"] == CLI_PLACEHOLDER["logistics"]


@pytest.mark.parametrize(("edit", "line", "column", "path", "message"), [
    (('"echo $${HOME}"', '"echo ${env:TOKEN}"'), 7, 47, "ops[0].args.cmd",
     "a ${env:…} reference cannot go in a public (receive-only) placeholder"),
    (('"echo $${HOME}"', '"echo ${var:N}"'), 7, 47, "ops[0].args.cmd",
     "a ${var:…} reference cannot go in a public (receive-only) placeholder"),
    (('"expose": 8080', '"expose": 8080, "private": true'), 7, 91, "ops[0].args.private",
     "a private op cannot go in a public (receive-only) placeholder"),
    (('"expose": 8080', '"authentication": {"docker": {"password": "p"}}'), 7, 106,
     "ops[0].args.authentication.docker.password",
     "a registry password cannot go in a public (receive-only) placeholder"),
    (('"expose": 8080', '"resources": [{"type": "HF", "repo": "r", "target": "/m", '
                        '"accessToken": "t"}]'), 7, 137, "ops[0].args.resources[0].accessToken",
     "an access token cannot go in a public (receive-only) placeholder"),
    (('"expose": 8080', '"resources": [{"type": "S3", "url": "s3://b", "target": "/d", '
                        '"IAM": {"REGION": "r", "ACCESS_KEY_ID": "a", "SECRET_ACCESS_KEY": "s"}}]'),
     7, 133, "ops[0].args.resources[0].IAM",
     "S3 credentials cannot go in a public (receive-only) placeholder"),
])
def test_receive_only_refuses_secrets(edit: tuple[str, str], line: int, column: int, path: str,
                                      message: str) -> None:
    definition = parse_job_definition(PUBLIC_CELL.replace(*edit))
    with pytest.raises(JobDefinitionError) as info:
        definition.placeholder(send=False)
    assert (info.value.line, info.value.column, info.value.path, info.value.message) == (
        line, column, path, message)
    # the other modes publish nothing of the definition, so they stay available
    assert definition.placeholder() == CLI_PLACEHOLDER


def test_neither_side_is_an_error() -> None:
    with pytest.raises(ValueError, match="send, receive, or both"):
        parse_job_definition(PUBLIC_CELL).placeholder(send=False, receive=False)


def test_placeholders_are_fresh_copies() -> None:
    definition = parse_job_definition(PUBLIC_CELL)
    definition.placeholder()["logistics"]["send"]["args"]["endpoint"] = "x"
    definition.placeholder(receive=False)["meta"]["trigger"] = "changed"
    assert definition.placeholder() == CLI_PLACEHOLDER
    assert PLACEHOLDER == CLI_PLACEHOLDER


# ---------------------------------------------------------------------------------------------
# Property: whatever the real definition holds, no string of it reaches the public placeholder.

_TEXT = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " éß\"\\\n",
                min_size=4, max_size=24).filter(lambda s: "${" not in s)  # no references
_ID = st.text(alphabet=string.ascii_lowercase + string.digits + "-_", min_size=4, max_size=16)
_NAME = st.from_regex(r"[A-Z][A-Z0-9_]{3,12}", fullmatch=True)


@st.composite
def _op(draw: st.DrawFn, op_id: str) -> dict[str, Any]:
    args: dict[str, Any] = {"image": draw(_TEXT)}
    if draw(st.booleans()):
        args["cmd"] = draw(st.one_of(_TEXT, st.lists(_TEXT, max_size=4)))
    args["env"] = draw(st.dictionaries(_NAME, _TEXT, max_size=4))
    ports = draw(st.lists(st.integers(1, 65535), unique=True, max_size=3))
    if ports:
        args["expose"] = [ports[0], *({"port": p, "type": "web"} for p in ports[1:])]
    resources: list[dict[str, Any]] = []
    if draw(st.booleans()):
        resources.append({"type": "S3", "url": "s3://" + draw(_ID), "target": "/data",
                          "IAM": {"REGION": draw(_TEXT), "ACCESS_KEY_ID": draw(_TEXT),
                                  "SECRET_ACCESS_KEY": draw(_TEXT)}})
    if draw(st.booleans()):
        resources.append({"type": "HF", "repo": draw(_TEXT), "target": "/models",
                          "accessToken": draw(_TEXT)})
    if resources:
        args["resources"] = resources
    if draw(st.booleans()):
        args["authentication"] = {"docker": {"username": draw(_TEXT), "password": draw(_TEXT)}}
    if draw(st.booleans()):
        args["private"] = True
    op: dict[str, Any] = {"type": "container/run", "id": op_id, "args": args}
    results = draw(st.dictionaries(_ID, _TEXT, max_size=2))
    if results:
        op["results"] = results
    return op


@st.composite
def real_definitions(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(_ID, min_size=1, max_size=3, unique=True))
    definition: dict[str, Any] = {
        "version": "0.1", "type": "container", "ops": [draw(_op(i)) for i in ids]}
    if draw(st.booleans()):
        definition["meta"] = {"trigger": draw(_TEXT)}
    if draw(st.booleans()):
        definition["global"] = {"env": draw(st.dictionaries(_NAME, _TEXT, max_size=2))}
    if draw(st.booleans()):
        definition["deployment_id"] = draw(_TEXT)
    return definition


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


_CONSTANT_TEXT = json.dumps(CLI_PLACEHOLDER)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(real_definitions())
def test_no_string_of_the_definition_reaches_the_placeholder(raw: dict[str, Any]) -> None:
    definition = validate_job_definition(raw)
    for send, receive in ((True, True), (True, False)):
        public = json.dumps(definition.placeholder(send=send, receive=receive))
        for text in _strings(raw):
            if text in _CONSTANT_TEXT:  # "0.1", "container", "type"… are the constant's own
                continue
            assert text not in public
            assert json.dumps(text)[1:-1] not in public
    assert definition.placeholder() == CLI_PLACEHOLDER


def test_the_property_would_catch_a_leak() -> None:
    # The check above is not vacuous: a placeholder that carried an env value fails it.
    raw = {"version": "0.1", "type": "container",
           "ops": [{"type": "container/run", "id": "a",
                    "args": {"image": "x", "env": {"TOKEN": "hf_leaky_value"}}}]}
    leaky = {**CLI_PLACEHOLDER, "ops": raw["ops"]}
    assert any(s in json.dumps(leaky) for s in _strings(raw) if s not in _CONSTANT_TEXT)
