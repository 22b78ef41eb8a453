"""What a credit job can cost, shown before listing (docs/mainnet.md, paying with credits):
dollars to the precision that seconds of GPU need, the estimate line, the refusal line."""

from __future__ import annotations

import pytest

from nosana_magic.network.markets import CreditEstimate, format_usd


@pytest.mark.parametrize(("usd", "shown"), [
    (0, "$0.00"), (9.78, "$9.78"), (0.22, "$0.22"), (0.055, "$0.055"), (0.0092, "$0.0092"),
    (0.000015, "$0.000015"), (1234.5, "$1,234.50"), (-0.5, "-$0.50"), (10, "$10.00"),
])
def test_dollars_keep_two_significant_digits_under_a_dollar(usd: float, shown: str) -> None:
    assert format_usd(usd) == shown


def test_the_estimate_is_price_times_timeout_against_the_balance() -> None:
    estimate = CreditEstimate("mainnet", "nvidia-4090", 0.44, 1800, 9.78)
    assert estimate.cost == pytest.approx(0.22) and estimate.covered
    assert estimate.describe() == ("mainnet: market nvidia-4090 at $0.44/h in credits, "
                                   "timeout 30m → at most $0.22; credits: $9.78 available")
    short = CreditEstimate("mainnet", "nvidia-4090", 0.44, 3 * 3600, 1.0)
    assert short.cost == pytest.approx(1.32) and not short.covered
    assert short.shortfall() == (
        "not listed: this job can cost $1.32 (3h in nvidia-4090), and the API key has $1.00 "
        "of credits available; add credits on the Nosana dashboard or shorten --timeout")
    # Exactly the balance is enough: the reservation is price × timeout, no more.
    assert CreditEstimate("local", "m", 3.6, 3600, 3.6).covered


def test_a_market_without_a_credit_price_is_said_so_and_left_to_the_api() -> None:
    unknown = CreditEstimate("mainnet", "odd-market", None, 600, 0.0)
    assert unknown.cost is None and unknown.covered  # Nosana's API decides (402 if short)
    assert unknown.describe() == ("mainnet: market odd-market at an unknown credit price (the "
                                  "market does not say), timeout 10m; credits: $0.00 available")


def test_a_sweep_is_one_estimate_for_all_its_jobs() -> None:
    sweep = CreditEstimate("mainnet", "nvidia-4090", 0.44, 1800, 1.0, jobs=6)
    assert sweep.each == pytest.approx(0.22) and sweep.cost == pytest.approx(1.32)
    assert not sweep.covered  # one job would fit; six do not
    assert sweep.describe() == ("mainnet: market nvidia-4090 at $0.44/h in credits, timeout "
                                "30m → 6 jobs × at most $0.22 = at most $1.32; credits: $1.00 "
                                "available")
    assert sweep.shortfall().startswith("not listed: these 6 jobs can cost $1.32 (30m in ")
