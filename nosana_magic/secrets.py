"""``${env:NAME}``, ``${var:NAME}`` and ``${param:NAME}`` references in job definitions, and
redaction of secrets.

The cell body is data, so the only substitutions are explicit references inside JSON strings:

* ``${env:NAME}``: the environment variable ``NAME``. Its value is a **secret**: it is inserted
  only into the body sent to the host, and redacted to ``[secret:NAME]`` wherever host text is
  shown.
* ``${var:NAME}``: the notebook variable ``NAME``. A ``str`` is inserted as it is; any other
  value as ``json.dumps(value)``. Not a secret. (An exposed port written as exactly
  ``"${var:NAME}"`` becomes the number the variable holds.)
* ``$${`` is a literal ``${`` (so ``$${env:X}`` sends the text ``${env:X}``).

Anything else, such as a shell's ``${HOME}``, is left alone. Names are identifiers
(``[A-Za-z_][A-Za-z0-9_]*``). References are found when the definition is parsed, and resolved
only when the body is built, just before it is sent.

A secret typed into the cell itself is kept by the notebook and IPython's history:
:func:`token_name` and :func:`looks_like_token` recognise such literal credentials, so the
definition can warn about them (naming the field, never the value).
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import SecretError
from .jsonc import JsonPath, Location, Problem, format_path, typia_path

__all__ = [
    "Redactor",
    "Reference",
    "ResolvedDefinition",
    "SecretError",
    "escaped_forms",
    "find_references",
    "looks_like_token",
    "resolve_references",
    "token_name",
]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# One scan finds escapes, references, and reference-looking text that is malformed.
_TOKEN = re.compile(r"\$\$\{|\$\{(env|var|param):(" + _NAME + r")\}|\$\{(env|var|param):")

#: Credentials with a recognisable shape, and the variable such a value usually lives in.
_TOKEN_SHAPES = (
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), "HF_TOKEN"),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
     "GITHUB_TOKEN"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), "API_KEY"),
    (re.compile(r"\bnos_[A-Za-z0-9_-]{16,}"), "NOSANA_API_KEY"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "AWS_ACCESS_KEY_ID"),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), "GITLAB_TOKEN"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "SLACK_TOKEN"),
)
_OPAQUE = re.compile(r"[A-Za-z0-9+/=_-]{24,}")


def token_name(text: str) -> str | None:
    """The usual variable name of a credential whose shape appears in ``text`` (``hf_…``,
    ``ghp_…``, ``sk-…``, ``nos_…``, an AWS key id…), or None."""
    for pattern, name in _TOKEN_SHAPES:
        if pattern.search(text):
            return name
    return None


def looks_like_token(text: str) -> bool:
    """True for a value that is probably a credential: a known token shape, or a long
    opaque string (24+ characters of letters, digits and ``+/=_-``, both letters and digits,
    high entropy) such as an AWS secret key or a hex API key."""
    if token_name(text) is not None:
        return True
    if not _OPAQUE.fullmatch(text) or not any(c.isdigit() for c in text) or not any(
            c.isalpha() for c in text):
        return False
    counts = {c: text.count(c) for c in set(text)}
    entropy = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    return entropy >= 3.5


MALFORMED_MESSAGE = ("malformed reference: write ${env:NAME} or ${var:NAME}, NAME made of "
                     "letters, digits and '_' (write $${ for a literal ${)")
MALFORMED_PARAM_MESSAGE = MALFORMED_MESSAGE.replace("${env:NAME} or ${var:NAME}",
                                                    "${param:NAME}")

#: Where a ``${param:…}`` gets its value, for the message when a job has no parameters.
PARAM_HINT = "parameters come from --sweep NAME=… or --params ROWS"


@dataclass(frozen=True)
class Reference:
    """One ``${env:NAME}``/``${var:NAME}``/``${param:NAME}`` in the definition, and the string
    value holding it."""

    kind: Literal["env", "var", "param"]
    name: str
    path: str
    line: int | None = None
    column: int | None = None

    @property
    def is_secret(self) -> bool:
        """Environment references are secrets; notebook variables are not."""
        return self.kind == "env"

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        return f"{where}{self.path}: ${{{self.kind}:{self.name}}}"


def _strings(value: Any, path: JsonPath = ()) -> Iterator[tuple[JsonPath, str]]:
    """Every string *value* with its path (keys are never substituted)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, (*path, i))


