"""Where the client's settings come from: the only module that reads the environment.

Every setting has one entry in :data:`SETTINGS` (its environment variable and what leaving it
unset means) and one field in :class:`Settings`. A ``Settings`` records, beside each value,
where it came from (a flag, a ``%config`` trait, code, an environment variable, the
credentials file, or the default), so ``%nosana config`` renders :meth:`Settings.explain`
and nothing else.

Layers, highest first: overrides (each layer labelled by its caller: a flag on the magic line,
``%config NosanaMagics.<name>``, an argument in code), then the environment, then defaults.

Credentials are never held here. A setting that names a credential says *where* it is
(``wallet`` is a key file path, or ``"env:NOSANA_WALLET"`` when that variable holds a base58
secret), or only *whether* it is set (``pinata_jwt_set``, ``api_key_set``). So a ``Settings``
can be printed (``%nosana config``), logged or put in an error message without leaking
anything. The values themselves are read at the moment they are used
(:meth:`Settings.read_wallet_secret`, :meth:`Settings.read_pinata_jwt`,
:meth:`Settings.read_api_key`), from the same place the settings were read from.

:func:`reference_env` is the environment ``${env:NAME}`` references resolve against.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from .errors import SettingsError
from .protocol import DurationError, parse_duration

log = logging.getLogger(__name__)

__all__ = [
    "API_KEY_ENV",
    "COMMITMENTS",
    "DEFAULT_TIMEOUT_S",
    "JWT_ENV_VARS",
    "NETWORKS",
    "PAYMENTS",
    "SETTINGS",
    "WALLET_FROM_ENV",
    "NetworkName",
    "Settings",
    "SettingsError",
    "credentials_file",
    "find_api_key",
    "find_pinata_jwt",
    "looks_like_path",
    "mask_url",
    "reference_env",
    "service_environment",
]

NetworkName = Literal["local", "devnet", "mainnet"]
NETWORKS: tuple[NetworkName, ...] = ("local", "devnet", "mainnet")
#: How final a Solana transaction must be before it counts (weakest first).
COMMITMENTS = ("processed", "confirmed", "finalized")

#: A job's default timeout: 30 minutes.
DEFAULT_TIMEOUT_S = 1800

#: The value of ``Settings.wallet`` when ``NOSANA_WALLET`` holds a base58 secret rather than a
#: path: a reference to the variable, never its content.
WALLET_FROM_ENV = "env:NOSANA_WALLET"

#: Environment variables that may hold the Pinata JWT, in the order they are read.
JWT_ENV_VARS = ("NOSANA_PINATA_JWT", "PINATA_JWT")
#: The environment variable that may hold the Nosana API key (credits; docs/protocol.md §24).
API_KEY_ENV = "NOSANA_API_KEY"
#: The key of the Pinata JWT and of the API key in the credentials file.
_JWT_FIELD, _API_KEY_FIELD = "pinata_jwt", "nosana_api_key"
#: How a job is paid: a wallet's NOS and SOL, or an API key's credits.
PAYMENTS = ("credits", "wallet")

#: The source of a value nobody set.
DEFAULT = "default"
#: Settings that are found, not chosen: no override sets them.
_FOUND = ("pinata_jwt_set", "api_key_set", "credentials_file")


@dataclass(frozen=True)
class _Spec:
    #: The environment variable the setting is read from (``None``: not from the environment).
    env: str | None
    #: What leaving the setting unset means, as ``%nosana config`` says it.
    unset: str = ""


#: Every setting: where the environment holds it, and what unset means. One entry per field
#: of :class:`Settings`, in the order ``%nosana config`` shows them.
SETTINGS: Mapping[str, _Spec] = {
    "network": _Spec("NOSANA_NETWORK"),
    "market": _Spec("NOSANA_MARKET", "the first local market (required on devnet/mainnet)"),
    "timeout": _Spec("NOSANA_TIMEOUT"),
    "devnode_url": _Spec("NOSANA_DEVNODE_URL", "the local network service"),
    "node_url_template": _Spec("NOSANA_NODE_URL_TEMPLATE", "the network's own"),
    "wallet": _Spec("NOSANA_WALLET", "unset (the Nosana CLI key file if any)"),
    "pay": _Spec("NOSANA_PAY", "credits when an API key is set, else the wallet"),
    "api_key_set": _Spec(None),
    "api_url": _Spec("NOSANA_API_URL", "Nosana's API"),
    "signing_url": _Spec("NOSANA_SIGNING_URL", "Nosana's signing service"),
    "rpc_url": _Spec("NOSANA_RPC_URL", "the network's public RPC"),
    "ws_url": _Spec("NOSANA_WS_URL", "derived from the RPC URL"),
    "commitment": _Spec("NOSANA_COMMITMENT"),
    "priority_fee": _Spec("NOSANA_PRIORITY_FEE", "auto (the median of recent fees)"),
    "node_domain": _Spec("NOSANA_NODE_DOMAIN", "the network's own"),
    "markets_api": _Spec("NOSANA_MARKETS_API", "Nosana's API"),
    "pinata_api_url": _Spec("NOSANA_PINATA_API_URL", "Pinata's API"),
    "ipfs_gateway": _Spec("NOSANA_IPFS_GATEWAY", "Nosana's gateway"),
    "pinata_jwt_set": _Spec(None),
    "credentials_file": _Spec("NOSANA_CREDENTIALS_FILE"),
    "data_dir": _Spec("NOSANA_DATA_DIR", "the platform's user data dir"),
    "local_idle": _Spec("NOSANA_LOCAL_IDLE"),
}

#: How long the local network service may sit idle before it stops itself: one hour.
DEFAULT_LOCAL_IDLE_S = 3600

#: What the local network service keeps of the environment of the process that starts it:
#: what finds programs, files and the locale. It is shared by every kernel of the user and
#: outlives the one that started it, so none of that kernel's secrets go with it.
SERVICE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ",
               "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def reference_env() -> Mapping[str, str]:
    """The environment ``${env:NAME}`` references resolve against: the process's, read live
    (a variable set in a notebook cell counts from then on)."""
    return os.environ


def service_environment() -> dict[str, str]:
    """The environment the local network service starts with: :data:`SERVICE_ENV` and the
    locale (``LC_*``) of this process, nothing else."""
    return {name: value for name, value in os.environ.items()
            if name in SERVICE_ENV or name.startswith("LC_")}


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


def looks_like_path(value: str) -> bool:
    """Whether a wallet reference is a key file path (else it is a base58 secret key)."""
    return (
        os.sep in value
        or value.startswith(("~", "."))
        or value.endswith(".json")
        or Path(value).expanduser().is_file()
    )


@dataclass(frozen=True)
class Settings:
    """The client's settings. Immutable; make variants with :meth:`with_overrides`."""

    #: ``local`` (the local network service, the default), ``devnet`` or ``mainnet``.
    network: NetworkName = "local"
    #: Market slug or address. ``None``: the first local market; required elsewhere.
    market: str | None = None
    #: Job timeout in seconds.
    timeout: int = DEFAULT_TIMEOUT_S
    #: A running devnode to use instead of the local network service (``http://127.0.0.1:P``).
    devnode_url: str | None = None
    #: Node API base URL with ``{node}`` (default: the network's own).
    node_url_template: str | None = None
    #: Key file path, or :data:`WALLET_FROM_ENV`; ``None``: the Nosana CLI's key file.
    wallet: str | None = None
    #: ``credits`` or ``wallet``; ``None``: credits when an API key is set (:attr:`pays_with`).
    pay: str | None = None
    #: Whether a Nosana API key is configured (``NOSANA_API_KEY`` or the credentials file);
    #: the key itself is never kept here.
    api_key_set: bool = False
    #: Nosana's API, where credit jobs are listed (default: the network's own).
    api_url: str | None = None
    #: Nosana's signing service, which signs for a credit job's host (default: the network's).
    signing_url: str | None = None
    #: Solana RPC endpoint (shown masked: it may carry an API key).
    rpc_url: str | None = None
    #: Solana WebSocket endpoint (default: beside the RPC endpoint).
    ws_url: str | None = None
    #: How final a transaction must be: ``processed``, ``confirmed`` or ``finalized``.
    commitment: str = "confirmed"
    #: Priority fee in micro-lamports per compute unit; ``None``: chosen from recent fees.
    priority_fee: int | None = None
    #: The domain hosts' node APIs and services live under (default: the network's own).
    node_domain: str | None = None
    #: Where known markets are refreshed from; ``"off"``: only the built-in list.
    markets_api: str | None = None
    #: Pinata's API, where placeholders are pinned (default: Pinata's own).
    pinata_api_url: str | None = None
    #: The IPFS gateway documents are read through (default: Nosana's).
    ipfs_gateway: str | None = None
    #: Whether a Pinata JWT is configured (``NOSANA_PINATA_JWT``, ``PINATA_JWT`` or the
    #: credentials file); the token itself is never kept here.
    pinata_jwt_set: bool = False
    #: The credentials file (``None``: the platform's user config dir).
    credentials_file: str | None = None
    #: Where local state lives (the local wallet, the local network service's runtime file);
    #: ``None``: the platform's user data dir.
    data_dir: str | None = None
    #: Seconds the local network service may go without a job or a request before it stops
    #: itself (``0``: never). Read when the service starts.
    local_idle: int = DEFAULT_LOCAL_IDLE_S

    # Where each value came from (a name missing here is the default), and the mapping the
    # environment was read from (``None``: the process's). Neither is a setting.
    _sources: Mapping[str, str] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    _environ: Mapping[str, str] | None = field(
        default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise SettingsError(
                f"network: {self.network!r} is not one of {', '.join(NETWORKS)}"
            )
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, int):
            raise SettingsError(f"timeout: expected whole seconds, got {self.timeout!r}")
        if self.timeout < 1:
            raise SettingsError(f"timeout: must be at least 1 second, got {self.timeout}")
        idle = self.local_idle
        if isinstance(idle, bool) or not isinstance(idle, int) or idle < 0:
            raise SettingsError(f"local_idle: expected whole seconds >= 0, got {idle!r}")
        if self.market is not None and (not self.market.strip() or ":" in self.market):
            raise SettingsError(f"market: {self.market!r} is not a market slug or address")
        if self.pay is not None and self.pay not in PAYMENTS:
            raise SettingsError(f"pay: {self.pay!r} is not one of {', '.join(PAYMENTS)}")
        for name in ("devnode_url", "rpc_url", "pinata_api_url", "ipfs_gateway", "api_url",
                     "signing_url"):
            value = getattr(self, name)
            if value is not None and urlsplit(value).scheme not in ("http", "https"):
                raise SettingsError(f"{name}: expected an http(s) URL, got {mask_url(value)!r}")
        if self.ws_url is not None and urlsplit(self.ws_url).scheme not in ("ws", "wss"):
            raise SettingsError(f"ws_url: expected a ws(s) URL, got {mask_url(self.ws_url)!r}")
        if self.markets_api not in (None, "off") and urlsplit(
                self.markets_api).scheme not in ("http", "https"):
            raise SettingsError(
                f"markets_api: expected an http(s) URL or off, got {self.markets_api!r}")
        if self.commitment not in COMMITMENTS:
            raise SettingsError(
                f"commitment: {self.commitment!r} is not one of {', '.join(COMMITMENTS)}")
        fee = self.priority_fee
        if fee is not None and (isinstance(fee, bool) or not isinstance(fee, int) or fee < 0):
            raise SettingsError(
                f"priority_fee: expected whole micro-lamports >= 0 or auto, got {fee!r}")
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
    def from_env(cls, env: Mapping[str, str] | None = None, *, source: str = "code",
                 **overrides: Any) -> Settings:
        """Settings from ``env`` (default: the process environment), then ``overrides``.

        Overrides that are ``None`` are ignored (an unset trait or option does not clear a
        value from the environment). ``timeout`` may be seconds (int) or a duration string
        (``"90s"``, ``"30m"``; a bare number in a string means minutes, as in the CLI).
        ``source`` says where the overrides come from (``{name}`` is replaced by the
        setting's name), as :meth:`explain` shows it.
        """
        environ = os.environ if env is None else env
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, spec in SETTINGS.items():
            raw = environ.get(spec.env, "").strip() if spec.env else ""
            if raw:
                values[name] = _from_text(name, raw, spec.env or name, env=True)
                sources[name] = f"env {spec.env}"
        for name, where in (("pinata_jwt_set", _pinata_jwt_source(environ)),
                            ("api_key_set", _api_key_source(environ))):
            values[name] = where is not None
            if where is not None:
                sources[name] = where
        built = cls._build(values, sources, overrides, source)
        object.__setattr__(built, "_environ", env)
        return built

    def with_overrides(self, *, source: str = "code", **overrides: Any) -> Settings:
        """A copy with ``overrides`` applied (``None`` values are ignored); ``source`` as in
        :meth:`from_env`."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        built = type(self)._build(values, dict(self._sources), overrides, source)
        object.__setattr__(built, "_environ", self._environ)
        return built

    @classmethod
    def _build(cls, values: dict[str, Any], sources: dict[str, str],
               overrides: Mapping[str, Any], source: str) -> Settings:
        for name, value in overrides.items():
            if name not in SETTINGS or name in _FOUND:
                known = ", ".join(sorted(n for n in SETTINGS if n not in _FOUND))
                raise SettingsError(f"unknown setting {name!r} (known: {known})")
            if value is None:
                continue
            if isinstance(value, str):
                value = _from_text(name, value, name, env=False)
            elif name in ("timeout", "local_idle") and isinstance(value, float):
                value = round(value)  # numbers are seconds here; strings are durations
            values[name] = value
            sources[name] = source.format(name=name)
        built = cls(**values)
        object.__setattr__(built, "_sources", sources)
        return built

    # ------------------------------------------------------------------ views

    def source(self, name: str) -> str:
        """Where the value of setting ``name`` came from (``env NOSANA_MARKET``, ``default``…)."""
        if name not in SETTINGS:
            raise SettingsError(f"unknown setting {name!r}")
        return self._sources.get(name, DEFAULT)

    def describe(self) -> dict[str, object]:
        """Every setting as it may be shown to the user (URLs masked, credentials as set/unset);
        ``None`` where nothing is set."""
        shown: dict[str, object] = {}
        for name in SETTINGS:
            value = getattr(self, name)
            if name in ("rpc_url", "ws_url"):
                value = mask_url(value)
            elif name in ("pinata_jwt_set", "api_key_set"):
                name, value = name.removesuffix("_set"), "set" if value else "unset"
            elif name == "wallet" and value == WALLET_FROM_ENV:
                value = "set"  # a secret in the environment: only that it is there
            elif name == "credentials_file" and value is None:
                value = str(credentials_file({}))
            elif name == "priority_fee" and value is None and self.source(name) != DEFAULT:
                value = "auto"
            shown[name] = value
        return shown

    def explain(self) -> list[tuple[str, str, str]]:
        """``(setting, value, source)`` for every setting, as ``%nosana config`` shows them."""
        rows = []
        for (name, value), spec_name in zip(self.describe().items(), SETTINGS, strict=True):
            text = SETTINGS[spec_name].unset if value is None else str(value)
            rows.append((name, text, self.source(spec_name)))
        return rows

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if v is not None)
        return f"Settings({shown})"

    # ------------------------------------------------------------------ credentials

    def read_wallet_secret(self) -> str:
        """The base58 secret ``NOSANA_WALLET`` holds, read now (never kept); only when
        :attr:`wallet` is :data:`WALLET_FROM_ENV`."""
        if self.wallet != WALLET_FROM_ENV:
            raise SettingsError("wallet: not a secret in NOSANA_WALLET")
        environ = os.environ if self._environ is None else self._environ
        return environ.get("NOSANA_WALLET", "").strip()

    def read_pinata_jwt(self) -> str | None:
        """The Pinata JWT, read now (never kept) from where :attr:`pinata_jwt_set` was found."""
        return find_pinata_jwt(os.environ if self._environ is None else self._environ)

    def read_api_key(self) -> str | None:
        """The Nosana API key, read now (never kept) from where :attr:`api_key_set` was found."""
        return find_api_key(os.environ if self._environ is None else self._environ)

    @property
    def pays_with(self) -> str:
        """How a job is paid: :attr:`pay`, else ``credits`` when an API key is set, else
        ``wallet``."""
        return self.pay or ("credits" if self.api_key_set else "wallet")


def _from_text(name: str, raw: str, where: str, *, env: bool) -> Any:
    """The value of setting ``name`` written as ``raw`` (``where`` names it in errors)."""
    text = raw.strip()
    if name == "timeout":
        return _timeout(text, where)
    if name == "local_idle":
        return 0 if text.lower() in ("0", "off", "never") else _timeout(text, where)
    if name in ("network", "commitment", "pay"):
        return text.lower()
    if name == "priority_fee":
        if text.lower() == "auto":
            return None
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"{where}: expected a whole number or auto, got {text!r}") from None
    if name == "wallet":
        # Decided once, here: a path, or (from the environment only) a base58 secret.
        if env and not looks_like_path(text):
            return WALLET_FROM_ENV
        return text if text == WALLET_FROM_ENV else str(Path(text).expanduser())
    if name in ("credentials_file", "data_dir"):
        return str(Path(text).expanduser())
    if name == "markets_api" and text.lower() == "off":
        return "off"
    return raw


def _timeout(value: object, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SettingsError(f"{source}: not a duration: {value!r}")
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise SettingsError(f"{source}: {exc}") from None


# --------------------------------------------------------------------------- credentials


def credentials_file(env: Mapping[str, str] | None = None) -> Path:
    """Where the user's credentials file lives (it need not exist)."""
    environ = os.environ if env is None else env
    override = environ.get("NOSANA_CREDENTIALS_FILE", "").strip()
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("nosana_magic")) / "credentials.json"


