"""The devnode's credits (docs/protocol.md §24): API keys, the signing service, the USD ledger,
over real HTTP, beside the wallet path."""

from __future__ import annotations

import math
import re

import pytest

from nosana_magic.devnode import DevNode, DevNodeConfig
from nosana_magic.protocol import verify_auth_header

from .conftest import FAST, CreditProject, Project, definition, op
from .waiting import wait_until

#: local-cpu: $0.05/h to the host + 10 % network fee, in micro-dollars per second.
CPU_RATE = 0.05 * 1.1 * 1_000_000 / 3600
GPU_RATE = 0.4 * 1.1 * 1_000_000 / 3600


@pytest.fixture
def devnode_config() -> DevNodeConfig:
    # Nobody picks jobs up unless a test says so.
    return DevNodeConfig(**{**FAST, "pickup_delay": None})  # type: ignore[arg-type]


@pytest.fixture
def user(credit_user: CreditProject) -> CreditProject:
    return credit_user


def micro(usd: float) -> int:
    return round(usd * 1_000_000)


# ---------------------------------------------------------------------- keys


def test_the_devnode_makes_one_key_and_keeps_it_out_of_sight(devnode: DevNode,
                                                             user: CreditProject) -> None:
    assert re.fullmatch(r"nos_[A-Za-z0-9]{40}", devnode.api_key)
    assert user.balance() == {"assignedCredits": 10.0, "reservedCredits": 0.0,
                              "settledCredits": 0.0}
    account = devnode.ledger.credits.account(devnode.api_key)
    for shown in (repr(devnode), repr(devnode.ledger.credits), repr(account),
                  user.http.get("/").text):
        assert devnode.api_key not in shown
    assert account.address in repr(account)  # the project address is not a secret


def test_a_chosen_key_and_amount() -> None:
    key = "nos_" + "k" * 40
    with DevNode(DevNodeConfig(**{**FAST, "api_key": key, "credits_usd": 2.5})) as node:  # type: ignore[arg-type]
        assert node.api_key == key
        with CreditProject(node) as user:
            assert user.balance()["assignedCredits"] == 2.5


def test_refused_keys(devnode: DevNode, user: CreditProject) -> None:
    expired = devnode.issue_api_key(1.0, expires_in=0)
    revoked = devnode.issue_api_key(1.0)
    devnode.ledger.credits.revoke(revoked)
    cases = {
        "none": ({}, 401),
        "empty bearer": ({"Authorization": "Bearer"}, 401),
        "unknown": ({"Authorization": "Bearer nos_" + "x" * 40}, 401),
        "not bearer": ({"Authorization": f"Basic {devnode.api_key}"}, 401),
        "expired": ({"Authorization": f"Bearer {expired}"}, 403),
        "revoked": ({"Authorization": f"Bearer {revoked}"}, 403),
    }
    for name, (headers, status) in cases.items():
        response = user.http.get("/api/credits/balance", headers=headers)
        assert response.status_code == status, name
        assert isinstance(response.json()["error"], str), name
        assert devnode.api_key not in response.text
    listed = user.http.post("/api/jobs/list", headers={"Authorization": f"Bearer {expired}"},
                            json={"ipfsHash": user.pin({"a": 1}), "market": "local-cpu",
                                  "timeout": 60})
    assert listed.status_code == 403 and listed.json() == {"error": "API key has expired"}
    assert not devnode.ledger.jobs


# ---------------------------------------------------------------------- the ledger


def test_listing_reserves_price_times_timeout(devnode: DevNode, user: CreditProject) -> None:
    response = user.list_answer(market="local-cpu", timeout=3600)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"tx", "job", "run", "credits"}
    credits = answer["credits"]
    assert credits["costUSD"] == credits["creditsUsed"] == 0.055  # $0.05/h + 10 %, 1 h
    assert credits["project"] == user.address
    job = user.job(answer["job"])
    # The key's project is the job's project; the credit system pays the chain's side.
    assert job["project"] == user.address and job["payer"] == devnode.ledger.credits_payer
    assert user.balance() == {"assignedCredits": 10.0, "reservedCredits": 0.055,
                              "settledCredits": 0.0}
    gpu = user.list_answer(market="local-gpu", timeout=60).json()["credits"]
    assert micro(gpu["costUSD"]) == math.ceil(GPU_RATE * 60 - 1e-6)


