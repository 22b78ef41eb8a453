"""Pure functions and records of the Nosana protocol: auth headers, expose ids, CIDs,
durations, addresses, a job's state on the ledger.

Everything here is checked against the vectors computed by Nosana's official JavaScript
packages. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import hashlib
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import base58

from .errors import NosanaError

if TYPE_CHECKING:  # solders is loaded when a header is verified (30 ms off %load_ext)
    from solders.keypair import Keypair
    from solders.pubkey import Pubkey

__all__ = [
    "EXPIRY_MARGIN_S",
    "PRIVATE_EXPOSE_ID_LENGTH",
    "AuthError",
    "CidError",
    "DurationError",
    "ExposedService",
    "JobState",
    "auth_header",
    "b58decode",
    "b58encode",
    "cid_to_digest",
    "create_hash",
    "deployment_hash",
    "digest_to_cid",
    "expose_id",
    "exposed_services",
    "format_duration",
    "is_private_expose_id",
    "now_ms",
    "parse_duration",
    "service_url",
    "short_address",
    "verify_auth_header",
]


def now_ms() -> int:
    """Wall-clock unix time in milliseconds, as Nosana puts it on the wire."""
    return time.time_ns() // 1_000_000


def b58encode(data: bytes) -> str:
    return base58.b58encode(data).decode("ascii")


def b58decode(text: str) -> bytes:
    """Decode base58; raises ``ValueError("Non-base58 character")`` like the JS ``bs58``."""
    try:
        return bytes(base58.b58decode(text.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        raise ValueError("Non-base58 character") from None


# --------------------------------------------------------------------------- auth headers


class AuthError(NosanaError):
    """An ``Authorization`` header that does not pass Nosana's validator.

    ``reason`` is ``"invalid"`` (malformed, or the signature does not verify) or ``"expired"``.
    """

    def __init__(self, reason: Literal["invalid", "expired"], message: str) -> None:
        super().__init__(message)
        self.reason: Literal["invalid", "expired"] = reason


def auth_header(
    keypair: Keypair,
    message: str,
    *,
    timestamp_ms: int | None = None,
    include_time: bool = True,
) -> str:
    """Sign ``message`` the way ``@nosana/authorization`` does: ``message:base58sig[:ms]``.

    The timestamp is not signed; validators use it only for expiry, so a fresh header per
    request (the default: now) is what keeps late requests valid.
    """
    if ":" in message:
        # The validator splits on ":"; such a header could never verify.
        raise ValueError("an authorization message may not contain ':'")
    if not message:
        raise ValueError("an authorization message may not be empty")
    signature = keypair.sign_message(message.encode("utf-8"))
    header = f"{message}:{signature}"
    if include_time:
        header += f":{now_ms() if timestamp_ms is None else timestamp_ms}"
    return header


_LEADING_INT = re.compile(r"\s*([+-]?\d+)")


def _js_parse_int(text: str) -> int | None:
    """JavaScript ``parseInt(text, 10)``: the leading digits, or ``None`` for NaN."""
    match = _LEADING_INT.match(text)
    return int(match.group(1)) if match else None


def verify_auth_header(
    header: str,
    public_key: str | Pubkey,
    *,
    expiry_s: float,
    now_ms: int | None = None,
) -> None:
    """Validate a header with the official rules (expiry first, then the signature).

    Raises :class:`AuthError`; returns ``None`` when the header is valid.
    """
    from solders.pubkey import Pubkey
    from solders.signature import Signature

    parts = header.split(":")
    message = parts[0]
    signature_text = parts[1] if len(parts) > 1 else ""
    if not message or not signature_text:
        raise AuthError("invalid", "Invalid signature.")
    if len(parts) > 2:
        stamp = _js_parse_int(parts[2])
        current = _now_ms() if now_ms is None else now_ms
        if stamp is not None and (current - stamp) / 1000 >= expiry_s:
            raise AuthError("expired", "Authorization has expired.")
    try:
        raw = b58decode(signature_text)
    except ValueError as exc:
        raise AuthError("invalid", str(exc)) from None
    if len(raw) != Signature.LENGTH:
        raise AuthError("invalid", "bad signature size")
    try:
        key = public_key if isinstance(public_key, Pubkey) else Pubkey.from_string(public_key)
    except ValueError:
        raise AuthError("invalid", "invalid public key") from None
    if not Signature.from_bytes(raw).verify(key, message.encode("utf-8")):
        raise AuthError("invalid", "signature does not verify")


_now_ms = now_ms  # the parameter of verify_auth_header shadows the function's name


# --------------------------------------------------------------------------- expose ids


def create_hash(text: str, length: int) -> str:
    """``createHash`` of the Nosana SDK: base58(SHA-512(utf8(text))) cut to ``length``."""
    return b58encode(hashlib.sha512(text.encode("utf-8")).digest())[:length]


def _js_string(value: object) -> str:
    """How JavaScript's template literal prints a port (``8080.0`` is ``8080``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def expose_id(job_address: str, op_index: int | str, port: int | float | str) -> str:
    """The service id of a public exposed port (``getExposeIdHash``): 44 base58 characters."""
    return create_hash(f"{_js_string(op_index)}:{_js_string(port)}:{job_address}", 44)


