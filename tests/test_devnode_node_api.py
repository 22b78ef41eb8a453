"""The emulated hosts' node API: routes, auth, phases, Express quirks.

The behaviour checked is that of docs/protocol.md §3–§5 and §8.
"""

from __future__ import annotations

import json

import pytest

from nosana_magic.protocol import auth_header, now_ms
from nosana_magic.wallet import Wallet

from .conftest import Project, definition, op
from .waiting import PATIENCE

LONG = definition(op("train", "sleep 30", execution={"group": "g1"}),
                  op("eval", "sleep 30", execution={"group": "g1"}))


@pytest.fixture
def waiting_job(project: Project) -> str:
    """A job whose host waits for its definition."""
    job = project.post_placeholder(timeout=60)
    project.wait_running(job)
    project.wait_flow(job, "waiting-for-job-definition")
    return job


def test_root_and_node_info(project: Project) -> None:
    host = project.node.hosts[0]
    root = project.http.get(f"/node/{host.address}/")
    assert root.status_code == 200 and root.json() == host.address
    bare = project.http.get(f"/node/{host.address}")
    assert bare.status_code == 200 and bare.json() == host.address
    info = project.http.get(f"/node/{host.address}/node/info")
    assert info.status_code == 200
    assert info.json()["info"]["address"] == host.address
    unknown = project.http.get("/node/NotAHost/")
    assert unknown.status_code == 404


def test_unknown_routes_get_express_404(project: Project) -> None:
    host = project.node.hosts[0].address
    response = project.http.get(f"/node/{host}/nothing/here")
    assert response.status_code == 404
    assert "Cannot GET /nothing/here" in response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"


# ------------------------------------------------------ auth (docs/protocol.md §3)


def test_auth_failures(project: Project, waiting_job: str) -> None:
    other = Wallet.generate()
    wallet = project.wallet
    cases = [
        ({}, "Unauthorized Request: Header not found with key authorization."),
        ({"Authorization": "just-a-message"}, "Unauthorized Request: Invalid signature."),
        ({"Authorization": "m:0OIl"}, "Unauthorized Request: Non-base58 character"),
        ({"Authorization": "m:abc"}, "Unauthorized Request: bad signature size"),
        ({"Authorization": other.auth_header("nosana-auth")}, "Unauthorized Request"),
        ({"Authorization": auth_header(wallet.keypair, "m", timestamp_ms=now_ms() - 61_000)},
         "Unauthorized Request: Authorization has expired."),
    ]
    for headers, text in cases:
        response = project.http.get(project.node_path(waiting_job, "/results"), headers=headers)
        assert (response.status_code, response.text) == (401, text), headers
        assert response.headers["content-type"] == "text/html; charset=utf-8"


def test_auth_expiry_is_the_job_timeout_and_the_message_is_not_checked(
    project: Project, waiting_job: str
) -> None:
    fresh_enough = auth_header(project.wallet.keypair, "any message at all",
                               timestamp_ms=now_ms() - 55_000)
    response = project.http.get(project.node_path(waiting_job, "/results"),
                                headers={"Authorization": fresh_enough})
    assert (response.status_code, response.text) == (400, "cannot get job result at this time")
    timeless = auth_header(project.wallet.keypair, "Hello Nosana Node!", include_time=False)
    response = project.http.get(project.node_path(waiting_job, "/results"),
                                headers={"Authorization": timeless})
    assert response.status_code == 400  # past auth: a header without a time never expires


def test_auth_of_unknown_jobs(project: Project) -> None:
    host = project.node.hosts[0].address
    unknown = Wallet.generate().address
    response = project.http.get(f"/node/{host}/job/{unknown}/results", headers=project.header())
    assert response.status_code == 401
    assert response.text == f"Unauthorized Request: Account does not exist or has no data {unknown}"
    # web3.js's PublicKey: text that is not base58, then base58 that is not 32 bytes.
    response = project.http.get(f"/node/{host}/job/not_base58!/results", headers=project.header())
    assert (response.status_code, response.text) == (
        401, "Unauthorized Request: Non-base58 character")
    response = project.http.get(f"/node/{host}/job/abc/results", headers=project.header())
    assert (response.status_code, response.text) == (
        401, "Unauthorized Request: Invalid public key input")


def test_auth_runs_before_routing(project: Project, waiting_job: str) -> None:
    path = project.node_path(waiting_job, "/no-such-route")
    assert project.http.get(path).status_code == 401
    assert project.http.get(path, headers=project.header()).status_code == 404


