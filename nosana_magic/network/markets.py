"""Nosana GPU markets: slug <-> address, and what a job costs there.

The mainnet table is the snapshot of Nosana's docs (``nosana market list``); the live list comes
from the dashboard backend (``GET {api}/api/markets/``) when it answers within a few seconds,
and silently falls back to the table when it does not. Devnet has no known table: its markets
are given by address (or found through the devnet API when reachable).

The cost arithmetic follows the jobs program (docs/protocol.md §21):
the deposit escrowed at listing is ``job_price * timeout`` NOS base units (1e-6 NOS), plus the
network fee when the market charges one; the SOL side is the rent of the job account (240 B)
and, in a market with idle hosts, of the run account (120 B), both refunded when the job ends,
plus 5 000 lamports per signature and the priority fee.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from solders.pubkey import Pubkey

from ..errors import UnknownMarketError
from ..protocol import format_duration
from ..transport import http_client_for

__all__ = [
    "DEFAULT_MARKETS_API",
    "DEFAULT_NETWORK_FEE_PCT",
    "DEVNET_MARKETS",
    "LAMPORTS_PER_SIGNATURE",
    "LAMPORTS_PER_SOL",
    "MAINNET_MARKETS",
    "CreditEstimate",
    "Estimate",
    "MarketDirectory",
    "MarketRef",
    "UnknownMarketError",
    "check_market_ref",
    "close_slugs",
    "estimate",
    "format_nos",
    "format_sol",
    "format_usd",
    "is_address",
    "nos_deposit_units",
    "nos_fee_units",
    "priority_fee_lamports",
    "rent_exempt_lamports",
]

log = logging.getLogger(__name__)

#: Mainnet market slug -> address (docs ``inference/markets.md``; may be stale, refreshed from
#: the markets API when it is reachable).
MAINNET_MARKETS: Mapping[str, str] = {
    "nvidia-3060": "7AtiXMSH6R1jjBxrcYjehCkkSF7zvYWte63gwEDBcGHq",
    "nvidia-3070": "RXP7JK8MTY4uPJng4UjC9ZJdDDSG6wGr8pvVf3mwgXF",
    "nvidia-3080": "7RepDm4Xt9k6qV5oiSHvi8oBoty4Q2tfBGnCYjFLj6vA",
    "nvidia-3090": "CA5pMpqkYFKtme7K31pNB1s62X2SdhEv1nN9RdxKCpuQ",
    "nvidia-4060": "47LQHZwT7gfVoBDYnRYhsYv6vKk8a1oW3Y3SdHAp1gTr",
    "nvidia-4070": "EzuHhkrhmV98HWzREsgLenKj2iHdJgrKmzfL8psP8Aso",
    "nvidia-4080": "77wdaAuYVxBW5u2QiqddkAzoBZ5cuKxH9ZCbx5HfFUb2",
    "nvidia-4090": "97G9NnvBDQ2WpKu6fasoMsAKmfj63C9rhysJnkeWodAf",
    "nvidia-a5000": "4uBye3vJ1FAYukDdrvqQ36MZZZxqW3o8utWu8fyomRuN",
    "nvidia-6000-a6000": "EjryZ6XEthz3z7nnLfjXBYafyn7VyHgChfbfM47LfAao",
    "nvidia-a40": "BLqSzPzcXMX5gseNXE4Ma45f31Eo6tNFVYoRmPG7kxP2",
    "nvidia-a100": "GLJHzqRN9fKGBsvsFzmGnaQGknUtLN1dqaFR8n3YdM22",
    "nvidia-a100-40gb": "F3aGGSMb73XHbJbDXVbcXo7iYM9fyevvAZGQfwgrnWtB",
    "nvidia-h100": "Crop49jpc7prcgAcS82WbWyGHwbN5GgDym3uFbxxCTZg",
    "nvidia-4000-a4000": "7fnuvPYzfd961iRDPRgMSKLrUf1QjTGnn7viu3P12Zuc",
    "nvidia-laptop": "3EWVbggirRpDY2npzPDA7k21yzwz5wgwGxVVv6zCnRpa",
    "nvidia-8x-a5000": "3XGECQon74HQwPJuZjgCwqdQ5Nt3wktZ9fcavcDN9qB2",
}
#: No devnet markets are published; give devnet markets by address.
DEVNET_MARKETS: Mapping[str, str] = {}

#: The dashboard backend serving ``/api/markets/`` per cluster.
DEFAULT_MARKETS_API: Mapping[str, str] = {
    "mainnet": "https://dashboard.k8s.prd.nos.ci",
    "devnet": "https://dashboard.k8s.dev.nos.ci",
}

#: The network fee assumed when the markets API cannot be asked: the last non-zero value the
#: program used (10 %, ``JOB_FEE_FRACTION = 10``). Newer program builds charge 0 %; assuming
#: 10 % only makes the estimate and the balance check err on the safe side.
DEFAULT_NETWORK_FEE_PCT = 10.0

LAMPORTS_PER_SOL = 1_000_000_000
LAMPORTS_PER_SIGNATURE = 5_000
NOS_BASE_UNITS = 1_000_000
#: Compute units the runtime grants each instruction when none is requested.
DEFAULT_COMPUTE_UNITS_PER_INSTRUCTION = 200_000

# Rent: (128 bytes of account overhead + data) * lamports per byte-year * 2 years.
_ACCOUNT_STORAGE_OVERHEAD = 128
_LAMPORTS_PER_BYTE_YEAR = 3_480
_EXEMPTION_THRESHOLD_YEARS = 2


#: What can name a market: a slug (``nvidia-3090``) or a base58 address, both of these
#: characters. Anything else (``local-cpu/../local-gpu``) would become another URL path.
_MARKET_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_market_ref(slug_or_address: str) -> str:
    """``slug_or_address`` without surrounding spaces, if it can name a market; else
    :class:`UnknownMarketError` in one line."""
    text = slug_or_address.strip()
    if not text:
        raise UnknownMarketError("no market given: pass a market slug or address")
    if not _MARKET_REF.fullmatch(text):
        raise UnknownMarketError(
            f"{text[:80]!r} is not a market name: give a market's slug (letters, digits, '-' "
            "and '_', such as nvidia-3090) or its address")
    return text


def is_address(text: str) -> bool:
    """True when ``text`` is a base58 Solana address (32 bytes)."""
    try:
        Pubkey.from_string(text.strip())
    except ValueError:
        return False
    return True


def close_slugs(wanted: str, slugs: Iterable[str], n: int = 3) -> list[str]:
    """Slugs that look like ``wanted``: fuzzy matches first, then those containing it."""
    known = sorted(set(slugs))
    key = wanted.strip().lower()
    found = difflib.get_close_matches(key, known, n=n, cutoff=0.6)
    for slug in known:
        if len(found) >= n:
            break
        if key and (key in slug or slug in key) and slug not in found:
            found.append(slug)
    return found


# --------------------------------------------------------------------------- arithmetic


def rent_exempt_lamports(data_len: int) -> int:
    """Lamports that make an account of ``data_len`` bytes rent-exempt (Solana's default rent)."""
    if data_len < 0:
        raise ValueError("data_len must be >= 0")
    return (
        (_ACCOUNT_STORAGE_OVERHEAD + data_len) * _LAMPORTS_PER_BYTE_YEAR
        * _EXEMPTION_THRESHOLD_YEARS
    )


def nos_deposit_units(price_per_second: int, timeout_s: int) -> int:
    """NOS base units escrowed at listing: ``job_price * timeout`` (the program's deposit)."""
    return price_per_second * timeout_s


def nos_fee_units(price_per_second: int, timeout_s: int, fee_pct: float) -> int:
    """The network fee in NOS base units (rounded up, so an estimate never falls short)."""
    return math.ceil(nos_deposit_units(price_per_second, timeout_s) * fee_pct / 100)


def priority_fee_lamports(micro_lamports_per_cu: int, compute_units: int) -> int:
    """What a compute-unit price costs: ``price * units / 1e6`` lamports, rounded up."""
    return math.ceil(micro_lamports_per_cu * compute_units / 1_000_000)


def format_nos(units: int | float) -> str:
    """NOS base units as text: ``0.828 NOS``."""
    return f"{units / NOS_BASE_UNITS:.6f}".rstrip("0").rstrip(".") + " NOS"


def format_sol(lamports: int | float) -> str:
    """Lamports as SOL text with about three significant digits: ``0.00429 SOL``."""
    sol = lamports / LAMPORTS_PER_SOL
    if sol == 0:
        return "0 SOL"
    decimals = min(9, max(4, 2 - math.floor(math.log10(abs(sol)))))
    return f"{sol:.{decimals}f}".rstrip("0").rstrip(".") + " SOL"


def format_usd(usd: float) -> str:
    """US dollars with two significant digits past the cent when under a dollar: ``$9.78``,
    ``$0.22``, ``$0.0092``, ``$0.000015`` (credits pay for GPU seconds)."""
    if usd == 0:
        return "$0.00"
    decimals = min(6, max(2, 1 - math.floor(math.log10(abs(usd)))))
    return f"{'-' if usd < 0 else ''}${abs(usd):,.{decimals}f}"


@dataclass(frozen=True)
class CreditEstimate:
    """What a credit job can cost, against the credits available, shown before listing."""

    network: str
    market: str
    #: USD per hour, the network fee included; ``None`` when the market does not say.
    usd_per_hour: float | None
    timeout_s: int
    #: The API key's credits that new jobs can use (USD).
    available: float
    #: How many such jobs (a sweep's): one statement and one question for them all.
    jobs: int = 1

    @property
    def each(self) -> float | None:
        """The most one job can cost (reserved at listing; what it does not use comes back)."""
        return None if self.usd_per_hour is None else self.usd_per_hour * self.timeout_s / 3600

    @property
    def cost(self) -> float | None:
        """The most all the jobs can cost together."""
        each = self.each
        return None if each is None else each * self.jobs

    @property
    def covered(self) -> bool:
        cost = self.cost
        return cost is None or cost <= self.available

    def describe(self) -> str:
        """One line: ``mainnet: market nvidia-4090 at $0.44/h in credits, timeout 30m → at
        most $0.22; credits: $9.78 available``."""
        cost, per_hour = self.cost, self.usd_per_hour
        price = ("at an unknown credit price (the market does not say)" if per_hour is None
                 else f"at {format_usd(per_hour)}/h in credits")
        each, most = self.each, ""
        if cost is not None and each is not None:
            most = (f" → at most {format_usd(cost)}" if self.jobs == 1 else
                    f" → {self.jobs} jobs × at most {format_usd(each)} = at most "
                    f"{format_usd(cost)}")
        return (f"{self.network}: market {self.market} {price}, timeout "
                f"{format_duration(self.timeout_s)}{most}; credits: "
                f"{format_usd(self.available)} available")

    def shortfall(self) -> str:
        """Why the job is not listed when the credits do not cover it."""
        what = "this job" if self.jobs == 1 else f"these {self.jobs} jobs"
        return (f"not listed: {what} can cost {format_usd(self.cost or 0)} "
                f"({format_duration(self.timeout_s)} in {self.market}), and the API key has "
                f"{format_usd(self.available)} of credits available; add credits on the "
                "Nosana dashboard or shorten --timeout")


@dataclass(frozen=True)
class Estimate:
    """The most a job can cost, shown before anything is signed.

    NOS is the deposit (``price * timeout``) plus the network fee; whatever the job does not
    use is refunded when it ends. SOL is rent (refunded when the accounts close) plus
    transaction fees (spent).
    """

    #: Market price, NOS base units per second.
    price_per_second: int
    timeout_s: int
    network_fee_pct: float
    #: NOS base units: escrowed deposit and network fee.
    nos_deposit: int
    nos_fee: int
    #: Lamports: job account rent, run account rent (0 when the poster does not create it),
    #: signature fees and the priority fee.
    rent_job: int
    rent_run: int
    signature_fees: int
    priority_fee: int

    @property
    def nos_units(self) -> int:
        return self.nos_deposit + self.nos_fee

    @property
    def nos(self) -> float:
        """The most the job costs, in NOS."""
        return self.nos_units / NOS_BASE_UNITS

    @property
    def price_per_hour(self) -> float:
        """NOS per hour of GPU time (without the fee)."""
        return self.price_per_second * 3600 / NOS_BASE_UNITS

    @property
    def rent(self) -> int:
        return self.rent_job + self.rent_run

    @property
    def fees(self) -> int:
        return self.signature_fees + self.priority_fee

    @property
    def lamports(self) -> int:
        return self.rent + self.fees

    @property
    def sol(self) -> float:
        """SOL the listing takes from the wallet (rent comes back later)."""
        return self.lamports / LAMPORTS_PER_SOL

    def describe(self) -> str:
        """One line for the confirmation prompt."""
        fee = f" + {self.network_fee_pct:g}% network fee" if self.network_fee_pct else ""
        per_hour = format_nos(self.price_per_second * 3600)
        return (
            f"{per_hour}/h × {format_duration(self.timeout_s)}{fee}: "
            f"at most {format_nos(self.nos_units)} (unused time is refunded); "
            f"about {format_sol(self.lamports)} "
            f"(rent {format_sol(self.rent)}, refunded; fees {format_sol(self.fees)})"
        )


def estimate(
    price_per_second: int,
    timeout_s: int,
    *,
    network_fee_pct: float = 0.0,
    creates_run_account: bool = True,
    signatures: int = 3,
    priority_micro_lamports: int = 0,
    compute_units: int = DEFAULT_COMPUTE_UNITS_PER_INSTRUCTION,
    rent_job: int | None = None,
    rent_run: int | None = None,
) -> Estimate:
    """The cost of listing a job: ``nos = price * timeout / 1e6 * (1 + fee/100)`` and SOL.

    ``signatures``: the wallet (payer and authority), the job and the run keypairs.
    ``rent_job``/``rent_run`` default to Solana's rent for 240 and 120 bytes.
    """
    if timeout_s < 0 or price_per_second < 0:
        raise ValueError("price and timeout must be >= 0")
    from ..chain import JOB_ACCOUNT_SPACE, RUN_ACCOUNT_SPACE

    return Estimate(
        price_per_second=price_per_second,
        timeout_s=timeout_s,
        network_fee_pct=network_fee_pct,
        nos_deposit=nos_deposit_units(price_per_second, timeout_s),
        nos_fee=nos_fee_units(price_per_second, timeout_s, network_fee_pct),
        rent_job=rent_exempt_lamports(JOB_ACCOUNT_SPACE) if rent_job is None else rent_job,
        rent_run=(
            0 if not creates_run_account
            else rent_exempt_lamports(RUN_ACCOUNT_SPACE) if rent_run is None else rent_run
        ),
        signature_fees=LAMPORTS_PER_SIGNATURE * signatures,
        priority_fee=priority_fee_lamports(priority_micro_lamports, compute_units),
    )


# --------------------------------------------------------------------------- the directory


@dataclass(frozen=True)
class MarketRef:
    """What the directory knows of a market without asking the chain."""

    slug: str
    address: str
    name: str = ""
    #: From the markets API; ``None`` when unknown.
    network_fee_pct: float | None = None


def _parse_markets(payload: Any) -> list[MarketRef]:
    """Entries of a ``/api/markets/`` answer; anything unexpected is skipped, not fatal."""
    items = payload
    if isinstance(payload, Mapping):
        for key in ("markets", "data", "results", "items"):
            if isinstance(payload.get(key), list):
                items = payload[key]
                break
    if not isinstance(items, list):
        return []
    found: list[MarketRef] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        address, slug = item.get("address"), item.get("slug")
        if not isinstance(address, str) or not is_address(address):
            continue
        if not isinstance(slug, str) or not slug.strip():
            slug = address
        name = item.get("name")
        fee = item.get("network_fee_percentage")
        fee_pct: float | None = None
        if isinstance(fee, (int, float)) and not isinstance(fee, bool) and 0 <= fee <= 100:
            fee_pct = float(fee)
        elif isinstance(fee, str):
            try:
                value = float(fee)
            except ValueError:
                value = -1.0
            fee_pct = value if 0 <= value <= 100 else None
        found.append(
            MarketRef(slug.strip().lower(), address.strip(), name if isinstance(name, str) else "",
                      fee_pct)
        )
    return found


class MarketDirectory:
    """Market slugs and addresses of one cluster: the table, refreshed from the markets API.

    ``api_url``: the dashboard backend base URL (``None`` disables the refresh). The refresh is
    one request with a short timeout, made at most once per ``ttl_s``; when it fails the
    table is used silently (logged at debug level).
    """

    def __init__(
        self,
        cluster: str,
        *,
        api_url: str | None = None,
        table: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 3.0,
        ttl_s: float = 600.0,
    ) -> None:
        self.cluster = cluster
        self.api_url = api_url.rstrip("/") if api_url else None
        if table is None:
            table = MAINNET_MARKETS if cluster == "mainnet" else DEVNET_MARKETS
        self._refs: dict[str, MarketRef] = {
            slug: MarketRef(slug, address) for slug, address in table.items()
        }
        self._http = http
        self._own_http = http is None
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._refreshed_at: float | None = None
        #: Whether the last refresh reached the API.
        self.live = False

    def __repr__(self) -> str:
        return f"MarketDirectory({self.cluster}, {len(self._refs)} markets, live={self.live})"

    async def refresh(self, *, force: bool = False) -> bool:
        """Ask the markets API (once per ``ttl_s``); True when it answered with markets."""
        if self.api_url is None:
            return False
        now = time.monotonic()
        if not force and self._refreshed_at is not None and now - self._refreshed_at < self.ttl_s:
            return self.live
        self._refreshed_at = now
        url = f"{self.api_url}/api/markets/"
        try:
            if self._http is None:
                self._http = http_client_for(self.api_url, timeout=self.timeout_s)
            response = await self._http.get(url, timeout=self.timeout_s)
            response.raise_for_status()
            refs = _parse_markets(response.json())
        except (httpx.HTTPError, ValueError, OSError) as exc:
            log.debug("markets API %s not used: %s", self.api_url, type(exc).__name__)
            self.live = False
            return False
        if not refs:
            self.live = False
            return False
        for ref in refs:
            # The API is newer than the table: it wins for slugs it names.
            self._refs[ref.slug] = ref
        self.live = True
        return True

    def refs(self) -> list[MarketRef]:
        """Every market known now (no I/O)."""
        return sorted(self._refs.values(), key=lambda ref: ref.slug)

    def lookup(self, slug_or_address: str) -> MarketRef:
        """Resolve without I/O: a known slug, or any address (known or not)."""
        text = check_market_ref(slug_or_address)
        ref = self._refs.get(text.lower())
        if ref is not None:
            return ref
        for ref in self._refs.values():
            if ref.address == text:
                return ref
        if is_address(text):
            return MarketRef(slug=text, address=text)
        raise UnknownMarketError(self._unknown_message(text))

    async def resolve(self, slug_or_address: str) -> MarketRef:
        """Resolve a slug or address, refreshing from the API first when it may help."""
        await self.refresh()
        return self.lookup(slug_or_address)

    def _unknown_message(self, text: str) -> str:
        slugs = list(self._refs)
        where = f"on {self.cluster}"
        if not slugs:
            return (
                f"unknown market {text!r} {where}: no {self.cluster} market slugs are known, "
                "give the market's address instead"
            )
        close = close_slugs(text, slugs)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"unknown market {text!r} {where}{hint} (known: {', '.join(sorted(slugs))})"

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
