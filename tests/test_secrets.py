"""${env:…}/${var:…} references: finding, resolving, escaping, errors and redaction."""

from __future__ import annotations

import json

import pytest

from nosana_magic.errors import NosanaError
from nosana_magic.jobdef import JobDefinitionError, parse_job_definition
from nosana_magic.secrets import (
    Redactor,
    Reference,
    ResolvedDefinition,
    SecretError,
    find_references,
    resolve_references,
)

CELL = """\
{
  "version": "0.1",
  "type": "container",
  "ops": [
    {
      "type": "container/run",
      "id": "train",
      "args": {
        "image": "pytorch/pytorch",
        "cmd": "python train.py --epochs ${var:EPOCHS} --home $${HOME} ${HOME}",
        "env": {
          "HF_TOKEN": "${env:HF_TOKEN}",
          "CONFIG": "${var:CONFIG}",
          "LITERAL": "$${env:NOT_A_REF}",
          "${env:KEY_NAME}": "keys are never substituted"
        }
      }
    }
  ]
}
"""
TOKEN = 'hf_Sup3r"secret\nvalue'


def resolved_json(env: dict[str, str], namespace: dict[str, object]) -> dict[str, object]:
    result = parse_job_definition(CELL).resolve(env=env, namespace=namespace)
    decoded: dict[str, object] = json.loads(result.body)
    return decoded


def test_references_are_found_with_their_location() -> None:
    d = parse_job_definition(CELL)
    assert d.references == [
        Reference("var", "EPOCHS", "ops[0].args.cmd", 10, 16),
        Reference("env", "HF_TOKEN", "ops[0].args.env.HF_TOKEN", 12, 23),
        Reference("var", "CONFIG", "ops[0].args.env.CONFIG", 13, 21),
    ]
    assert [r.is_secret for r in d.references] == [False, True, False]
    assert str(d.references[1]) == "line 12, column 23: ops[0].args.env.HF_TOKEN: ${env:HF_TOKEN}"


def test_resolution_escapes_and_var_encoding() -> None:
    out = resolved_json({"HF_TOKEN": TOKEN}, {"EPOCHS": 3, "CONFIG": {"lr": 0.1, "tags": ["a"]}})
    args = out["ops"][0]["args"]  # type: ignore[index]
    assert args["cmd"] == "python train.py --epochs 3 --home ${HOME} ${HOME}"
    assert args["env"] == {
        "HF_TOKEN": TOKEN,
        "CONFIG": '{"lr": 0.1, "tags": ["a"]}',
        "LITERAL": "${env:NOT_A_REF}",
        "${env:KEY_NAME}": "keys are never substituted",
    }


@pytest.mark.parametrize(("value", "inserted"), [
    ("text", "text"), (3, "3"), (2.5, "2.5"), (True, "true"), (None, "null"),
    ([1, "a"], '[1, "a"]'), ({"k": "v"}, '{"k": "v"}'), ("", ""),
])
def test_var_values_are_inserted_as_str_or_json(value: object, inserted: str) -> None:
    out = resolved_json({"HF_TOKEN": "t0k3n"}, {"EPOCHS": value, "CONFIG": "c"})
    cmd = out["ops"][0]["args"]["cmd"]  # type: ignore[index]
    assert cmd == f"python train.py --epochs {inserted} --home ${{HOME}} ${{HOME}}"


def test_body_is_compact_utf8_json() -> None:
    result = parse_job_definition(CELL).resolve(env={"HF_TOKEN": "tøken"},
                                                namespace={"EPOCHS": 1, "CONFIG": "x"})
    assert isinstance(result.body, bytes)
    assert b'"version":"0.1","type":"container"' in result.body
    assert "tøken".encode() in result.body
    assert b"\n" not in result.body and b": " not in result.body.replace(b'{"lr": ', b"")


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "from-the-environment")
    result = parse_job_definition(CELL).resolve(namespace={"EPOCHS": 1, "CONFIG": "x"})
    assert b"from-the-environment" in result.body
    assert result.secret_names == ("HF_TOKEN",)


