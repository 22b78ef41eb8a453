"""JavaScript ``RegExp`` patterns: which ones a host accepts, and the same pattern in Python.

A host applies an op's ``results`` patterns with ``new RegExp(pattern)`` (no flags, so the
web-compatible grammar of ECMAScript's Annex B) to each log line, and a pattern JavaScript
refuses silently becomes the text of its ``SyntaxError`` in place of a result
(docs/protocol.md §14). :func:`check_pattern` refuses such a pattern before anything is posted;
:func:`to_python` gives the pattern Python's :mod:`re` needs to match what JavaScript matches,
which the local network runs.

The grammar checked is ECMAScript 2023's (non-Unicode mode, Annex B): unbalanced groups, a
quantifier with nothing to repeat or bounds out of order, a range out of order, an invalid or
duplicate group name, ``\\k`` naming no group when the pattern has named groups, a trailing
``\\``, an unknown ``(?`` group (``(?P<…>``, ``(?i)``), a quantified lookbehind.

What differs in Python and is translated: ``$`` (end of input only: a line's trailing newline
stops it), ``.`` (no line terminator), ``\\d``/``\\w``/``\\b`` (ASCII), ``\\s`` (Unicode spaces
and ``\\ufeff``), identity escapes (``\\a`` is ``a``), ``\\cX``, legacy octal escapes,
``[^]``/``[]``, named groups and ``\\k<name>``, back references to groups that have not
matched (they match the empty string), a ``{`` that is not a quantifier. What Python cannot
run (a lookbehind of variable width) is refused by :func:`to_python`. Not emulated: JavaScript
matches UTF-16 code units, so ``.`` on an astral character (an emoji) takes half of it there.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

__all__ = ["RegexError", "check_pattern", "to_python"]

#: JavaScript's WhiteSpace and LineTerminator characters (what ``\s`` matches there).
_JS_SPACE = ("\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f"
             "\\u3000\\ufeff")
_SPACE_POINTS = sorted({*range(0x09, 0x0E), 0x20, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028,
                        0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF})


def _not_space() -> str:
    """JavaScript's ``\\S`` as class ranges (Python cannot negate a set inside a class)."""
    ranges, start = [], 0
    for point in [*_SPACE_POINTS, 0x110000]:
        if point > start:
            ranges.append(f"\\U{start:08x}" if point - 1 == start
                          else f"\\U{start:08x}-\\U{point - 1:08x}")
        start = point + 1
    return "".join(ranges)