# ------------------------------------------------------ phases (docs/protocol.md §5)


def test_routes_before_the_host_has_a_flow(project: Project) -> None:
    project.node.config.pickup_delay = None
    job = project.post_placeholder()
    host = project.node.hosts[0].address
    base = f"/node/{host}/job/{job}"
    h = project.header
    expect = [
        (project.http.post(f"{base}/job-definition", json=LONG, headers=h()), 400,
         "invalid job id"),
        (project.http.get(f"{base}/job-definition", headers=h()), 400, "invalid job id"),
        (project.http.get(f"{base}/results", headers=h()), 400, "invalid job id"),
        (project.http.get(f"{base}/endpoints", headers=h()), 400, "No exposed url for job id"),
        (project.http.get(f"{base}/info", headers=h()), 404,
         "Failed to find job for provided job id."),
        (project.http.get(f"{base}/ops", headers=h()), 400, "invalid job id"),
        (project.http.post(f"{base}/stop", headers=h()), 200, "job stopped successfully"),
    ]
    for response, status, text in expect:
        assert (response.status_code, response.text) == (status, text)


def test_phase_gates_while_waiting_and_running(project: Project, waiting_job: str) -> None:
    job = waiting_job
    early = project.get(job, "/job-definition")
    assert early.status_code == 400
    assert early.text == ("The job definition has not yet been set. "
                          "Please set the job definition and try again.")
    assert project.get(job, "/results").text == "cannot get job result at this time"
    assert project.get(job, "/ops").text == "invalid job id"

    accepted = project.post(job, "/job-definition", json=LONG)
    assert (accepted.status_code, accepted.text) == (200, "Job definition received")
    again = project.post(job, "/job-definition", json=LONG)
    assert (again.status_code, again.text) == (400, "cannot send job definition at this time")
    project.wait_flow(job, "running")

    stored = project.get(job, "/job-definition")
    assert stored.status_code == 200
    assert stored.headers["content-type"] == "text/html; charset=utf-8"
    assert json.loads(stored.text) == LONG

    ops = project.get(job, "/ops")
    assert ops.status_code == 200 and set(ops.json()) == {"train", "eval"}
    assert project.get(job, "/ops/train").json() == {"train": "running"}
    missing = project.get(job, "/ops/nope")
    assert (missing.status_code, missing.text) == (404, "operation not found")
    assert set(project.get(job, "/group/current").json()) == {"train", "eval"}
    assert set(project.get(job, "/group/g1").json()) == {"train", "eval"}
    assert (project.get(job, "/group/g9").status_code, project.get(job, "/group/g9").text) == (
        404, "group not found")
    assert project.get(job, "/endpoints").text == "No exposed url for job id"
    assert project.get(job, "/results").text == "cannot get job result at this time"

    stopped = project.post(job, "/stop")
    assert (stopped.status_code, stopped.text) == (200, "job stopped successfully")
    project.wait_flow(job, "waiting-for-result")


def test_trailing_slashes_and_head_are_accepted(project: Project, waiting_job: str) -> None:
    response = project.get(waiting_job, "/results/")
    assert response.text == "cannot get job result at this time"
    head = project.http.head(project.node_path(waiting_job, "/results"),
                             headers=project.header())
    assert head.status_code == 400


