"""Markets: the slug table, resolution by slug or address, the markets API refresh, cost."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from nosana_magic.network.base import NetworkError
from nosana_magic.network.markets import (
    DEFAULT_NETWORK_FEE_PCT,
    MAINNET_MARKETS,
    MarketDirectory,
    UnknownMarketError,
    close_slugs,
    estimate,
    format_nos,
    format_sol,
    is_address,
    nos_deposit_units,
    nos_fee_units,
    priority_fee_lamports,
    rent_exempt_lamports,
)

from .waiting import PATIENCE

A4090 = "97G9NnvBDQ2WpKu6fasoMsAKmfj63C9rhysJnkeWodAf"


# --------------------------------------------------------------------------- arithmetic


def test_nosana_docs_example_price_times_timeout() -> None:
    # kit docs: "price 0.000115 NOS/s (total: 0.8280 NOS)" for two hours.
    cost = estimate(115, 7200)
    assert cost.nos_deposit == 828_000 and cost.nos_fee == 0
    assert cost.nos == pytest.approx(0.828)
    assert cost.price_per_hour == pytest.approx(0.414)


def test_network_fee_is_added_to_the_nos_cost() -> None:
    cost = estimate(115, 7200, network_fee_pct=10)
    assert cost.nos_fee == 82_800
    assert cost.nos == pytest.approx(0.828 * 1.1)
    # The same formula as Market.cost in the Network boundary.
    assert nos_fee_units(115, 7200, 10) + nos_deposit_units(115, 7200) == 910_800


def test_fee_rounds_up_never_short() -> None:
    assert nos_fee_units(1, 3, 10) == 1  # 0.3 units -> 1


def test_rent_matches_solana_defaults() -> None:
    # Values LiteSVM (Solana's default rent) gives for these sizes (docs/protocol.md §21).
    assert rent_exempt_lamports(240) == 2_561_280
    assert rent_exempt_lamports(120) == 1_726_080
    assert rent_exempt_lamports(0) == 890_880
    assert rent_exempt_lamports(165) == 2_039_280


def test_sol_estimate_parts() -> None:
    cost = estimate(115, 3600, signatures=3, priority_micro_lamports=1_000_000,
                    compute_units=200_000)
    assert cost.rent_job == 2_561_280 and cost.rent_run == 1_726_080
    assert cost.signature_fees == 15_000
    assert cost.priority_fee == 200_000
    assert cost.lamports == 2_561_280 + 1_726_080 + 15_000 + 200_000
    assert format_sol(cost.lamports) == "0.0045 SOL"
    assert format_sol(cost.rent) == "0.00429 SOL"


def test_no_run_rent_when_the_poster_does_not_create_it() -> None:
    cost = estimate(115, 3600, creates_run_account=False)
    assert cost.rent_run == 0 and cost.rent == 2_561_280


def test_priority_fee_rounds_up() -> None:
    assert priority_fee_lamports(1, 1) == 1
    assert priority_fee_lamports(0, 200_000) == 0
    assert priority_fee_lamports(10_000, 200_000) == 2_000


def test_describe_names_the_price_the_maximum_and_the_refunds() -> None:
    text = estimate(115, 7200, network_fee_pct=10).describe()
    assert "0.414 NOS/h" in text and "2h" in text and "10% network fee" in text
    assert "at most 0.9108 NOS" in text and "refunded" in text


def test_formatting() -> None:
    assert format_nos(828_000) == "0.828 NOS"
    assert format_nos(1) == "0.000001 NOS"
    assert format_nos(5_000_000) == "5 NOS"
    assert format_sol(0) == "0 SOL"
    assert format_sol(5_000) == "0.000005 SOL"
    assert format_sol(1_500_000_000) == "1.5 SOL"


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        estimate(-1, 10)
    with pytest.raises(ValueError):
        rent_exempt_lamports(-1)


# --------------------------------------------------------------------------- resolution


def test_the_built_in_mainnet_table() -> None:
    assert len(MAINNET_MARKETS) == 17
    assert MAINNET_MARKETS["nvidia-4090"] == A4090
    assert MAINNET_MARKETS["nvidia-3090"] == "CA5pMpqkYFKtme7K31pNB1s62X2SdhEv1nN9RdxKCpuQ"
    assert all(is_address(a) for a in MAINNET_MARKETS.values())


def test_lookup_by_slug_address_and_unknown_address() -> None:
    directory = MarketDirectory("mainnet")
    assert directory.lookup("nvidia-4090").address == A4090
    assert directory.lookup(" NVIDIA-4090 ").address == A4090
    assert directory.lookup(A4090).slug == "nvidia-4090"
    other = "11111111111111111111111111111112"
    ref = directory.lookup(other)
    assert ref.address == other and ref.slug == other


def test_unknown_slug_lists_close_slugs() -> None:
    directory = MarketDirectory("mainnet")
    with pytest.raises(UnknownMarketError) as err:
        directory.lookup("nvidia-409")
    message = str(err.value)
    assert "unknown market 'nvidia-409' on mainnet" in message
    assert "did you mean nvidia-4090" in message
    assert "nvidia-h100" in message  # the known slugs are listed
    assert isinstance(err.value, NetworkError)


def test_close_slugs_fuzzy_and_substring() -> None:
    slugs = list(MAINNET_MARKETS)
    assert close_slugs("nvidia-4090", slugs)[0] == "nvidia-4090"
    assert "nvidia-h100" in close_slugs("h100", slugs)
    assert close_slugs("zzzz", slugs) == []


def test_devnet_has_no_slugs_but_takes_addresses() -> None:
    directory = MarketDirectory("devnet")
    assert directory.lookup(A4090).address == A4090
    with pytest.raises(UnknownMarketError, match="give the market's address"):
        directory.lookup("nvidia-4090")


def test_empty_market_is_refused() -> None:
    with pytest.raises(UnknownMarketError, match="no market given"):
        MarketDirectory("mainnet").lookup("  ")


# --------------------------------------------------------------------------- the markets API


def _api(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


async def test_refresh_adds_markets_names_and_fees() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=[
            {"address": A4090, "slug": "nvidia-4090", "name": "NVIDIA 4090",
             "network_fee_percentage": 0},
            {"address": "11111111111111111111111111111112", "slug": "nvidia-b200",
             "name": "NVIDIA B200", "network_fee_percentage": "5"},
            {"address": "not an address", "slug": "broken"},
            "junk",
        ])

    async with _api(httpx.MockTransport(handler)) as http:
        directory = MarketDirectory("mainnet", api_url="https://api.example/", http=http)
        ref = await directory.resolve("nvidia-b200")
        assert ref.address == "11111111111111111111111111111112"
        assert ref.network_fee_pct == 5.0 and ref.name == "NVIDIA B200"
        assert directory.lookup("nvidia-4090").network_fee_pct == 0.0
        assert directory.live
        assert "broken" not in {r.slug for r in directory.refs()}
        # Cached: a second resolve does not ask again within the TTL.
        await directory.resolve("nvidia-3090")
    assert seen == ["https://api.example/api/markets/"]


async def test_refresh_accepts_a_wrapped_list() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(
            {"data": [{"address": A4090, "slug": "nvidia-4090"}]}))

    async with _api(httpx.MockTransport(handler)) as http:
        directory = MarketDirectory("mainnet", api_url="https://api.example", http=http)
        assert await directory.refresh()


@pytest.mark.parametrize("status", [404, 500])
async def test_api_errors_fall_back_to_the_table(status: int) -> None:
    async with _api(httpx.MockTransport(lambda r: httpx.Response(status))) as http:
        directory = MarketDirectory("mainnet", api_url="https://api.example", http=http)
        assert (await directory.resolve("nvidia-3090")).address == MAINNET_MARKETS["nvidia-3090"]
        assert not directory.live


async def test_unreachable_api_falls_back_quickly() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    directory = MarketDirectory("mainnet", api_url=f"http://127.0.0.1:{port}", timeout_s=1.0)
    start = time.monotonic()
    ref = await directory.resolve("nvidia-4090")
    await directory.aclose()
    assert ref.address == A4090
    assert time.monotonic() - start < PATIENCE / 3  # one refused connection, no retry storm


async def test_slow_api_is_cut_off_by_the_short_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with _api(httpx.MockTransport(handler)) as http:
        directory = MarketDirectory("mainnet", api_url="https://api.example", http=http)
        with pytest.raises(UnknownMarketError, match="did you mean nvidia-4090"):
            await directory.resolve("nvidia-409")


async def test_refresh_disabled_without_an_api_url() -> None:
    directory = MarketDirectory("mainnet", api_url=None)
    assert not await directory.refresh()
    assert repr(directory) == "MarketDirectory(mainnet, 17 markets, live=False)"


def test_default_fee_assumption_is_conservative() -> None:
    assert DEFAULT_NETWORK_FEE_PCT == 10.0


# --------------------------------------------------------------------------- on the local network


def test_nosana_market_names_run_on_the_local_market_of_their_kind() -> None:
    from nosana_magic.network.local import local_market_for

    assert local_market_for("nvidia-3090") == "local-gpu"
    assert local_market_for(" NVIDIA-A100 ") == "local-gpu"
    assert local_market_for(A4090) == "local-gpu"  # a mainnet address, too
    assert local_market_for("local-gpu") is None and local_market_for("nvidia-3091") is None


def test_the_local_check_needs_no_running_network() -> None:
    from nosana_magic.network.local import check_local_market

    for ok in (None, "local-cpu", "local-gpu", "nvidia-3090", "nvidia-h100", A4090):
        check_local_market(ok)  # no error, and nothing started
    with pytest.raises(UnknownMarketError) as info:
        check_local_market("nvidia-309")
    message = str(info.value)
    assert message.startswith("unknown market 'nvidia-309' on the local network; did you mean "
                              "nvidia-3090")
    assert "(local markets: local-cpu, local-gpu;" in message and "\n" not in message
