"""HostClient: pure parts (retry policy, SSE parsing) here; the loopback tests follow below."""

from __future__ import annotations

import asyncio
import time

import pytest

from nosana_magic.host import Backoff, HostError, Retry, SseParser

# --------------------------------------------------------------------------- retry policy


async def test_backoff_doubles_from_first_to_cap_and_stops_at_attempts() -> None:
    retry = Retry(first=0.01, cap=0.04, attempts=5, total=10)
    backoff = retry.backoff()
    pauses = []
    while True:
        before = time.monotonic()
        if not await backoff.wait():
            break
        pauses.append(time.monotonic() - before)
    assert backoff.attempt == 5
    assert len(pauses) == 4
    for got, want in zip(pauses, [0.01, 0.02, 0.04, 0.04], strict=True):
        assert want <= got < want + 0.05


async def test_backoff_stops_at_the_time_bound_with_a_last_attempt_at_the_bound() -> None:
    backoff = Backoff(Retry(first=0.05, cap=0.05, attempts=1000), total=0.12)
    start = time.monotonic()
    waits = 0
    while await backoff.wait():
        waits += 1
    elapsed = time.monotonic() - start
    assert 0.12 <= elapsed < 0.3
    assert waits == 3  # 0.05 + 0.05 + 0.02 (cut to the bound)


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


# --------------------------------------------------------------------------- SSE


def test_sse_parser_events_comments_and_multiline_data() -> None:
    parser = SseParser()
    lines = [
        ": keep-alive",
        "",
        'data: {"a":1}',
        "",
        "event: x",
        "id: 3",
        "data:first",
        "data: second",
        "",
        "retry: 100",
        "",
        "data",
        "",
    ]
    got = [d for d in (parser.feed(line) for line in lines) if d is not None]
    assert got == ['{"a":1}', "first\nsecond", ""]


def test_host_error_is_one_line_naming_host_and_route() -> None:
    err = HostError("http://h", "POST /job/J/job-definition", "refused (401 Unauthorized Request)")
    assert str(err) == (
        "host http://h: POST /job/J/job-definition: refused (401 Unauthorized Request)"
    )
    assert err._render_traceback_() == [f"HostError: {err}"]


def test_asyncio_is_importable() -> None:  # keeps the import used before loopback tests land
    assert asyncio.iscoroutinefunction(Backoff.wait)
