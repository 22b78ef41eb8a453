"""Results patterns as a host compiles them (JavaScript's RegExp, no flags) and as the local
network runs them (the same pattern translated for Python's re).

``tests/vectors/regex.json`` holds Node's verdict on each pattern and ``line.match(regex)`` on
each of a set of log lines; the checker must agree on every verdict, and the translation on
every match, except where Python cannot run a pattern at all (then it must say so).
"""

from __future__ import annotations

from typing import Any

import pytest

from nosana_magic.jsregex import RegexError, check_pattern, to_python

from .vectors import load

VECTORS = load("regex")
#: Valid in JavaScript; Python's re has no lookbehind of variable width.
PYTHON_CANNOT = {"(?<=a+)b", "(?<=ab|c)d"}


def _ids(case: dict[str, Any]) -> str:
    return repr(case["pattern"])


@pytest.mark.parametrize("case", VECTORS["cases"], ids=_ids)
def test_verdicts_and_matches_agree_with_javascript(case: dict[str, Any]) -> None:
    pattern = case["pattern"]
    if not case["valid"]:
        with pytest.raises(RegexError) as info:
            check_pattern(pattern)
        assert info.value.javascript and str(info.value).startswith("JavaScript's RegExp refuses")
        return
    if pattern in PYTHON_CANNOT:
        with pytest.raises(RegexError) as info:
            to_python(pattern)
        assert not info.value.javascript and "local network cannot run it" in str(info.value)
        return
    regex = to_python(pattern)
    for line, expected in zip(VECTORS["lines"], case["matches"], strict=True):
        match = regex.search(line)
        got = None if match is None else [match.group(0), *match.groups()]
        assert got == expected, (pattern, line)


def test_the_vectors_cover_both_verdicts() -> None:
    verdicts = [case["valid"] for case in VECTORS["cases"]]
    assert verdicts.count(True) >= 60 and verdicts.count(False) >= 25


@pytest.mark.parametrize(("pattern", "reason", "position"), [
    ("loss=(\\d+", "unterminated group", 5),
    ("a{3,1}", "numbers out of order in {} quantifier", 1),
    ("[z-a]", "range out of order in character class", 1),
    ("*.log", "nothing to repeat", 0),
    ("(?P<x>y)", "invalid group", 0),
])
def test_a_refusal_says_what_and_where(pattern: str, reason: str, position: int) -> None:
    with pytest.raises(RegexError) as info:
        check_pattern(pattern)
    assert (info.value.reason, info.value.position) == (reason, position)
    assert pattern not in str(info.value)  # a pattern may hold what a job must keep private
