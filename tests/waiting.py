"""How a test waits: for a condition, with a bound that only a real failure reaches.

The suite runs on shared, loaded machines (another copy of it may run beside it), so no test
asserts how soon something happened. It waits for the condition instead; the bound
(``PATIENCE``) is generous because it only matters when the behaviour is broken, and a test
that passes never waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["PATIENCE", "until", "wait_until"]

#: The bound of every wait for a condition that should come true (seconds).
PATIENCE = 30.0

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = PATIENCE, *,
               what: str = "the condition", interval: float = 0.02) -> T:
    """Poll ``condition()`` until it is truthy and return its value; AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g} s")
        time.sleep(interval)


async def until(condition: Callable[[], T], timeout: float = PATIENCE, *,
                what: str = "the condition", interval: float = 0.02) -> T:
    """:func:`wait_until` for coroutines: polls without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g} s")
        await asyncio.sleep(interval)