def test_insufficient_credits_is_402_and_lists_nothing(devnode: DevNode) -> None:
    poor = devnode.issue_api_key(0.01)
    with CreditProject(devnode, poor) as user:
        response = user.list_answer(market="local-cpu", timeout=3600)  # $0.055
        assert response.status_code == 402
        assert response.json() == {
            "error": "Insufficient credits: this needs $0.0550; Available: $0.0100"}
        assert not devnode.ledger.jobs
        assert user.balance()["reservedCredits"] == 0.0
        # What the credits do cover is listed.
        assert user.list_answer(market="local-cpu", timeout=600).status_code == 200


def test_delisting_releases_everything(devnode: DevNode, user: CreditProject) -> None:
    job = user.list_answer(timeout=3600).json()["job"]
    stop = user.http.post(f"/api/jobs/{job}/stop", headers=user.api_headers())
    assert stop.status_code == 200 and stop.json()["delisted"] is True
    assert user.job(job)["state"] == 3
    assert user.balance() == {"assignedCredits": 10.0, "reservedCredits": 0.0,
                              "settledCredits": 0.0}
    again = user.http.post(f"/api/jobs/{job}/stop", headers=user.api_headers())
    assert again.status_code == 400 and "already ended" in again.json()["error"]


def test_extend_reserves_the_added_seconds(devnode: DevNode, user: CreditProject) -> None:
    job = user.list_answer(timeout=3600).json()["job"]
    response = user.http.post(f"/api/jobs/{job}/extend", json={"seconds": 1800},
                              headers=user.api_headers())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"tx", "job", "credits"} and answer["job"] == job
    assert answer["credits"]["costUSD"] == 0.0275
    assert user.job(job)["timeout"] == 5400
    assert user.balance()["reservedCredits"] == 0.0825
    for bad in ({}, {"seconds": 0}, {"seconds": "x"}):
        refused = user.http.post(f"/api/jobs/{job}/extend", json=bad,
                                 headers=user.api_headers())
        assert refused.status_code == 400, bad
    huge = user.http.post(f"/api/jobs/{job}/extend", json={"seconds": 10**9},
                          headers=user.api_headers())
    assert huge.status_code == 402 and huge.json()["error"].startswith("Insufficient credits")
    assert user.job(job)["timeout"] == 5400


def test_a_run_is_charged_for_the_time_it_ran(devnode: DevNode, user: CreditProject) -> None:
    devnode.config.pickup_delay = 0.05
    job = user.list_answer(market="local-cpu", timeout=3600).json()["job"]
    user.wait_running(job)
    user.wait_flow(job, "waiting-for-job-definition")
    response = user.send_definition(job, definition(op("quick", "echo hi; sleep 0.3")))
    assert response.status_code == 200, response.text
    result = user.collect(job)
    assert result["opStates"][0]["status"] == "success"
    info = devnode.wait_job(job, timeout=30)
    assert info.started_at is not None and info.ended_at is not None
    charged = math.ceil(CPU_RATE * (info.ended_at - info.started_at) - 1e-6)
    balance = user.balance()
    assert micro(balance["settledCredits"]) == charged
    assert balance["reservedCredits"] == 0.0
    # Far less than the hour reserved at listing: the rest came back.
    assert 0 < charged < micro(0.055) / 2


def test_stop_of_a_running_job_settles_when_it_ends(devnode: DevNode,
                                                     user: CreditProject) -> None:
    devnode.config.pickup_delay = 0.05
    devnode.config.results_window = 0.5
    job = user.list_answer(timeout=3600).json()["job"]
    user.wait_running(job)
    stop = user.http.post(f"/api/jobs/{job}/stop", headers=user.api_headers())
    assert stop.status_code == 200 and stop.json()["delisted"] is False
    info = devnode.wait_job(job, timeout=30)
    assert info.state.value == "STOPPED"
    balance = wait_until(lambda: (b := user.balance())["reservedCredits"] == 0.0 and b)
    assert 0 < micro(balance["settledCredits"]) < micro(0.055)


