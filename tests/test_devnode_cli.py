"""``python -m nosana_magic.devnode``: prints its URL, serves, exits cleanly on a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from nosana_magic.devnode.ledger import SYSTEM_ADDRESS
from nosana_magic.wallet import Wallet

from .conftest import PLACEHOLDER, definition, op, processes_of_jobs
from .waiting import PATIENCE

ROOT = Path(__file__).resolve().parent.parent


def start(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nosana_magic.devnode", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C"):
            return process, lines
    process.kill()
    process.wait(PATIENCE)
    raise AssertionError("the devnode did not start:\n" + "\n".join(lines))


def finish(process: subprocess.Popen[str], sig: int) -> str:
    process.send_signal(sig)
    out, _ = process.communicate(timeout=PATIENCE)
    return out


@pytest.mark.slow
def test_cli_serves_and_stops_on_ctrl_c() -> None:
    key = "nos_" + "c" * 40
    process, lines = start("--hosts", "3", "--results-window", "1", "--legacy-routes",
                           "--api-key", key, "--credits", "3")
    url = lines[0].rsplit(" ", 1)[1]
    assert url.startswith("http://127.0.0.1:")
    assert any("RUN" in line.upper() and "THIS MACHINE" in line.upper() for line in lines)
    assert sum(line.startswith("host ") for line in lines) == 3
    assert sum(line.startswith("market ") for line in lines) == 2
    assert f"API key ($3.00 of local credits): {key}" in lines
    assert f"signing service: {url}/client-manager" in lines
    with httpx.Client(base_url=url, trust_env=False, timeout=PATIENCE) as client:
        assert len(client.get("/").json()["hosts"]) == 3
        balance = client.get("/api/credits/balance", headers={"Authorization": f"Bearer {key}"})
        assert balance.json()["assignedCredits"] == 3.0
    out = finish(process, signal.SIGINT)
    assert process.returncode == 0
    assert "devnode stopped" in out


def test_cli_refuses_a_key_that_is_not_a_nosana_key() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["--api-key", "sk_live_123"], ["--credits", "-1"]):
        done = subprocess.run([sys.executable, "-m", "nosana_magic.devnode", *args],
                              capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=PATIENCE)
        assert done.returncode == 2 and done.stderr.startswith("--"), done.stderr


@pytest.mark.slow
def test_cli_sigterm_kills_running_jobs() -> None:
    process, lines = start("--hosts", "1")
    url = lines[0].rsplit(" ", 1)[1]
    wallet = Wallet.generate()
    with httpx.Client(base_url=url, trust_env=False, timeout=PATIENCE) as client:
        cid = client.post("/pinning/pinJSONToIPFS", json=PLACEHOLDER,
                          headers={"Authorization": "Bearer x"}).json()["IpfsHash"]
        job = client.post("/api/jobs/list",
                          json={"ipfsHash": cid, "market": "local-cpu", "timeout": 60},
                          headers={"Authorization": wallet.auth_header("NosanaApiAuthentication"),
                                   "x-user-id": wallet.address}).json()["job"]
        deadline = time.monotonic() + PATIENCE
        while client.get(f"/api/jobs/{job}").json()["state"] == 0:  # QUEUED
            assert time.monotonic() < deadline
            time.sleep(0.05)
        node = client.get(f"/api/jobs/{job}").json()["node"]
        path = f"/node/{node}/job/{job}/job-definition"
        body = definition(op("long", "sleep 60"))
        while True:
            response = client.post(path, json=body,
                                   headers={"Authorization": wallet.auth_header(cid)})
            if response.status_code == 200:
                break
            assert time.monotonic() < deadline, response.text
            time.sleep(0.05)
        while not processes_of_jobs({job}):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finish(process, signal.SIGTERM)
    assert process.returncode == 0
    assert not processes_of_jobs({job})


def _running_job(url: str, cmd: str) -> str:
    """Post a job to the devnode at ``url`` and send it ``cmd``; its id once it runs."""
    wallet = Wallet.generate()
    with httpx.Client(base_url=url, trust_env=False, timeout=PATIENCE) as client:
        cid = client.post("/pinning/pinJSONToIPFS", json=PLACEHOLDER,
                          headers={"Authorization": "Bearer x"}).json()["IpfsHash"]
        job = client.post("/api/jobs/list",
                          json={"ipfsHash": cid, "market": "local-cpu", "timeout": 120},
                          headers={"Authorization": wallet.auth_header("NosanaApiAuthentication"),
                                   "x-user-id": wallet.address}).json()["job"]
        # The official job shape names the system address as node until a host takes it.
        deadline = time.monotonic() + PATIENCE
        while client.get(f"/api/jobs/{job}").json()["node"] in (None, SYSTEM_ADDRESS):
            assert time.monotonic() < deadline, "no host took the job"
            time.sleep(0.05)
        node = client.get(f"/api/jobs/{job}").json()["node"]
        path = f"/node/{node}/job/{job}/job-definition"
        deadline = time.monotonic() + PATIENCE
        while client.post(path, json=definition(op("long", cmd)),
                          headers={"Authorization": wallet.auth_header(cid)}).status_code != 200:
            assert time.monotonic() < deadline, "the host did not take the definition"
            time.sleep(0.05)
    return str(job)


def test_a_sigkilled_devnode_takes_its_job_processes_with_it() -> None:
    # SIGKILL runs no code in the devnode: its reaper, a process of its own, must notice and
    # kill the op, what the op started in its group, and what it detached with setsid.
    process, lines = start("--hosts", "1")
    url = lines[0].rsplit(" ", 1)[1]
    try:
        job = _running_job(url, "sleep 300 & setsid sleep 300 & sleep 300")
        deadline = time.monotonic() + PATIENCE
        while len(processes_of_jobs({job})) < 4:  # sh, two sleeps, the detached sleep
            assert time.monotonic() < deadline, processes_of_jobs({job})
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait(PATIENCE)
    deadline = time.monotonic() + PATIENCE
    while processes_of_jobs({job}):
        assert time.monotonic() < deadline, f"left running: {processes_of_jobs({job})}"
        time.sleep(0.05)
