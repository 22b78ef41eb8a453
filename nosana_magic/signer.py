"""Who signs the requests to a job's host: the job's project (docs/protocol.md §3, §24).

A host answers only headers signed by the job's ``project``. With a wallet, the project is the
wallet, and every header is signed here (:class:`~nosana_magic.wallet.Wallet` is a signer).
With credits, the project is a key Nosana holds for the user, and only Nosana's signing
service can sign with it: the client asks it once per job (one signature serves every
request, as the host checks the signer, not the message) and gives each request a fresh
timestamp (:class:`PresignedSigner`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .protocol import AuthError, now_ms, verify_auth_header

__all__ = ["PresignedSigner", "Signer"]


@runtime_checkable
class Signer(Protocol):
    """Makes the ``Authorization`` headers of a job's host requests."""

    @property
    def address(self) -> str:
        """The public key the headers verify against (the job's project)."""
        ...

    def auth_header(self, message: str) -> str:
        """A fresh ``message:signature:ms`` header (a signer may sign a fixed message)."""
        ...


class PresignedSigner:
    """A header signed elsewhere (``message:signature``), stamped with the time per request.

    ``message`` passed to :meth:`auth_header` is ignored: the signed message is fixed, which
    the host allows (it checks the signer and the time, docs/protocol.md §3). The header is
    checked against ``address`` up front, so a wrong signature fails here, in one line, and
    not at the host. It is kept out of the repr: it opens the job's host API.
    """

    def __init__(self, address: str, header: str, *, source: str = "signing service") -> None:
        if header.count(":") != 1:
            raise AuthError("invalid", f"the {source} answered a malformed header")
        try:
            verify_auth_header(header, address, expiry_s=float("inf"))
        except AuthError as exc:
            raise AuthError(
                exc.reason, f"the {source} answered a signature that is not by {address}: {exc}"
            ) from None
        self._address = address
        self._header = header
        self.source = source

    @property
    def address(self) -> str:
        return self._address

    def auth_header(self, message: str = "") -> str:
        return f"{self._header}:{now_ms()}"

    def __repr__(self) -> str:
        return f"PresignedSigner({self._address}, from the {self.source})"
