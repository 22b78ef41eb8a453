"""How long parsing a cell takes, next to the standard library's strict JSON parser.

Run: python benchmarks/bench_parse.py

The ratio to ``json.loads`` is the figure to watch: it does not depend on the machine's speed.
A cell is at most 100 kB (the host's body limit).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

from nosana_magic.jobdef import parse_job_definition
from nosana_magic.jsonc import parse_jsonc


def _cell(ops: int) -> str:
    body = [
        {
            "type": "container/run",
            "id": f"op-{i}",
            "args": {
                "image": "ubuntu:22.04",
                "cmd": ["python", "-c", f"print({i})"],
                "env": {f"KEY_{j}": "v" * 12 for j in range(5)},
                "expose": [8000 + i, {"port": 9000 + i, "type": "web"}],
            },
        }
        for i in range(ops)
    ]
    return json.dumps({"version": "0.1", "type": "container", "ops": body}, indent=2)


def _best(fn: Callable[[str], object], text: str, repeat: int = 7) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(text)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    header = ("cell", "json.loads", "jsonc", "ratio", "parse+validate", "ratio")
    print("{:>10} {:>11} {:>9} {:>6} {:>15} {:>6}".format(*header))
    for ops in (1, 20, 200):
        text = _cell(ops)
        base = _best(json.loads, text)
        jsonc = _best(parse_jsonc, text)
        full = _best(parse_job_definition, text)
        print(
            f"{len(text):>9,}B {base * 1e3:>9.2f}ms {jsonc * 1e3:>7.2f}ms {jsonc / base:>5.0f}x "
            f"{full * 1e3:>13.2f}ms {full / base:>5.0f}x"
        )


if __name__ == "__main__":
    main()
