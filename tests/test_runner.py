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


def test_wait_returns_at_the_end_at_until_or_at_the_timeout() -> None:
    future = runner.submit(_answer(7, delay=0.3))
    slices: list[float] = []
    assert runner.wait(future, 0.05, each=lambda: slices.append(time.monotonic())) is False
    assert slices and not future.done()
    assert runner.wait(future, PATIENCE, until=lambda: len(slices) >= 3,
                       each=lambda: slices.append(time.monotonic())) is False
    assert runner.wait(future, PATIENCE) is True and future.result() == 7


def test_ctrl_c_in_wait_propagates_and_leaves_the_work_alone() -> None:
    future = runner.submit(_answer(8, delay=0.2))

    def each() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.wait(future, PATIENCE, each=each)
    assert future.result(PATIENCE) == 8


def test_shielded_work_is_not_cancelled_by_ctrl_c() -> None:
    """Two Ctrl-C while waiting (raised from the hook): each is noted, the work finishes."""
    finished = threading.Event()

    async def stop() -> str:
        await asyncio.sleep(0.3)
        finished.set()
        return "stopped"

    calls = {"each": 0, "interrupted": 0}

    def each() -> None:
        calls["each"] += 1
        if calls["each"] <= 2:
            raise KeyboardInterrupt

    def interrupted() -> None:
        calls["interrupted"] += 1

    future = runner.shielded(stop(), PATIENCE, each=each, interrupted=interrupted)
    assert future.result(0) == "stopped" and finished.is_set()
    assert calls["interrupted"] == 2


def test_shielded_work_outlives_its_bound() -> None:
    future = runner.shielded(_answer(9, delay=0.3), 0.05)
    assert not future.done()  # the bound passed: the caller is told, the work goes on
    assert future.result(PATIENCE) == 9
