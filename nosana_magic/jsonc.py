"""JSON with comments and trailing commas, keeping the line and column of every value and key.

Job definitions are written by hand in notebook cells, so the parser accepts ``//`` and ``/* */``
comments and trailing commas, and remembers where everything is: a validation error can then say
``line 7, column 12`` instead of "somewhere in ops[0]". No library gives positions, hence this
small recursive-descent parser. Value semantics follow ``JSON.parse``: integers stay ``int``,
anything with a fraction or exponent is ``float``, and a duplicate key keeps its last value
(with a warning, because it is almost always a mistake).

Error messages never quote the offending text: a cell may hold a secret the user forgot to quote.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "JsonPath",
    "JsoncDocument",
    "JsoncError",
    "Location",
    "Problem",
    "format_path",
    "json_type_name",
    "parse_jsonc",
    "typia_path",
]

JsonPath = tuple[str | int, ...]
"""A path into a JSON value: object keys (``str``) and array indexes (``int``)."""

Location = tuple[int, int]
"""``(line, column)``, both 1-based; columns count characters, not bytes."""

MAX_DEPTH = 256
"""Deeper nesting is refused: no job definition needs it, and it keeps recursion bounded."""

# Whitespace and comments in one regex call: the scanner spends most of its time here.
_SKIP = re.compile(r"(?:[ \t\n\r]+|//[^\n]*|/\*.*?\*/)*", re.DOTALL)
_WS = re.compile(r"[ \t\n\r]*")
# Fast path for the common `"key": ` prefix of an object member (no escapes, no comments).
_KEY = re.compile(r'"([^"\\\x00-\x1f]*)"[ \t\n\r]*:[ \t\n\r]*')
_SIMPLE_STRING = re.compile(r'"([^"\\\x00-\x1f]*)"')
_STRING_CHUNK = re.compile(r'[^"\\\x00-\x1f]*')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

# JavaScript reserved words: typia writes these keys as $input["private"], not $input.private.
_JS_RESERVED = frozenset((
    "break", "case", "catch", "class", "const", "continue", "debugger", "default", "delete", "do",
    "else", "enum", "export", "extends", "false", "finally", "for", "function", "if",
    "implements", "import", "in", "instanceof", "interface", "let", "new", "null", "package",
    "private", "protected", "public", "return", "static", "super", "switch", "this", "throw",
    "true", "try", "typeof", "var", "void", "while", "with", "yield",
))


def format_path(path: Sequence[str | int]) -> str:
    """Render a path the way users read it: ``ops[0].args.image``; ``""`` for the root."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENT.match(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


def typia_path(path: Sequence[str | int]) -> str:
    """Render a path in typia's notation, as Nosana hosts report validation errors."""
    out = ["$input"]
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENT.match(part) and part not in _JS_RESERVED:
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


def json_type_name(value: object) -> str:
    """The JSON type of a parsed value, for messages that must not show the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@dataclass(frozen=True)
class Problem:
    """One located problem in a job definition.

    ``line``/``column`` are ``None`` when the definition did not come from text.
    """

    line: int | None
    column: int | None
    path: str
    message: str
    typia_path: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class JsoncError(ValueError):
    """A syntax error, with the 1-based line and column where it was found."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.message = message
        self.line = line
        self.column = column


@dataclass
class JsoncDocument:
    """A parsed document: the value, and where each value and each object key starts."""

    value: Any
    positions: dict[JsonPath, Location] = field(default_factory=dict)
    key_positions: dict[JsonPath, Location] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    def locate(self, path: JsonPath) -> Location | None:
        """Position of the value at ``path``, or of its nearest ancestor that exists."""
        for n in range(len(path), -1, -1):
            loc = self.positions.get(path[:n])
            if loc is not None:
                return loc
        return None


