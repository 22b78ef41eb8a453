"""The network dies mid-run (its devnode SIGKILLed): the job is given up as lost within a
bounded time once neither the ledger nor the host answers, not at the job's expiry; Ctrl-C in
that state returns within seconds and says the stop could not be sent."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nosana_magic import machine, runner
from nosana_magic.errors import JobInterrupted, JobLost
from nosana_magic.job import ConfidentialJob, run_confidential
from nosana_magic.network.api import ApiNetwork
from nosana_magic.wallet import Wallet

from .conftest import definition, op, processes_of_jobs, text
from .test_devnode_cli import start
from .waiting import PATIENCE, wait_until


@pytest.fixture
def doomed() -> Iterator[tuple[Any, ApiNetwork]]:
    """A devnode subprocess (to be SIGKILLed by the test) and a network client for it."""
    process, lines = start("--hosts", "1")
    url = lines[0].rsplit(" ", 1)[1]
    net = ApiNetwork(url, Wallet.generate(), node_url_template=f"{url}/node/{{node}}")
    try:
        yield process, net
    finally:
        process.kill()
        process.wait(PATIENCE)
        runner.run_sync(net.aclose(), timeout=10)


def _running(net: ApiNetwork) -> ConfidentialJob:
    # A job far longer than the test: its expiry (10 min) must not be what ends the wait.
    job = run_confidential(text(definition(op("a", "echo started; sleep 600"))),
                           network=net, timeout=600, wait=False)
    wait_until(lambda: any(line.text == "started" for line in job.logs), PATIENCE)
    return job


def _kill(process: Any, job: ConfidentialJob) -> None:
    process.kill()
    process.wait(PATIENCE)
    assert job.address is not None
    # The devnode's reaper takes the op with it; nothing of this test is left running.
    wait_until(lambda: not processes_of_jobs({job.address}), PATIENCE)


def test_a_dead_network_loses_the_job_within_the_silence_bound(
    doomed: tuple[Any, ApiNetwork], monkeypatch: pytest.MonkeyPatch
) -> None:
    process, net = doomed
    monkeypatch.setattr(machine, "SILENCE_S", 3.0)
    monkeypatch.setattr(machine, "SILENCE_CHECK_S", 0.5)
    job = _running(net)
    _kill(process, job)
    killed_at = time.monotonic()
    # Without the silence bound, this wait would last until the job's expiry (10 min).
    job.wait(PATIENCE)
    assert time.monotonic() - killed_at < PATIENCE
    with pytest.raises(JobLost) as info:
        job.raise_for_status()
    message = str(info.value)
    assert f"lost contact with job {job.address}" in message
    assert "neither the local network nor its host answered for" in message
    assert job.status == "lost"


def test_ctrl_c_on_a_dead_network_returns_within_seconds(
    doomed: tuple[Any, ApiNetwork], monkeypatch: pytest.MonkeyPatch
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    process, net = doomed
    monkeypatch.setattr(machine, "QUIET_S", 1.0)
    job = _running(net)
    _kill(process, job)
    time.sleep(2.0)  # silent past QUIET_S (the silence bound, 60 s, is far off)
    threading.Timer(0.1, signal.raise_signal, args=(signal.SIGINT,)).start()
    interrupted_at = time.monotonic()
    with pytest.raises(JobInterrupted) as info:
        job.wait(PATIENCE)
    # Two bounded attempts (host, ledger) of QUIET_STOP_S each, not the 30 s of a stop.
    assert time.monotonic() - interrupted_at < 4 * machine.QUIET_STOP_S + 5
    assert str(info.value).startswith(
        f"job {job.address}: stop requested, still running: the stop could not be sent: "
        "neither the local network nor the job's host has answered for")
    assert not info.value.sent
    assert not job.done
