"""The parameter sets of a sweep: ``--sweep NAME=V1,V2,…`` axes, ``--params`` rows, checked.

A sweep runs one definition once per parameter set, and each set reaches the definition only
through its ``${param:NAME}`` references (docs/experiments.md). This module is the pure part:
parsing the options, expanding them into the list of sets, and checking the sets against the
definition. Each problem is a :class:`ParamError` of one line that says where and what, raised
before anything is posted. Nothing here runs a job.

* ``--sweep lr=1e-3,3e-4 --sweep batch=32,64`` is a grid: every combination, the first axis
  outermost (``lr=1e-3 batch=32``, ``lr=1e-3 batch=64``, ``lr=3e-4 batch=32``, …).
* ``--params rows`` names a list of dicts (or a DataFrame) in the namespace: one job per row.
  With ``--sweep`` too, every row is combined with every grid point.
* From Python, :func:`param_sets` takes either form: a dict of lists is a grid (a scalar is an
  axis of one value), a list of dicts is rows.

Values written on the command line are read as a user expects: ``32`` and ``-2`` are ints,
``1e-3``, ``.5`` and ``0.25`` floats, ``true``/``false`` (any case) booleans, ``null``/``none``
None, ``"…"`` a JSON string (so ``"32"`` stays a string, and a comma can be quoted), ``[…]`` and
``{…}`` JSON; anything else is the text itself (``gpt2``, ``007``: a leading zero keeps a code
a string). Non-finite numbers (``nan``, ``inf``) are refused: JSON cannot carry them.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ParamError

__all__ = [
    "MAX_JOBS",
    "ParamError",
    "ParamSet",
    "check_params",
    "expand",
    "grid",
    "label",
    "param_sets",
    "parse_axis",
    "parse_value",
    "rows",
]

#: One job's parameters: names (identifiers) to JSON values.
ParamSet = dict[str, Any]

#: More jobs than this in one sweep is a mistake (an axis too many), not an experiment.
MAX_JOBS = 10_000

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_CONSTANTS: dict[str, Any] = {"true": True, "false": False, "null": None, "none": None}


# --------------------------------------------------------------------------- values


def parse_value(text: str, *, where: str = "value") -> Any:
    """One command-line value as a JSON value (see the module docstring for the rules)."""
    raw = text.strip()
    if not raw:
        raise ParamError(f"{where}: empty value")
    if raw[0] in "\"[{":
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ParamError(f"{where}: {raw} is not valid JSON ({exc.msg}, column "
                             f"{exc.colno})") from None
        return _plain(value, where)
    constant = raw.lower()
    if constant in _CONSTANTS:
        return _CONSTANTS[constant]
    if _NUMBER.fullmatch(raw):
        digits = raw.lstrip("+-")
        if _INTEGER.fullmatch(raw):
            if len(digits) > 1 and digits.startswith("0"):
                return raw  # 007: an identifier-like code, not the number 7
            return int(raw)
        return float(raw)
    if constant.lstrip("+-") in ("nan", "inf", "infinity"):
        raise ParamError(f"{where}: {raw} is not a finite number (JSON cannot carry it)")
    return raw


def _a(noun: str) -> str:
    """``noun`` with its indefinite article (an int, a str)."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON data: numpy scalars unwrapped, tuples as lists, checked."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParamError(f"{where}: {value!r} is not a finite number (JSON cannot carry it)")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParamError(f"{where}: key {key!r} is not a string")
            out[key] = _plain(item, f"{where}.{key}")
        return out
    item = getattr(value, "item", None)  # numpy and pandas scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return _plain(item(), where)
    raise ParamError(f"{where}: {_a(type(value).__name__)} is not a JSON value "
                     "(use str, int, float, bool, None, lists and dicts)")


def _split(values: str, where: str) -> list[str]:
    """``values`` split at the commas outside JSON strings, brackets and braces."""
    items: list[str] = []
    depth, quoted, escaped, start = 0, False, False, 0
    for i, char in enumerate(values):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth < 0:
                raise ParamError(f"{where}: unbalanced {char!r}")
        elif char == "," and depth == 0:
            items.append(values[start:i])
            start = i + 1
    if quoted:
        raise ParamError(f"{where}: a string is not closed (a \" is missing)")
    if depth:
        raise ParamError(f"{where}: a [ or {{ is not closed")
    items.append(values[start:])
    return items


def _check_name(name: str, where: str) -> str:
    if not _NAME.fullmatch(name):
        raise ParamError(f"{where}: parameter name {name!r} must be letters, digits and '_', "
                         "not starting with a digit")
    return name


def _key(value: Any) -> str:
    """A value's identity for duplicate checks (1 and 1.0 are the same job)."""

    def canonical(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, list):
            return [canonical(i) for i in item]
        if isinstance(item, dict):
            return {k: canonical(v) for k, v in item.items()}
        return item

    return json.dumps(canonical(value), sort_keys=True)


# --------------------------------------------------------------------------- axes and rows


def parse_axis(spec: str) -> tuple[str, list[Any]]:
    """``"lr=1e-3,3e-4"`` as ``("lr", [0.001, 0.0003])``."""
    where = f"--sweep {spec}"
    name, sep, values = spec.partition("=")
    if not sep:
        raise ParamError(f"{where}: expected NAME=VALUE,VALUE,… (e.g. --sweep lr=1e-3,3e-4)")
    name = _check_name(name.strip(), where)
    parsed: list[Any] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(_split(values, where), 1):
        if not item.strip():
            raise ParamError(f"{where}: value {position} is empty")
        value = parse_value(item, where=f"{where}: value {position}")
        key = _key(value)
        if key in seen:
            raise ParamError(f"{where}: value {position} repeats value {seen[key]} "
                             f"({item.strip()})")
        seen[key] = position
        parsed.append(value)
    return name, parsed


