"""The private loop thread and the synchronous facade."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import pytest

from nosana_magic import runner

from .waiting import PATIENCE


@pytest.fixture(autouse=True)
def _fresh_runner() -> object:
    yield
    runner.shutdown()


async def _answer(value: int, delay: float = 0.0) -> int:
    await asyncio.sleep(delay)
    return value


def test_run_sync_returns_the_result_on_a_daemon_thread() -> None:
    assert runner.run_sync(_answer(42)) == 42
    loop = runner.get_loop()
    threads = [t for t in threading.enumerate() if t.name == "nosana-magic-loop"]
    assert len(threads) == 1 and threads[0].daemon
    # One loop for the whole process.
    assert runner.get_loop() is loop


def test_run_sync_propagates_exceptions_including_timeout_error() -> None:
    async def boom() -> None:
        raise ValueError("no")

    async def own_timeout() -> None:
        raise TimeoutError("mine")

    with pytest.raises(ValueError, match="no"):
        runner.run_sync(boom())
    with pytest.raises(TimeoutError, match="mine"):
        runner.run_sync(own_timeout())


def test_run_sync_timeout_cancels_the_coroutine() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"gave up waiting after 0\.2 s"):
        runner.run_sync(forever(), timeout=0.2)
    assert time.monotonic() - start < PATIENCE  # the timeout's, not the coroutine's 60 s
    assert cancelled.wait(PATIENCE)


def test_keyboard_interrupt_cancels_the_coroutine_and_is_reraised() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    timer = threading.Timer(0.2, signal.raise_signal, args=(signal.SIGINT,))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run_sync(forever())
    assert time.monotonic() - start < PATIENCE  # the interrupt's, not the coroutine's 60 s
    assert cancelled.wait(PATIENCE)


def test_works_while_another_loop_runs_in_the_calling_thread() -> None:
    # What a Jupyter kernel looks like: the main thread's loop is running during a cell.
    async def cell() -> int:
        return runner.run_sync(_answer(7, 0.01))

    assert asyncio.run(cell()) == 7


def test_run_sync_from_the_loop_thread_is_refused() -> None:
    async def inner() -> int:
        return runner.run_sync(_answer(1))

    with pytest.raises(runner.RunnerError, match="loop thread"):
        runner.run_sync(inner())


def test_submit_and_call_soon() -> None:
    future = runner.submit(_answer(3))
    assert future.result(timeout=PATIENCE) == 3
    seen = threading.Event()
    names: list[str] = []

    def mark() -> None:
        names.append(threading.current_thread().name)
        seen.set()

    runner.call_soon(mark)
    assert seen.wait(PATIENCE) and names == ["nosana-magic-loop"]


def test_shutdown_cancels_pending_tasks_and_a_new_loop_starts_after() -> None:
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runner.submit(forever())
    assert started.wait(PATIENCE)
    runner.shutdown()
    assert cancelled.is_set()
    assert not [t for t in threading.enumerate() if t.name == "nosana-magic-loop"]
    assert runner.run_sync(_answer(5)) == 5
