"""Sweep parameters: ${param:NAME} references, --sweep grids, --params rows, their checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nosana_magic.jobdef import JobDefinitionError, parse_job_definition
from nosana_magic.params import (
    MAX_JOBS,
    ParamError,
    check_params,
    expand,
    grid,
    label,
    param_sets,
    parse_axis,
    parse_value,
    rows,
)
from nosana_magic.secrets import Reference, SecretError

CELL = """\
{
  "version": "0.1",
  "type": "container",
  "ops": [
    {
      "type": "container/run",
      "id": "train",
      "args": {
        "image": "python:3.11",
        "cmd": ["python", "train.py", "--lr", "${param:lr}", "--batch", "${param:batch}"],
        "env": {"CONFIG": "${param:config}", "TOKEN": "${env:TOKEN}"}
      }
    }
  ]
}
"""


def body(params: dict[str, Any] | None) -> dict[str, Any]:
    resolved = parse_job_definition(CELL).resolve(env={"TOKEN": "t0ken-value"}, params=params)
    decoded: dict[str, Any] = json.loads(resolved.body)
    return decoded


# --------------------------------------------------------------------------- ${param:NAME}


def test_param_references_are_found_with_their_location() -> None:
    d = parse_job_definition(CELL)
    assert [r for r in d.references if r.kind == "param"] == [
        Reference("param", "lr", "ops[0].args.cmd[3]", 10, 47),
        Reference("param", "batch", "ops[0].args.cmd[5]", 10, 73),
        Reference("param", "config", "ops[0].args.env.CONFIG", 11, 27),
    ]
    assert d.param_names == ["lr", "batch", "config"]
    assert not any(r.is_secret for r in d.references if r.kind == "param")


def test_params_are_json_encoded_like_notebook_variables() -> None:
    sent = body({"lr": 0.001, "batch": 32, "config": {"layers": [1, 2], "dropout": True}})
    args = sent["ops"][0]["args"]
    assert args["cmd"] == ["python", "train.py", "--lr", "0.001", "--batch", "32"]
    assert json.loads(args["env"]["CONFIG"]) == {"layers": [1, 2], "dropout": True}
    assert body({"lr": "1e-3", "batch": False, "config": None})["ops"][0]["args"]["cmd"][3:] == [
        "1e-3", "--batch", "false"]


def test_what_is_stored_keeps_the_references() -> None:
    d = parse_job_definition(CELL)
    d.resolve(env={"TOKEN": "t0ken-value"}, params={"lr": 1, "batch": 2, "config": 3})
    assert d.to_dict()["ops"][0]["args"]["cmd"][3] == "${param:lr}"
    assert "t0ken-value" not in json.dumps(d.to_dict())


def test_a_job_without_parameters_says_where_they_come_from() -> None:
    with pytest.raises(SecretError) as info:
        body(None)
    assert info.value.names == ["lr", "batch", "config"]
    assert str(info.value).splitlines()[0] == (
        "line 10, column 47: ops[0].args.cmd[3]: parameter lr is not set (parameters come "
        "from --sweep NAME=… or --params ROWS)")


def test_a_job_missing_one_parameter_names_it_and_the_ones_it_has() -> None:
    d = parse_job_definition(CELL)
    assert d.missing_references(env={"TOKEN": "x"}, params={"lr": 1, "config": 2}) == ["batch"]
    with pytest.raises(SecretError) as info:
        body({"lr": 1, "config": 2})
    assert str(info.value) == (
        "line 10, column 73: ops[0].args.cmd[5]: parameter batch is not among this job's "
        "parameters (config, lr)")


@pytest.mark.parametrize("text", ["${param:}", "${param:1x}", "${param:a-b}"])
def test_malformed_param_references_fail_at_parse_time(text: str) -> None:
    cell = CELL.replace('"${param:config}"', json.dumps(text))
    with pytest.raises(JobDefinitionError) as info:
        parse_job_definition(cell)
    assert info.value.path == "ops[0].args.env.CONFIG"
    assert info.value.message.startswith("malformed reference: write ${param:NAME}, NAME ")


def test_a_param_cannot_go_in_a_public_placeholder() -> None:
    with pytest.raises(JobDefinitionError) as info:
        parse_job_definition(CELL).placeholder(send=False)
    assert "a ${param:…} reference cannot go in a public" in str(info.value)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(("text", "value"), [
    ("32", 32), ("-2", -2), ("+5", 5), ("0", 0), ("1e-3", 0.001), ("3e-4", 0.0003),
    (".5", 0.5), ("0.25", 0.25), ("2.", 2.0), ("1E3", 1000.0),
    ("true", True), ("False", False), ("TRUE", True), ("null", None), ("None", None),
    ('"32"', "32"), ('"a,b"', "a,b"), ("gpt2", "gpt2"), ("007", "007"), ("00", "00"),
    ("[1, 2]", [1, 2]), ('{"a": 1}', {"a": 1}), (" adam ", "adam"), ("1e", "1e"),
    ("v1.2.3", "v1.2.3"),
])
def test_values_are_read_as_a_user_expects(text: str, value: object) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(("text", "message"), [
    ("nan", "value: nan is not a finite number (JSON cannot carry it)"),
    ("-inf", "value: -inf is not a finite number (JSON cannot carry it)"),
    ("[1,", "value: [1, is not valid JSON (Expecting value, column 4)"),
    ("  ", "value: empty value"),
])
def test_bad_values_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ParamError) as info:
        parse_value(text)
    assert str(info.value) == message


# --------------------------------------------------------------------------- --sweep


def test_an_axis_splits_at_commas_outside_strings_and_brackets() -> None:
    assert parse_axis("lr=1e-3,3e-4") == ("lr", [0.001, 0.0003])
    assert parse_axis('model="a,b",c, d') == ("model", ["a,b", "c", "d"])
    assert parse_axis("shape=[1,2],[3,4]") == ("shape", [[1, 2], [3, 4]])
    assert parse_axis('cfg={"a": [1, 2]},{"a": "]"}') == ("cfg", [{"a": [1, 2]}, {"a": "]"}])
    assert parse_axis(" seed = 1") == ("seed", [1])


@pytest.mark.parametrize(("spec", "message"), [
    ("lr", "--sweep lr: expected NAME=VALUE,VALUE,… (e.g. --sweep lr=1e-3,3e-4)"),
    ("l-r=1,2", "--sweep l-r=1,2: parameter name 'l-r' must be letters, digits and '_', not "
                "starting with a digit"),
    ("2x=1", "--sweep 2x=1: parameter name '2x' must be letters, digits and '_', not "
             "starting with a digit"),
    ("lr=", "--sweep lr=: value 1 is empty"),
    ("lr=1,,2", "--sweep lr=1,,2: value 2 is empty"),
    ("lr=1,2,1.0", "--sweep lr=1,2,1.0: value 3 repeats value 1 (1.0)"),
    ('m="a,b', '--sweep m="a,b: a string is not closed (a " is missing)'),
    ("s=[1,2", "--sweep s=[1,2: a [ or { is not closed"),
    ("s=1]", "--sweep s=1]: unbalanced ']'"),
    ("lr=1,nan", "--sweep lr=1,nan: value 2: nan is not a finite number (JSON cannot carry it)"),
])
def test_bad_axes_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(ParamError) as info:
        parse_axis(spec)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_a_grid_is_every_combination_first_axis_outermost() -> None:
    sets = expand(["lr=1e-3,3e-4,1e-4", "batch=32,64"])
    assert sets == [
        {"lr": 0.001, "batch": 32}, {"lr": 0.001, "batch": 64},
        {"lr": 0.0003, "batch": 32}, {"lr": 0.0003, "batch": 64},
        {"lr": 0.0001, "batch": 32}, {"lr": 0.0001, "batch": 64},
    ]
    assert [label(s) for s in sets[:2]] == ["lr=0.001 batch=32", "lr=0.001 batch=64"]


def test_a_grid_refuses_an_axis_given_twice_and_a_grid_too_large() -> None:
    with pytest.raises(ParamError, match=r"^--sweep lr: given more than once"):
        expand(["lr=1,2", "lr=3"])
    axes = [(f"p{i}", list(range(10))) for i in range(5)]
    with pytest.raises(ParamError) as info:
        grid(axes)
    assert str(info.value) == (f"the sweep has 100,000 jobs (p0 10 × p1 10 × p2 10 × p3 10 × "
                               f"p4 10); at most {MAX_JOBS:,}")


# --------------------------------------------------------------------------- --params rows


class FakeFrame:
    """What the rows reader uses of a pandas DataFrame (pandas is optional)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def to_dict(self, orient: str) -> list[dict[str, Any]]:
        assert orient == "records"
        return self.records