def test_only_the_keys_own_jobs(devnode: DevNode, user: CreditProject) -> None:
    job = user.list_answer().json()["job"]
    with CreditProject(devnode, devnode.issue_api_key(1.0)) as other, Project(devnode) as wallet:
        for path, body in ((f"/api/jobs/{job}/stop", None),
                           (f"/api/jobs/{job}/extend", {"seconds": 5})):
            refused = other.http.post(path, json=body, headers=other.api_headers())
            assert refused.status_code == 404
            assert refused.json() == {"error": "Job not found or you do not have permission"}
            # A wallet is not the key's project either.
            assert wallet.http.post(path, json=body,
                                    headers=wallet.api_headers()).status_code == 403
        # A key cannot touch a wallet's job, nor one that does not exist.
        wallet_job = wallet.post_placeholder()
        assert user.http.post(f"/api/jobs/{wallet_job}/stop",
                              headers=user.api_headers()).status_code == 404
        assert user.http.post("/api/jobs/nope/stop",
                              headers=user.api_headers()).status_code == 404
        # The wallet path keeps working beside the credits, and costs no credits.
        assert wallet.job(wallet_job)["project"] == wallet.wallet.address
        assert wallet.http.post(f"/api/jobs/{wallet_job}/stop",
                                headers=wallet.api_headers()).status_code == 200
    assert user.job(job)["state"] == 0
    # Nothing the others tried moved the key's credits.
    assert micro(user.balance()["reservedCredits"]) == math.ceil(CPU_RATE * 60 - 1e-6)


# ---------------------------------------------------------------------- the signing service


def test_the_signing_service_signs_with_the_keys_project(devnode: DevNode,
                                                         user: CreditProject) -> None:
    response = user.sign("nosana-auth")
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"message", "userAddress", "signature"}
    assert answer["message"] == "nosana-auth" and answer["userAddress"] == user.address
    assert ":" not in answer["signature"]  # a bare signature, as @nosana/api 2.1.8 returns
    verify_auth_header(f"nosana-auth:{answer['signature']}", user.address, expiry_s=60)

    devnode.config.signing_answer = "header"
    whole = user.sign("nosana-auth").json()["signature"]
    assert whole.startswith("nosana-auth:") and whole.count(":") == 1
    verify_auth_header(whole, user.address, expiry_s=60)
    timed = user.sign("nosana-auth", includeTime=True).json()["signature"]
    assert timed.count(":") == 2
    verify_auth_header(timed, user.address, expiry_s=60)


def test_the_signing_service_refuses_bad_requests(devnode: DevNode, user: CreditProject) -> None:
    for body, status in (({}, 400), ({"message": ""}, 400), ({"message": 3}, 400),
                         ({"message": "a:b"}, 400)):
        response = user.http.post(f"{devnode.client_manager_url}/auth/sign-message/external",
                                  json=body, headers=user.api_headers())
        assert response.status_code == status, body
    anonymous = user.http.post(f"{devnode.client_manager_url}/auth/sign-message/external",
                               json={"message": "nosana-auth"})
    assert anonymous.status_code == 401


@pytest.mark.parametrize("answer", ["signature", "header"])
def test_a_credit_job_end_to_end_through_the_signing_service(devnode: DevNode,
                                                             user: CreditProject,
                                                             answer: str) -> None:
    devnode.config.pickup_delay = 0.05
    devnode.config.signing_answer = answer  # type: ignore[assignment]
    job = user.submit(definition(op("train", "echo loss=0.5", results={"loss": "loss=(.*)"})),
                      timeout=600)
    # A header signed by anyone else (here: a fresh wallet) is refused by the host.
    with Project(devnode) as stranger:
        refused = stranger.http.get(user.node_path(job, "/results"), headers=stranger.header())
        assert refused.status_code == 401
    result = user.collect(job)
    assert result["opStates"][0]["results"] == {"loss": ["loss=0.5", "0.5"]}  # a match array
    assert devnode.wait_job(job, timeout=30).state.value == "COMPLETED"
    assert user.balance()["settledCredits"] > 0