#: Length of the random id a host gives a ``private: true`` service (``createHash(…, 45)``);
#: public ids are 44 characters (:func:`expose_id`). The length is what tells them apart.
PRIVATE_EXPOSE_ID_LENGTH = 45


def is_private_expose_id(service_id: str) -> bool:
    """True for the id of a private service: only the job's owner learns its URL."""
    return len(service_id) == PRIVATE_EXPOSE_ID_LENGTH


def deployment_hash(deployment_id: str, project: str) -> str:
    """The load-balanced domain key of a deployment (``createHash("{id}:{project}", 45)``)."""
    return create_hash(f"{deployment_id}:{project}", 45)


def service_url(service_id: str, domain: str, *, scheme: str = "https") -> str:
    """The URL of an exposed service: ``https://{id}.{domain}`` on Nosana."""
    return f"{scheme}://{service_id}.{domain}"


@dataclass(frozen=True)
class ExposedService:
    """One exposed port of a job definition, as the SDK computes it before the job runs."""

    expose_id: str
    op_index: int
    op_id: str
    port: int | float | str
    has_health_check: bool


_SKIPPED_LITERAL = re.compile(r"^%%(ops|globals)\.[^%]+%%$")


def _expose_items(expose: object) -> Iterator[object]:
    if isinstance(expose, list):
        yield from expose
    elif expose is not None:
        yield expose


def exposed_services(definition: Mapping[str, object], job_address: str) -> list[ExposedService]:
    """The public services of a (raw JSON) job definition, in the SDK's order.

    Like ``getJobExposedServices``: op indexes count every op; ``%%ops…%%`` literals and spread
    markers are resolved only on the host and are skipped. Ops with ``private: true`` have
    random ids, so they are not listed here (see :func:`has_private_ops`).
    """
    services: list[ExposedService] = []
    ops = definition.get("ops")
    if not isinstance(ops, list):
        return services
    for index, op in enumerate(ops):
        if not isinstance(op, Mapping) or op.get("type") != "container/run":
            continue
        args = op.get("args")
        if not isinstance(args, Mapping) or args.get("private") is True:
            continue
        for item in _expose_items(args.get("expose")):
            port: object
            health = False
            if isinstance(item, Mapping):
                if "__spread__" in item:
                    continue
                port = item.get("port")
                health = bool(item.get("health_checks"))
            else:
                port = item
            if isinstance(port, str) and (_SKIPPED_LITERAL.match(port) or "${" in port):
                continue  # resolved on the host, or a ${var:…} resolved only when sent
            if not isinstance(port, (int, float, str)) or isinstance(port, bool):
                continue
            services.append(
                ExposedService(
                    expose_id=expose_id(job_address, index, port),
                    op_index=index,
                    op_id=str(op.get("id", "")),
                    port=port,
                    has_health_check=health,
                )
            )
    return services