class Scalar:
    """A numpy-like scalar: shape () and .item()."""

    shape = ()

    def __init__(self, value: object) -> None:
        self.value = value

    def item(self) -> object:
        return self.value


def test_rows_are_one_job_each_and_scalars_are_unwrapped() -> None:
    given = [{"lr": 1e-3, "model": "a"}, {"lr": Scalar(3e-4), "model": "b", "tags": ("x",)}]
    assert rows(given) == [{"lr": 0.001, "model": "a"},
                           {"lr": 0.0003, "model": "b", "tags": ["x"]}]
    assert rows(FakeFrame([{"lr": 1}, {"lr": 2}])) == [{"lr": 1}, {"lr": 2}]
    assert rows(iter([{"a": 1}])) == [{"a": 1}]


@pytest.mark.parametrize(("value", "message"), [
    ({"lr": [1, 2]}, "--params cfg: expected a list of dicts (one per job), got dict"),
    ("lr=1", "--params cfg: expected a list of dicts (one per job), got str"),
    (5, "--params cfg: expected a list of dicts (one per job), got int"),
    ([], "--params cfg: no rows"),
    ([{"a": 1}, 3], "--params cfg: row 1 is an int, not a dict"),
    ([{}], "--params cfg: row 0 is empty"),
    ([{1: 2}], "--params cfg: row 0: key 1 is not a string"),
    ([{"a b": 2}], "--params cfg: row 0: parameter name 'a b' must be letters, digits and "
                   "'_', not starting with a digit"),
    ([{"lr": float("nan")}], "--params cfg: row 0: lr: nan is not a finite number (JSON "
                             "cannot carry it)"),
    ([{"lr": object()}], "--params cfg: row 0: lr: an object is not a JSON value (use str, "
                         "int, float, bool, None, lists and dicts)"),
])
def test_bad_rows_are_one_line_errors(value: object, message: str) -> None:
    with pytest.raises(ParamError) as info:
        rows(value, name="cfg")
    assert str(info.value) == message


