"""Credits on the local network: API keys, their custodial project keys, and a USD ledger.

This plays the part of Nosana's credit system and signing service (docs/protocol.md §24):

* an **API key** (``nos_…``) authenticates ``Authorization: Bearer <key>`` calls;
* each key has a **project key** the devnode holds for its user. Jobs listed with the key
  have that key's address as ``project``, so the hosts accept node-API headers signed by it,
  and the signing service signs with it for the key's holder;
* each key has a **credit account** in USD: ``assigned``, ``reserved`` (held for jobs that
  have not ended) and ``settled`` (spent). Listing reserves price × timeout; extending
  reserves price × the added seconds; when the job ends the time it ran is settled and the
  rest of its reservations released.

Amounts are kept in micro-dollars (integers), so the ledger adds up exactly; the API answers
USD as JSON numbers. Everything here may be called from the devnode's loop and from a test's
thread, so the state is guarded by a lock.
"""

from __future__ import annotations

import math
import secrets
import string
import threading
import time
from dataclasses import dataclass, field

from solders.keypair import Keypair

__all__ = [
    "API_KEY_PREFIX",
    "ApiKey",
    "CreditError",
    "Credits",
    "Reservation",
    "format_usd",
    "new_api_key",
]

#: What every Nosana API key starts with.
API_KEY_PREFIX = "nos_"
#: Micro-dollars per dollar.
MICRO = 1_000_000
_KEY_ALPHABET = string.ascii_letters + string.digits


def new_api_key() -> str:
    """A fresh ``nos_…`` key: 40 random letters and digits (238 bits)."""
    return API_KEY_PREFIX + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(40))


def _micro_up(amount: float) -> int:
    """Whole micro-dollars, rounded up (a hair of float noise is not a micro-dollar)."""
    return math.ceil(amount - 1e-6)


def format_usd(micro: int | float) -> str:
    """Micro-dollars as ``$0.0440`` (four decimals: a cent is too coarse for seconds of GPU)."""
    return f"${micro / MICRO:.4f}"


class CreditError(Exception):
    """A refused credits call: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Reservation:
    """Credits held for one job: at listing (price × timeout) or at an extend."""

    id: str
    job: str
    #: Micro-dollars held.
    amount: int
    #: What the job costs per second it runs, in micro-dollars (fee included).
    rate: float


@dataclass
class ApiKey:
    """One API key, its custodial project key and its credit account (micro-dollars)."""

    key: str = field(repr=False)
    project: Keypair = field(repr=False)
    assigned: int
    settled: int = 0
    #: Unix seconds after which the key is refused (``None``: never, as "Never" in Nosana).
    expires_at: float | None = None
    revoked: bool = False
    reservations: dict[str, Reservation] = field(default_factory=dict, repr=False)

    @property
    def address(self) -> str:
        """The project address of every job listed with this key."""
        return str(self.project.pubkey())

    @property
    def reserved(self) -> int:
        return sum(r.amount for r in self.reservations.values())

    @property
    def available(self) -> int:
        return self.assigned - self.reserved - self.settled

    def __repr__(self) -> str:
        return f"ApiKey(project={self.address}, available={format_usd(self.available)})"


class Credits:
    """Every API key of a devnode and its account."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._keys: dict[str, ApiKey] = {}
        self._by_job: dict[str, ApiKey] = {}

    def __repr__(self) -> str:
        return f"Credits({len(self._keys)} API keys)"

    # ------------------------------------------------------------------ keys

    def issue(
        self, *, usd: float, key: str | None = None, expires_in: float | None = None
    ) -> str:
        """Make an API key with ``usd`` of credits; returns the key (``nos_…``)."""
        if usd < 0:
            raise ValueError("credits must be >= 0")
        chosen = key if key is not None else new_api_key()
        if not chosen or any(char.isspace() for char in chosen):
            raise ValueError("an API key is one word")
        expires_at = None if expires_in is None else time.time() + expires_in
        with self._lock:
            if chosen in self._keys:
                raise ValueError("that API key exists already")
            self._keys[chosen] = ApiKey(
                key=chosen, project=Keypair(), assigned=round(usd * MICRO),
                expires_at=expires_at,
            )
        return chosen

    def admit(self, key: str, *, usd: float) -> None:
        """Serve ``key`` with ``usd`` of credits, unless it is served already (the embedded
        devnode takes the key a user configured)."""
        with self._lock:
            if key in self._keys:
                return
            self.issue(usd=usd, key=key)

    def revoke(self, key: str) -> None:
        with self._lock:
            self._keys[key].revoked = True

    def grant(self, key: str, usd: float) -> None:
        """Add ``usd`` (or remove it, when negative) to the key's assigned credits."""
        with self._lock:
            self._keys[key].assigned += round(usd * MICRO)

    def account(self, key: str) -> ApiKey:
        """The account of a key (for tests and the devnode's own use); ``KeyError``."""
        with self._lock:
            return self._keys[key]

    def authenticate(self, header: str) -> ApiKey:
        """The account of ``Authorization: Bearer <key>``: 401 unknown, 403 expired/revoked."""
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise CreditError(401, "Authentication failed: send Authorization: Bearer <API key>")
        with self._lock:
            account = self._keys.get(token)
        if account is None:
            raise CreditError(401, "Authentication failed: invalid API key")
        if account.revoked:
            raise CreditError(403, "API key has been revoked")
        if account.expires_at is not None and time.time() >= account.expires_at:
            raise CreditError(403, "API key has expired")
        return account

    def owner_of(self, job: str) -> ApiKey | None:
        """The key whose credits pay for ``job`` (``None``: a wallet-paid job)."""
        with self._lock:
            return self._by_job.get(job)

    # ------------------------------------------------------------------ money

    def reserve(self, account: ApiKey, job: str, seconds: int, rate: float) -> Reservation:
        """Hold ``rate × seconds`` for ``job``; 402 when the account cannot cover it."""
        amount = _micro_up(rate * seconds)
        with self._lock:
            if amount > account.available:
                raise CreditError(
                    402,
                    f"Insufficient credits: this needs {format_usd(amount)}; "
                    f"Available: {format_usd(account.available)}",
                )
            reservation = Reservation(
                id=f"res_{secrets.token_hex(8)}", job=job, amount=amount, rate=rate
            )
            account.reservations[reservation.id] = reservation
            self._by_job[job] = account
        return reservation

    def settle(self, job: str, seconds_used: float) -> int | None:
        """The job ended after ``seconds_used`` of run time: charge that, release the rest.

        Returns the micro-dollars charged (``None`` for a job no key pays for). Idempotent.
        """
        with self._lock:
            account = self._by_job.get(job)
            if account is None:
                return None
            held = [r for r in account.reservations.values() if r.job == job]
            total = sum(r.amount for r in held)
            rate = held[0].rate if held else 0.0
            charge = min(total, _micro_up(rate * max(0.0, seconds_used)))
            for reservation in held:
                del account.reservations[reservation.id]
            account.settled += charge
            return charge

    def balance(self, account: ApiKey) -> dict[str, float]:
        """The answer of ``GET /api/credits/balance``, in USD."""
        with self._lock:
            return {
                "assignedCredits": account.assigned / MICRO,
                "reservedCredits": account.reserved / MICRO,
                "settledCredits": account.settled / MICRO,
            }

    # ------------------------------------------------------------------ signing

    @staticmethod
    def sign(account: ApiKey, message: str) -> str:
        """The base58 Ed25519 signature of ``message`` by the key's project key."""
        return str(account.project.sign_message(message.encode("utf-8")))
