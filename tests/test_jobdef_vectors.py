"""Every case of the official validators' vectors (jobdefs.json): verdicts and error paths.

Where @nosana/sdk 0.4.69 and @nosana/types 2.1.6 disagree, the verdict of types is the one
to match (the file's notes). Error paths are compared with the first problem we report:
it must be one of the official paths, or lie inside one of them (typia reports a failed union
or array rule at the container; we report the member that is wrong, e.g. the duplicate id).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from nosana_magic.jobdef import JobDefinitionError, parse_job_definition, validate_job_definition

from .vectors import load

DATA: dict[str, Any] = load("jobdefs")
CASES: list[dict[str, Any]] = DATA["cases"]
INVALID = [c for c in CASES if not c["types_2_1_6"]["valid"]]

# First paths we knowingly report differently, and why.
PATH_DIVERGENCES = {
    "root_array": "typia checks the array's would-be properties; we say the root must be an "
                  "object",
}

_SEGMENT = re.compile(r'\.([A-Za-z_$][A-Za-z0-9_$]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def typia_segments(path: str) -> tuple[str | int, ...]:
    """``$input.ops[0].args["private"]`` → ``("ops", 0, "args", "private")``."""
    assert path.startswith("$input"), path
    rest, out, pos = path[len("$input"):], [], 0
    while pos < len(rest):
        m = _SEGMENT.match(rest, pos)
        assert m, f"cannot read typia path {path!r}"
        if m.group(1) is not None:
            out.append(m.group(1))
        elif m.group(2) is not None:
            out.append(int(m.group(2)))
        else:
            out.append(json.loads(m.group(3)))
        pos = m.end()
    return tuple(out)


def first_problem(case: dict[str, Any]) -> Any:
    with pytest.raises(JobDefinitionError) as info:
        parse_job_definition(json.dumps(case["definition"], indent=2))
    return info.value.problems[0]


def classify(case: dict[str, Any]) -> str:
    """'exact', 'inside' (ours is below an official path) or 'different'."""
    ours = typia_segments(first_problem(case).typia_path)
    official = [typia_segments(p) for p in case["types_2_1_6"]["error_paths"]]
    if ours in official:
        return "exact"
    if any(ours[:len(o)] == o for o in official):
        return "inside"
    return "different"


def test_the_vector_file_is_what_we_expect() -> None:
    assert DATA["summary"]["total"] == len(CASES) == 125
    assert sum(c["types_2_1_6"]["valid"] for c in CASES) == DATA["summary"]["types_valid"] == 57


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_verdict_agrees_with_nosana_types(case: dict[str, Any]) -> None:
    expected = case["types_2_1_6"]["valid"]
    for check in (lambda: parse_job_definition(json.dumps(case["definition"], indent=2)),
                  lambda: validate_job_definition(case["definition"])):
        try:
            check()
        except JobDefinitionError as err:
            assert not expected, f"rejected a definition types accepts: {err}"
        else:
            assert expected, "accepted a definition types rejects"


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_first_error_path_is_an_official_one(case: dict[str, Any]) -> None:
    verdict = classify(case)
    if case["name"] in PATH_DIVERGENCES:
        assert verdict == "different"
    else:
        assert verdict in ("exact", "inside"), (
            f"first problem {first_problem(case)} is outside {case['types_2_1_6']['error_paths']}")


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_exact_paths_use_typia_notation(case: dict[str, Any]) -> None:
    problem = first_problem(case)
    if classify(case) == "exact":
        assert problem.typia_path in case["types_2_1_6"]["error_paths"]


def test_path_agreement_summary(capsys: pytest.CaptureFixture[str]) -> None:
    counts = {"exact": 0, "inside": 0, "different": 0}
    for case in INVALID:
        counts[classify(case)] += 1
    with capsys.disabled():
        print(f"\njobdefs.json first error paths: {counts} of {len(INVALID)} invalid cases")
    assert counts == {"exact": 55, "inside": 12, "different": 1}


def test_typia_path_reading() -> None:
    assert typia_segments('$input.ops[0].args["private"]') == ("ops", 0, "args", "private")
    assert typia_segments('$input["0"]') == ("0",)
    assert typia_segments("$input") == ()


def test_where_the_official_validators_disagree_types_wins() -> None:
    disagreements = set(DATA["summary"]["disagreements"])
    by_name = {c["name"]: c for c in CASES}
    assert disagreements == {n for n, c in by_name.items() if not c["validators_agree"]}
    for name in disagreements:
        case = by_name[name]
        try:
            validate_job_definition(case["definition"])
            accepted = True
        except JobDefinitionError:
            accepted = False
        assert accepted == case["types_2_1_6"]["valid"] != case["sdk_0_4_69"]["valid"]