_JS_NOT_SPACE = _not_space()
_BRACED = re.compile(r"\{(\d+)(?:(,)(\d*))?\}")
_HEX_ESCAPE = {"x": re.compile(r"x([0-9A-Fa-f]{2})"), "u": re.compile(r"u([0-9A-Fa-f]{4})")}
_CONTROL = {"f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


class RegexError(ValueError):
    """A pattern JavaScript refuses, or one Python cannot run: ``reason`` says what,
    ``position`` where (0-based, in the pattern) when it is known."""

    def __init__(self, reason: str, position: int | None = None, *,
                 javascript: bool = True) -> None:
        at = f" at character {position + 1}" if position is not None else ""
        if javascript:
            text = f"JavaScript's RegExp refuses it ({reason}{at})"
        else:
            text = f"valid in JavaScript, but the local network cannot run it ({reason})"
        super().__init__(text)
        self.reason = reason
        self.position = position
        self.javascript = javascript


@dataclass
class _Parser:
    source: str
    pos: int = 0
    out: list[str] = field(default_factory=list)
    #: Capturing groups in the whole pattern, and their names (pre-scanned, as JavaScript
    #: decides what ``\\1`` and ``\\k`` mean from the whole pattern).
    total_groups: int = 0
    names: dict[str, int] = field(default_factory=dict)
    opened: int = 0  # capturing groups opened so far
    open_groups: list[int] = field(default_factory=list)

    # -------------------------------------------------------------- helpers

    def error(self, message: str, position: int | None = None) -> RegexError:
        return RegexError(message, self.pos if position is None else position)

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.source[i] if i < len(self.source) else ""

    def take(self, text: str) -> bool:
        if self.source.startswith(text, self.pos):
            self.pos += len(text)
            return True
        return False

    # -------------------------------------------------------------- grammar

    def disjunction(self) -> None:
        self.alternative()
        while self.take("|"):
            self.out.append("|")
            self.alternative()

    def alternative(self) -> None:
        while self.pos < len(self.source) and self.peek() not in "|)":
            self.term()

    def term(self) -> None:
        start = self.pos
        char = self.peek()
        if char == "^":
            self.pos += 1
            self.out.append("^")
            self.no_quantifier()
            return
        if char == "$":
            self.pos += 1
            self.out.append(r"\Z")  # JavaScript's $ (no m flag) is the end of the input
            self.no_quantifier()
            return
        if char == "\\" and self.peek(1) in ("b", "B"):
            self.pos += 2
            self.out.append("\\" + self.source[start + 1])
            self.no_quantifier()
            return
        if self.source.startswith(("(?<=", "(?<!"), self.pos):
            self.group()
            self.no_quantifier()
            return
        if char in "*+?":
            raise self.error("nothing to repeat")
        if char == "{" and self.braced_quantifier() is not None:
            raise self.error("nothing to repeat")
        atom_at = len(self.out)
        self.atom()
        quantifier = self.quantifier()
        if quantifier:
            if self.out[atom_at].startswith("(?=") or self.out[atom_at].startswith("(?!"):
                # A quantified lookahead (Annex B): Python needs it in a group to repeat it.
                self.out.insert(atom_at, "(?:")
                self.out.append(")")
            self.out.append(quantifier)

    def no_quantifier(self) -> None:
        if self.peek() in ("*", "+", "?") or (self.peek() == "{"
                                             and self.braced_quantifier() is not None):
            raise self.error("nothing to repeat")

    def braced_quantifier(self) -> tuple[str, int, int | None] | None:
        """``{n}``, ``{n,}`` or ``{n,m}`` at the cursor (not consumed), else None (then ``{``
        is a literal, as Annex B says)."""
        m = _BRACED.match(self.source, self.pos)
        if not m:
            return None
        low = int(m.group(1))
        high = None if m.group(2) and not m.group(3) else int(m.group(3) or m.group(1))
        return m.group(0), low, high

    def quantifier(self) -> str:
        start = self.pos
        char = self.peek()
        if char in ("*", "+", "?"):
            self.pos += 1
            text = char
        elif char == "{":
            braced = self.braced_quantifier()
            if braced is None:
                return ""
            text, low, high = braced
            if high is not None and high < low:
                raise self.error("numbers out of order in {} quantifier", start)
            self.pos += len(text)
        else:
            return ""
        if self.take("?"):
            text += "?"
        return text

    def atom(self) -> None:
        char = self.peek()
        if char == "(":
            self.group()
        elif char == ")":
            raise self.error("unmatched ')'")
        elif char == "[":
            self.char_class()
        elif char == ".":
            self.pos += 1
            self.out.append("[^\\n\\r\\u2028\\u2029]")
        elif char == "\\":
            self.atom_escape()
        else:
            self.pos += 1
            self.out.append(re.escape(char))

    def group(self) -> None:
        start = self.pos
        self.pos += 1  # (
        capturing = False
        if self.take("?"):
            if self.take(":"):
                self.out.append("(?:")
            elif self.take("="):
                self.out.append("(?=")
            elif self.take("!"):
                self.out.append("(?!")
            elif self.take("<="):
                self.out.append("(?<=")
            elif self.take("<!"):
                self.out.append("(?<!")
            elif self.peek() == "<":
                self.pos += 1
                self.group_name()
                capturing = True
                self.out.append("(")  # names do not matter to a match: a plain group
            else:
                raise self.error("invalid group", start)
        else:
            capturing = True
            self.out.append("(")
        if capturing:
            self.opened += 1
            self.open_groups.append(self.opened)
        self.disjunction()
        if not self.take(")"):
            raise self.error("unterminated group", start)
        if capturing:
            self.open_groups.pop()
        self.out.append(")")

    def group_name(self) -> str:
        start = self.pos
        end = self.source.find(">", self.pos)
        name = self.source[self.pos:end] if end >= 0 else ""
        if not _is_identifier(name):
            raise self.error("invalid capture group name", start)
        self.pos = end + 1
        return name

    def atom_escape(self) -> None:
        start = self.pos
        self.pos += 1  # \
        if self.pos >= len(self.source):
            raise self.error("\\ at end of pattern", start)
        char = self.peek()
        if char.isdigit() and char != "0":
            digits = re.compile(r"\d+").match(self.source, self.pos)
            assert digits is not None
            number = int(digits.group(0))
            if number <= self.total_groups:
                self.pos = digits.end()
                self.backreference(number)
                return
            self.out.append(self.legacy_octal())
            return
        if char == "k" and self.names:
            self.pos += 1
            if not self.take("<"):
                raise self.error("invalid named reference", start)
            name_at = self.pos
            end = self.source.find(">", self.pos)
            name = self.source[self.pos:end] if end >= 0 else ""
            if name not in self.names:
                raise self.error("invalid named reference", name_at)
            self.pos = end + 1
            self.backreference(self.names[name])
            return
        if char in "dDwW":
            self.pos += 1
            self.out.append("\\" + char)  # compiled with re.ASCII, as in JavaScript
            return
        if char == "s":
            self.pos += 1
            self.out.append(f"[{_JS_SPACE}]")
            return
        if char == "S":
            self.pos += 1
            self.out.append(f"[^{_JS_SPACE}]")
            return
        self.out.append(re.escape(self.character_escape(in_class=False)))

    def backreference(self, number: int) -> None:
        if number in self.open_groups or number > self.opened:
            # A group that cannot have matched yet: JavaScript matches the empty string.
            self.out.append("(?:)")
        else:
            # JavaScript matches the empty string when the group did not take part.
            self.out.append(f"(?({number})\\{number})")

    def legacy_octal(self) -> str:
        """An Annex B escape ``\\NNN`` that is not a back reference: the character of its octal
        digits, else the digit itself (``\\8``)."""
        m = re.compile(r"[0-3][0-7]{0,2}|[4-7][0-7]?").match(self.source, self.pos)
        if m is None:  # \8, \9
            self.pos += 1
            return self.source[self.pos - 1]
        self.pos = m.end()
        return chr(int(m.group(0), 8))

    def character_escape(self, *, in_class: bool) -> str:
        """The character an escape stands for (the cursor after its ``\\``)."""
        char = self.peek()
        if char in _CONTROL:
            self.pos += 1
            return _CONTROL[char]
        if char == "0" and not self.peek(1).isdigit():
            self.pos += 1
            return "\x00"
        if char.isdigit():
            return self.legacy_octal()
        if char == "c":
            letter = self.peek(1)
            if letter.isascii() and (letter.isalpha() or (in_class and (letter.isdigit()
                                                                        or letter == "_"))):
                self.pos += 2
                return chr(ord(letter) % 32)
            return "\\"  # Annex B: the backslash itself; the c follows as a literal
        if char in _HEX_ESCAPE:
            m = _HEX_ESCAPE[char].match(self.source, self.pos)
            if m:  # (else Annex B: the letter itself)
                self.pos = m.end()
                return chr(int(m.group(1), 16))
        self.pos += 1
        return char  # an identity escape (\\a is "a"): the character itself

    def char_class(self) -> None:
        start = self.pos
        self.pos += 1  # [
        negated = self.take("^")
        parts: list[str] = []
        while True:
            if self.pos >= len(self.source):
                raise self.error("unterminated character class", start)
            if self.take("]"):
                break
            low_at = self.pos
            low, low_char = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                high, high_char = self.class_atom()
                if low_char is not None and high_char is not None:
                    if ord(low_char) > ord(high_char):
                        raise self.error("range out of order in character class", low_at)
                    parts.append(f"{low}-{high}")
                else:  # Annex B: a range with a class escape at an end is three atoms
                    parts += [low, "\\-", high]
            else:
                parts.append(low)
        if not parts:
            self.out.append("[\\s\\S]" if negated else "(?!)")  # [^] is any character
            return
        self.out.append("[" + ("^" if negated else "") + "".join(parts) + "]")

    def class_atom(self) -> tuple[str, str | None]:
        """One class member as Python text, and the character it stands for (None for a
        class escape such as ``\\d``)."""
        char = self.peek()
        self.pos += 1
        if char != "\\":
            return _class_literal(char), char
        if self.pos >= len(self.source):
            raise self.error("\\ at end of pattern", self.pos - 1)
        char = self.peek()
        if char in "dDwW":
            self.pos += 1
            return "\\" + char, None
        if char == "s":
            self.pos += 1
            return _JS_SPACE, None
        if char == "S":
            self.pos += 1
            return _JS_NOT_SPACE, None
        if char == "b":
            self.pos += 1
            return "\\x08", "\x08"
        value = self.character_escape(in_class=True)
        return _class_literal(value), value


def _class_literal(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


def _is_identifier(name: str) -> bool:
    """A JavaScript identifier (group names: letters, digits, ``$``, ``_``; not a digit first)."""
    if not name:
        return False
    for i, char in enumerate(name):
        category = unicodedata.category(char)
        if char in "$_" or category in ("Lu", "Ll", "Lt", "Lm", "Lo", "Nl"):
            continue
        if i > 0 and (category in ("Mn", "Mc", "Nd", "Pc") or char in "\u200c\u200d"):
            continue
        return False
    return True


def _prescan(source: str) -> tuple[int, dict[str, int]]:
    """Capturing groups and their names, in order (a light pass that skips escapes and
    classes, as JavaScript's own counting does)."""
    count = 0
    names: dict[str, int] = {}
    i = 0
    in_class = False
    while i < len(source):
        char = source[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            if not source.startswith("(?", i):
                count += 1
            elif source.startswith("(?<", i) and not source.startswith(("(?<=", "(?<!"), i):
                count += 1
                end = source.find(">", i)
                name = source[i + 3:end] if end >= 0 else ""
                if name in names:
                    raise RegexError("duplicate capture group name", i + 3)
                if name:
                    names[name] = count
        i += 1
    return count, names


def _translate(pattern: str) -> str:
    total, names = _prescan(pattern)
    parser = _Parser(pattern, total_groups=total, names=names)
    parser.disjunction()
    if parser.pos < len(pattern):
        raise parser.error("unmatched ')'")
    return "".join(parser.out)


def check_pattern(pattern: str) -> None:
    """Raise :class:`RegexError` if ``new RegExp(pattern)`` would throw, or if Python cannot
    match it as JavaScript does (see :func:`to_python`)."""
    to_python(pattern)


def to_python(pattern: str) -> re.Pattern[str]:
    """``pattern`` (JavaScript, no flags) compiled for Python to match what JavaScript matches.

    A host reads the pattern ``*`` as ``/*`` (a quirk of its own); so does this. Raises
    :class:`RegexError` for a pattern JavaScript refuses, or one Python cannot run (a
    lookbehind of variable width).
    """
    source = "/*" if pattern == "*" else pattern
    translated = _translate(source)
    try:
        return re.compile(translated, re.ASCII)
    except re.error as exc:
        raise RegexError(exc.msg, javascript=False) from None
