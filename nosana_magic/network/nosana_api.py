"""The Nosana API's answers, as this client reads them (docs/protocol.md §22, §24).

The dashboard backend (markets, jobs, credits) and the signing service answer the shapes of
Nosana's official client ``@nosana/api`` 2.1.8. The services run newer code than that package,
so the models here read those shapes *tolerantly*: unknown fields are ignored; a job's
``state`` may be a number (0–3, what the types say) or a name (what the dashboard also
accepts); ``usd_reward_per_hour`` (typed ``unknown``) may be a number or numeric text; the
signing service's ``signature`` may be a bare signature or a whole ``message:signature``
header; a field the types require but an answer lacks gets a neutral default where the client
can do without it. What the client cannot do without (a job address, a market address, a
known state) is refused with one line naming the route and the field.

Each model turns into the package's own records (:class:`Market`, :class:`JobInfo`,
:class:`Listing`), which are the same for every network.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .base import JobInfo, JobState, Listing, Market, NetworkError

__all__ = [
    "STATE_CODES",
    "SYSTEM_ADDRESS",
    "CreditBalance",
    "CreditCharge",
    "ExtendAnswer",
    "JobAnswer",
    "ListAnswer",
    "MarketAnswer",
    "SignAnswer",
    "StopAnswer",
    "job_state",
    "read",
]

#: The API's numeric job states (docs/protocol.md §22).
STATE_CODES: dict[int, JobState] = {
    0: JobState.QUEUED,
    1: JobState.RUNNING,
    2: JobState.COMPLETED,
    3: JobState.STOPPED,
}
#: The ``node`` of a job no host has taken: the system program's address.
SYSTEM_ADDRESS = "11111111111111111111111111111111"

_M = TypeVar("_M", bound=BaseModel)


def job_state(value: Any) -> JobState:
    """A job state from the API: ``0``–``3`` or ``QUEUED``… (any case); ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError(f"unknown job state {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int):
        if value in STATE_CODES:
            return STATE_CODES[value]
    elif isinstance(value, str):
        try:
            return JobState(value.strip().upper())
        except ValueError:
            pass
    raise ValueError(f"unknown job state {str(value)[:40]!r}")


def read(model: type[_M], data: Any, where: str) -> _M:
    """Validate an answer; a mismatch is one :class:`NetworkError` line naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        reason = first["msg"].removeprefix("Value error, ")
        raise NetworkError(f"{where}: the answer's {field} is not as expected: {reason}") from None


def _number(value: Any) -> float | None:
    """A finite number from a number or numeric text (the API's ``unknown`` fields)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


# --------------------------------------------------------------------------- markets


class MarketAnswer(_Answer):
    """One entry of ``GET /api/markets/`` (or ``GET /api/markets/{id}/``)."""

    address: str
    slug: str = ""
    name: str = ""
    #: NOS (not base units) per second.
    nos_job_price_per_second: float = 0.0
    network_fee_percentage: float | None = None
    #: What a host earns per hour in USD; a credit job costs this plus the network fee.
    usd_reward_per_hour: float | None = None
    gpu_types: list[str] = Field(default_factory=list)
    type: str | None = None
    # Fields the local network adds (Nosana keeps these on chain).
    job_price: int | None = None
    job_timeout: int | None = None
    idle_hosts: int | None = None
    queue: list[Any] | None = None

    @field_validator("usd_reward_per_hour", "network_fee_percentage", mode="before")
    @classmethod
    def _loose_number(cls, value: Any) -> float | None:
        return _number(value)

    @field_validator("nos_job_price_per_second", mode="before")
    @classmethod
    def _price(cls, value: Any) -> float:
        return _number(value) or 0.0

    def to_market(self) -> Market:
        price = self.job_price
        if price is None:
            price = round(self.nos_job_price_per_second * 1e6)
        idle = self.idle_hosts
        if idle is None:
            idle = len(self.queue) if self.queue is not None else 0
        return Market(
            address=self.address,
            slug=self.slug or self.address,
            name=self.name,
            price_per_second=price,
            job_timeout=self.job_timeout or 0,
            idle_hosts=idle,
            network_fee_pct=self.network_fee_percentage or 0.0,
            usd_per_hour=self.usd_reward_per_hour,
        )


# --------------------------------------------------------------------------- jobs


class JobAnswer(_Answer):
    """``GET /api/jobs/{job}``: the job account as Nosana's indexer reads it (no address)."""

    state: JobState
    ipfs_job: str | None = Field(default=None, alias="ipfsJob")
    ipfs_result: str | None = Field(default=None, alias="ipfsResult")
    market: str = ""
    node: str | None = None
    payer: str | None = None
    #: NOS base units per second.
    price: float = 0
    project: str = ""
    #: Seconds.
    timeout: float = 0
    #: Unix seconds; 0 until it happens.
    time_start: float | None = Field(default=None, alias="timeStart")
    time_end: float | None = Field(default=None, alias="timeEnd")
    usd_reward_per_hour: float | None = Field(default=None, alias="usdRewardPerHour")
    listed_at: float | None = Field(default=None, alias="listedAt")
    job_status: str | None = Field(default=None, alias="jobStatus")

    @field_validator("state", mode="before")
    @classmethod
    def _state(cls, value: Any) -> JobState:
        return job_state(value)

    @field_validator("price", "timeout", mode="before")
    @classmethod
    def _zero_if_missing(cls, value: Any) -> float:
        return _number(value) or 0.0

    @field_validator("time_start", "time_end", "usd_reward_per_hour", "listed_at", mode="before")
    @classmethod
    def _optional_number(cls, value: Any) -> float | None:
        return _number(value)

    def to_info(self, address: str, extra: dict[str, Any] | None = None) -> JobInfo:
        node = self.node if self.node and self.node != SYSTEM_ADDRESS else None
        return JobInfo(
            address=address,
            state=self.state,
            market=self.market,
            node=node,
            project=self.project,
            timeout=int(self.timeout),
            time_start=int(self.time_start) if self.time_start else None,
            time_end=int(self.time_end) if self.time_end else None,
            ipfs_job=self.ipfs_job or None,
            ipfs_result=self.ipfs_result or None,
            price=round(self.price),
            extra=dict(extra or {}),
        )


#: The fields :meth:`JobAnswer.to_info` keeps in the record itself (the rest go to ``extra``).
JOB_FIELDS = frozenset({
    "address", "state", "node", "market", "project", "timeout", "timeStart", "timeEnd",
    "ipfsJob", "ipfsResult", "price",
})


class CreditCharge(_Answer):
    """The ``credits`` of a list or extend answer, in USD."""

    cost_usd: float = Field(alias="costUSD")
    credits_used: float | None = Field(default=None, alias="creditsUsed")
    reservation_id: str | None = Field(default=None, alias="reservationId")
    #: The job's project: the key the credit system holds for the user (list answers only).
    project: str | None = None


class ListAnswer(_Answer):
    """``POST /api/jobs/list``. ``credits`` is there when credits paid."""

    job: str
    tx: str | None = None
    run: str | None = None
    credits: CreditCharge | None = None

    def to_listing(self) -> Listing:
        cost = self.credits.cost_usd if self.credits is not None else None
        return Listing(job=self.job, run=self.run, tx=self.tx, cost_usd=cost)


class ExtendAnswer(_Answer):
    """``POST /api/jobs/{job}/extend``."""

    job: str | None = None
    tx: str | None = None
    credits: CreditCharge | None = None


class StopAnswer(_Answer):
    """``POST /api/jobs/{job}/stop``: ``delisted`` when the job was still queued."""

    job: str | None = None
    tx: str | None = None
    delisted: bool | None = None


# --------------------------------------------------------------------------- credits


class CreditBalance(_Answer):
    """``GET /api/credits/balance``, in USD."""

    assigned: float = Field(alias="assignedCredits")
    reserved: float = Field(default=0.0, alias="reservedCredits")
    settled: float = Field(default=0.0, alias="settledCredits")

    @property
    def available(self) -> float:
        """What new jobs can use: assigned − reserved − settled."""
        return self.assigned - self.reserved - self.settled


class SignAnswer(_Answer):
    """The signing service's ``POST /auth/sign-message/external`` answer."""

    message: str | None = None
    user_address: str = Field(alias="userAddress")
    signature: str

    def header(self, message: str) -> str:
        """The node header ``message:signature`` (no time), whichever form was answered.

        The service answers a bare base58 signature (``@nosana/api`` 2.1.8) or a whole
        ``message:signature[:time]`` header (older services); a time it added is dropped, so
        the caller stamps each request itself. ``ValueError`` when neither form is there.
        """
        text = self.signature.strip()
        if ":" not in text:
            if not text:
                raise ValueError("the signing service answered an empty signature")
            return f"{message}:{text}"
        signed_message, _, rest = text.partition(":")
        signature = rest.split(":", 1)[0]
        if not signed_message or not signature:
            raise ValueError("the signing service answered a malformed header")
        return f"{signed_message}:{signature}"
