"""The devnode's own routes: its status (jobs, idleness, event-loop lag), the token it may ask
for, the stop it may be told, and the idle stop the local network service relies on."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from nosana_magic.devnode import DevNode, DevNodeConfig
from nosana_magic.devnode.runtime import TOKEN_HEADER

from .conftest import FAST, Project, definition, op
from .waiting import PATIENCE, wait_until

TOKEN = "a-test-token"


@pytest.fixture
def guarded() -> Iterator[DevNode]:
    """A devnode that asks for a token, and stops itself after 0.5 s idle."""
    config = DevNodeConfig(**FAST, token=TOKEN, idle_timeout=0.5)  # type: ignore[arg-type]
    with DevNode(config) as node:
        yield node


def test_status_says_what_the_devnode_knows_of_itself(devnode: DevNode) -> None:
    with httpx.Client(base_url=devnode.url, trust_env=False, timeout=PATIENCE) as client:
        body = client.get("/_devnode/status").json()
        assert body["url"] == devnode.url and body["pid"] > 0
        assert body["jobs"] == {"listed": 0, "active": 0}
        assert body["idle_timeout_s"] is None and body["requests_in_flight"] == 0
        assert set(body["loop_lag"]) == {"window_s", "samples", "p50_ms", "p99_ms", "max_ms",
                                         "max_since_start_ms"}
        assert client.get("/_devnode/status", params={"window": "x"}).status_code == 400
        # Without a token there is no one to stop it for, or serve keys for: no such routes.
        assert client.post("/_devnode/stop").status_code == 404
        assert client.post("/_devnode/credits", json={}).status_code == 404
    assert not devnode.stop_requested.is_set()


def test_the_loop_lag_shows_a_blocked_loop(devnode: DevNode) -> None:
    devnode.call(lambda: time.sleep(0.3))  # holds the devnode's loop for 0.3 s
    with httpx.Client(base_url=devnode.url, trust_env=False, timeout=PATIENCE) as client:
        lag = client.get("/_devnode/status").json()["loop_lag"]
    # The probe was asleep for 50 ms of it at most: it woke at least 250 ms late.
    assert lag["max_ms"] >= 250 and lag["max_since_start_ms"] >= 250 and lag["samples"] >= 1


def test_a_token_guards_all_but_the_node_api_and_the_services(guarded: DevNode) -> None:
    with httpx.Client(base_url=guarded.url, trust_env=False, timeout=PATIENCE) as client:
        for path in ("/", "/api/markets/", "/_devnode/status", "/ipfs/Qm1"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={TOKEN_HEADER: TOKEN + "x"}).status_code == 401
        assert client.post("/api/jobs/list", json={}).status_code == 401
        assert client.get("/api/markets/", headers={TOKEN_HEADER: TOKEN}).status_code == 200
        node = guarded.hosts[0].address
        assert client.get(f"/node/{node}/node/info").status_code == 200
        assert client.get("/service/unknown/").status_code != 401
        # A key is served only when the token comes with it, and only a nos_… key.
        key = "nos_" + "k" * 40
        assert client.post("/_devnode/credits", json={"api_key": key}).status_code == 401
        for bad in ({"api_key": "sk_" + "k" * 40}, {"api_key": "nos_"}, {"key": key}, [],
                    {"api_key": "nos_ab cd"}):
            assert client.post("/_devnode/credits", json=bad,
                               headers={TOKEN_HEADER: TOKEN}).status_code == 400, bad
        with pytest.raises(KeyError):
            guarded.ledger.credits.account(key)
        served = client.post("/_devnode/credits", json={"api_key": key},
                             headers={TOKEN_HEADER: TOKEN})
        assert served.status_code == 200 and key not in served.text
        assert guarded.ledger.credits.account(key).assigned == 10_000_000  # $10 in micro-$
        assert not guarded.stop_requested.is_set()
        assert client.post("/_devnode/stop", headers={TOKEN_HEADER: TOKEN}).status_code == 202
    assert guarded.stop_requested.is_set()


def test_idle_means_no_job_and_no_request() -> None:
    config = DevNodeConfig(**FAST, idle_timeout=1.0)  # type: ignore[arg-type]
    with DevNode(config) as node, Project(node) as project:
        job = project.submit(definition(op("a", "sleep 3")))
        started = time.monotonic()
        project.wait_flow(job, "running")
        # No request for longer than the idle timeout, but a job runs: not idle.
        while time.monotonic() - started < 2.0:
            assert node.call(node.idle_for) == 0.0
            time.sleep(0.1)
        assert not node.stop_requested.is_set()
        project.collect(job)
        node.wait_job(job, timeout=PATIENCE)
        wait_until(node.stop_requested.is_set, what="the idle stop asked for")
        status = httpx.get(f"{node.url}/_devnode/status", trust_env=False, timeout=PATIENCE)
        assert status.json()["jobs"] == {"listed": 1, "active": 0}
