"""Where the client's settings come from: explicit overrides, then the environment, then defaults.

Credentials are never held here. A setting that names a credential says *where* it is
(``wallet`` is a key file path, or ``"env:NOSANA_WALLET"`` when that variable holds a base58
secret), or only *whether* it is set (``pinata_jwt_set``). So a ``Settings`` can be printed
(``%nosana config``), logged or put in an error message without leaking anything.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from .errors import NosanaError
from .protocol import DurationError, parse_duration

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "JWT_ENV_VARS",
    "NETWORKS",
    "WALLET_FROM_ENV",
    "NetworkName",
    "Settings",
    "SettingsError",
    "credentials_file",
    "find_pinata_jwt",
    "mask_url",
]

NetworkName = Literal["local", "devnet", "mainnet"]
NETWORKS: tuple[NetworkName, ...] = ("local", "devnet", "mainnet")

#: A job's default timeout: 30 minutes.
DEFAULT_TIMEOUT_S = 1800

#: The value of ``Settings.wallet`` when ``NOSANA_WALLET`` holds a base58 secret rather than a
#: path: a reference to the variable, never its content.
WALLET_FROM_ENV = "env:NOSANA_WALLET"

# Environment variable -> field. Only non-secret values are read into fields.
_ENV_FIELDS = {
    "NOSANA_NETWORK": "network",
    "NOSANA_MARKET": "market",
    "NOSANA_TIMEOUT": "timeout",
    "NOSANA_RPC_URL": "rpc_url",
    "NOSANA_DEVNODE_URL": "devnode_url",
    "NOSANA_NODE_URL_TEMPLATE": "node_url_template",
    "NOSANA_DATA_DIR": "data_dir",
}


class SettingsError(NosanaError):
    """A setting with a value that cannot work; the message names the setting and its source."""


def mask_url(url: str | None) -> str | None:
    """``url`` with its user info, path and query masked.

    RPC providers put the API key in any of them: the query (``?api-key=``), the user info,
    or the path (``/v2/<key>``, ``/<token>/``). Only the scheme and host stay readable.
    """
    if url is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    masked_host = f"***@{host}" if (parts.username or parts.password) else host
    path = "/***" if parts.path.strip("/") else parts.path
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, masked_host, path, query, ""))


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or value.startswith(("~", "."))
        or value.endswith(".json")
        or Path(value).expanduser().is_file()
    )


@dataclass(frozen=True)
class Settings:
    """The client's settings. Immutable; make variants with :meth:`with_overrides`."""

    #: ``local`` (the embedded devnode, the default), ``devnet`` or ``mainnet``.
    network: NetworkName = "local"
    #: Market slug or address. ``None``: the first local market; required elsewhere.
    market: str | None = None
    #: Job timeout in seconds.
    timeout: int = DEFAULT_TIMEOUT_S
    #: A running devnode to use instead of starting an embedded one (``http://127.0.0.1:P``).
    devnode_url: str | None = None
    #: Node API base URL with ``{node}`` (default: the network's own).
    node_url_template: str | None = None
    #: Key file path, or :data:`WALLET_FROM_ENV`; ``None``: the Nosana CLI's key file.
    wallet: str | None = None
    #: Solana RPC endpoint (shown masked: it may carry an API key).
    rpc_url: str | None = None
    #: Whether a Pinata JWT is configured (``NOSANA_PINATA_JWT``, ``PINATA_JWT`` or the
    #: credentials file); the token itself is never kept here.
    pinata_jwt_set: bool = False
    #: Where local state lives (the local wallet); ``None``: the platform's user data dir.
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise SettingsError(
                f"network: {self.network!r} is not one of {', '.join(NETWORKS)}"
            )
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, int):
            raise SettingsError(f"timeout: expected whole seconds, got {self.timeout!r}")
        if self.timeout < 1:
            raise SettingsError(f"timeout: must be at least 1 second, got {self.timeout}")
        if self.market is not None and (not self.market.strip() or ":" in self.market):
            raise SettingsError(f"market: {self.market!r} is not a market slug or address")
        for name in ("devnode_url", "rpc_url"):
            value = getattr(self, name)
            if value is not None and urlsplit(value).scheme not in ("http", "https"):
                raise SettingsError(f"{name}: expected an http(s) URL, got {mask_url(value)!r}")
        template = self.node_url_template
        if template is not None:
            if "{node}" not in template or urlsplit(template).scheme not in ("http", "https"):
                raise SettingsError(
                    "node_url_template: expected an http(s) URL containing {node}, "
                    f"got {template!r}"
                )
            try:
                template.format(node="x")
            except (KeyError, IndexError, ValueError):
                raise SettingsError(
                    f"node_url_template: only {{node}} may be substituted in {template!r}"
                ) from None

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``env`` (default ``os.environ``), then ``overrides``.

        Overrides that are ``None`` are ignored (an unset trait or option does not clear a
        value from the environment). ``timeout`` may be seconds (int) or a duration string
        (``"90s"``, ``"30m"``; a bare number in a string means minutes, as in the CLI).
        """
        environ = os.environ if env is None else env
        values: dict[str, Any] = {}
        for var, name in _ENV_FIELDS.items():
            raw = environ.get(var, "").strip()
            if raw:
                values[name] = _timeout(raw, var) if name == "timeout" else raw
        wallet = environ.get("NOSANA_WALLET", "").strip()
        if wallet:
            values["wallet"] = (
                str(Path(wallet).expanduser()) if _looks_like_path(wallet) else WALLET_FROM_ENV
            )
        values["pinata_jwt_set"] = find_pinata_jwt(environ) is not None
        if "network" in values:
            values["network"] = values["network"].lower()
        return cls._build(values, overrides)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with ``overrides`` applied (``None`` values are ignored)."""
        return type(self)._build({f.name: getattr(self, f.name) for f in fields(self)}, overrides)

    @classmethod
    def _build(cls, values: dict[str, Any], overrides: Mapping[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        for name, value in overrides.items():
            if name not in known:
                raise SettingsError(f"unknown setting {name!r} (known: {', '.join(sorted(known))})")
            if value is None:
                continue
            if name == "timeout" and isinstance(value, float):
                value = round(value)  # numbers are seconds here; strings are durations
            elif name == "timeout" and isinstance(value, str):
                value = _timeout(value, "timeout")
            if name == "wallet" and value != WALLET_FROM_ENV:
                value = str(Path(value).expanduser())
            if name == "network" and isinstance(value, str):
                value = value.lower()
            values[name] = value
        return cls(**values)

    # ------------------------------------------------------------------ views

    def describe(self) -> dict[str, object]:
        """Every setting as it may be shown to the user (URLs masked, credentials as set/unset)."""
        return {
            "network": self.network,
            "market": self.market,
            "timeout": self.timeout,
            "devnode_url": self.devnode_url,
            "node_url_template": self.node_url_template,
            "wallet": self.wallet or "(default: ~/.nosana/nosana_key.json)",
            "rpc_url": mask_url(self.rpc_url),
            "pinata_jwt": "set" if self.pinata_jwt_set else "unset",
            "data_dir": self.data_dir,
        }

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if v is not None)
        return f"Settings({shown})"

    def replace(self, **changes: Any) -> Settings:
        """``dataclasses.replace`` (validated again)."""
        return dataclass_replace(self, **changes)


def _timeout(value: object, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SettingsError(f"{source}: not a duration: {value!r}")
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise SettingsError(f"{source}: {exc}") from None


# --------------------------------------------------------------------------- credentials

#: Environment variables that may hold the Pinata JWT, in the order they are read.
JWT_ENV_VARS = ("NOSANA_PINATA_JWT", "PINATA_JWT")


def credentials_file(env: Mapping[str, str] | None = None) -> Path:
    """Where the user's credentials file lives (it need not exist)."""
    environ = os.environ if env is None else env
    override = environ.get("NOSANA_CREDENTIALS_FILE", "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("nosana_magic")) / "credentials.json"


def find_pinata_jwt(env: Mapping[str, str] | None = None) -> str | None:
    """The Pinata JWT from the environment or the credentials file, or ``None``."""
    environ = os.environ if env is None else env
    for name in JWT_ENV_VARS:
        value = environ.get(name, "").strip()
        if value:
            return value
    path = credentials_file(environ)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # Say where, never what was read.
        log.warning("credentials file %s is not readable JSON; ignored", path)
        return None
    found = data.get("pinata_jwt") if isinstance(data, dict) else None
    return found.strip() if isinstance(found, str) and found.strip() else None
