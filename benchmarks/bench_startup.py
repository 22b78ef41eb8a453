"""What a fresh kernel waits for: ``%load_ext nosana_magic``, and its first local job.

Run: python benchmarks/bench_startup.py [--runs 5]

Every sample is a fresh Python process (as a new kernel is), with nothing configured but a
data dir of the benchmark's own, and times, inside that process:

* ``%load_ext nosana_magic`` in an IPython shell (IPython itself imported before), and in
  one that has also loaded what an ipykernel kernel has before its first cell;
* the local network up: ``open_network()`` until its first answer (its markets), **cold**
  (no local network running for this user: the process brings it up) and **warm** (one left
  running by an earlier process, where the checkout keeps one between processes);
* a first job (``echo hi``) from ``run_confidential()`` to its results, cold and warm.

Medians and ranges over ``--runs`` processes each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, default_settings, spread, stop_default_network

LOAD_EXT = """
import json, sys, time
if sys.argv[1:] == ["kernel"]:
    import ipykernel.ipkernel  # what a Jupyter kernel has loaded before any cell
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config
config = Config()
config.HistoryManager.hist_file = ":memory:"
shell = InteractiveShell.instance(config=config)
start = time.perf_counter()
shell.run_line_magic("load_ext", "nosana_magic")
print(json.dumps({"s": time.perf_counter() - start}))
"""

NETWORK_UP = """
import json, sys, time
start = time.perf_counter()
from nosana_magic import runner
from nosana_magic.network import open_network
from nosana_magic.settings import Settings
network = open_network(Settings.from_env({}, data_dir=sys.argv[1]))
runner.run_sync(network.markets(), timeout=60)
print(json.dumps({"s": time.perf_counter() - start}))
runner.run_sync(network.aclose(), timeout=10)
"""

FIRST_JOB = """
import json, sys, time
start = time.perf_counter()
from nosana_magic import run_confidential
from nosana_magic.settings import Settings
job = run_confidential('{"version": "0.1", "type": "container", "ops": [{"type": '
                       '"container/run", "id": "a", "args": {"image": "x", "cmd": '
                       '"echo hi=1"}, "results": {"hi": "hi=([0-9]+)"}}]}',
                       settings=Settings.from_env({}, data_dir=sys.argv[1]), timeout=60)
assert job.ok and job.results["hi"] == 1, job.status
print(json.dumps({"s": time.perf_counter() - start}))
"""


def sample(code: str, *args: str) -> float:
    # As an installed package runs: its bytecode cached (the first sample writes it).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NOSANA_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"a sample failed:\n{done.stderr}")
    seconds: float = json.loads(done.stdout.strip().splitlines()[-1])["s"]
    return seconds


def cold_and_warm(code: str, runs: int) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as data:
            settings = default_settings(Path(data))
            try:
                cold.append(sample(code, data))
                warm.append(sample(code, data))
            finally:
                stop_default_network(settings)
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sample(LOAD_EXT, "kernel")  # warm-up: bytecode written, files in the page cache
    load = [sample(LOAD_EXT) for _ in range(args.runs)]
    in_kernel = [sample(LOAD_EXT, "kernel") for _ in range(args.runs)]
    up_cold, up_warm = cold_and_warm(NETWORK_UP, args.runs)
    job_cold, job_warm = cold_and_warm(FIRST_JOB, args.runs)
    ms = [1000 * s for s in load]
    print(f"fresh processes, {args.runs} runs each: median (min-max)")
    print(f"  %load_ext nosana_magic, IPython:  {spread(ms, '.1f')} ms")
    print(f"  %load_ext nosana_magic, a kernel: {spread([1000 * s for s in in_kernel], '.1f')} ms")
    print(f"  local network up, cold:           {spread(up_cold)} s")
    print(f"  local network up, warm:           {spread(up_warm)} s")
    print(f"  first job (echo) to results, cold: {spread(job_cold)} s")
    print(f"  first job (echo) to results, warm: {spread(job_warm)} s")


if __name__ == "__main__":
    main()
