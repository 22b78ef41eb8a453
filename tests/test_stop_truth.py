"""Ctrl-C whose stop never takes effect: what is said is what happened. A job that finished on
its own with its results is not called ``stopped``; a job still RUNNING after two quick Ctrl-Cs
is not called ``stopped`` either."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from nosana_magic import job as job_module
from nosana_magic import runner
from nosana_magic.devnode import DevNode
from nosana_magic.errors import JobInterrupted
from nosana_magic.job import run_confidential
from nosana_magic.network.api import ApiNetwork
from nosana_magic.protocol import JobState

from .conftest import definition, network_for, op, text
from .waiting import PATIENCE, wait_until


@pytest.fixture
def net(devnode: DevNode, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiNetwork]:
    """A network whose host refuses every /stop (500) and whose ledger accepts a stop that
    never takes effect."""
    network = network_for(devnode)
    faults = devnode.config.faults
    faults.fail_routes, faults.fail_requests = r"/stop$", 10**6

    async def accepted_but_ignored(address: str) -> None:
        return None

    monkeypatch.setattr(network, "stop", accepted_but_ignored)
    yield network
    faults.fail_requests = 0
    monkeypatch.undo()
    runner.run_sync(network.aclose(), timeout=10)


def _needs_main_thread() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")


def test_ctrl_c_on_a_job_that_then_succeeds_says_it_succeeded(net: ApiNetwork) -> None:
    _needs_main_thread()
    job = run_confidential(
        text(definition(op("a", "echo started; sleep 1.5; echo answer=42",
                           ) | {"results": {"answer": "answer=(\\d+)"}})),
        network=net, timeout=60, wait=False)
    wait_until(lambda: any(line.text == "started" for line in job.logs), PATIENCE)
    threading.Timer(0.1, signal.raise_signal, args=(signal.SIGINT,)).start()
    with pytest.raises(JobInterrupted) as info:
        job.wait(PATIENCE)
    job.wait(PATIENCE)
    assert job.status == "succeeded", job.status
    assert str(info.value) == f"job {job.address} succeeded"
    assert job.ok and job.results["answer"] == 42  # JSON-decoded, as the host collected it


def test_two_quick_ctrl_cs_on_a_job_still_running_do_not_say_stopped(
    net: ApiNetwork, devnode: DevNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    _needs_main_thread()
    monkeypatch.setattr(job_module, "END_WAIT_S", 1.0)
    job = run_confidential(text(definition(op("a", "echo started; sleep 60"))),
                           network=net, timeout=60, wait=False)
    wait_until(lambda: any(line.text == "started" for line in job.logs), PATIENCE)
    threading.Timer(0.1, signal.raise_signal, args=(signal.SIGINT,)).start()
    threading.Timer(0.4, signal.raise_signal, args=(signal.SIGINT,)).start()
    with pytest.raises(JobInterrupted) as info:
        job.wait(PATIENCE)
    line = str(info.value)
    assert "stopped" not in line, line
    assert line.startswith(f"job {job.address} stopping: the stop was accepted, the job has "
                           "not ended yet")
    assert not job.done and job.status == "stopping"
    assert job.address is not None and devnode.job(job.address).state is JobState.RUNNING
