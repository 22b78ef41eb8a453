"""``SolanaRpc``: a Solana JSON-RPC endpoint, on the package's one retry policy.

Every call has a timeout per attempt and is tried again as its :class:`~nosana_magic.transport.
Retry` says (transport errors, rate limits, a node that is behind); a refusal raises
:class:`~nosana_magic.errors.NetworkError` at once. Sending a transaction resends the same
signed bytes (it lands at most once), then polls its status until it reaches the commitment.

Messages name the RPC host only: RPC URLs often carry an API key in their query string, user
info or path. The HTTP and WebSocket libraries log request URLs; their records are masked the
same way, by a filter the first client installs (not this module's import).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import httpx2
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment
from solana.rpc.core import RPCException, RPCNoResultException
from solana.rpc.models import TxOpts
from solders.compute_budget import set_compute_unit_price
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from .. import chain
from ..errors import NetworkError, TransactionFailedError
from ..transport import Retry, one_line, url_host

__all__ = ["RPC_RETRY", "SolanaRpc"]

T = TypeVar("T")

_COMMITMENT_RANK = {"processed": 0, "confirmed": 1, "finalized": 2}

#: Every RPC call and transaction send: three attempts, 0.5 s then 1 s apart.
RPC_RETRY = Retry(first=0.5, cap=4.0, attempts=3, total=120.0)
#: Status polls while confirming: the time bound (``confirm_timeout_s``) is what ends them.
_MAX_POLLS = 10_000


def _ws_url(rpc_url: str) -> str:
    """The WebSocket endpoint beside an HTTP RPC endpoint (a local validator's port + 1)."""
    parts = urlsplit(rpc_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    netloc = parts.netloc
    if parts.port == 8899:
        netloc = netloc.rsplit(":", 1)[0] + ":8900"
    return urlunsplit((scheme, netloc, parts.path, parts.query, ""))


class _MaskSecrets(logging.Filter):
    """Masks RPC URL keys in the records of the HTTP library, which logs every request URL
    (query string included) at INFO level."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add_url(self, url: str) -> None:
        parts = urlsplit(url)
        # Keys sit in the query, the user info or a path segment (``/v2/<key>``); short
        # segments such as ``v2`` are not keys and would mask harmless text.
        segments = [s for s in parts.path.split("/") if len(s) >= 8]
        for secret in (parts.query, parts.username, parts.password, *segments):
            if secret and len(secret) >= 4:
                self.secrets.add(secret)

    def _mask(self, value: object) -> object:
        text = str(value)
        if not any(secret in text for secret in self.secrets):
            return value
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            if isinstance(record.args, tuple):
                record.args = tuple(self._mask(arg) for arg in record.args)
            record.msg = self._mask(record.msg)
        return True


_MASK = _MaskSecrets()
#: httpx2 logs every request URL at INFO; websockets logs the request line at DEBUG.
_LOGGERS_WITH_URLS = ("httpx2", "websockets.client")


def _mask_in_library_logs(*urls: str) -> None:
    """Mask the keys of ``urls`` in the HTTP libraries' log records from now on. The filter
    is installed by the first client that needs it, not when this module is imported."""
    for url in urls:
        _MASK.add_url(url)
    for name in _LOGGERS_WITH_URLS:
        logger = logging.getLogger(name)
        if _MASK not in logger.filters:
            logger.addFilter(_MASK)


class SolanaRpc:
    """One Solana RPC endpoint (and the WebSocket beside it) for one cluster.

    Construction does no I/O. ``ws_url`` defaults to the endpoint beside ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        cluster: str,
        ws_url: str | None = None,
        commitment: str = "confirmed",
        request_timeout_s: float = 10.0,
        retry: Retry = RPC_RETRY,
        confirm_timeout_s: float = 60.0,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise NetworkError(f"the Solana RPC URL must be http(s), got {url_host(url)}")
        commitment = commitment.lower()
        if commitment not in _COMMITMENT_RANK:
            raise NetworkError(
                f"commitment {commitment!r} is not one of processed, confirmed, finalized"
            )
        self.url = url
        self.ws_url = ws_url or _ws_url(url)
        self.cluster = cluster
        self.commitment: Commitment = commitment  # type: ignore[assignment]
        self.request_timeout_s = request_timeout_s
        #: The policy of every call and transaction send (attempts, pauses, time bound).
        self.retry = retry
        self.confirm_timeout_s = confirm_timeout_s
        #: ``time.monotonic()`` of the endpoint's last answer (``None`` before the first).
        self.last_answer: float | None = None
        _mask_in_library_logs(self.url, self.ws_url)
        self._client: AsyncClient | None = None
        self._rent: dict[int, int] = {}

    @property
    def host(self) -> str:
        """The endpoint's host and port: what messages name (never the URL's key)."""
        return url_host(self.url)

    def _rpc(self) -> AsyncClient:
        if self._client is None:
            self._client = AsyncClient(
                self.url,
                commitment=self.commitment,
                timeout=self.request_timeout_s,
                max_transport_retries=0,
            )
        return self._client

    async def call(self, what: str, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """One RPC call with a timeout per attempt, retried as :attr:`retry` says."""
        backoff = self.retry.backoff()
        reason = "no answer"
        while True:
            try:
                answer = await asyncio.wait_for(call(self._rpc()), self.request_timeout_s + 1)
                self.last_answer = time.monotonic()
                return answer
            except RPCException as exc:
                self.last_answer = time.monotonic()  # a refusal is an answer too
                message = _rpc_error_text(exc)
                if not _retryable_rpc_error(message):
                    raise NetworkError(
                        f"Solana RPC {self.host} refused {what}: {message}") from None
                reason = message
            except RPCNoResultException as exc:
                raise NetworkError(
                    f"Solana RPC {self.host} refused {what}: {_scrub(str(exc))}"
                ) from None
            except (SolanaRpcException, httpx2.HTTPError, OSError, TimeoutError) as exc:
                reason, retry = _transport_reason(exc)
                if not retry:
                    raise NetworkError(
                        f"Solana RPC {self.host} refused {what}: {reason} (check NOSANA_RPC_URL)"
                    ) from None
            if not await backoff.wait():
                raise NetworkError(
                    f"Solana RPC {self.host} is not answering ({what}): {reason}, "
                    f"{backoff.attempt} attempts; check NOSANA_RPC_URL or try again later"
                )

    async def accounts(self, keys: Sequence[Pubkey], what: str) -> list[Any]:
        """``getMultipleAccounts`` in batches of 100; ``None`` for a missing account."""
        found: list[Any] = []
        for start in range(0, len(keys), 100):
            batch = list(keys[start:start + 100])
            resp = await self.call(
                what, lambda c, b=batch: c.get_multiple_accounts(b, encoding="base64")  # type: ignore[misc]
            )
            found.extend(resp.value)
        return found

    async def rent(self, size: int) -> int:
        """The rent-exempt minimum of an account of ``size`` bytes (asked once per size)."""
        if size not in self._rent:
            resp = await self.call(
                "reading the rent", lambda c: c.get_minimum_balance_for_rent_exemption(size)
            )
            self._rent[size] = int(resp.value)
        return self._rent[size]

    # ------------------------------------------------------------------ transactions

    async def send(self, instructions: Sequence[Instruction], signers: Sequence[Keypair],
                   what: str, *, payer: Pubkey, fee: int, job: str | None = None) -> str:
        """Prepend the priority fee (``fee`` micro-lamports per compute unit), sign, send
        (bounded), confirm (bounded); returns the signature. ``payer`` pays the fees."""
        ixs = [set_compute_unit_price(fee), *instructions]
        blockhash = (await self.call(
            "reading the latest blockhash", lambda c: c.get_latest_blockhash(self.commitment)
        )).value
        message = MessageV0.try_compile(payer, ixs, [], blockhash.blockhash)
        tx = VersionedTransaction(message, list(signers))
        signature = tx.signatures[0]
        opts = TxOpts(skip_confirmation=True, preflight_commitment=self.commitment)
        await self._send_raw(bytes(tx), opts, signature, what)
        await self._confirm(signature, what, job)
        return str(signature)

    async def _send_raw(self, raw: bytes, opts: TxOpts, signature: Signature, what: str) -> None:
        """Send signed transaction bytes, retried as :attr:`retry` says. Resending the same
        bytes is safe: a transaction lands at most once (same bytes, same signature)."""
        backoff = self.retry.backoff()
        reason = "no answer"
        while True:
            try:
                await asyncio.wait_for(
                    self._rpc().send_raw_transaction(raw, opts), self.request_timeout_s + 1
                )
                return
            except RPCException as exc:
                error = exc.args[0] if exc.args else None
                text = _rpc_error_text(exc)
                if "already been processed" in text:
                    return  # an earlier attempt landed
                if isinstance(error, SendTransactionPreflightFailureMessage):
                    logs = list(error.data.logs or [])
                    raise TransactionFailedError(
                        _failure_message(what, self.cluster, logs, str(error.data.err)),
                        logs=logs, signature=str(signature),
                    ) from None
                if not _retryable_rpc_error(text):
                    raise NetworkError(f"Solana RPC {self.host} refused {what}: {text}") from None
                reason = text
            except (SolanaRpcException, httpx2.HTTPError, OSError, TimeoutError) as exc:
                reason, retry = _transport_reason(exc)
                if not retry:
                    raise NetworkError(f"Solana RPC {self.host} refused {what}: {reason}") from None
            if not await backoff.wait():
                raise NetworkError(
                    f"Solana RPC {self.host} is not answering ({what}): {reason}, "
                    f"{backoff.attempt} attempts; nothing was spent unless "
                    f"https://explorer.solana.com/tx/{signature} shows it"
                )

    async def _confirm(self, signature: Signature, what: str, job: str | None) -> None:
        """Poll the signature's status (pauses from 0.25 s to 2 s) until it reaches the
        commitment, fails, or ``confirm_timeout_s`` passes."""
        want = _COMMITMENT_RANK[self.commitment]
        backoff = Retry(first=0.25, cap=2.0, attempts=_MAX_POLLS,
                        total=self.confirm_timeout_s).backoff()
        while True:
            resp = await self.call(
                "confirming the transaction", lambda c: c.get_signature_statuses([signature])
            )
            status = resp.value[0]
            if status is not None:
                if status.err is not None:
                    raise TransactionFailedError(
                        f"{what} failed on {self.cluster}: {status.err} (transaction {signature})",
                        signature=str(signature),
                    )
                if (status.confirmation_status is not None
                        and int(status.confirmation_status) >= want):
                    return
            if not await backoff.wait():
                where = f"; job {job}" if job else ""
                raise NetworkError(
                    f"{what}: transaction {signature} not confirmed within "
                    f"{self.confirm_timeout_s:g} s{where}. It may still land: check "
                    f"https://explorer.solana.com/tx/{signature}"
                    f"{'?cluster=devnet' if self.cluster == 'devnet' else ''}"
                )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)


# --------------------------------------------------------------------------- error text


def _scrub(text: str) -> str:
    """``text`` as one short line without URLs (they may carry keys): hosts only."""
    return one_line(text, 300, keep_urls=False)


def _rpc_error_text(exc: RPCException) -> str:
    error = exc.args[0] if exc.args else exc
    message = getattr(error, "message", None)
    return _scrub(str(message if message is not None else error))


def _retryable_rpc_error(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in (
        "too many requests", "rate limit", "behind", "unhealthy", "timed out", "timeout",
        "temporarily", "try again",
    ))


def _transport_reason(exc: BaseException) -> tuple[str, bool]:
    """``(reason, retry)`` for a transport failure, without the URL."""
    cause: BaseException | None = exc
    while isinstance(cause, SolanaRpcException) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, httpx2.HTTPStatusError):
        status = cause.response.status_code
        if status in (401, 403):
            return f"HTTP {status} (the RPC URL's key is missing or wrong)", False
        return f"HTTP {status}", status == 429 or status >= 500
    if isinstance(cause, (TimeoutError, httpx2.TimeoutException)):
        return "timed out", True
    if isinstance(cause, (httpx2.ConnectError, ConnectionError)):
        return "connection refused or unreachable", True
    if isinstance(cause, (httpx.HTTPError, httpx2.HTTPError, OSError)):
        return type(cause).__name__, True
    return type(cause).__name__ if cause is not None else "error", True


def _failure_message(what: str, cluster: str, logs: Sequence[str], err: str) -> str:
    reason = chain.program_error_message(logs) or _scrub(err)
    return f"{what} failed on {cluster}: {reason}"