def _problem(path: JsonPath, positions: Mapping[JsonPath, Location] | None,
             message: str) -> Problem:
    line, column = (positions or {}).get(path, (None, None))
    return Problem(line, column, format_path(path), message, typia_path(path))


def _malformed(m: re.Match[str]) -> str:
    return MALFORMED_PARAM_MESSAGE if m.group(3) == "param" else MALFORMED_MESSAGE


def find_references(value: Any, positions: Mapping[JsonPath, Location] | None = None,
                    ) -> tuple[list[Reference], list[Problem]]:
    """All references in ``value``, and a problem for each malformed ``${env:``/``${var:``/
    ``${param:``."""
    refs: list[Reference] = []
    problems: list[Problem] = []
    for path, text in _strings(value):
        if "${" not in text:
            continue
        line, column = (positions or {}).get(path, (None, None))
        for m in _TOKEN.finditer(text):
            if m.group(2):
                kind: Literal["env", "var", "param"] = (
                    "env" if m.group(1) == "env" else "param" if m.group(1) == "param" else "var")
                refs.append(Reference(kind, m.group(2), format_path(path), line, column))
            elif m.group() != "$${":
                problems.append(_problem(path, positions, _malformed(m)))
    return refs, problems


def _value_text(kind: str, name: str, namespace: Mapping[str, object],
                params: Mapping[str, object] | None) -> tuple[str, str | None]:
    """A ``${var:…}``/``${param:…}`` reference's text (a string as it is, anything else as
    JSON), or ``("", problem)`` when it has none."""
    what = "parameter" if kind == "param" else "notebook variable"
    source = (params or {}) if kind == "param" else namespace
    if name not in source:
        return "", (f"notebook variable {name} is not defined" if kind == "var" else
                    f"parameter {name} is not set ({PARAM_HINT})" if params is None else
                    f"parameter {name} is not among this job's parameters "
                    f"({', '.join(sorted(params)) or 'none'})")
    obj = source[name]
    if isinstance(obj, str):
        return obj, None
    try:
        return json.dumps(obj), None
    except (TypeError, ValueError):
        return "", f"{what} {name} has type {type(obj).__name__}, which is not JSON serializable"


def resolve_references(value: Any, *, env: Mapping[str, str], namespace: Mapping[str, object],
                       params: Mapping[str, object] | None = None,
                       positions: Mapping[JsonPath, Location] | None = None,
                       sizes: dict[str, int] | None = None,
                       ) -> tuple[Any, dict[str, str]]:
    """A copy of ``value`` with every reference replaced, and the secrets used (name → value).

    ``params`` are this job's parameters (``None``: the job is not part of a sweep).
    ``sizes``, when given, is filled with the bytes each reference (``"${var:NAME}"``) adds
    to the JSON body, so that an oversized body can be blamed on a reference, never shown.
    Raises :class:`SecretError` naming every reference that cannot be resolved.
    """
    problems: list[Problem] = []
    missing: list[str] = []
    unset_env: list[str] = []
    secrets: dict[str, str] = {}

    def substitute(path: JsonPath, text: str) -> str:
        if "${" not in text:
            return text

        def one(m: re.Match[str]) -> str:
            kind, name = m.group(1), m.group(2)
            if not name:
                if m.group() == "$${":
                    return "${"
                problems.append(_problem(path, positions, _malformed(m)))
                return m.group()
            if kind == "env":
                secret = env.get(name)
                if secret is None:
                    missing.append(name)
                    unset_env.append(name)
                    problems.append(_problem(path, positions,
                                             f"environment variable {name} is not set"))
                    return ""
                secrets[name] = secret
                return secret
            text, problem = _value_text(kind, name, namespace, params)
            if problem is not None:
                missing.append(name)
                problems.append(_problem(path, positions, problem))
                return ""
            return text

        def counted(m: re.Match[str]) -> str:
            inserted = one(m)
            if sizes is not None and m.group(2):
                key = f"${{{m.group(1)}:{m.group(2)}}}"
                size = len(json.dumps(inserted, ensure_ascii=False).encode(
                    "utf-8", "surrogatepass")) - 2
                sizes[key] = sizes.get(key, 0) + size
            return inserted

        return _TOKEN.sub(counted, text)

    def walk(item: Any, path: JsonPath) -> Any:
        if isinstance(item, str):
            return substitute(path, item)
        if isinstance(item, dict):
            return {k: walk(v, (*path, k)) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, (*path, i)) for i, v in enumerate(item)]
        return item

    resolved = walk(value, ())
    if problems:
        raise SecretError(problems, missing, unset_env=list(dict.fromkeys(unset_env)))
    return resolved, secrets


