"""The JSON-with-comments parser: values, positions, and every syntax error with its location."""

from __future__ import annotations

import json

import pytest

from nosana_magic.jsonc import (
    JsoncError,
    format_path,
    json_type_name,
    parse_jsonc,
    typia_path,
)

CELL = """\
// a job for the notebook
{
  "version": "0.1", /* inline */
  "ops": [
    {"id": "a", "n": 1},
    {"id": "b", "n": 2.0,},  // trailing comma in an object
  ],
}
"""


def test_comments_and_trailing_commas() -> None:
    doc = parse_jsonc(CELL)
    assert doc.value == {"version": "0.1", "ops": [{"id": "a", "n": 1}, {"id": "b", "n": 2.0}]}
    assert doc.warnings == []


def test_value_positions() -> None:
    doc = parse_jsonc(CELL)
    assert doc.positions[()] == (2, 1)
    assert doc.positions[("version",)] == (3, 14)
    assert doc.positions[("ops",)] == (4, 10)
    assert doc.positions[("ops", 0)] == (5, 5)
    assert doc.positions[("ops", 1, "n")] == (6, 22)


def test_key_positions() -> None:
    doc = parse_jsonc(CELL)
    assert doc.key_positions[("version",)] == (3, 3)
    assert doc.key_positions[("ops", 1, "id")] == (6, 6)
    assert ("ops", 0) not in doc.key_positions  # array items have no key


def test_locate_falls_back_to_nearest_ancestor() -> None:
    doc = parse_jsonc(CELL)
    assert doc.locate(("ops", 1, "missing", "deeper")) == (6, 5)
    assert doc.locate(("nope",)) == (2, 1)


def test_number_semantics_like_json_parse() -> None:
    doc = parse_jsonc('[0, -1, 1.0, 1e2, -0.5, 12345678901234567890, 2E-1]')
    assert doc.value == [0, -1, 1.0, 100.0, -0.5, 12345678901234567890, 0.2]
    assert [type(v) for v in doc.value] == [int, int, float, float, float, int, float]


def test_literals_and_escapes() -> None:
    doc = parse_jsonc(r'{"t": true, "f": false, "n": null, "s": "a\"b\\c\/\n\t\u00e9\ud83d\ude00"}')
    assert doc.value == {"t": True, "f": False, "n": None, "s": 'a"b\\c/\n\té😀'}


def test_agrees_with_json_module_on_plain_json() -> None:
    obj = {"a": [1, 2.5, {"b": None, "c": "x\u2028y"}], "d": {}, "e": [], "f": "é"}
    for text in (json.dumps(obj), json.dumps(obj, indent=2), json.dumps(obj, ensure_ascii=False)):
        assert parse_jsonc(text).value == obj


def test_duplicate_key_keeps_last_and_warns() -> None:
    doc = parse_jsonc('{\n  "a": {"x": 1},\n  "a": 2\n}')
    assert doc.value == {"a": 2}
    [warning] = doc.warnings
    assert (warning.line, warning.column, warning.path) == (3, 3, "a")
    assert warning.message == "duplicate key 'a': the last value wins"
    assert ("a", "x") not in doc.positions  # the replaced value's positions are gone
    assert doc.positions[("a",)] == (3, 8)


def test_byte_order_mark_is_ignored() -> None:
    assert parse_jsonc('\ufeff{"a": 1}').value == {"a": 1}


def test_comment_markers_inside_strings_are_text() -> None:
    assert parse_jsonc('{"url": "http://x/*y*/"}').value == {"url": "http://x/*y*/"}


