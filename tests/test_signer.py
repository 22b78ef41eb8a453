"""Signers of host requests (docs/protocol.md §3, §24): a wallet, or a header signed once by
the signing service and stamped with the time per request."""

from __future__ import annotations

import pytest

from nosana_magic.protocol import AuthError, auth_header, verify_auth_header
from nosana_magic.signer import PresignedSigner, Signer
from nosana_magic.wallet import Wallet


def test_a_wallet_is_a_signer() -> None:
    wallet = Wallet.generate()
    assert isinstance(wallet, Signer)
    verify_auth_header(wallet.auth_header("JOB"), wallet.address, expiry_s=60)


def test_a_presigned_header_gets_a_fresh_time_per_request() -> None:
    project = Wallet.generate()
    base = auth_header(project.keypair, "nosana-auth", include_time=False)
    signer = PresignedSigner(project.address, base)
    assert isinstance(signer, Signer) and signer.address == project.address
    header = signer.auth_header("ignored")
    message, signature, stamp = header.split(":")
    assert f"{message}:{signature}" == base and int(stamp) > 1_700_000_000_000
    verify_auth_header(header, project.address, expiry_s=60)
    assert signature not in repr(signer) and project.address in repr(signer)


def test_a_header_by_anyone_else_or_malformed_is_refused_at_once() -> None:
    project, stranger = Wallet.generate(), Wallet.generate()
    theirs = auth_header(stranger.keypair, "nosana-auth", include_time=False)
    with pytest.raises(AuthError, match=f"not by {project.address}"):
        PresignedSigner(project.address, theirs)
    for bad in ("nosana-auth", f"{theirs}:123", ":sig"):
        with pytest.raises(AuthError):
            PresignedSigner(project.address, bad)