def test_rows_and_a_grid_combine_rows_outermost() -> None:
    sets = expand(["seed=1,2"], [{"model": "a"}, {"model": "b"}], params_name="models")
    assert sets == [{"model": "a", "seed": 1}, {"model": "a", "seed": 2},
                    {"model": "b", "seed": 1}, {"model": "b", "seed": 2}]
    with pytest.raises(ParamError, match=r"^--params row 0 and --sweep both set seed$"):
        expand(["seed=1,2"], [{"seed": 3}])


def test_identical_jobs_and_an_empty_sweep_are_refused() -> None:
    with pytest.raises(ParamError) as info:
        expand(params=[{"lr": 1}, {"lr": 2}, {"lr": 1.0}])
    assert str(info.value) == ("jobs 0 and 2 have the same parameters (lr=1.0): each job of a "
                               "sweep needs its own")
    with pytest.raises(ParamError, match="needs --sweep NAME=V1,V2,… or --params ROWS"):
        expand()


def test_python_params_take_a_grid_or_rows() -> None:
    assert param_sets({"lr": [1e-3, 3e-4], "epochs": 10}) == [
        {"lr": 0.001, "epochs": 10}, {"lr": 0.0003, "epochs": 10}]
    assert param_sets({"n": range(3)}) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert param_sets([{"lr": 1}, {"lr": 2}]) == [{"lr": 1}, {"lr": 2}]
    with pytest.raises(ParamError, match=r"^params\['lr'\]\[1\]: inf is not a finite"):
        param_sets({"lr": [1, float("inf")]})
    with pytest.raises(ParamError, match=r"^--sweep lr: no values$"):
        param_sets({"lr": []})


# --------------------------------------------------------------------------- against the definition


def test_sets_must_give_exactly_what_the_definition_uses() -> None:
    used = parse_job_definition(CELL).param_names
    check_params(used, [{"lr": 1, "batch": 2, "config": 3}])
    with pytest.raises(ParamError) as info:
        check_params(used, [{"lr": 1, "batch": 2, "config": 3}, {"lr": 1, "config": 3}])
    assert str(info.value) == ("job 1 (lr=1 config=3) has no parameter batch, which the "
                               "definition uses (${param:batch})")
    with pytest.raises(ParamError) as info:
        check_params(used, [{"lr": 1, "batch": 2, "config": 3, "bs": 4}])
    assert str(info.value) == ("parameter bs is set, but the definition has no ${param:bs} "
                               "(it uses: lr, batch, config)")
    with pytest.raises(ParamError, match=r"^the definition has no \$\{param:NAME\} reference"):
        check_params([], [{"lr": 1}])