def test_cors(project: Project, waiting_job: str) -> None:
    preflight = project.http.options(project.node_path(waiting_job, "/results"),
                                     headers={"Origin": "https://x.example",
                                              "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert project.get(waiting_job, "/results").headers["access-control-allow-origin"] == "*"


# ---------------------------------------------------------------------- express.json() quirks


def test_body_limit_is_100kb(project: Project, waiting_job: str) -> None:
    padding = "x" * (102_400 - len(json.dumps({"pad": ""})) + 1)
    too_big = json.dumps({"pad": padding}).encode()
    assert len(too_big) == 102_401
    response = project.post(waiting_job, "/job-definition", content=too_big,
                            headers={**project.header(), "Content-Type": "application/json"})
    assert response.status_code == 413
    # Exactly the limit is read (and the phase still accepts a definition).
    at_limit = too_big[:-3] + b'"}'
    assert len(at_limit) == 102_400
    ok = project.post(waiting_job, "/job-definition", content=at_limit,
                      headers={**project.header(), "Content-Type": "application/json"})
    assert (ok.status_code, ok.text) == (200, "Job definition received")


def test_non_json_content_type_is_read_as_empty_object(project: Project, waiting_job: str) -> None:
    response = project.post(waiting_job, "/job-definition", content=json.dumps(LONG),
                            headers={**project.header(), "Content-Type": "text/plain"})
    assert (response.status_code, response.text) == (200, "Job definition received")
    record = project.wait_flow(waiting_job, "validation-error", "waiting-for-result")
    assert record.definition == {}
    assert record.flow is not None
    problems = record.flow.errors[0]
    assert isinstance(problems, list) and problems
    assert all(set(p) == {"path", "expected"} for p in problems)
    assert any(p["path"].startswith("$input") for p in problems)


def test_malformed_json_is_400(project: Project, waiting_job: str) -> None:
    for content in (b"{oops", b'"a string"', b"42"):
        response = project.post(waiting_job, "/job-definition", content=content,
                                headers={**project.header(),
                                         "Content-Type": "application/json"})
        assert response.status_code == 400, content
    assert project.record(waiting_job).flow.status == "waiting-for-job-definition"  # type: ignore[union-attr]


def test_non_finite_numbers_are_not_json(project: Project, waiting_job: str) -> None:
    # Python's json reads NaN/Infinity; body-parser (JSON.parse) answers 400 SyntaxError.
    for content in (b'{"a": NaN}', b'{"a": Infinity}', b'[-Infinity]'):
        response = project.post(waiting_job, "/job-definition", content=content,
                                headers={**project.header(),
                                         "Content-Type": "application/json"})
        assert response.status_code == 400, content
        assert "SyntaxError: Unexpected token" in response.text
        assert "is not valid JSON" in response.text
    assert project.record(waiting_job).flow.status == "waiting-for-job-definition"  # type: ignore[union-attr]


def test_deep_nesting_is_400_and_a_lone_surrogate_is_served(
    project: Project, waiting_job: str
) -> None:
    headers = {**project.header(), "Content-Type": "application/json"}
    deep = project.post(waiting_job, "/job-definition", content=b"[" * 20_000, headers=headers)
    assert deep.status_code == 400 and "SyntaxError" in deep.text
    body = b'{"version": "0.1", "type": "container", "ops": [], "meta": {"x": "\\ud800"}}'
    posted = project.post(waiting_job, "/job-definition", content=body, headers=headers)
    assert (posted.status_code, posted.text) == (200, "Job definition received")
    project.wait_flow(waiting_job, "success", "waiting-for-result", "validation-error")
    stored = project.get(waiting_job, "/job-definition")
    assert stored.status_code == 200
    assert json.loads(stored.text)["meta"] == {"x": "\ud800"}


def test_a_result_that_cannot_be_pinned_still_completes_the_job(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(document: object) -> str:
        raise RuntimeError("pinning is broken")

    monkeypatch.setattr(project.node.ipfs, "put_json", broken)
    project.node.config.keep_log_history = True  # (to read the host's lines afterwards)
    job = project.submit(definition(op("a", "echo hi")))
    project.collect(job)
    info = project.node.wait_job(job, "COMPLETED", "STOPPED", timeout=PATIENCE)
    assert info.state.value == "COMPLETED" and info.ipfs_result is None
    host = project.node.host(info.node or "")
    assert any("could not be published" in line for line in host.node_logs.history(job))


# ------------------------------------------------------ legacy paths (docs/protocol.md §8)


def test_legacy_routes_only_when_enabled(project: Project, waiting_job: str) -> None:
    node = project.node.job(waiting_job).node
    legacy = f"/node/{node}/job-result/{waiting_job}"
    assert project.http.get(legacy, headers=project.header()).status_code == 404
    project.node.config.legacy_routes = True
    assert project.http.get(legacy).status_code == 401
    response = project.http.get(legacy, headers=project.header())
    assert (response.status_code, response.text) == (400, "cannot get job result at this time")
    url = project.http.get(f"/node/{node}/service/url/{waiting_job}", headers=project.header())
    assert url.text == "No exposed url for job id"
    posted = project.http.post(f"/node/{node}/job-definition/{waiting_job}", json=LONG,
                               headers=project.header())
    assert (posted.status_code, posted.text) == (200, "Job definition received")
    project.wait_flow(waiting_job, "running")
    stop = project.http.post(f"/node/{node}/service/stop/{waiting_job}",
                             headers=project.header())
    assert stop.text == "job stopped successfully"
    project.wait_flow(waiting_job, "waiting-for-result")
