"""Every fault a devnode can inject (issue 3 item 7)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from nosana_magic.devnode import DevNodeConfig
from nosana_magic.devnode.host import NOT_COLLECTED

from .conftest import FAST, Project, definition, op, processes_of_jobs
from .waiting import PATIENCE


def test_pickup_never_then_enabled_at_run_time(project: Project) -> None:
    project.node.config.pickup_delay = None
    job = project.post_placeholder()
    time.sleep(0.4)
    assert project.job(job)["state"] == 0  # QUEUED
    project.node.config.pickup_delay = 0.05
    assert project.wait_running(job)


@pytest.mark.parametrize("devnode_config",
                         [DevNodeConfig(**{**FAST, "pickup_delay": 0.6})],  # type: ignore[arg-type]
                         ids=["delay-0.6"])
def test_pickup_delay(project: Project) -> None:
    job = project.post_placeholder()
    project.wait_running(job)
    info = project.node.job(job)  # the ledger's own instants
    assert info.started_at is not None and info.started_at - info.listed_at >= 0.6


async def test_websocket_dropped_after_n_frames(project: Project) -> None:
    project.node.config.faults.drop_ws_after_frames = 2
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    node = project.node.job(job).node
    url = f"{project.node.url.replace('http', 'ws', 1)}/node/{node}/log"
    message = json.dumps({"path": "/log", "header": project.wallet.auth_header("a"),
                          "body": {"jobAddress": job}})
    for _attempt in range(2):  # a reconnect gets the history again, and is dropped again
        async with connect(url, proxy=None) as ws:
            await ws.send(message)
            got = [json.loads(await asyncio.wait_for(ws.recv(), PATIENCE)) for _ in range(2)]
            assert [f["path"] for f in got] == ["log", "log"]
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), PATIENCE)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    project.node.config.faults.drop_ws_after_frames = None
    async with connect(url, proxy=None) as ws:
        await ws.send(message)
        for _ in range(3):
            await asyncio.wait_for(ws.recv(), PATIENCE)


def test_next_n_requests_answer_500(project: Project) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    project.node.config.faults.fail_requests = 2
    assert project.get(job, "/results").status_code == 500
    assert project.get(job, "/job-definition").status_code == 500
    assert project.get(job, "/results").status_code == 400
    # The ledger and IPFS are not node routes: they never fail.
    project.node.config.faults.fail_requests = 5
    assert project.http.get("/api/markets/").status_code == 200
    assert project.node.config.faults.fail_requests == 5


def test_failures_limited_to_some_routes(project: Project) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    faults = project.node.config.faults
    faults.fail_routes = r"/job-definition$"
    faults.fail_requests = 1
    assert project.get(job, "/results").status_code == 400
    assert faults.fail_requests == 1
    failed = project.post(job, "/job-definition", json=definition(op("x", "true")))
    assert failed.status_code == 500
    assert project.send_definition(job, definition(op("x", "true"))).status_code == 200


def test_stalled_route(project: Project) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    faults = project.node.config.faults
    faults.stall_route = r"/results$"
    faults.stall_seconds = 0.6
    started = time.monotonic()
    assert project.get(job, "/results").status_code == 400
    assert time.monotonic() - started >= 0.55
    # Other routes are not stalled: with a stall far beyond the client's timeout, they answer.
    faults.stall_seconds = 3 * PATIENCE
    assert project.get(job, "/job-definition", timeout=PATIENCE).status_code == 400
    faults.stall_seconds = 0.6
    with pytest.raises(httpx.ReadTimeout):
        project.get(job, "/results", timeout=0.2)


def test_host_quits_mid_run(project: Project) -> None:
    project.node.config.faults.host_quits_after = 0.3
    job = project.submit(definition(op("long", "sleep 30")))
    info = project.node.wait_job(job, timeout=PATIENCE)
    assert info.state.value == "STOPPED"
    assert not processes_of_jobs({job})
    record = project.record(job)
    assert record.flow is not None and record.flow.status == "failed"
    assert record.flow.op_states[0].status == "failed"
    blank = project.http.get(f"/ipfs/{info.ipfs_result}").json()
    assert blank["status"] == "failed" and blank["opStates"] == []
    assert "The host quit while the job ran." in blank["errors"]
    assert project.get(job, "/results").text == "cannot get job result at this time"
    # The host comes back and takes the next job.
    project.node.config.faults.host_quits_after = None
    nxt = project.submit(definition(op("ok", "echo fine")))
    assert project.collect(nxt)["opStates"][0]["exitCode"] == 0


def test_results_never_served(project: Project) -> None:
    project.node.config.faults.results_never_served = True
    project.node.config.results_window = 1.0  # waited out below
    job = project.submit(definition(op("x", "echo hi")))
    project.wait_flow(job, "waiting-for-result")
    assert project.get(job, "/results").text == "cannot get job result at this time"
    info = project.node.wait_job(job, timeout=PATIENCE)
    blank = project.http.get(f"/ipfs/{info.ipfs_result}").json()
    assert blank["errors"] == [NOT_COLLECTED]
