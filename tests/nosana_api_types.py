"""The response types of Nosana's official client ``@nosana/api`` 2.1.8, as strict models.

Facts, written here as pydantic models (docs/protocol.md §22, §24): a field without a default
is one the types mark as required (``field: T``), ``T | None`` without a default is required
and nullable (``field: T | null``), and a default of ``None`` marks an optional field
(``field?: T``). ``number`` is an int or a float, never a bool; ``unknown`` is anything.
Strict: no type is coerced, and a field the types do not name is refused (``extra="forbid"``),
so a model holds an answer to exactly the official shape. The devnode's answers may carry a
few fields of its own (``DEVNODE_MARKET_FIELDS``); the conformance test takes them off first.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt
from pydantic import StrictStr as Str

__all__ = [
    "DEVNODE_MARKET_FIELDS",
    "BalanceResponse",
    "ExtendResponse",
    "JobResponse",
    "ListResponse",
    "MarketErrorResponse",
    "MarketResponse",
    "SignMessageResponse",
    "StopResponse",
]

#: ``number`` of TypeScript.
Number = StrictInt | StrictFloat


def _empty(value: dict[str, Any]) -> dict[str, Any]:
    if value:
        raise ValueError("must be an empty object")
    return value


#: ``Record<string, never>``: an object with no keys.
EmptyObject = Annotated[dict[str, Any], AfterValidator(_empty)]

#: Fields the devnode's markets carry beyond Nosana's (docs/devnode.md says what they are).
DEVNODE_MARKET_FIELDS = frozenset({"job_price", "job_timeout", "idle_hosts", "queue",
                                   "queued_jobs"})


class _Official(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# --------------------------------------------------------------------------- markets


class OllamaResource(_Official):
    type: Literal["Ollama"]
    model: Str


class IamKeys(_Official):
    access_key_id: Str
    secret_access_key: Str


class UrlResourceWithIam(_Official):
    type: Literal["S3", "Ollama", "HF"]
    url: Str
    IAM: IamKeys


class UrlResource(_Official):
    type: Literal["S3", "Ollama", "HF"]
    url: Str


class MarketResponse(_Official):
    """One market of ``GET /api/markets/``, and ``GET /api/markets/{id}/``."""

    address: Str
    slug: Str
    name: Str
    sft: Str
    type: Literal["PREMIUM", "COMMUNITY", "OTHER"]
    usd_reward_per_hour: Any
    nos_reward_per_second: Number
    nos_job_price_per_second: Number
    network_fee_percentage: Number
    premium_community_relation: Str | None
    gpu_types: list[Str]
    required_images: list[Str]
    required_remote_resources: list[OllamaResource | UrlResourceWithIam | UrlResource]
    nodes: list[Any] | None = None
    client: StrictBool
    lowest_vram: Number | None = None
    max_usd_uptime_reward_per_day: Number | None = None


class MarketErrorResponse(_Official):
    """The 500 answer of the markets routes."""

    name: Str
    message: Str


# --------------------------------------------------------------------------- jobs


class JobResponse(_Official):
    """``GET /api/jobs/{address}``."""

    ipfsJob: Str
    ipfsResult: Str | None
    market: Str
    node: Str
    payer: Str
    price: Number
    project: Str
    state: Number
    type: Str | None
    jobDefinition: Any
    jobResult: Any
    jobStatus: Str | None
    timeEnd: Number
    timeStart: Number
    benchmarkProcessedAt: EmptyObject | Str | None
    timeout: Number
    usdRewardPerHour: Number | None
    listedAt: Number | None


class ListCredits(_Official):
    costUSD: Number
    creditsUsed: Number
    reservationId: Str
    project: Str


class ListResponse(_Official):
    """``POST /api/jobs/list``."""

    tx: Str
    job: Str
    run: Str
    credits: ListCredits


class ExtendCredits(_Official):
    costUSD: Number
    creditsUsed: Number
    reservationId: Str


class ExtendResponse(_Official):
    """``POST /api/jobs/{address}/extend``."""

    tx: Str
    job: Str
    credits: ExtendCredits


class StopResponse(_Official):
    """``POST /api/jobs/{address}/stop``."""

    tx: Str
    job: Str
    delisted: StrictBool


# --------------------------------------------------------------------------- credits, signing


class BalanceResponse(_Official):
    """``GET /api/credits/balance`` (USD)."""

    assignedCredits: Number
    reservedCredits: Number
    settledCredits: Number


class SignMessageResponse(_Official):
    """The signing service's ``POST /auth/sign-message/external``."""

    message: Str
    userAddress: Str
    signature: Str
