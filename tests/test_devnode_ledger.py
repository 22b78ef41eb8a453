"""The devnode's ledger (Nosana API shape) and IPFS (Pinata shape), over real HTTP."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from nosana_magic.devnode import DevNode, DevNodeConfig
from nosana_magic.protocol import auth_header, cid_to_digest, now_ms
from nosana_magic.wallet import Wallet

from .conftest import FAST, PLACEHOLDER, Project
from .waiting import PATIENCE


@pytest.fixture
def devnode_config() -> DevNodeConfig:
    # Nobody picks jobs up unless a test says so: listings stay QUEUED.
    return DevNodeConfig(**{**FAST, "pickup_delay": None})  # type: ignore[arg-type]


# ---------------------------------------------------------------------- IPFS


def test_pin_and_get_with_a_real_cidv0(project: Project) -> None:
    response = project.http.post("/pinning/pinJSONToIPFS", json={"b": 1, "a": [1, 2]},
                                 headers={"Authorization": "Bearer jwt"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"IpfsHash", "PinSize", "Timestamp"}
    cid = body["IpfsHash"]
    stored = project.http.get(f"/ipfs/{cid}")
    assert stored.status_code == 200
    assert stored.headers["content-type"].startswith("application/json")
    assert stored.json() == {"b": 1, "a": [1, 2]}
    assert cid_to_digest(cid) == hashlib.sha256(stored.content).digest()
    assert body["PinSize"] == len(stored.content)
    assert project.node.ipfs.get(cid) == stored.content


def test_equal_documents_get_equal_cids_and_pinata_wrapper_is_unwrapped(project: Project) -> None:
    a = project.pin({"x": 1, "y": [1, 2]})
    raw = project.http.post("/pinning/pinJSONToIPFS",
                            content=b'{ "x" : 1,\n "y": [1, 2] }',
                            headers={"Authorization": "Bearer t",
                                     "Content-Type": "application/json"})
    wrapped = project.http.post(
        "/pinning/pinJSONToIPFS",
        json={"pinataContent": {"x": 1, "y": [1, 2]}, "pinataMetadata": {"name": "n"}},
        headers={"Authorization": "Bearer t"},
    )
    assert raw.json()["IpfsHash"] == a == wrapped.json()["IpfsHash"]


def test_pin_refuses_missing_credentials_and_bad_bodies(project: Project) -> None:
    missing = project.http.post("/pinning/pinJSONToIPFS", json={"a": 1})
    assert missing.status_code == 401 and "error" in missing.json()
    bad = project.http.post("/pinning/pinJSONToIPFS", content=b"{nope",
                            headers={"Authorization": "Bearer t"})
    assert bad.status_code == 400 and "error" in bad.json()
    scalar = project.http.post("/pinning/pinJSONToIPFS", json=3,
                               headers={"Authorization": "Bearer t"})
    assert scalar.status_code == 400
    assert project.http.get("/ipfs/QmNotThere").status_code == 404


def test_pin_and_list_answer_400_to_deep_nesting_and_keep_lone_surrogates(
    project: Project,
) -> None:
    deep = b"[" * 20_000
    pinned = project.http.post("/pinning/pinJSONToIPFS", content=deep,
                               headers={"Authorization": "Bearer t"})
    assert pinned.status_code == 400 and pinned.json() == {"error": "the body is not JSON"}
    listed = project.http.post("/api/jobs/list", content=deep, headers=project.api_headers())
    assert listed.status_code == 400 and listed.json() == {"error": "the body is not JSON"}
    # A lone surrogate cannot be UTF-8: the stored bytes spell it as an ASCII escape.
    surrogate = project.http.post("/pinning/pinJSONToIPFS", content=b'{"a": "\\ud800"}',
                                  headers={"Authorization": "Bearer t"})
    assert surrogate.status_code == 200
    stored = project.http.get(f"/ipfs/{surrogate.json()['IpfsHash']}")
    assert stored.content == b'{"a":"\\ud800"}'


# ---------------------------------------------------------------------- markets


def test_markets_in_the_nosana_api_shape(project: Project) -> None:
    markets = project.http.get("/api/markets/").json()
    assert [m["slug"] for m in markets] == ["local-cpu", "local-gpu"]
    for market in markets:
        assert {"address", "slug", "name", "nos_job_price_per_second", "job_timeout",
                "network_fee_percentage", "idle_hosts", "queue", "usd_reward_per_hour"
                } <= set(market)
        assert market["idle_hosts"] == 1 and len(market["queue"]) == 1
        assert market["nos_reward_per_second"] == market["nos_job_price_per_second"]
        by_slug = project.http.get(f"/api/markets/{market['slug']}/").json()
        by_address = project.http.get(f"/api/markets/{market['address']}").json()
        assert by_slug == by_address == market
    gpu = markets[1]
    assert gpu["nos_job_price_per_second"] == pytest.approx(115 / 1e6)
    assert gpu["usd_reward_per_hour"] == 0.4 and gpu["gpu_types"] == ["local"]
    unknown = project.http.get("/api/markets/nope/")
    assert unknown.status_code == 404 and "error" in unknown.json()


# ---------------------------------------------------------------------- listing


def test_list_returns_base58_addresses_and_the_job_shape(project: Project) -> None:
    cid = project.pin(PLACEHOLDER)
    response = project.http.post("/api/jobs/list", headers=project.api_headers(),
                                 json={"ipfsHash": cid, "market": "local-gpu", "timeout": 120})
    assert response.status_code == 200
    listing = response.json()
    assert set(listing) == {"tx", "job", "run"}
    job = project.job(listing["job"])
    market = project.http.get("/api/markets/local-gpu/").json()
    # Nosana's shape: no address, a numeric state, the system address until a host takes it.
    assert "address" not in job
    assert job["state"] == 0  # QUEUED
    assert job["node"] == "11111111111111111111111111111111"
    assert job["timeStart"] == 0 and job["timeEnd"] == 0 and job["ipfsResult"] is None
    assert job["project"] == job["payer"] == project.wallet.address
    assert job["market"] == market["address"]
    assert job["timeout"] == 120
    assert job["ipfsJob"] == cid
    assert job["jobDefinition"] == PLACEHOLDER and job["jobResult"] is None
    assert job["price"] == 115 and job["usdRewardPerHour"] == 0.4
    assert abs(job["listedAt"] - time.time()) < 3600
    assert project.http.get("/api/markets/local-gpu/").json()["queued_jobs"] == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"market": "local-cpu", "timeout": 60}, 400),
        ({"ipfsHash": "not-a-cid", "market": "local-cpu", "timeout": 60}, 400),
        ({"ipfsHash": "CID", "market": "nope", "timeout": 60}, 404),
        ({"ipfsHash": "CID", "timeout": 60}, 400),
        ({"ipfsHash": "CID", "market": "local-cpu"}, 400),
        ({"ipfsHash": "CID", "market": "local-cpu", "timeout": 0}, 400),
        ({"ipfsHash": "CID", "market": "local-cpu", "timeout": -5}, 400),
        ({"ipfsHash": "CID", "market": "local-cpu", "timeout": 1.5}, 400),
        ({"ipfsHash": "CID", "market": "local-cpu", "timeout": "60"}, 400),
        ({"ipfsHash": "CID", "market": "local-cpu", "timeout": 86_401}, 400),
        ({"ipfsHash": "CID", "market": "local-cpu", "timeout": 60, "node": "nobody"}, 400),
        ({"ipfsHash": "CID", "market": "local-cpu", "timeout": 60, "node": "GPU_HOST"}, 400),
    ],
)
def test_bad_listings_get_4xx_json(project: Project, body: dict[str, object],
                                   status: int) -> None:
    cid = project.pin(PLACEHOLDER)
    gpu_host = next(h.address for h in project.node.hosts if h.market.slug == "local-gpu")
    body = {k: cid if v == "CID" else gpu_host if v == "GPU_HOST" else v for k, v in body.items()}
    response = project.http.post("/api/jobs/list", json=body, headers=project.api_headers())
    assert response.status_code == status
    assert isinstance(response.json()["error"], str)


def test_list_body_must_be_a_json_object(project: Project) -> None:
    for content in (b"[1]", b"{oops"):
        response = project.http.post("/api/jobs/list", content=content,
                                     headers=project.api_headers())
        assert response.status_code == 400


def test_list_authentication(project: Project) -> None:
    cid = project.pin(PLACEHOLDER)
    body = {"ipfsHash": cid, "market": "local-cpu", "timeout": 60}
    other = Wallet.generate()
    cases = {
        "missing": {},
        "no user": {"Authorization": project.wallet.auth_header("NosanaApiAuthentication")},
        "bad user": {"Authorization": project.wallet.auth_header("NosanaApiAuthentication"),
                     "x-user-id": "not-a-key"},
        "wrong signer": {"Authorization": other.auth_header("NosanaApiAuthentication"),
                         "x-user-id": project.wallet.address},
        "expired": {"Authorization": auth_header(project.wallet.keypair,
                                                 "NosanaApiAuthentication",
                                                 timestamp_ms=now_ms() - 301_000),
                    "x-user-id": project.wallet.address},
        "malformed": {"Authorization": "NosanaApiAuthentication", "x-user-id":
                      project.wallet.address},
    }
    for name, headers in cases.items():
        response = project.http.post("/api/jobs/list", json=body, headers=headers)
        assert response.status_code == 401, name
        assert "error" in response.json(), name
    assert not project.node.ledger.jobs


def test_unknown_jobs_and_routes_are_404_json(project: Project) -> None:
    for method, path in [("GET", "/api/jobs/nope"), ("POST", "/api/jobs/nope/stop"),
                         ("GET", "/api/nothing/here"), ("POST", "/api/jobs/nope")]:
        response = project.http.request(method, path, headers=project.api_headers(), json={})
        assert response.status_code == 404, path
        assert "error" in response.json()


# ---------------------------------------------------------------------- stop and extend


def test_stop_a_queued_job_delists_it(project: Project) -> None:
    job = project.post_placeholder()
    response = project.http.post(f"/api/jobs/{job}/stop", headers=project.api_headers())
    assert response.status_code == 200
    assert response.json()["delisted"] is True
    info = project.job(job)
    assert info["state"] == 3  # STOPPED
    assert info["node"] == "11111111111111111111111111111111" and info["timeEnd"] > 0
    again = project.http.post(f"/api/jobs/{job}/stop", headers=project.api_headers())
    assert again.status_code == 400
    # A delisted job is never picked up.
    project.node.config.pickup_delay = 0.0
    project.node.ledger.match_once()
    assert project.job(job)["state"] == 3


def test_only_the_project_may_stop_or_extend(project: Project) -> None:
    job = project.post_placeholder()
    with Project(project.node) as other:
        stop = other.http.post(f"/api/jobs/{job}/stop", headers=other.api_headers())
        extend = other.http.post(f"/api/jobs/{job}/extend", json={"seconds": 5},
                                 headers=other.api_headers())
    assert stop.status_code == 403 and extend.status_code == 403
    anonymous = project.http.post(f"/api/jobs/{job}/stop")
    assert anonymous.status_code == 401
    assert project.job(job)["state"] == 0


def test_extend_adds_seconds(project: Project) -> None:
    job = project.post_placeholder(timeout=60)
    response = project.http.post(f"/api/jobs/{job}/extend", json={"seconds": 30},
                                 headers=project.api_headers())
    assert response.status_code == 200 and response.json()["job"] == job
    assert project.job(job)["timeout"] == 90
    for bad in ({}, {"seconds": 0}, {"seconds": "x"}, {"seconds": -1}):
        refused = project.http.post(f"/api/jobs/{job}/extend", json=bad,
                                    headers=project.api_headers())
        assert refused.status_code == 400, bad
    project.http.post(f"/api/jobs/{job}/stop", headers=project.api_headers())
    late = project.http.post(f"/api/jobs/{job}/extend", json={"seconds": 5},
                             headers=project.api_headers())
    assert late.status_code == 400


def test_root_describes_the_devnode(project: Project) -> None:
    index = project.http.get("/").json()
    assert index["node_url_template"] == project.node.node_url_template
    assert {h["address"] for h in index["hosts"]} == {h.address for h in project.node.hosts}
    assert json.dumps(index)  # plain JSON


def test_devnode_binds_loopback_only(devnode: DevNode) -> None:
    assert devnode.url.startswith("http://127.0.0.1:")
    with pytest.raises(httpx.ConnectError):
        # Any non-loopback address of this machine must refuse the connection.
        import socket

        hostname_ip = socket.gethostbyname(socket.gethostname())
        if hostname_ip.startswith("127."):
            raise httpx.ConnectError("no non-loopback address to try")
        httpx.get(f"http://{hostname_ip}:{devnode.port}/", timeout=PATIENCE, trust_env=False)
