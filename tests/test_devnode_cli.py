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
    process, lines = start("--hosts", "3", "--results-window", "1", "--legacy-routes")
    url = lines[0].rsplit(" ", 1)[1]
    assert url.startswith("http://127.0.0.1:")
    assert any("RUN" in line.upper() and "THIS MACHINE" in line.upper() for line in lines)
    assert sum(line.startswith("host ") for line in lines) == 3
    assert sum(line.startswith("market ") for line in lines) == 2
    with httpx.Client(base_url=url, trust_env=False, timeout=PATIENCE) as client:
        assert len(client.get("/").json()["hosts"]) == 3
    out = finish(process, signal.SIGINT)
    assert process.returncode == 0
    assert "devnode stopped" in out


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
        while client.get(f"/api/jobs/{job}").json()["node"] is None:
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