def test_namespace_defaults_to_empty() -> None:
    with pytest.raises(SecretError) as info:
        parse_job_definition(CELL).resolve(env={"HF_TOKEN": "x"})
    assert info.value.names == ["EPOCHS", "CONFIG"]


def test_missing_variables_are_all_named_without_values() -> None:
    d = parse_job_definition(CELL)
    with pytest.raises(SecretError) as info:
        d.resolve(env={"OTHER": "sk-other-secret"}, namespace={"EPOCHS": "super-private-var"})
    err = info.value
    assert isinstance(err, NosanaError) and not isinstance(err, KeyError)
    assert str(err).splitlines() == [
        "line 12, column 23: ops[0].args.env.HF_TOKEN: environment variable HF_TOKEN is not set",
        "line 13, column 21: ops[0].args.env.CONFIG: notebook variable CONFIG is not defined",
        # What to set, without ever typing the value into a cell.
        "set HF_TOKEN in the kernel's environment: export HF_TOKEN=… before starting Jupyter, "
        "or run os.environ['HF_TOKEN'] = getpass.getpass() in a cell",
    ]
    assert err.names == ["HF_TOKEN", "CONFIG"]
    assert err._render_traceback_()[0] == (
        "SecretError: line 12, column 23: ops[0].args.env.HF_TOKEN: environment variable "
        "HF_TOKEN is not set")
    rendered = str(err) + repr(err) + "".join(err._render_traceback_())
    assert "sk-other-secret" not in rendered and "super-private-var" not in rendered


def test_check_references_builds_nothing_and_agrees() -> None:
    d = parse_job_definition(CELL)
    d.check_references(env={"HF_TOKEN": "x"}, namespace={"EPOCHS": 1, "CONFIG": 2})
    assert d.missing_references(env={}, namespace={"EPOCHS": 1}) == ["HF_TOKEN", "CONFIG"]
    with pytest.raises(SecretError):
        d.check_references(env={}, namespace={"EPOCHS": 1, "CONFIG": 2})


def test_unserializable_var_is_reported() -> None:
    with pytest.raises(SecretError) as info:
        parse_job_definition(CELL).resolve(env={"HF_TOKEN": "x"},
                                           namespace={"EPOCHS": object(), "CONFIG": "c"})
    assert info.value.problems[0].message == (
        "notebook variable EPOCHS has type object, which is not JSON serializable")


@pytest.mark.parametrize("text", ["${env:}", "${env:1ABC}", "${var:a.b}", "${env:OPEN",
                                  "x ${var:-y}"])
def test_malformed_references_fail_at_parse_time(text: str) -> None:
    cell = CELL.replace('"keys are never substituted"', json.dumps(text))
    with pytest.raises(JobDefinitionError) as info:
        parse_job_definition(cell)
    assert info.value.path == 'ops[0].args.env["${env:KEY_NAME}"]'
    assert info.value.message.startswith("malformed reference: write ${env:NAME} or ${var:NAME}")
    assert (info.value.line, info.value.column) == (15, 30)


@pytest.mark.parametrize("text", ["${HOME}", "$HOME", "$${env:X}", "${ env:X}", "${ENV:X}",
                                  "$$", "${}", "%%ops.a.b%%"])
def test_other_dollar_text_is_not_a_reference(text: str) -> None:
    refs, problems = find_references({"a": [text]})
    assert refs == [] and problems == []


def test_resolve_references_directly() -> None:
    value = {"a": ["${env:X}-${var:Y}", 5, None, {"b": "$${x"}]}
    resolved, secrets = resolve_references(value, env={"X": "sec"}, namespace={"Y": [1]})
    assert resolved == {"a": ["sec-[1]", 5, None, {"b": "${x"}]}
    assert secrets == {"X": "sec"}
    assert value["a"][0] == "${env:X}-${var:Y}"  # the input is not modified


# ---------------------------------------------------------------------------------------------
# ResolvedDefinition