def _read_credentials_file(path: Path, key: str = _JWT_FIELD) -> str | None:
    """The credential ``key`` of the credentials file at ``path``, or ``None``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # Say where, never what was read.
        log.warning("credentials file %s is not readable JSON; ignored", path)
        return None
    found = data.get(key) if isinstance(data, dict) else None
    return found.strip() if isinstance(found, str) and found.strip() else None


def _pinata_jwt_source(environ: Mapping[str, str]) -> str | None:
    """Where the Pinata JWT is (``env NOSANA_PINATA_JWT``, ``credentials file …``), or None."""
    for name in JWT_ENV_VARS:
        if environ.get(name, "").strip():
            return f"env {name}"
    path = credentials_file(environ)
    return f"credentials file {path}" if _read_credentials_file(path) is not None else None


def find_pinata_jwt(env: Mapping[str, str] | None = None) -> str | None:
    """The Pinata JWT from the environment or the credentials file, or ``None``."""
    environ = os.environ if env is None else env
    for name in JWT_ENV_VARS:
        value = environ.get(name, "").strip()
        if value:
            return value
    return _read_credentials_file(credentials_file(environ))


def _api_key_source(environ: Mapping[str, str]) -> str | None:
    """Where the Nosana API key is (``env NOSANA_API_KEY``, ``credentials file …``), or None."""
    if environ.get(API_KEY_ENV, "").strip():
        return f"env {API_KEY_ENV}"
    path = credentials_file(environ)
    found = _read_credentials_file(path, _API_KEY_FIELD)
    return f"credentials file {path}" if found is not None else None


def find_api_key(env: Mapping[str, str] | None = None) -> str | None:
    """The Nosana API key from ``NOSANA_API_KEY`` or the credentials file, or ``None``."""
    environ = os.environ if env is None else env
    value = environ.get(API_KEY_ENV, "").strip()
    if value:
        return value
    return _read_credentials_file(credentials_file(environ), _API_KEY_FIELD)
