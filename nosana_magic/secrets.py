"""``${env:NAME}`` and ``${var:NAME}`` references in job definitions, and redaction of secrets.

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
    "find_references",
    "looks_like_token",
    "resolve_references",
    "token_name",
]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# One scan finds escapes, references, and reference-looking text that is malformed.
_TOKEN = re.compile(r"\$\$\{|\$\{(env|var):(" + _NAME + r")\}|\$\{(?:env|var):")

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


@dataclass(frozen=True)
class Reference:
    """One ``${env:NAME}``/``${var:NAME}`` in the definition, and the string value holding it."""

    kind: Literal["env", "var"]
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


def find_references(value: Any, positions: Mapping[JsonPath, Location] | None = None,
                    ) -> tuple[list[Reference], list[Problem]]:
    """All references in ``value``, and a problem for each malformed ``${env:``/``${var:``."""
    refs: list[Reference] = []
    problems: list[Problem] = []
    for path, text in _strings(value):
        if "${" not in text:
            continue
        line, column = (positions or {}).get(path, (None, None))
        for m in _TOKEN.finditer(text):
            if m.group(2):
                kind: Literal["env", "var"] = "env" if m.group(1) == "env" else "var"
                refs.append(Reference(kind, m.group(2), format_path(path), line, column))
            elif m.group() != "$${":
                problems.append(_problem(path, positions, MALFORMED_MESSAGE))
    return refs, problems


def resolve_references(value: Any, *, env: Mapping[str, str], namespace: Mapping[str, object],
                       positions: Mapping[JsonPath, Location] | None = None,
                       ) -> tuple[Any, dict[str, str]]:
    """A copy of ``value`` with every reference replaced, and the secrets used (name → value).

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
                problems.append(_problem(path, positions, MALFORMED_MESSAGE))
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
            if name not in namespace:
                missing.append(name)
                problems.append(_problem(path, positions,
                                         f"notebook variable {name} is not defined"))
                return ""
            obj = namespace[name]
            if isinstance(obj, str):
                return obj
            try:
                return json.dumps(obj)
            except (TypeError, ValueError):
                missing.append(name)
                problems.append(_problem(
                    path, positions,
                    f"notebook variable {name} has type {type(obj).__name__}, which is not JSON "
                    "serializable"))
                return ""

        return _TOKEN.sub(one, text)

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


class Redactor:
    """Replaces secret values in text with ``[secret:NAME]``.

    Values shorter than :attr:`MIN_LENGTH` (3) characters are not redacted: an empty or
    one-character "secret" would blank out every log line, and such a value protects nothing.
    The JSON-escaped forms of each value are redacted too, since host text is often JSON in
    which a secret holding ``"`` or a newline appears escaped. One compiled alternation,
    longest value first, so a secret that contains another is replaced whole.
    """

    MIN_LENGTH = 3

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets = dict(secrets)
        forms: dict[str, str] = {}
        for name in sorted(self._secrets):
            value = self._secrets[name]
            if len(value) < self.MIN_LENGTH:
                continue
            for form in (value, json.dumps(value)[1:-1],
                         json.dumps(value, ensure_ascii=False)[1:-1]):
                forms.setdefault(form, name)
        self._forms = forms
        self._pattern = (re.compile("|".join(re.escape(f) for f in sorted(forms, key=len,
                                                                          reverse=True)))
                         if forms else None)

    @classmethod
    def empty(cls) -> Redactor:
        """A redactor that changes nothing."""
        return cls({})

    @property
    def names(self) -> list[str]:
        """The names of the secrets this redactor knows (never their values)."""
        return sorted(self._secrets)

    def redact(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``[secret:NAME]``."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: f"[secret:{self._forms[m.group()]}]", text)

    def __or__(self, other: Redactor) -> Redactor:
        return Redactor({**self._secrets, **other._secrets})

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __repr__(self) -> str:
        return f"Redactor(names={self.names!r})"


@dataclass(frozen=True, repr=False)
class ResolvedDefinition:
    """The body to POST to the host, with its secrets resolved. Its repr shows no values."""

    body: bytes
    redactor: Redactor
    secret_names: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"ResolvedDefinition(<{len(self.body)} bytes>, secrets={list(self.secret_names)!r})"

    __str__ = __repr__