def test_resolved_definition_repr_shows_no_values() -> None:
    result = parse_job_definition(CELL).resolve(env={"HF_TOKEN": TOKEN},
                                                namespace={"EPOCHS": 1, "CONFIG": "cfg-value"})
    assert isinstance(result, ResolvedDefinition)
    assert repr(result) == f"ResolvedDefinition(<{len(result.body)} bytes>, secrets=['HF_TOKEN'])"
    assert str(result) == repr(result)
    assert "Sup3r" not in repr(result) and "Sup3r" not in repr(result.redactor)
    # the redactor knows the env secret and not the (non-secret) notebook variables
    assert result.redactor.names == ["HF_TOKEN"]
    redacted = result.redactor.redact(result.body.decode())
    assert "Sup3r" not in redacted
    assert '"HF_TOKEN":"[secret:HF_TOKEN]"' in redacted
    assert "cfg-value" in redacted


def test_a_definition_without_references_resolves_to_itself() -> None:
    cell = '{"version": "0.1", "type": "container", "ops": []}'
    result = parse_job_definition(cell).resolve(env={})
    assert json.loads(result.body) == json.loads(cell)
    assert result.secret_names == () and not result.redactor


# ---------------------------------------------------------------------------------------------
# Redactor


def test_redacts_every_occurrence() -> None:
    r = Redactor({"HF_TOKEN": "hf_abc123", "PW": "hunter2"})
    assert r.redact("token=hf_abc123 pw=hunter2 again hf_abc123") == (
        "token=[secret:HF_TOKEN] pw=[secret:PW] again [secret:HF_TOKEN]")


def test_longest_secret_wins() -> None:
    r = Redactor({"SHORT": "abcd", "LONG": "abcdefgh"})
    assert r.redact("abcdefgh abcd") == "[secret:LONG] [secret:SHORT]"


def test_minimum_length_is_three() -> None:
    r = Redactor({"EMPTY": "", "ONE": "x", "TWO": "ab", "THREE": "pqr"})
    assert r.redact("x ab pqr") == "x ab [secret:THREE]"
    assert r.names == ["EMPTY", "ONE", "THREE", "TWO"]


@pytest.mark.parametrize("secret", ['pa"ss', "line1\nline2", "back\\slash", "tab\there",
                                    "ünïcode-é"])
def test_json_escaped_forms_are_redacted(secret: str) -> None:
    r = Redactor({"S": secret})
    for text in (json.dumps({"v": secret}), json.dumps({"v": secret}, ensure_ascii=False),
                 f"raw: {secret}"):
        redacted = r.redact(text)
        assert secret not in redacted
        assert json.dumps(secret)[1:-1] not in redacted
        assert json.dumps(secret, ensure_ascii=False)[1:-1] not in redacted
        assert "[secret:S]" in redacted


def test_empty_redactor_is_a_no_op() -> None:
    r = Redactor.empty()
    assert not r and r.names == []
    assert r.redact("anything at all") == "anything at all"


def test_redactors_merge() -> None:
    a, b = Redactor({"A": "aaa-secret"}), Redactor({"B": "bbb-secret"})
    merged = a | b
    assert merged.names == ["A", "B"]
    assert merged.redact("aaa-secret bbb-secret") == "[secret:A] [secret:B]"
    assert a.names == ["A"]  # operands are unchanged
    assert (Redactor.empty() | a).redact("aaa-secret") == "[secret:A]"


def test_redactor_repr_shows_names_only() -> None:
    r = Redactor({"API_KEY": "sk-verysecret"})
    assert repr(r) == "Redactor(names=['API_KEY'])"


def test_same_value_under_two_names_is_redacted_once() -> None:
    r = Redactor({"B": "same-value", "A": "same-value"})
    assert r.redact("same-value") == "[secret:A]"


def test_regex_characters_in_secrets_are_literal() -> None:
    r = Redactor({"RX": "a.b*c(d)"})
    assert r.redact("axbbc(d) a.b*c(d)") == "axbbc(d) [secret:RX]"