def has_private_ops(definition: Mapping[str, object]) -> bool:
    """True when an exposed ``container/run`` op has ``private: true`` (the CLI's ``isPrivate``)."""
    ops = definition.get("ops")
    if not isinstance(ops, list):
        return False
    return any(
        isinstance(op, Mapping)
        and op.get("type") == "container/run"
        and isinstance(op.get("args"), Mapping)
        and op["args"].get("private") is True
        and op["args"].get("expose") is not None
        for op in ops
    )


# --------------------------------------------------------------------------- addresses


def short_address(address: str) -> str:
    """An address (job, node, wallet) cut for one line of text: ``7xKX…q3Zk``.

    The first and last four characters, as Solana explorers show keys; an address of nine
    characters or fewer is shown whole.
    """
    return address if len(address) <= 9 else f"{address[:4]}…{address[-4:]}"


# --------------------------------------------------------------------------- CIDs


class CidError(NosanaError, ValueError):
    """A string that is not a CIDv0, or bytes that are not a 32-byte digest."""


_MULTIHASH_SHA256 = b"\x12\x20"


def cid_to_digest(cid: str) -> bytes:
    """The 32-byte sha256 digest a CIDv0 (``Qm…``) stores on chain."""
    try:
        raw = b58decode(cid)
    except ValueError:
        raise CidError(f"not an IPFS CIDv0: non-base58 character in {cid[:60]!r}") from None
    if len(raw) != 34 or not raw.startswith(_MULTIHASH_SHA256):
        raise CidError(f"not an IPFS CIDv0 (sha2-256 multihash): {cid[:60]!r}")
    return raw[2:]


def digest_to_cid(digest: bytes) -> str:
    """The CIDv0 of a 32-byte sha256 digest (the inverse of :func:`cid_to_digest`)."""
    if len(digest) != 32:
        raise CidError(f"an IPFS digest is 32 bytes, got {len(digest)}")
    return b58encode(_MULTIHASH_SHA256 + bytes(digest))


def cid_of(content: bytes) -> str:
    """The CIDv0 whose digest is the sha256 of ``content`` (what a local IPFS store hands out)."""
    return digest_to_cid(hashlib.sha256(content).digest())


# --------------------------------------------------------------------------- durations


class DurationError(NosanaError, ValueError):
    """A duration that is not ``90s``, ``30m``, ``2h``, ``1d`` or a bare number of minutes."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(value: str | int | float) -> int:
    """Seconds in a duration. A bare number means minutes, as in the Nosana CLI's ``--timeout``.

    >>> parse_duration("90s"), parse_duration("30m"), parse_duration("2h"), parse_duration("45")
    (90, 1800, 7200, 2700)
    """
    if isinstance(value, bool):
        raise DurationError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value) * 60
    else:
        match = _DURATION.match(value)
        if not match:
            raise DurationError(
                f"not a duration: {value!r} (use e.g. 90s, 30m, 2h, 1d; a bare number is minutes)"
            )
        number, unit = match.groups()
        seconds = float(number) * _UNIT_SECONDS[(unit or "m").lower()]
    if seconds < 1:
        raise DurationError(f"a duration must be at least one second, got {value!r}")
    return round(seconds)


def format_duration(seconds: float) -> str:
    """A short human form that drops nothing but fractions of a second: ``45s``, ``30m``,
    ``2h 5m``, ``24h 1s``. Two whole numbers of seconds never look the same, so a limit and
    what it refuses read apart (``timeout 24h 1s exceeds … (24h)``)."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (secs, "s"))
             if value]
    return " ".join(parts) or "0s"


# --------------------------------------------------------------------------- jobs on the ledger


class JobState(str, enum.Enum):
    """A job's state on the ledger (docs/protocol.md §19). RUNNING is derived: a node has
    taken the job."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    STOPPED = "STOPPED"

    @property
    def done(self) -> bool:
        return self in (JobState.COMPLETED, JobState.STOPPED)

    def __str__(self) -> str:
        return self.value


#: How long past its expiry a job may take to read as ended before the client calls it lost:
#: the host's 60 s results window (docs/protocol.md §10), then pinning the public result and
#: completing the job on the ledger (a confirmed transaction on chain). The one margin both
#: the job's machine and the ledger's watch use.
EXPIRY_MARGIN_S = 180.0