SYNTAX_ERRORS = [
    # (text, line, column, message)
    ('{"a": 1\n "b": 2}', 2, 2, "expected ',' or '}' after object member"),
    ('[1 2]', 1, 4, "expected ',' or ']' after array element"),
    ('{"a": "abc\n}', 1, 7, "unterminated string"),
    ('{"a": "abc', 1, 7, "unterminated string"),
    ('{"a": 1}\n}', 2, 1, "trailing data after the JSON value"),
    ('{"a": 1} // ok\n  x', 2, 3, "trailing data after the JSON value"),
    ('{"a": "\\q"}', 1, 8, "invalid escape sequence (valid: \\\" \\\\ \\/ \\b \\f \\n \\r \\t "
                           "\\uXXXX)"),
    ('{"a": "\\u12G4"}', 1, 8, "invalid \\u escape: expected 4 hex digits"),
    ('{"a": "x\ty"}', 1, 9, "control character in string (write it as an escape such as \\t)"),
    ('{"a": 1', 1, 8, "unexpected end of input: the '{' at line 1, column 1 is not closed"),
    ('{\n  "a": [1, 2\n', 3, 1, "unexpected end of input: the '[' at line 2, column 8 is not "
                               "closed"),
    ('{"a"', 1, 5, "unexpected end of input: the '{' at line 1, column 1 is not closed"),
    ('', 1, 1, "empty input: expected a JSON value"),
    ('  // only a comment\n', 2, 1, "empty input: expected a JSON value"),
    ('{"a": 1} /* open', 1, 10, "unterminated /* comment"),
    ('{a: 1}', 1, 2, "object keys must be double-quoted strings"),
    ("{'a': 1}", 1, 2, "object keys must be double-quoted strings"),
    ('{"a": \'x\'}', 1, 7, "strings must use double quotes"),
    ('{"a" 1}', 1, 6, "expected ':' after object key"),
    ('{"a": }', 1, 7, "expected a value before '}'"),
    ('[1,,2]', 1, 4, "unexpected ',': expected a value or ']'"),
    ('{,}', 1, 2, "unexpected ',': expected a string key or '}'"),
    ('{"a": 1,,}', 1, 9, "unexpected ',': expected a string key or '}'"),
    ('{1: 2}', 1, 2, "expected a string key or '}'"),
    ('{"a": tru}', 1, 7, "expected a JSON value (string, number, object, array, true, false or "
                         "null)"),
    ('{"a": secret123}', 1, 7, "expected a JSON value (string, number, object, array, true, "
                               "false or null)"),
    ('[01]', 1, 2, "invalid number: leading zeros are not allowed"),
    ('[1.]', 1, 3, "invalid number: expected digits after '.' or exponent"),
    ('[1e]', 1, 3, "invalid number: expected digits after '.' or exponent"),
    ('[-]', 1, 2, "invalid number"),
    ('[NaN]', 1, 2, "expected a JSON value (string, number, object, array, true, false or null)"),
    ('[', 1, 2, "unexpected end of input: the '[' at line 1, column 1 is not closed"),
    ('{"a": [1, 2}', 1, 12, "expected ',' or ']' after array element"),
    ('{"a": {"b": 1]', 1, 14, "expected ',' or '}' after object member"),
    ('"x" "y"', 1, 5, "trailing data after the JSON value"),
    ('{"é": "ü", "b" 2}', 1, 16, "expected ':' after object key"),  # columns count characters
]


@pytest.mark.parametrize(("text", "line", "column", "message"), SYNTAX_ERRORS)
def test_syntax_errors(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(JsoncError) as info:
        parse_jsonc(text)
    err = info.value
    assert (err.line, err.column, err.message) == (line, column, message)
    assert str(err) == f"line {line}, column {column}: {message}"


def test_errors_never_echo_the_offending_text() -> None:
    with pytest.raises(JsoncError) as info:
        parse_jsonc('{"token": hf_supersecretvalue}')
    assert "supersecret" not in str(info.value)


def test_nesting_is_bounded() -> None:
    with pytest.raises(JsoncError) as info:
        parse_jsonc("[" * 1000 + "]" * 1000)
    assert "nesting deeper than" in info.value.message


def test_path_formatting() -> None:
    assert format_path(()) == ""
    assert format_path(("ops", 0, "args", "image")) == "ops[0].args.image"
    assert format_path(("ops", 0, "args", "env", "MY-VAR")) == 'ops[0].args.env["MY-VAR"]'
    assert format_path((0, "a")) == "[0].a"
    assert typia_path(("ops", 0, "args", "private")) == '$input.ops[0].args["private"]'
    assert typia_path(()) == "$input"
    assert typia_path(("meta", "a b")) == '$input.meta["a b"]'


def test_json_type_names() -> None:
    assert [json_type_name(v) for v in (None, True, 1, 1.5, "s", [], {})] == [
        "null", "boolean", "number", "number", "string", "array", "object"]


def test_a_100kb_body() -> None:
    ops = [{"type": "container/run", "id": f"op-{i}",
            "args": {"image": "ubuntu:22.04", "cmd": ["python", "-c", f"print({i})"],
                     "env": {f"KEY_{j}": "v" * 12 for j in range(5)},
                     "expose": [8000 + i, {"port": 9000 + i, "type": "web"}]}}
           for i in range(200)]
    text = json.dumps({"version": "0.1", "type": "container", "ops": ops}, indent=2)
    assert 90_000 < len(text) < 110_000
    # Speed is measured by benchmarks/bench_parse.py, not asserted here.
    assert parse_jsonc(text).value["ops"] == ops


@pytest.mark.parametrize(("text", "column"), [
    ('{"port": 1e400}', 10),
    ('[1, -1e999]', 5),
    ("[" + "9" * 400 + "]", 2),  # JavaScript reads it as Infinity; so would float()
])
def test_numbers_out_of_range_are_refused_where_they_stand(text: str, column: int) -> None:
    with pytest.raises(JsoncError) as info:
        parse_jsonc(text)
    assert (info.value.line, info.value.column, info.value.message) == (
        1, column, "number out of range")
