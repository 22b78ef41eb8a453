"""One job with an ``${env:…}`` secret, and every place its value must never reach.

The job really receives the secret (it prints it, on stdout and stderr, and a ``results``
regex captures it), then fails, so that logs, results, error messages and the summary all
have a chance to carry it. Checked: the public placeholder and everything else pinned to the
devnode's IPFS, the ledger, the handle's repr and HTML, the text view, the widget view's
frontend messages and display-handle summary, ``%nosana`` output, ``In``/``Out``/history, and
the error the cell raised.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import comm
import pytest
from comm.base_comm import BaseComm
from IPython.utils.capture import capture_output

from nosana_magic.devnode import DevNode
from nosana_magic.display import JobView, summary_text
from nosana_magic.job import ConfidentialJob, JobFailed

from .conftest import ipython_shell

SECRET = "sk-" + secrets.token_hex(16)

CELL = json.dumps({
    "version": "0.1", "type": "container", "meta": {"trigger": "cli"},
    "ops": [{
        "type": "container/run", "id": "leak",
        "args": {"image": "ubuntu:22.04",
                 "cmd": "echo token=$TOKEN; echo \"error: bad token $TOKEN\" >&2; exit 4",
                 "env": {"TOKEN": "${env:NB_SECRET}"}},
        "results": {"tok": "token=(.*)"},
    }],
}, indent=2)


class RecordingComm(BaseComm):
    """Keeps every message the widgets would send to the frontend."""

    messages: ClassVar[list[str]] = []

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        RecordingComm.messages.append(json.dumps(data, default=str))


@pytest.fixture(scope="module")
def run(shell_devnode: DevNode, tmp_path_factory: pytest.TempPathFactory,
        ) -> Iterator[dict[str, Any]]:
    """Run the leaky cell once through a real shell; keep everything it showed."""
    data_dir: Path = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NB_SECRET", SECRET)
        mp.setenv("NOSANA_DEVNODE_URL", shell_devnode.url)
        mp.setenv("NOSANA_DATA_DIR", str(data_dir))
        mp.delenv("NOSANA_NETWORK", raising=False)
        with ipython_shell() as shell:
            with capture_output() as captured:
                failed = shell.run_cell(f"%%nosana_confidential -o leaky --timeout 2m\n{CELL}",
                                        store_history=True)
                shown = shell.run_cell("leaky", store_history=True)
                shell.run_line_magic("nosana", "jobs")
                job: ConfidentialJob = shell.user_ns["leaky"]
                shell.run_cell(f"%nosana logs {job.address}", store_history=True)
                status = shell.run_cell(f"%nosana status {job.address}", store_history=True)
                config_table = shell.run_line_magic("nosana", "config")
            history = list(shell.history_manager.get_range(output=True, raw=True))
            history += list(shell.history_manager.get_range(output=True, raw=False))
            yield {
                "shell": shell, "job": job, "captured": captured, "failed": failed,
                "shown": shown, "status": status, "history": history, "config": config_table,
            }


def test_the_job_really_had_the_secret(run: dict[str, Any]) -> None:
    job = run["job"]
    # Printed by the job, redacted on the way in: proof that the value reached the host.
    assert "token=[secret:NB_SECRET]" in job.stdout
    assert "error: bad token [secret:NB_SECRET]" in job.stderr
    assert job.results == {"tok": "[secret:NB_SECRET]"}
    assert job.done and not job.ok


def test_not_in_the_placeholder_ipfs_or_ledger(run: dict[str, Any], shell_devnode: DevNode) -> None:
    job = run["job"]
    pinned = shell_devnode.ipfs.all()
    assert pinned  # the placeholder, at least
    for content in pinned.values():
        assert SECRET.encode() not in content
    ledger_job = shell_devnode.job(job.address)
    placeholder = json.loads(pinned[ledger_job.ipfs_job])
    assert placeholder["ops"] == []  # the CLI's blank confidential placeholder
    assert SECRET not in json.dumps([j.to_json() for j in shell_devnode.ledger.jobs.values()])


def test_not_in_the_handle(run: dict[str, Any]) -> None:
    job = run["job"]
    for text in (repr(job), job._repr_html_(), str(job.ops), str(job.results), str(job.urls),
                 "\n".join(line.text for line in job.logs), summary_text(job)):
        assert SECRET not in text


def test_not_in_the_text_view_or_magic_output(run: dict[str, Any]) -> None:
    captured = run["captured"]
    assert "[leak] token=[secret:NB_SECRET]" in captured.stdout  # the view did show the line
    assert SECRET not in captured.stdout and SECRET not in captured.stderr
    for output in captured.outputs:
        assert SECRET not in json.dumps(output.data, default=str)
    assert SECRET not in repr(run["config"]) + run["config"]._repr_html_()


def test_not_in_the_widget_view(run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    RecordingComm.messages = []
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    view = JobView(run["job"], mode="widget").show()
    view.finish()
    assert any("[secret:NB_SECRET]" in message for message in RecordingComm.messages)
    assert all(SECRET not in message for message in RecordingComm.messages)
    outputs = json.dumps(view._log_w.outputs)
    assert SECRET not in outputs + view._header_w.value + view._urls_w.value


def test_not_in_the_error(run: dict[str, Any]) -> None:
    error = run["failed"].error_in_exec
    assert isinstance(error, JobFailed)
    assert SECRET not in str(error) and SECRET not in "".join(error._render_traceback_())
    assert SECRET not in run["captured"].stdout  # the rendered error line


def test_not_in_in_out_or_history(run: dict[str, Any]) -> None:
    shell = run["shell"]
    assert "${env:NB_SECRET}" in shell.user_ns["In"][1]  # the reference, not the value
    for entry in shell.user_ns["In"]:
        assert SECRET not in entry
    for value in shell.user_ns["Out"].values():
        assert SECRET not in repr(value)
    assert run["shown"].result is run["job"] and run["status"].result is run["job"]
    for _session, _line, entry in run["history"]:
        assert SECRET not in json.dumps(entry, default=str)
    for name in ("_i", "_ii", "_iii", "_"):
        assert SECRET not in repr(shell.user_ns.get(name))


def test_missing_secret_error_names_the_variable_only(run: dict[str, Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    shell = run["shell"]
    monkeypatch.delenv("NB_SECRET")
    monkeypatch.setenv("OTHER", SECRET)
    with capture_output() as captured:
        result = shell.run_cell(f"%%nosana_confidential\n{CELL}")
    assert "NB_SECRET is not set" in captured.stdout
    assert SECRET not in captured.stdout + str(result.error_in_exec)