class _Parser:
    def __init__(self, text: str, first_line: int = 1) -> None:
        self.text = text
        self.first_line = first_line
        self.n = len(text)
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.positions: dict[JsonPath, Location] = {}
        self.key_positions: dict[JsonPath, Location] = {}
        self.warnings: list[Problem] = []

    def loc(self, pos: int) -> Location:
        line = bisect.bisect_left(self.newlines, pos)
        start = self.newlines[line - 1] + 1 if line else 0
        return line + self.first_line, pos - start + 1

    def error(self, message: str, pos: int) -> JsoncError:
        return JsoncError(message, *self.loc(pos))

    def skip(self, pos: int) -> int:
        pos = _WS.match(self.text, pos).end()  # type: ignore[union-attr]  # always matches
        if not self.text.startswith("/", pos):
            return pos
        pos = _SKIP.match(self.text, pos).end()  # type: ignore[union-attr]  # always matches
        if self.text.startswith("/*", pos):
            raise self.error("unterminated /* comment", pos)
        return pos

    def parse(self) -> Any:
        pos = self.skip(0)
        if pos >= self.n:
            raise self.error("empty input: expected a JSON value", pos)
        value, pos = self.value(pos, (), 0)
        pos = self.skip(pos)
        if pos < self.n:
            raise self.error("trailing data after the JSON value", pos)
        return value

    def value(self, pos: int, path: JsonPath, depth: int) -> tuple[Any, int]:
        self.positions[path] = self.loc(pos)
        c = self.text[pos] if pos < self.n else ""
        if c == "{":
            return self.object(pos, path, depth + 1)
        if c == "[":
            return self.array(pos, path, depth + 1)
        if c == '"':
            return self.string(pos)
        if c == "-" or c.isdigit():
            return self.number(pos)
        for word, literal in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, pos):
                return literal, pos + len(word)
        if c == "":
            raise self.error("unexpected end of input: expected a value", pos)
        if c == "'":
            raise self.error("strings must use double quotes", pos)
        if c in ",]}":
            raise self.error(f"expected a value before '{c}'", pos)
        raise self.error("expected a JSON value (string, number, object, array, true, false "
                         "or null)", pos)

    def object(self, start: int, path: JsonPath, depth: int) -> tuple[dict[str, Any], int]:
        if depth > MAX_DEPTH:
            raise self.error(f"nesting deeper than {MAX_DEPTH} levels", start)
        out: dict[str, Any] = {}
        pos = self.skip(start + 1)
        while True:
            c = self.text[pos] if pos < self.n else ""
            if c == "}":
                return out, pos + 1
            key_pos = pos
            fast = _KEY.match(self.text, pos) if c == '"' else None
            if fast is not None:
                key = fast.group(1)
            elif c == '"':
                key, pos = self.string(pos)
            elif c == "":
                raise self.unclosed("{", start, pos)
            elif c == "'" or c.isalpha() or c in "_$":
                raise self.error("object keys must be double-quoted strings", pos)
            elif c == ",":
                raise self.error("unexpected ',': expected a string key or '}'", pos)
            else:
                raise self.error("expected a string key or '}'", pos)
            child = (*path, key)
            if key in out:
                line, column = self.loc(key_pos)
                self.warnings.append(Problem(line, column, format_path(child),
                                             f"duplicate key '{key}': the last value wins",
                                             typia_path(child)))
                self.forget(child)
            self.key_positions[child] = self.loc(key_pos)
            if fast is not None:
                pos = fast.end()
                if self.text.startswith("/", pos):
                    pos = self.skip(pos)
            else:
                pos = self.skip(pos)
                if self.text.startswith(":", pos):
                    pos = self.skip(pos + 1)
                elif pos >= self.n:
                    raise self.unclosed("{", start, pos)
                else:
                    raise self.error("expected ':' after object key", pos)
            out[key], pos = self.value(pos, child, depth)
            pos = self.skip(pos)
            c = self.text[pos] if pos < self.n else ""
            if c == ",":
                pos = self.skip(pos + 1)
            elif c == "}":
                return out, pos + 1
            elif c == "":
                raise self.unclosed("{", start, pos)
            else:
                raise self.error("expected ',' or '}' after object member", pos)

    def array(self, start: int, path: JsonPath, depth: int) -> tuple[list[Any], int]:
        if depth > MAX_DEPTH:
            raise self.error(f"nesting deeper than {MAX_DEPTH} levels", start)
        out: list[Any] = []
        pos = self.skip(start + 1)
        while True:
            c = self.text[pos] if pos < self.n else ""
            if c == "]":
                return out, pos + 1
            if c == "":
                raise self.unclosed("[", start, pos)
            if c == ",":
                raise self.error("unexpected ',': expected a value or ']'", pos)
            item, pos = self.value(pos, (*path, len(out)), depth)
            out.append(item)
            pos = self.skip(pos)
            c = self.text[pos] if pos < self.n else ""
            if c == ",":
                pos = self.skip(pos + 1)
            elif c == "]":
                return out, pos + 1
            elif c == "":
                raise self.unclosed("[", start, pos)
            else:
                raise self.error("expected ',' or ']' after array element", pos)

    def unclosed(self, bracket: str, start: int, pos: int) -> JsoncError:
        line, column = self.loc(start)
        return self.error(f"unexpected end of input: the '{bracket}' at line {line}, "
                          f"column {column} is not closed", pos)

    def forget(self, prefix: JsonPath) -> None:
        # A duplicate key replaces the earlier value; drop the positions of what it replaced.
        k = len(prefix)
        for table in (self.positions, self.key_positions):
            for p in [p for p in table if p[:k] == prefix]:
                del table[p]

    def string(self, start: int) -> tuple[str, int]:
        m = _SIMPLE_STRING.match(self.text, start)
        if m:
            return m.group(1), m.end()
        parts: list[str] = []
        pos = start + 1
        text = self.text
        while True:
            m2 = _STRING_CHUNK.match(text, pos)
            assert m2 is not None  # the pattern matches the empty string
            parts.append(m2.group())
            pos = m2.end()
            c = text[pos] if pos < self.n else ""
            if c == '"':
                return "".join(parts), pos + 1
            if c == "\\":
                pos = self.escape(pos, parts)
            elif c in ("", "\n", "\r"):
                raise self.error("unterminated string", start)
            else:
                raise self.error("control character in string (write it as an escape such "
                                 "as \\t)", pos)

    def escape(self, pos: int, parts: list[str]) -> int:
        text = self.text
        c = text[pos + 1] if pos + 1 < self.n else ""
        if c in _ESCAPES:
            parts.append(_ESCAPES[c])
            return pos + 2
        if c != "u":
            if c in ("", "\n", "\r"):
                raise self.error("unterminated string", pos)
            raise self.error("invalid escape sequence (valid: \\\" \\\\ \\/ \\b \\f \\n \\r "
                             "\\t \\uXXXX)", pos)
        if not _HEX4.match(text, pos + 2):
            raise self.error("invalid \\u escape: expected 4 hex digits", pos)
        code = int(text[pos + 2:pos + 6], 16)
        # Join a UTF-16 surrogate pair as JSON.parse does; a lone surrogate is kept as is.
        if 0xD800 <= code < 0xDC00 and text.startswith("\\u", pos + 6) and _HEX4.match(
                text, pos + 8):
            low = int(text[pos + 8:pos + 12], 16)
            if 0xDC00 <= low < 0xE000:
                parts.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
                return pos + 12
        parts.append(chr(code))
        return pos + 6

    def number(self, start: int) -> tuple[int | float, int]:
        m = _NUMBER.match(self.text, start)
        if not m:
            raise self.error("invalid number", start)
        end = m.end()
        nxt = self.text[end] if end < self.n else ""
        if nxt and nxt in ".eE":
            raise self.error("invalid number: expected digits after '.' or exponent", end)
        if nxt.isdigit():
            raise self.error("invalid number: leading zeros are not allowed", start)
        raw = m.group()
        # JavaScript reads 1e400 as Infinity, which no validator accepts and JSON cannot
        # carry back out; refuse it here, where its position is known.
        if math.isinf(float(raw)):
            raise self.error("number out of range", start)
        if m.group(1) is None and m.group(2) is None:
            return int(raw), end
        return float(raw), end


def parse_jsonc(text: str, *, first_line: int = 1) -> JsoncDocument:
    """Parse JSON with comments and trailing commas; raise :class:`JsoncError` on bad syntax.

    ``first_line`` is the number the first line of ``text`` gets in every location (a cell
    body starts on line 2 of its cell, under the magic line).
    """
    if text.startswith("\ufeff"):
        text = text[1:]  # an editor's byte-order mark is not part of the document
    parser = _Parser(text, first_line)
    value = parser.parse()
    return JsoncDocument(value, parser.positions, parser.key_positions, parser.warnings)
