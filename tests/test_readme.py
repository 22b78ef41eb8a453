"""The README's example, run verbatim the way a newcomer runs it: in IPython, on the default
(local) network, with nothing configured.

The python and magic code blocks are taken from README.md as they are and run one after the
other in a fresh ``InteractiveShell``; no ``NOSANA_*`` setting, so the first job starts the
local network service and the README's mainnet market name runs on its local GPU market.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from nosana_magic.job import ConfidentialJob, LogLine, MissingResult

from .conftest import ipython_shell

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_cells() -> list[str]:
    """The README's python blocks and its magic blocks (untagged, starting with ``%``)."""
    cells = []
    for lang, body in _BLOCK.findall(README.read_text(encoding="utf-8")):
        if lang == "python" or (lang == "" and body.lstrip().startswith("%")):
            cells.append(body)
    return cells


@pytest.fixture
def newcomer_shell(monkeypatch: pytest.MonkeyPatch,
                   tmp_path: Path) -> Iterator[InteractiveShell]:
    """A fresh IPython shell with nothing configured: the default network is the local one."""
    import os

    from nosana_magic.network import local

    for key in [k for k in os.environ if k.startswith("NOSANA_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NOSANA_DATA_DIR", str(tmp_path))  # only: keep the user's dir clean
    monkeypatch.setattr(local, "_announced", set())  # as in a fresh kernel
    with ipython_shell(load=False) as shell:  # the README's first cell loads it
        yield shell


def test_the_readme_has_the_three_example_cells() -> None:
    cells = readme_cells()
    assert [cell.splitlines()[0] for cell in cells][:2] == [
        "%load_ext nosana_magic", "%%nosana_confidential --market nvidia-3090 --timeout 10m -o run"]
    assert cells[2].startswith('run.results["loss"], run.ops["train"].exit_code, run.urls')


def test_the_readme_example_runs_verbatim_on_the_default_network(
        newcomer_shell: InteractiveShell) -> None:
    cells = readme_cells()
    outputs: list[Any] = []
    with capture_output() as captured:
        for cell in cells:
            result = newcomer_shell.run_cell(cell, store_history=True)
            assert result.success, (cell.splitlines()[0], result.error_in_exec, captured.stdout)
            outputs.append(result.result)
    run = newcomer_shell.user_ns["run"]
    assert isinstance(run, ConfidentialJob) and run.ok, run.reason
    assert run.network_name == "local" and run.market is not None
    assert run.market.slug == "local-gpu"
    # Said once, in the job's cell.
    assert captured.stdout.count("market nvidia-3090 runs on local-gpu on the local network") == 1
    assert f"nosana job {run.address} on local: succeeded" in captured.stdout

    # Every other block whose last line says what it shows (``# (0.25, 0, 'loss=0.25')``)
    # shows exactly that.
    for cell, output in zip(cells[3:], outputs[3:], strict=True):
        shown = cell.rstrip().splitlines()[-1].partition("#")[2].strip()
        if shown:
            assert repr(output) == shown, cell

    loss, exit_code, urls, last_logs = outputs[2]
    assert (loss, exit_code, urls) == (0.0821, 0, [])
    assert len(last_logs) == 5 and all(isinstance(line, LogLine) for line in last_logs)
    # What the README says the last cell shows.
    assert f"`({loss}, {exit_code}, {urls}, [...])`" in README.read_text(encoding="utf-8")
    assert [line.text for line in run.logs if line.stream == "stdout"][-1] == "loss=0.0821"


def test_a_missing_result_after_the_example_is_one_readable_line(
        newcomer_shell: InteractiveShell) -> None:
    with capture_output():
        for cell in readme_cells()[:2]:
            assert newcomer_shell.run_cell(cell).success
    with capture_output() as captured:
        result = newcomer_shell.run_cell('run.results["accuracy"]')
    error = result.error_in_exec
    assert isinstance(error, MissingResult) and isinstance(error, KeyError)
    shown = captured.stdout.strip().splitlines()
    run = newcomer_shell.user_ns["run"]
    assert shown == [f"MissingResult: no result 'accuracy' in job {run.address}: its results "
                     "are loss"]
    assert "accuracy" not in run.results and run.results.get("accuracy") is None