def grid(axes: Sequence[tuple[str, Sequence[Any]]]) -> list[ParamSet]:
    """Every combination of the axes' values, the first axis outermost."""
    names = [name for name, _ in axes]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ParamError(f"--sweep {duplicated[0]}: given more than once (one --sweep per "
                         "parameter, values separated by commas)")
    empty = [name for name, values in axes if not values]
    if empty:
        raise ParamError(f"--sweep {empty[0]}: no values")
    _check_size([len(values) for _, values in axes], names)
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(values for _, values in axes))]


def rows(value: object, *, name: str = "params") -> list[ParamSet]:
    """A list of dicts (or a DataFrame, or any iterable of mappings) as parameter sets."""
    where = f"--params {name}"
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, Mapping):
        value = to_dict("records")  # a pandas DataFrame
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ParamError(f"{where}: expected a list of dicts (one per job), got "
                         f"{type(value).__name__}")
    out: list[ParamSet] = []
    for index, row in enumerate(value):
        at = f"{where}: row {index}"
        if not isinstance(row, Mapping):
            raise ParamError(f"{at} is {_a(type(row).__name__)}, not a dict")
        if not row:
            raise ParamError(f"{at} is empty")
        params: ParamSet = {}
        for key, item in row.items():
            if not isinstance(key, str):
                raise ParamError(f"{at}: key {key!r} is not a string")
            params[_check_name(key, at)] = _plain(item, f"{at}: {key}")
        out.append(params)
    if not out:
        raise ParamError(f"{where}: no rows")
    return out


def _check_size(sizes: Sequence[int], names: Sequence[str]) -> None:
    total = math.prod(sizes)
    if total > MAX_JOBS:
        shape = " × ".join(f"{n} {s}" for n, s in zip(names, sizes, strict=True))
        raise ParamError(f"the sweep has {total:,} jobs ({shape}); at most {MAX_JOBS:,}")


def _combine(row_sets: Sequence[ParamSet], grid_sets: Sequence[ParamSet]) -> list[ParamSet]:
    """Every row with every grid point (rows outermost); names may not overlap."""
    if not row_sets:
        return list(grid_sets)
    if not grid_sets:
        return list(row_sets)
    grid_names = set(grid_sets[0])
    for index, row in enumerate(row_sets):
        both = sorted(grid_names & set(row))
        if both:
            raise ParamError(f"--params row {index} and --sweep both set {both[0]}")
    _check_size([len(row_sets), len(grid_sets)], ["rows", "grid points"])
    return [{**row, **point} for row in row_sets for point in grid_sets]


def _check_unique(sets: Sequence[ParamSet]) -> None:
    first: dict[str, int] = {}
    for index, params in enumerate(sets):
        key = _key(params)
        if key in first:
            raise ParamError(f"jobs {first[key]} and {index} have the same parameters "
                             f"({label(params)}): each job of a sweep needs its own")
        first[key] = index


def expand(sweeps: Sequence[str] = (), params: object = None, *,
           params_name: str = "params") -> list[ParamSet]:
    """The parameter sets of ``--sweep`` options and a ``--params`` value (either or both)."""
    grid_sets = grid([parse_axis(spec) for spec in sweeps]) if sweeps else []
    row_sets = rows(params, name=params_name) if params is not None else []
    sets = _combine(row_sets, grid_sets)
    if not sets:
        raise ParamError("a sweep needs --sweep NAME=V1,V2,… or --params ROWS")
    _check_unique(sets)
    return sets


def param_sets(params: object) -> list[ParamSet]:
    """Parameter sets from Python: a dict of lists is a grid (``{"lr": [1e-3, 3e-4],
    "batch": [32, 64]}``, a scalar being an axis of one value), a list of dicts is rows."""
    if isinstance(params, Mapping):
        axes: list[tuple[str, list[Any]]] = []
        for name, values in params.items():
            if not isinstance(name, str):
                raise ParamError(f"params: key {name!r} is not a string")
            where = f"params[{name!r}]"
            _check_name(name, where)
            listed = list(values) if isinstance(values, (list, tuple, range)) else [values]
            plain = [_plain(v, f"{where}[{i}]") for i, v in enumerate(listed)]
            axes.append((name, plain))
        sets = grid(axes) if axes else []
    else:
        sets = rows(params)
    if not sets:
        raise ParamError("params: no parameters (a dict of lists, or a list of dicts)")
    _check_unique(sets)
    return sets


# --------------------------------------------------------------------------- against the definition


def check_params(used: Sequence[str], sets: Sequence[ParamSet]) -> None:
    """Every set gives exactly the parameters the definition uses (``used``: the names of its
    ``${param:NAME}`` references). A parameter no reference uses is a typo, or N identical
    jobs: both are refused before anything runs."""
    if not sets:
        raise ParamError("the sweep has no jobs")
    if not used:
        raise ParamError("the definition has no ${param:NAME} reference, so every job of the "
                         "sweep would be the same: write e.g. \"--lr ${param:lr}\" where a "
                         "value goes")
    names = ", ".join(used)
    for index, params in enumerate(sets):
        missing = [n for n in used if n not in params]
        if missing:
            raise ParamError(f"job {index} ({label(params)}) has no parameter {missing[0]}, "
                             f"which the definition uses (${{param:{missing[0]}}})")
        unused = [n for n in params if n not in used]
        if unused:
            raise ParamError(f"parameter {unused[0]} is set, but the definition has no "
                             f"${{param:{unused[0]}}} (it uses: {names})")


def label(params: Mapping[str, Any]) -> str:
    """``lr=0.001 batch=32``: a parameter set in one short line."""
    parts = []
    for name, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"{name}={text}")
    return " ".join(parts) or "(no parameters)"
