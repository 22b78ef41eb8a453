"""Loading the keypair that posts jobs and signs requests to hosts.

A :class:`Wallet` shows its public key at most: its repr, every error and every log line
name the address, never the secret. The keypair itself is reachable only on purpose
(``wallet.keypair``) by code that signs.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from .errors import WalletError
from .protocol import auth_header, b58decode
from .settings import WALLET_FROM_ENV, Settings, looks_like_path

__all__ = [
    "DEFAULT_KEY_FILE",
    "Wallet",
    "WalletError",
    "configured_wallet",
    "create_wallet_file",
    "load_wallet",
]

#: Where the Nosana CLI keeps its key (a JSON array of 64 integers).
DEFAULT_KEY_FILE = Path("~/.nosana/nosana_key.json")


class Wallet:
    """A Solana keypair used as the job's project, payer and request signer."""

    __slots__ = ("_keypair", "source")

    def __init__(self, keypair: Keypair, *, source: str = "memory") -> None:
        self._keypair = keypair
        self.source = source

    @property
    def keypair(self) -> Keypair:
        return self._keypair

    @property
    def public_key(self) -> Pubkey:
        return self._keypair.pubkey()

    @property
    def address(self) -> str:
        return str(self._keypair.pubkey())

    def sign(self, message: bytes) -> bytes:
        return bytes(self._keypair.sign_message(message))

    def auth_header(self, message: str, *, timestamp_ms: int | None = None) -> str:
        """A fresh ``message:signature:ms`` header (see :func:`protocol.auth_header`)."""
        return auth_header(self._keypair, message, timestamp_ms=timestamp_ms)

    def __repr__(self) -> str:
        return f"Wallet({self.address}, source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would copy the secret into whatever stores the pickle.
        raise TypeError("a Wallet cannot be pickled")

    @classmethod
    def generate(cls) -> Wallet:
        return cls(Keypair(), source="generated")


def _keypair_from_array(values: object, where: str) -> Keypair:
    if (
        not isinstance(values, list)
        or len(values) != 64
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 256 for v in values)
    ):
        raise WalletError(f"{where}: expected a JSON array of 64 integers from 0 to 255")
    try:
        return Keypair.from_bytes(bytes(values))
    except ValueError:
        raise WalletError(f"{where}: the 64 bytes are not a valid ed25519 keypair") from None


def _keypair_from_base58(text: str, where: str) -> Keypair:
    try:
        raw = b58decode(text.strip())
    except ValueError:
        raise WalletError(f"{where}: not a key file path nor a base58 secret key") from None
    try:
        if len(raw) == 64:
            return Keypair.from_bytes(raw)
        if len(raw) == 32:
            return Keypair.from_seed(raw)
    except ValueError:
        raise WalletError(f"{where}: the base58 secret is not a valid ed25519 keypair") from None
    raise WalletError(f"{where}: a base58 secret key must decode to 32 or 64 bytes")


def _warn_if_readable_by_others(path: Path) -> None:
    if os.name != "posix":
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(
            f"wallet key file {path} is readable by other users; run: chmod 600 {path}",
            UserWarning,
            stacklevel=3,
        )


def _load_key_file(path: Path) -> Wallet:
    where = f"wallet key file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WalletError(f"{where} does not exist") from None
    except OSError as exc:
        raise WalletError(f"{where} cannot be read ({exc.strerror})") from None
    _warn_if_readable_by_others(path)
    try:
        values = json.loads(text)
    except ValueError:
        raise WalletError(f"{where}: not JSON (expected an array of 64 integers)") from None
    return Wallet(_keypair_from_array(values, where), source=str(path))


def load_wallet(
    source: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Wallet:
    """Load the wallet: ``source``, else the configured one (:func:`configured_wallet`).

    ``source`` may be a key file path (a JSON array of 64 integers, as the Nosana CLI and
    ``solana-keygen`` write) or a base58 secret key. Without one, the settings read from
    ``env`` (default: the process environment) say where it is: ``NOSANA_WALLET``, else the
    Nosana CLI's key file.
    """
    if source is None:
        return configured_wallet(Settings.from_env(env))
    path = Path(source).expanduser()
    if isinstance(source, os.PathLike) or looks_like_path(str(source)):
        return _load_key_file(path)
    return Wallet(_keypair_from_base58(str(source), "wallet secret"), source="secret")


def configured_wallet(settings: Settings) -> Wallet:
    """The wallet ``settings`` names: its key file, the base58 secret in ``NOSANA_WALLET``
    (read now, never kept), else the Nosana CLI's key file."""
    if settings.wallet == WALLET_FROM_ENV:
        secret = settings.read_wallet_secret()
        return Wallet(_keypair_from_base58(secret, "NOSANA_WALLET"), source="NOSANA_WALLET")
    if settings.wallet is not None:
        return _load_key_file(Path(settings.wallet))
    default = DEFAULT_KEY_FILE.expanduser()
    if default.is_file():
        return _load_key_file(default)
    raise WalletError(
        f"no wallet: set NOSANA_WALLET to a key file or base58 secret key, "
        f"or create {DEFAULT_KEY_FILE} with the Nosana CLI"
    )


def create_wallet_file(path: str | os.PathLike[str]) -> Wallet:
    """Write a new keypair to ``path`` (mode 600, the CLI's format) or load the one there."""
    target = Path(path).expanduser()
    if target.exists():
        return _load_key_file(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    keypair = Keypair()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(list(keypair.to_bytes()), handle)
    return Wallet(keypair, source=str(target))
