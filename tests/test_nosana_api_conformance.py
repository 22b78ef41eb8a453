"""Conformance: the devnode answers the Nosana API's official shapes (docs/protocol.md §22, §24).

The official response types are in ``tests/nosana_api_types.py`` (strict models of
``@nosana/api`` 2.1.8); ``tests/fixtures/nosana_api/`` holds answers written to those types.
First the models are shown to hold the fixtures and to refuse what the types refuse; then
every answer of the devnode (markets, jobs list/get/stop/extend, the credit balance, the
signing service) is held against them, in every job state.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from nosana_magic.devnode import DevNode, DevNodeConfig

from . import nosana_api_types as official
from .conftest import FAST, CreditProject, definition, op

FIXTURES = Path(__file__).parent / "fixtures" / "nosana_api"

#: fixture file -> the official type of its answer.
FIXTURE_TYPES: dict[str, type[BaseModel]] = {
    "market_error.json": official.MarketErrorResponse,
    "job_queued.json": official.JobResponse,
    "job_running.json": official.JobResponse,
    "job_completed.json": official.JobResponse,
    "job_stopped.json": official.JobResponse,
    "list.json": official.ListResponse,
    "extend.json": official.ExtendResponse,
    "stop.json": official.StopResponse,
    "balance.json": official.BalanceResponse,
    "sign.json": official.SignMessageResponse,
}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def required_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, info in model.model_fields.items() if info.is_required()]


# ---------------------------------------------------------------------- the types themselves


def test_every_fixture_holds_to_its_official_type() -> None:
    names = {path.name for path in FIXTURES.glob("*.json")}
    assert names == {*FIXTURE_TYPES, "markets.json"}
    for name, model in FIXTURE_TYPES.items():
        model.model_validate(fixture(name))
    markets = fixture("markets.json")
    assert len(markets) == 2
    for market in markets:
        official.MarketResponse.model_validate(market)


@pytest.mark.parametrize("name", sorted(FIXTURE_TYPES))
def test_the_types_refuse_a_missing_field_a_wrong_type_and_an_unknown_field(name: str) -> None:
    model = FIXTURE_TYPES[name]
    good = fixture(name)
    required = required_fields(model)
    assert required
    for field in required:
        broken = copy.deepcopy(good)
        del broken[field]
        with pytest.raises(ValidationError):
            model.model_validate(broken)
    for field in required:
        if model.model_fields[field].annotation is Any:
            continue  # ``unknown`` takes anything
        broken = {**good, field: [object()]}
        with pytest.raises(ValidationError):
            model.model_validate(broken)
    with pytest.raises(ValidationError):
        model.model_validate({**good, "surplus": 1})


def test_numbers_are_not_booleans_or_text_and_nullable_is_not_optional() -> None:
    job = fixture("job_queued.json")
    for bad in ({**job, "state": True}, {**job, "state": "0"}, {**job, "timeout": "60"}):
        with pytest.raises(ValidationError):
            official.JobResponse.model_validate(bad)
    official.JobResponse.model_validate({**job, "timeout": 60.0, "ipfsResult": None})
    without = {k: v for k, v in job.items() if k != "ipfsResult"}
    with pytest.raises(ValidationError):
        official.JobResponse.model_validate(without)
    # ``Record<string, never> | string | null``.
    for fine in ({}, "2026-01-01T00:00:00Z", None):
        official.JobResponse.model_validate({**job, "benchmarkProcessedAt": fine})
    with pytest.raises(ValidationError):
        official.JobResponse.model_validate({**job, "benchmarkProcessedAt": {"a": 1}})


# ---------------------------------------------------------------------- the devnode's answers


@pytest.fixture
def devnode_config() -> DevNodeConfig:
    return DevNodeConfig(**{**FAST, "pickup_delay": None})  # type: ignore[arg-type]


@pytest.fixture
def user(credit_user: CreditProject) -> CreditProject:
    return credit_user


def official_market(answer: dict[str, Any]) -> None:
    """The devnode's market is Nosana's plus exactly its documented fields."""
    assert set(answer) - set(official.MarketResponse.model_fields) == (
        official.DEVNODE_MARKET_FIELDS)
    official.MarketResponse.model_validate(
        {k: v for k, v in answer.items() if k not in official.DEVNODE_MARKET_FIELDS})


def test_markets(user: CreditProject) -> None:
    markets = user.http.get("/api/markets/").json()
    assert len(markets) == 2
    for market in markets:
        official_market(market)
        for ref in (market["slug"], market["address"]):
            answer = user.http.get(f"/api/markets/{ref}/")
            assert answer.status_code == 200
            official_market(answer.json())


def test_jobs_in_every_state_and_every_credit_route(devnode: DevNode,
                                                    user: CreditProject) -> None:
    def job(address: str, state: int) -> dict[str, Any]:
        answer = official.JobResponse.model_validate(user.job(address))
        assert answer.state == state
        return user.job(address)

    listed = user.list_answer(timeout=600)
    assert listed.status_code == 200
    queued = official.ListResponse.model_validate(listed.json()).job
    assert job(queued, 0)["node"] == "11111111111111111111111111111111"
    extended = user.http.post(f"/api/jobs/{queued}/extend", json={"seconds": 60},
                              headers=user.api_headers())
    official.ExtendResponse.model_validate(extended.json())
    delisted = user.http.post(f"/api/jobs/{queued}/stop", headers=user.api_headers())
    assert official.StopResponse.model_validate(delisted.json()).delisted is True
    job(queued, 3)

    devnode.config.pickup_delay = 0.05
    ran = official.ListResponse.model_validate(user.list_answer(timeout=600).json()).job
    user.wait_running(ran)
    running = job(ran, 1)
    assert running["node"] in {h.address for h in devnode.hosts} and running["timeStart"] > 0
    user.wait_flow(ran, "waiting-for-job-definition")
    assert user.send_definition(ran, definition(op("a", "echo a"))).status_code == 200
    user.collect(ran)
    devnode.wait_job(ran, timeout=30)
    completed = job(ran, 2)
    assert completed["jobResult"]["opStates"] == []  # the blank public result

    ended = official.ListResponse.model_validate(user.list_answer(timeout=600).json()).job
    user.wait_running(ended)
    stopped = user.http.post(f"/api/jobs/{ended}/stop", headers=user.api_headers())
    assert official.StopResponse.model_validate(stopped.json()).delisted is False
    devnode.wait_job(ended, timeout=30)
    job(ended, 3)

    official.BalanceResponse.model_validate(user.balance())


@pytest.mark.parametrize("answer", ["signature", "header"])
def test_the_signing_service(devnode: DevNode, user: CreditProject, answer: str) -> None:
    devnode.config.signing_answer = answer  # type: ignore[assignment]
    response = user.sign("nosana-auth")
    assert response.status_code == 200
    official.SignMessageResponse.model_validate(response.json())