# --------------------------------------------------------------------------------------------
# Redaction


# U+2028 and U+2029 too: JavaScript ends a line there (a results pattern's ``.`` stops at
# them), so a host can show the parts of a value between them as parts of their own.
_LINE_BREAK = re.compile("\r\n|\r|\n|\u2028|\u2029")
_GO_NAMED = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
             "\t": "\\t", "\v": "\\v", '"': '\\"', "\\": "\\\\"}
_JS_NAMED = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r",
             "\\": "\\\\"}


def _go_quoted(text: str) -> str:
    """``text`` as Go's ``%q`` writes it inside the quotes (Docker's error messages)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _GO_NAMED:
            out.append(_GO_NAMED[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _js_inspected(text: str, quote: str | None) -> str:
    """``text`` as Node's ``util.inspect`` writes it inside its quotes (``console.log`` of an
    object): ``quote`` is the escaped quote (``'``), or None when another quote was chosen."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _JS_NAMED:
            out.append(_JS_NAMED[ch])
        elif ch == quote:
            out.append("\\" + ch)
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            out.append(f"\\x{code:02X}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def escaped_forms(text: str) -> set[str]:
    """Every way host text can quote ``text``: as it is, JSON (``JSON.stringify``, ASCII or
    not), Python's ``repr`` (single- or double-quoted), Node's ``util.inspect`` (with ``'``
    escaped or not) and Go's ``%q``; each without its surrounding quotes.

    A value made of letters, digits and ``-_.:/@+=`` has only one form: itself.
    """
    forms = {
        text,
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text + "\"'")[1:-4],  # both quotes in the string: single quotes, ' escaped
        _js_inspected(text, "'"),
        _js_inspected(text, None),
        _go_quoted(text),
    }
    if '"' not in text:
        forms.add(repr(text + "'")[1:-2])  # double quotes, ' as it is
    return forms


class Redactor:
    """Replaces secret values in text with ``[secret:NAME]``.

    It runs on every line a host sends (log lines, results, error messages), so it hides
    every form in which a host can show a secret:

    * **the value and its escaped forms**: JSON, Python's ``repr``, Node's ``util.inspect``
      and Go's ``%q`` (Docker's messages) quote a value with ``"``, ``'``, a tab or a
      non-ASCII character differently (:func:`escaped_forms`);
    * **each line of a multi-line value** (a PEM key, a JSON credentials file; lines end at
      ``\n``, ``\r`` and, as in JavaScript, U+2028 and U+2029): a job that prints it sends
      it line by line, so every line of it of at least :attr:`MIN_LENGTH`
      characters (without its surrounding spaces) is a secret of its own, and so is the value
      with its line breaks written ``\n`` or ``\r\n``;
    * **the pieces of a cut line**: a host cuts an output line longer than its limit into
      several log lines (docs/protocol.md §14), and the cut can fall inside a secret. So a
      line long enough to have been cut (:data:`CUT_MIN_CHARS`, with no line break at its
      end) has a beginning of a secret (or of one of its lines) hidden at its end, and the
      lines that follow it (the next :attr:`AFTER_CUT_LINES`: the rest of the cut line comes
      next in its stream, other streams may come between) have an end of a secret hidden at
      their start. Pieces of at least 3 characters are hidden (2 for a secret of 5 characters
      or fewer): a cut shows at most 2 characters of a secret, and 1 of a short one. A piece
      that is one character repeated (``-----`` of a PEM header, spaces) is not: it says
      nothing of the secret and such runs are common. Only lines near a cut are looked at,
      so a line that merely starts like a secret ends (``token=…`` for a secret ending in
      ``token``) is left alone. A secret longer than the cut can still show a middle piece.

    So the redactor is fed a stream's lines in order; it is not thread-safe.

    Values shorter than :attr:`MIN_LENGTH` (3) characters are not redacted: an empty or
    one-character "secret" would blank out every log line, and such a value protects nothing.
    One compiled alternation, longest form first, so a secret that contains another is
    replaced whole.
    """

    MIN_LENGTH = 3
    #: Cut pieces shorter than this are shown (2 for a secret of ``SHORT_SECRET`` characters).
    MIN_PIECE = 3
    SHORT_SECRET = 5
    #: How many lines after a possible cut have their start looked at.
    AFTER_CUT_LINES = 32

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets = dict(secrets)
        forms: dict[str, str] = {}
        units: list[tuple[str, str]] = []  # single lines of secrets, for the cut pieces
        for name in sorted(self._secrets):
            value = self._secrets[name]
            if len(value) < self.MIN_LENGTH:
                continue
            lines = _LINE_BREAK.split(value)
            texts = [value]
            if len(lines) > 1:
                texts += ["\n".join(lines), "\r\n".join(lines)]
                texts += [line.strip() for line in lines]
            for text in texts:
                if len(text) < self.MIN_LENGTH:
                    continue
                for form in escaped_forms(text):
                    forms.setdefault(form, name)
            units += [(line.strip(), name) for line in lines
                      if len(line.strip()) >= self.MIN_LENGTH]
        self._forms = forms
        self._pattern = (re.compile("|".join(re.escape(f) for f in sorted(forms, key=len,
                                                                          reverse=True)))
                         if forms else None)
        # Whether a text holds a form is asked with ``in``, shortest form first and only for
        # forms that fit in the text: faster than the regex's search for the few forms of
        # the common case, and as fast for many (the regex then replaces what was found).
        self._by_length = tuple(sorted(forms, key=len))
        self._lengths = [len(form) for form in self._by_length]
        self._literal = self._by_length[0] if len(forms) == 1 else None
        # The cut pieces, found by a line's first (or last) 3 characters, or 2 for the short
        # secrets whose 2-character pieces are hidden too: (size, starts, ends).
        indexes: dict[int, tuple[_PieceIndex, _PieceIndex]] = {}
        for unit, name in units:
            size = 2 if len(unit) <= self.SHORT_SECRET else self.MIN_PIECE
            _index_pieces(unit, name, size, *indexes.setdefault(size, ({}, {})))
        self._indexes = [(size, *pair) for size, pair in sorted(indexes.items(), reverse=True)]
        self._after_cut = 0  # lines still to look at for the rest of a cut secret

    @classmethod
    def empty(cls) -> Redactor:
        """A redactor that changes nothing."""
        return cls({})

    @property
    def names(self) -> list[str]:
        """The names of the secrets this redactor knows (never their values)."""
        return sorted(self._secrets)

    def redact(self, text: str) -> str:
        """``text`` with every known secret value, and every piece of one at a possible cut,
        replaced by ``[secret:NAME]``."""
        if self._pattern is None or not text:
            return text
        if len(text) >= CUT_MIN_CHARS:  # on long text the regex's own search is faster
            if self._pattern.search(text):
                text = self._pattern.sub(self._marker, text)
        elif self._literal is not None:
            if self._literal in text:
                text = self._pattern.sub(self._marker, text)
        else:
            for form in self._by_length[:bisect_right(self._lengths, len(text))]:
                if form in text:
                    text = self._pattern.sub(self._marker, text)
                    break
        if not self._indexes:
            return text
        if self._after_cut:
            self._after_cut -= 1
            for size, starts, _ends in self._indexes:
                key = text[:size] if text[:1] != "\ufffd" else text.lstrip("\ufffd")[:size]
                candidates = starts.get(key)
                if candidates:
                    text = _hide_start(text, candidates)
                    break
        if len(text) >= CUT_MIN_CHARS and text[-1] != "\n":  # it may have been cut here
            self._after_cut = self.AFTER_CUT_LINES
            body = text.rstrip("\r\ufffd")
            for size, _starts, ends in self._indexes:
                candidates = ends.get(body[-size:])
                if candidates:
                    text = _hide_end(text, body, candidates)
                    break
        return text

    def redact_many(self, texts: list[str]) -> list[str]:
        """Each of ``texts`` (consecutive lines of a stream) as :meth:`redact` makes it, in
        order. A batch of short lines none of which holds a form of a secret, the common
        case, costs one search of each form in the joined text, not one per line."""
        if self._pattern is None or not texts:
            return texts
        if not self._after_cut and max(map(len, texts)) < CUT_MIN_CHARS:
            # Short lines, no cut before them: only the forms can apply, and a form absent
            # from the joined text is absent from each line.
            joined = "\n".join(texts)
            if not any(form in joined for form in self._by_length):
                return texts
        return [self.redact(text) for text in texts]

    def _marker(self, match: re.Match[str]) -> str:
        return f"[secret:{self._forms[match.group()]}]"

    def __or__(self, other: Redactor) -> Redactor:
        return Redactor({**self._secrets, **other._secrets})

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __repr__(self) -> str:
        return f"Redactor(names={self.names!r})"


_PieceIndex = dict[str, list[tuple[str, int, str]]]

#: The shortest line a host cuts, in characters: Docker cuts at 16 KiB (4-byte characters
#: make that 4,096), the local network at 64 KiB (docs/protocol.md §14). A line this long that
#: ends without a line break may go on in the next one.
CUT_MIN_CHARS = 4096


def _index_pieces(unit: str, name: str, size: int, starts: _PieceIndex, ends: _PieceIndex,
                  ) -> None:
    """Index the proper suffixes of ``unit`` (that could start a cut line) by their first
    ``size`` characters and its proper prefixes (that could end one) by their last, longest
    first. Offsets, not slices, so a long secret costs O(n) memory."""
    n = len(unit)
    for j in range(1, n - size + 1):  # the suffix unit[j:]
        if not _one_repeated(unit, j, n):
            starts.setdefault(unit[j:j + size], []).append((unit, j, name))
    for k in range(n - 1, size - 1, -1):  # the prefix unit[:k]
        if not _one_repeated(unit, 0, k):
            ends.setdefault(unit[k - size:k], []).append((unit, k, name))


def _hide_start(text: str, candidates: list[tuple[str, int, str]]) -> str:
    head = len(text) - len(text.lstrip("\ufffd"))  # a cut inside a UTF-8 character
    for unit, j, name in candidates:
        piece = len(unit) - j
        if len(text) - head >= piece and unit.startswith(text[head:head + piece], j):
            return f"[secret:{name}]" + text[head + piece:]
    return text


def _hide_end(text: str, body: str, candidates: list[tuple[str, int, str]]) -> str:
    for unit, k, name in candidates:
        if len(body) >= k and unit.startswith(body[len(body) - k:]):
            return body[:len(body) - k] + f"[secret:{name}]" + text[len(body):]
    return text


def _one_repeated(text: str, start: int, stop: int) -> bool:
    """Whether ``text[start:stop]`` is one character repeated (``-----``)."""
    first = text[start]
    return text.count(first, start, stop) == stop - start


@dataclass(frozen=True, repr=False)
class ResolvedDefinition:
    """The body to POST to the host, with its secrets resolved. Its repr shows no values."""

    body: bytes
    redactor: Redactor
    secret_names: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"ResolvedDefinition(<{len(self.body)} bytes>, secrets={list(self.secret_names)!r})"

    __str__ = __repr__
