"""The transport layer: the one retry policy, HTTP clients, and server text made safe to show."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from nosana_magic.transport import (
    Backoff,
    Retry,
    http_client_for,
    is_loopback,
    one_line,
    server_message,
    url_host,
)

# --------------------------------------------------------------------------- retry policy


class FakeClock:
    """The transport module's clock and sleep, under the test's control: a sleep advances it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import nosana_magic.transport as transport_module

        self.now = 1000.0
        self.sleeps: list[float] = []
        self._real_sleep = asyncio.sleep
        monkeypatch.setattr(transport_module, "time", self)
        monkeypatch.setattr(transport_module.asyncio, "sleep", self.sleep)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await self._real_sleep(0)


async def test_backoff_doubles_from_first_to_cap_and_stops_at_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(monkeypatch)
    backoff = Backoff(Retry(first=0.01, cap=0.04, attempts=5, total=10), total=10,
                      started=clock.now)
    while await backoff.wait():
        pass
    assert backoff.attempt == 5
    assert clock.sleeps == pytest.approx([0.01, 0.02, 0.04, 0.04])


async def test_backoff_stops_at_the_time_bound_with_a_last_attempt_at_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(monkeypatch)
    backoff = Backoff(Retry(first=0.05, cap=0.05, attempts=1000), total=0.12,
                      started=clock.now)
    waits = 0
    while await backoff.wait():
        waits += 1
    assert waits == 3  # 0.05 + 0.05 + 0.02 (cut to the bound)
    assert clock.sleeps == pytest.approx([0.05, 0.05, 0.02])
    assert clock.now - 1000.0 == pytest.approx(0.12)


async def test_backoff_reset_restarts_the_bounds() -> None:
    backoff = Backoff(Retry(first=0.01, cap=0.01, attempts=2), total=5)
    assert await backoff.wait()
    assert not await backoff.wait()
    backoff.reset()
    assert await backoff.wait()


def test_retry_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Retry(first=0)
    with pytest.raises(ValueError):
        Retry(first=3, cap=2)
    with pytest.raises(ValueError):
        Retry(attempts=0)


# --------------------------------------------------------------------------- HTTP clients


async def test_proxies_from_the_environment_apply_except_on_loopback() -> None:
    assert is_loopback("http://127.0.0.1:9/x") and is_loopback("http://localhost/")
    assert not is_loopback("https://api.pinata.cloud")
    local, remote = http_client_for("http://127.0.0.1:9"), http_client_for("https://x.example")
    try:
        assert not local.trust_env and remote.trust_env
        assert http_client_for("http://127.0.0.1:9", timeout=3).timeout.read == 3
    finally:
        await local.aclose()
        await remote.aclose()


# --------------------------------------------------------------------------- safe text


def test_one_line_collapses_cuts_and_can_hide_urls() -> None:
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 300, 10) == "x" * 9 + "…"
    assert one_line("failed at https://rpc.example/v2/KEY?api-key=K (retry)",
                    keep_urls=False) == "failed at rpc.example (retry)"
    assert url_host("https://u:p@rpc.example:8899/v2/KEY?k=1") == "rpc.example:8899"


@pytest.mark.parametrize(
    ("body", "status", "shown"),
    [
        ('"Invalid job id"', 400, "Invalid job id"),
        ('{"error": "market not found"}', 404, "market not found"),
        ('{"message": "slow down"}', 429, "slow down"),
        ('{"error": {"reason": "X"}}', 401, '{"error": {"reason": "X"}}'),
        ("<html><body>Bad gateway</body></html>", 502, "HTTP 502"),
        ("", 500, "HTTP 500"),
        ("line one\nline two", 500, "line one line two"),
    ],
)
def test_server_message_is_one_short_line(body: str, status: int, shown: str) -> None:
    assert server_message(httpx.Response(status, text=body)) == shown
