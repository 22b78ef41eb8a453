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
                                                namespace={"EPOCHS": 1, "CONFIG": "cfg-setting"})
    assert isinstance(result, ResolvedDefinition)
    assert repr(result) == f"ResolvedDefinition(<{len(result.body)} bytes>, secrets=['HF_TOKEN'])"
    assert str(result) == repr(result)
    assert "Sup3r" not in repr(result) and "Sup3r" not in repr(result.redactor)
    # the redactor knows the env secret and not the (non-secret) notebook variables
    assert result.redactor.names == ["HF_TOKEN"]
    redacted = result.redactor.redact(result.body.decode())
    assert "Sup3r" not in redacted
    assert '"HF_TOKEN":"[secret:HF_TOKEN]"' in redacted
    assert "cfg-setting" in redacted  # (not "value": a line of the two-line TOKEN)


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


# ---------------------------------------------------------------------------------------------
# Redactor: every form a host can show a secret in


def _cut(text: str, at: int) -> tuple[str, str]:
    return text[:at], text[at:]


def _pieces_shown(secret: str, shown: str, at_least: int = 3) -> list[str]:
    """The pieces of ``secret`` of ``at_least`` characters or more that ``shown`` holds."""
    return [secret[i:j] for i in range(len(secret)) for j in range(i + at_least,
                                                                   len(secret) + 1)
            if secret[i:j] in shown]


@pytest.mark.parametrize("secret", ["hf_Qw7eRt9yUi0oPa1sDf2gHj3kLz4xCv5b", "p@ss w0rd!",
                                    "sk-abc-DEF-123"])
def test_a_secret_cut_by_the_host_shows_in_no_piece(secret: str) -> None:
    # The host cuts a line longer than its limit into several log lines; the cut can fall
    # anywhere inside the secret. The redactor sees the lines in order.
    line = "x" * 70_000 + " token=" + secret + " rest of the line\n"
    for at in range(1, len(secret)):
        head, tail = _cut(line, 70_007 + at)
        r = Redactor({"S": secret})
        shown_head, shown_tail = r.redact(head), r.redact(tail)
        assert _pieces_shown(secret, shown_head + "|" + shown_tail) == [], at
        # What is hidden is said: each side holds the marker (or shows at most 2 characters).
        assert shown_head.endswith("[secret:S]") or at < 3
        assert shown_tail.startswith("[secret:S]") or len(secret) - at < 3
        # Other lines may come between the two pieces (another op's output, stderr).
        r = Redactor({"S": secret})
        shown = [r.redact(text) for text in (head, "other output\n", "more\n", tail)]
        assert _pieces_shown(secret, "|".join(shown)) == [], at


def test_a_short_secret_cut_by_the_host_shows_at_most_one_character() -> None:
    secret = "k3y!"
    for at in range(1, len(secret)):
        r = Redactor({"S": secret})
        head, tail = _cut("y" * 5000 + secret + " end", 5000 + at)
        shown = r.redact(head)[-3:] + "|" + r.redact(tail)[:12]
        assert _pieces_shown(secret, shown, at_least=2) == [], (at, shown)


def test_a_cut_inside_a_utf8_character_still_hides_both_pieces() -> None:
    # A host that cuts bytes leaves U+FFFD where it split a character.
    secret = "pässwörd-€-1234"
    r = Redactor({"S": secret})
    line = ("z" * 20_000 + secret).encode()
    cut = 20_000 + len("pässw".encode()) + 1  # inside "ö"
    head = line[:cut].decode(errors="replace")
    tail = line[cut:].decode(errors="replace")
    assert head.endswith("\ufffd") and tail.startswith("\ufffd")
    assert _pieces_shown(secret, r.redact(head) + "|" + r.redact(tail)) == []


def test_only_lines_near_a_cut_have_their_ends_looked_at() -> None:
    # A short line, or a long one with its line break, was not cut: its ends are its own.
    # A run of one character (a PEM header's dashes) is never taken for a piece.
    r = Redactor({"S": "abcdef123-token",
                  "KEY": "-----BEGIN KEY-----\nMIIBVgIBADANBg\n-----END KEY-----"})
    assert r.redact("export PREFIX=abc") == "export PREFIX=abc"
    assert r.redact("token=1") == "token=1"
    assert r.redact("w" * 5000 + " abcdef\n").endswith(" abcdef\n")
    assert r.redact("token=2") == "token=2"
    assert r.redact("---------- epoch 1 ----------") == "---------- epoch 1 ----------"
    # After a line that may have been cut, the next lines' starts are looked at.
    assert r.redact("w" * 5000 + " abcdef").endswith(" [secret:S]")
    assert r.redact("---------- epoch 2") == "---------- epoch 2"
    assert r.redact("123-token=3") == "[secret:S]=3"


PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNb\n"
       "-----END PRIVATE KEY-----\n")
CREDENTIALS = json.dumps({"type": "service_account", "project_id": "proj-4521",
                          "private_key": PEM, "client_id": "1098765432101234567"}, indent=2)


@pytest.mark.parametrize("secret", [PEM, PEM.replace("\n", "\r\n"), CREDENTIALS])
def test_each_line_of_a_multiline_secret_is_a_secret(secret: str) -> None:
    r = Redactor({"KEY": secret})
    printed = [line for line in secret.splitlines() if len(line.strip()) >= 3]
    for line in printed:
        assert r.redact(line) == "[secret:KEY]" or r.redact(line).strip() == "[secret:KEY]"
        assert r.redact(f"2024-01-01 INFO {line} (logged)").count("[secret:KEY]") == 1
    # Joined back, as run.stdout does, and whole, as a host message may quote it.
    joined = "\n".join(r.redact(line) for line in secret.splitlines())
    assert _pieces_shown(secret.strip(), joined, at_least=8) == []
    for text in (secret, json.dumps(secret), repr(secret), secret.replace("\n", "\r\n")):
        assert "PRIVATE KEY" not in r.redact(text) and "MIIEvQ" not in r.redact(text)


def test_a_javascript_line_separator_splits_a_secret_into_lines() -> None:
    # A host's results pattern (JavaScript) stops at U+2028 as at a line break: what it
    # captures is the value's first line, which must be hidden on its own.
    r = Redactor({"KEY": "first-part-é€\u2028second-part"})
    assert r.redact("v=first-part-é€") == "v=[secret:KEY]"
    assert r.redact("second-part done") == "[secret:KEY] done"


def test_a_multiline_secret_cut_inside_a_line() -> None:
    r = Redactor({"KEY": PEM})
    middle = PEM.splitlines()[2]
    head, tail = _cut("q" * 9000 + middle + "\n", 9000 + 20)
    assert _pieces_shown(middle, r.redact(head) + "|" + r.redact(tail)) == []


#: Values whose quoted forms differ: both quote kinds, a backslash, control characters,
#: non-ASCII, a character Python and Go print as an escape.
AWKWARD = ["it's \"quoted\"", "tab\there\x01", "back\\slash'", "naïve-€-ключ", "nb\u00a0sp\x7f",
           "bell\x07\x1b[0m"]


_C_NAMES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _node_inspect(text: str) -> str:
    """Node's ``util.inspect`` of a string with both quote kinds: single-quoted, ' escaped,
    C0 and C1 controls as uppercase ``\\xHH``."""
    out = []
    for ch in text:
        if ch in "'\\":
            out.append("\\" + ch)
        elif ch in _C_NAMES:
            out.append(_C_NAMES[ch])
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def _go_quote(text: str) -> str:
    """Go's ``%q`` (Docker's messages): lowercase ``\\xhh``, ``\\a``/``\\v``, ``\\u00a0``."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in {**_C_NAMES, "\a": "", "\v": ""}:
            out.append({**_C_NAMES, "\a": "\\a", "\v": "\\v"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _host_quotes(value: str) -> list[str]:
    """How a host's messages can quote a value that sits inside a longer string."""
    path = f"/data/{value}/run"
    return [
        repr(path), repr(path + "'"), repr(path + '"'), repr(path + "'\""),
        json.dumps(path), json.dumps(path, ensure_ascii=False),
        json.dumps({"error": {"path": path}}),
        _node_inspect(path + "'\""), _go_quote(path),
    ]


@pytest.mark.parametrize("value", AWKWARD)
def test_every_quoted_form_a_host_can_write_is_redacted(value: str) -> None:
    from nosana_magic.secrets import escaped_forms

    r = Redactor({"S": value})
    for message in _host_quotes(value):
        shown = r.redact(f"cannot create work_dir {message}: Permission denied")
        assert "[secret:S]" in shown, message
        for form in escaped_forms(value):
            assert form not in shown
    assert r.redact(f'exec: "{value}": executable file not found') != (
        f'exec: "{value}": executable file not found')


def test_escaped_forms_cover_go_and_node() -> None:
    from nosana_magic.secrets import escaped_forms

    forms = escaped_forms("a\x7fb\u00a0c'\x1b")
    assert "a\\x7fb\\u00a0c'\\x1b" in forms  # Go's %q
    assert "a\\x7Fb\u00a0c\\'\\x1B" in forms  # Node's util.inspect, single-quoted
    assert "a\\x7fb\\xa0c\\'\\x1b" in forms  # Python's repr, single-quoted
    assert escaped_forms("plain-token_123") == {"plain-token_123"}
