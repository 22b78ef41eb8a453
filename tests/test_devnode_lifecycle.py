"""The host's job lifecycle (docs/protocol.md §9–§11) end to end, over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from nosana_magic.devnode import DevNode, DevNodeConfig
from nosana_magic.devnode.host import NOT_COLLECTED

from .conftest import FAST, PLACEHOLDER, Project, definition, op
from .waiting import PATIENCE, wait_until

#: The Nosana API's numeric job states.
QUEUED, COMPLETED, STOPPED = 0, 2, 3


def public_result(project: Project, job: str, timeout: float = PATIENCE) -> dict[str, Any]:
    info = project.node.wait_job(job, timeout=timeout)
    assert info.ipfs_result is not None
    stored = project.http.get(f"/ipfs/{info.ipfs_result}")
    assert stored.status_code == 200
    result: dict[str, Any] = stored.json()
    return result


def test_confidential_job_end_to_end(project: Project) -> None:
    secret = "s3cr3t-token-value"
    real = definition(op("train", "echo training; echo loss=0.25; echo done >&2",
                         env={"HF_TOKEN": secret}, results={"loss": "loss=([0-9.]+)"}))
    job = project.submit(real)
    result = project.collect(job)
    # The status quirk: the host hands results out while it reads waiting-for-result.
    assert result["status"] == "waiting-for-result"
    assert result["endTime"] >= result["startTime"]
    (train,) = result["opStates"]
    assert train["operationId"] == "train" and train["status"] == "success"
    assert train["exitCode"] == 0
    # As the node keeps them: the whole match, then the group.
    assert train["results"] == {"loss": ["loss=0.25", "0.25"]}
    logs = [(entry["type"], entry["log"]) for entry in train["logs"]]
    assert ("stdout", "loss=0.25\n") in logs and ("stderr", "done\n") in logs
    assert result["secrets"] == {}
    # JSON leaves out what the host never set: no errors, no results for an op without rules.
    assert "errors" not in result
    state = train["diagnostics"]["state"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)

    blank = public_result(project, job)
    assert blank == {"status": "success", "startTime": result["startTime"],
                     "endTime": result["endTime"], "opStates": [], "errors": []}
    info = project.job(job)
    assert info["state"] == COMPLETED and info["timeEnd"] > 0
    # Nothing private reached IPFS: neither the definition nor its secret nor the logs.
    for blob in project.node.ipfs.all().values():
        assert secret.encode() not in blob and b"loss=0.25" not in blob
    # The flow stays: a late GET still answers 200 (nothing resets the status).
    again = project.get(job, "/results")
    assert again.status_code == 200
    assert again.json()["opStates"][0]["results"] == {"loss": ["loss=0.25", "0.25"]}
    assert project.node.hosts[0].busy is False


def test_failed_op_is_reported_in_its_op_state(project: Project) -> None:
    job = project.submit(definition(op("bad", "echo oops; exit 3")))
    result = project.collect(job)
    (bad,) = result["opStates"]
    assert bad["status"] == "failed" and bad["exitCode"] == 3
    public_result(project, job)


def test_validation_error(project: Project) -> None:
    job = project.submit({"version": "0.1", "type": "container",
                          "ops": [{"type": "container/run", "id": "x", "args": {}}]})
    result = project.collect(job)
    assert result["opStates"] == []
    (problems,) = result["errors"]
    assert problems and all(set(p) == {"path", "expected"} for p in problems)
    assert any("image" in p["path"] or "image" in p["expected"] for p in problems)
    blank = public_result(project, job)
    assert blank["status"] == "validation-error"
    assert blank["errors"] == result["errors"]


def test_results_window_expires_without_collection(project: Project) -> None:
    project.node.config.results_window = 2.0
    job = project.submit(definition(op("quick", "echo hi")))
    started = time.monotonic()
    blank = public_result(project, job)
    # The 2-s window (no upper bound: a slow machine may take long to notice; a window that
    # never closed would fail the wait above).
    assert time.monotonic() - started >= 1.5
    assert blank["status"] == "success"
    assert blank["errors"] == [NOT_COLLECTED]
    assert blank["opStates"] == []
    record = project.record(job)
    assert record.flow is not None and NOT_COLLECTED in record.flow.errors
    # Nothing resets the status: a late GET still gets the flow, the error added.
    late = project.get(job, "/results")
    assert late.status_code == 200
    assert late.json()["status"] == "waiting-for-result"
    assert late.json()["errors"] == [NOT_COLLECTED]
    assert late.json()["opStates"][0]["logs"][0]["log"] == "hi\n"


def test_an_older_devnode_closes_the_window_for_late_gets(project: Project) -> None:
    project.node.config.results_window = 1.0
    project.node.config.close_results_window = True
    job = project.submit(definition(op("quick", "echo hi")))
    assert public_result(project, job)["errors"] == [NOT_COLLECTED]
    late = project.get(job, "/results")
    assert (late.status_code, late.text) == (400, "cannot get job result at this time")


def test_an_uncollected_error_lands_twice_beside_earlier_errors(project: Project) -> None:
    """The host adds it to the flow and to the public copy, which share the flow's list of
    errors when it has one: after a validation error it is there twice."""
    project.node.config.results_window = 1.0
    job = project.submit({"version": "0.1", "type": "container",
                          "ops": [{"type": "container/run", "id": "x", "args": {}}]})
    blank = public_result(project, job)
    assert blank["status"] == "validation-error"
    assert blank["errors"][1:] == [NOT_COLLECTED, NOT_COLLECTED]


def test_node_stop_route_expires_the_job_now(project: Project) -> None:
    job = project.submit(definition(op("long", "sleep 30"), op("plain", "true")))
    project.wait_flow(job, "running")
    stopped_at = int(time.time() * 1000)
    assert project.post(job, "/stop").text == "job stopped successfully"
    result = project.collect(job)
    long, plain = result["opStates"]
    assert long["diagnostics"]["reason"]["jobExpired"] is True
    assert long["diagnostics"]["reason"]["reason"] == "Operation stopped due to flow expired"
    # As docker stop: the shell ignored the SIGTERM, the kill came after the grace (FAST: 0.5 s),
    # and the flow's endTime after that.
    assert long["exitCode"] == 137 and long["diagnostics"]["state"]["ExitCode"] == 137
    assert result["endTime"] >= stopped_at + 500
    assert "results" not in long and "results" not in plain
    assert public_result(project, job)["status"] == "success"
    assert project.job(job)["state"] == COMPLETED


def test_project_ends_a_running_job(project: Project) -> None:
    job = project.submit(definition(op("long", "sleep 30")))
    project.wait_flow(job, "running")
    response = project.http.post(f"/api/jobs/{job}/stop", headers=project.api_headers())
    assert response.status_code == 200 and response.json()["delisted"] is False
    result = project.collect(job)
    assert result["opStates"][0]["status"] == "stopped"
    blank = public_result(project, job)
    assert blank["status"] == "stopped"
    info = project.job(job)
    assert info["state"] == STOPPED and info["ipfsResult"] is not None


def test_project_ends_a_job_waiting_for_its_definition(project: Project) -> None:
    job = project.post_placeholder()
    project.wait_flow(job, "waiting-for-job-definition")
    project.http.post(f"/api/jobs/{job}/stop", headers=project.api_headers())
    project.collect(job)
    blank = public_result(project, job)
    assert blank["status"] == "waiting-for-job-definition"
    assert project.job(job)["state"] == STOPPED


def test_expiry_ends_the_wait_for_a_definition(project: Project) -> None:
    job = project.post_placeholder(timeout=1)
    project.wait_running(job)  # (its flow may have expired already: nothing is sent)
    result = project.collect(job)  # the window opens after expiry
    assert result["endTime"] is not None and result["opStates"] == []
    assert public_result(project, job)["status"] == "waiting-for-job-definition"
    late = project.send_definition(job, definition(op("x", "true")))
    assert late.text == "cannot send job definition at this time"


def test_expiry_during_the_run(project: Project) -> None:
    job = project.post_placeholder(timeout=3)  # time to send the definition before it
    project.wait_flow(job, "waiting-for-job-definition")
    assert project.send_definition(job, definition(op("long", "sleep 30"))).status_code == 200
    result = project.collect(job)
    (long,) = result["opStates"]
    assert long["status"] == "success"
    assert long["diagnostics"]["reason"]["jobExpired"] is True
    assert public_result(project, job)["status"] == "success"


def test_extend_moves_the_expiry(project: Project) -> None:
    job = project.post_placeholder(timeout=3)
    project.wait_flow(job, "waiting-for-job-definition")
    extended = project.http.post(f"/api/jobs/{job}/extend", json={"seconds": 30},
                                 headers=project.api_headers())
    assert extended.status_code == 200
    # The op runs until the test lets it end, once the original expiry is past.
    work = "while [ ! -e go ]; do sleep 0.05; done; echo ok"
    assert project.send_definition(job, definition(op("work", work))).status_code == 200
    started = project.node.job(job).started_at
    assert started is not None
    wait_until(lambda: time.time() > started + 3 + 0.5, what="the original expiry")
    assert project.record(job).flow.status == "running"  # type: ignore[union-attr]
    assert project.node.workdir is not None
    (project.node.workdir / job / "go").touch()
    result = project.collect(job)
    (op_state,) = result["opStates"]
    assert op_state["exitCode"] == 0
    assert op_state["diagnostics"]["reason"]["jobExpired"] is False
    assert project.job(job)["timeout"] == 33


def test_public_job_runs_its_pinned_definition_and_publishes_everything(
    project: Project,
) -> None:
    cid = project.pin(definition(op("hello", "echo public hello")))
    job = project.list(cid)
    result = public_result(project, job)
    assert result["status"] == "success"
    assert result["opStates"][0]["logs"][0]["log"] == "public hello\n"
    assert project.job(job)["state"] == COMPLETED


def test_missing_placeholder_fails_the_job(project: Project) -> None:
    missing = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
    job = project.list(missing)
    blank = public_result(project, job)
    assert blank["status"] == "failed"
    assert any("not found on IPFS" in str(e) for e in blank["errors"])


def test_a_busy_host_takes_no_other_job(project: Project) -> None:
    first = project.submit(definition(op("long", "sleep 30")))
    second = project.post_placeholder()
    time.sleep(0.3)
    assert project.job(second)["state"] == QUEUED
    market = project.http.get("/api/markets/local-cpu/").json()
    assert market["idle_hosts"] == 0 and market["queued_jobs"] == 1
    project.post(first, "/stop")
    project.collect(first)
    node = project.wait_running(second)
    assert node == project.job(first)["node"]
    project.wait_flow(second, "waiting-for-job-definition")


def test_listing_for_a_chosen_node(project: Project) -> None:
    gpu_host = next(h for h in project.node.hosts if h.market.slug == "local-gpu")
    job = project.post_placeholder(market="local-gpu", node=gpu_host.address)
    assert project.wait_running(job) == gpu_host.address


@pytest.mark.parametrize("per_market", [2])
def test_hosts_per_market(per_market: int) -> None:
    config = DevNodeConfig(**{**FAST, "hosts_per_market": per_market})  # type: ignore[arg-type]
    node = DevNode(config)
    assert len(node.hosts) == 2 * per_market
    slugs = sorted(h.market.slug for h in node.hosts)
    assert slugs == ["local-cpu", "local-cpu", "local-gpu", "local-gpu"]


def test_two_jobs_in_two_markets_run_at_once(project: Project) -> None:
    a = project.submit(definition(op("a", "sleep 30")))
    b = project.submit(definition(op("b", "sleep 30")), market="local-gpu")
    project.wait_flow(a, "running")
    project.wait_flow(b, "running")
    assert project.job(a)["node"] != project.job(b)["node"]


def test_placeholder_with_only_send_publishes_the_full_result(project: Project) -> None:
    send_only = {**PLACEHOLDER, "logistics": {"send": {"type": "api-listen", "args": {}}}}
    job = project.post_placeholder(send_only)
    project.wait_flow(job, "waiting-for-job-definition")
    project.send_definition(job, definition(op("x", "echo visible")))
    result = public_result(project, job)
    assert result["opStates"][0]["logs"][0]["log"] == "visible\n"


async def test_async_context_manager_and_idempotent_stop() -> None:
    node = DevNode(DevNodeConfig(**FAST))  # type: ignore[arg-type]
    async with node, httpx.AsyncClient(base_url=node.url, trust_env=False) as client:
        assert (await client.get("/api/markets/")).status_code == 200
    node.stop()
    never_started = DevNode()
    never_started.stop()
    with pytest.raises(RuntimeError):
        node.start()


def test_an_evicted_flow_takes_its_job_directory_along() -> None:
    config = DevNodeConfig(**{**FAST, "keep_flows": 1})  # type: ignore[arg-type]
    with DevNode(config) as node, Project(node) as project:
        first = project.submit(definition(op("a", "echo kept > file.txt")))
        project.collect(first)
        node.wait_job(first, timeout=PATIENCE)
        assert node.workdir is not None
        assert (node.workdir / first / "file.txt").read_text() == "kept\n"
        second = project.submit(definition(op("b", "echo also kept > file.txt")))
        assert node.job(second).node == node.job(first).node
        # The second job's start dropped the first flow; its directory goes (off the loop).
        wait_until(lambda: not (node.workdir / first).exists(), what="the first job's dir gone")
        project.collect(second)
        node.wait_job(second, timeout=PATIENCE)
        # The second flow is the one kept: its directory stays, with what its op wrote.
        assert (node.workdir / second / "file.txt").read_text() == "also kept\n"
        assert not (node.workdir / first).exists()
