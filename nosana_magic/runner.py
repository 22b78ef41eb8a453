"""One private asyncio loop on a daemon thread, and a synchronous facade over it.

Why a thread: inside Jupyter the kernel's own loop is already running while a cell executes,
so ``asyncio.run()`` would fail there, and patching it re-entrantly (nest_asyncio) fights
ipykernel. Every coroutine of this package therefore runs on one loop that we own, in a daemon
thread, for the whole process. The calling thread (the notebook's main thread, a terminal
IPython or a plain script) blocks on a :class:`concurrent.futures.Future` with short timed
waits, so a ``KeyboardInterrupt`` (Ctrl-C, a kernel interrupt) arrives at once; we then cancel
the coroutine on the loop and re-raise. We never touch the caller's event loop.

Two ways to block on the loop's work, both in short slices: :func:`wait` (any future, a
hook called every slice, Ctrl-C propagates) and :func:`shielded` (run a coroutine that must
not be cancelled, such as a job's stop: Ctrl-C is noted and the wait goes on, bounded).

The loop starts lazily on first use and is stopped at interpreter exit (``atexit``), or by
:func:`shutdown` (tests).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = [
    "RunnerError",
    "call_soon",
    "get_loop",
    "in_runner_thread",
    "run_sync",
    "shielded",
    "shutdown",
    "submit",
    "wait",
]

T = TypeVar("T")

#: How long the calling thread blocks in one wait. Short, so that a signal delivered to the
#: main thread (Ctrl-C) is handled promptly even on platforms where a lock wait is not
#: interruptible.
_POLL_S = 0.1

#: Bound on how long shutdown waits for pending tasks to finish after cancelling them.
_SHUTDOWN_S = 5.0

_THREAD_NAME = "nosana-magic-loop"


class RunnerError(RuntimeError):
    """Misuse of the runner (e.g. blocking on the loop from the loop's own thread)."""


class _Runner:
    """The loop and its thread. One instance per process (module global ``_runner``)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name=_THREAD_NAME, daemon=True)
        self.thread.start()
        if not self._ready.wait(timeout=10):  # pragma: no cover - a thread that never starts
            raise RunnerError("the nosana_magic event loop thread did not start")

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def stop(self, timeout: float = _SHUTDOWN_S) -> None:
        """Cancel every task, let them finish (bounded), stop the loop and join the thread."""
        if not self.thread.is_alive():
            return

        async def _cancel_all() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)
            await self.loop.shutdown_asyncgens()

        try:
            future = asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop)
            future.result(timeout=timeout + 1)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass  # the loop is already stopping, or a task ignores cancellation: stop anyway
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=timeout)


_lock = threading.Lock()
_runner: _Runner | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The private loop, started on first use."""
    global _runner
    with _lock:
        if _runner is None or not _runner.thread.is_alive():
            _runner = _Runner()
        return _runner.loop


def in_runner_thread() -> bool:
    """True when called from the loop's own thread (where blocking on it would deadlock)."""
    runner = _runner
    return runner is not None and threading.current_thread() is runner.thread


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the private loop; returns a thread-safe future of its result.

    Cancelling the returned future cancels the coroutine on the loop.
    """
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def call_soon(fn: Callable[..., object], *args: object) -> None:
    """Run ``fn(*args)`` on the loop thread soon (thread-safe)."""
    get_loop().call_soon_threadsafe(fn, *args)


def call_and_wait(fn: Callable[[], object], timeout: float) -> bool:
    """Run ``fn()`` on the loop thread and wait for it, at most ``timeout`` seconds (from
    another thread); True if it ran in time."""
    done = threading.Event()

    def call() -> None:
        try:
            fn()
        finally:
            done.set()

    call_soon(call)
    return done.wait(timeout)


def run_sync(coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
    """Run ``coro`` on the private loop and block until it finishes; return its result.

    ``timeout`` (seconds) bounds the wait: on expiry the coroutine is cancelled and
    :class:`TimeoutError` is raised. A ``KeyboardInterrupt`` while waiting cancels the
    coroutine on the loop and is re-raised in the calling thread.
    """
    if in_runner_thread():
        coro.close()
        raise RunnerError(
            "run_sync() called from the nosana_magic loop thread; await the coroutine instead"
        )
    future = submit(coro)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            wait = _POLL_S
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    future.cancel()
                    raise TimeoutError(f"gave up waiting after {timeout:g} s")
                wait = min(wait, remaining)
            try:
                return future.result(timeout=wait)
            except concurrent.futures.TimeoutError:
                # Our short wait ended (not the coroutine raising TimeoutError: that would
                # mean the future is done, which we check before looping again).
                if future.done() and not future.cancelled():
                    return future.result()
                continue
    except KeyboardInterrupt:
        future.cancel()
        raise


def wait(future: concurrent.futures.Future[Any], timeout: float | None = None, *,
         each: Callable[[], object] | None = None,
         until: Callable[[], bool] | None = None) -> bool:
    """Block until ``future`` is done (True), or ``until()`` holds or ``timeout`` seconds
    passed (False), in slices of 0.1 s; ``each()`` is called before every slice (a text
    view prints its lines there, on this thread).

    A ``KeyboardInterrupt`` propagates, and the future is left alone: what Ctrl-C means is
    the caller's to decide.
    """
    if in_runner_thread():
        raise RunnerError("waiting on the nosana_magic loop thread would block it")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if each is not None:
            each()
        if future.done():
            return True
        if until is not None and until():
            return False
        remaining = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
        if remaining <= 0:
            return False
        concurrent.futures.wait([future], timeout=remaining)


def shielded(coro: Coroutine[Any, Any, T], timeout: float, *,
             each: Callable[[], object] | None = None,
             interrupted: Callable[[], object] | None = None) -> concurrent.futures.Future[T]:
    """Run ``coro`` on the loop and wait for it, as :func:`wait` does, up to ``timeout``
    seconds, through Ctrl-C: a ``KeyboardInterrupt`` meanwhile calls ``interrupted()`` and
    the wait goes on. Nothing here cancels the coroutine: this is
    for work that must not be cut short, such as a job's stop. Returns its future, done or
    not (past ``timeout`` the coroutine goes on, on the loop).
    """
    if in_runner_thread():
        coro.close()
        raise RunnerError("waiting on the nosana_magic loop thread would block it")
    future = submit(coro)
    deadline = time.monotonic() + timeout
    interrupts = noted = 0
    while True:
        try:
            if interrupts > noted:
                noted = interrupts
                if interrupted is not None:
                    interrupted()
            remaining = deadline - time.monotonic()
            if future.done() or remaining <= 0:
                return future
            wait(future, remaining, each=each)
        except KeyboardInterrupt:
            interrupts += 1


def shutdown(timeout: float = _SHUTDOWN_S) -> None:
    """Stop the loop thread (cancelling pending tasks). The next use starts a fresh loop."""
    global _runner
    with _lock:
        runner, _runner = _runner, None
    if runner is not None:
        if threading.current_thread() is runner.thread:
            raise RunnerError("shutdown() called from the nosana_magic loop thread")
        runner.stop(timeout)


atexit.register(shutdown)
