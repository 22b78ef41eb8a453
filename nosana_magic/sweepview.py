"""The live view of a sweep: one table, a row per job, and each job's log one click away.

Two views over one :class:`~nosana_magic.table.Table` (read from the sweep once per
rendering), picked as the job views are (``auto``: widgets in a Jupyter kernel with
ipywidgets, text elsewhere):

* :class:`SweepWidgetView`: the table (parameters, status, elapsed, cost, results), and
  under it one fold per job (at most :data:`PANES`) whose title is the job's row in short
  and whose body is the tail of its log. A fold opens in the browser at once, while the cell
  runs. The jobs' listeners only mark what changed; the widgets are written from the loop
  thread by one coalescing tick: the table at most 4 times a second, each fold's log at most
  once a second, each only when its text changed, so a sweep of noisy jobs costs a bounded
  number of messages. The outcome is also written through a display handle as text, which a
  saved notebook keeps without widget state.
* :class:`SweepTextView` (terminal IPython, plain Python): a line per job as it changes
  status, printed by the main thread (:meth:`SweepView.drain`), then the whole table.

:func:`follow_sweep` is the follow loop of the cell magic, as :func:`~nosana_magic.display.follow`
is for one job: Ctrl-C stops every job of the sweep.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TextIO

from .display import _stream_outputs, _widgets_available, format_line, in_kernel
from .outcome import FINAL_STATUSES
from .params import label
from .runner import call_and_wait, call_soon, get_loop, in_runner_thread, run_sync
from .table import format_value

if TYPE_CHECKING:
    import asyncio

    from .record import JobEvent
    from .sweeps import Runs

__all__ = ["PANES", "SweepTextView", "SweepView", "SweepWidgetView", "follow_sweep"]

#: Jobs that get a fold with their log (the table still has a row for every job).
PANES = 40
#: The shortest time between two rewrites of the table, and of one fold's log.
TABLE_EVERY_S = 0.25
LOG_EVERY_S = 1.0
#: Log lines a fold shows (``runs[i].logs`` has them all).
TAIL = 40

ViewMode = Literal["auto", "widget", "text"]

#: The statuses the text view prints a line for.
_SAID = frozenset({"queued", "running", "stopping", *FINAL_STATUSES})


async def _call(fn: Callable[[], None]) -> None:
    fn()


class SweepView:
    """The live view of a sweep. Create and :meth:`show` it on the main thread."""

    mode: ClassVar[Literal["widget", "text"]]

    def __new__(cls, runs: Runs, *, mode: ViewMode = "auto", tail: int = TAIL,
                stdout: TextIO | None = None) -> SweepView:
        if cls is SweepView:
            if mode == "auto":
                mode = "widget" if in_kernel() and _widgets_available() else "text"
            cls = SweepWidgetView if mode == "widget" else SweepTextView
        return super().__new__(cls)

    def __init__(self, runs: Runs, *, mode: ViewMode = "auto", tail: int = TAIL,
                 stdout: TextIO | None = None) -> None:
        self.runs = runs
        self.tail = tail
        self._out = stdout
        self._lock = threading.Lock()
        self._unsubscribe: list[Callable[[], None]] = []
        self._summary_shown = False
        self._background = False

    def _print(self, text: str) -> None:
        import sys

        print(text, file=self._out or sys.stdout, flush=True)

    # -- following ---------------------------------------------------------------------

    def show(self, *, background: bool = False) -> SweepView:
        """Display the view and follow every job of the sweep (main thread)."""
        self._background = background
        self._open()
        if in_runner_thread():
            self._follow()
        else:
            run_sync(_call(self._follow), timeout=10)
        self._following()
        return self

    def _follow(self) -> None:
        """Loop thread: each job's lines so far, and a listener, with nothing in between."""
        for index, job in enumerate(self.runs):
            backlog = job.logs
            self._unsubscribe.append(job.subscribe(functools.partial(self._on_event, index)))
            for line in backlog[-self.tail:]:
                self._record(index, line)

    def _open(self) -> None:
        """Main thread, before following: put the view on screen."""

    def _following(self) -> None:
        """Main thread, once subscribed."""

    def _on_event(self, index: int, event: JobEvent) -> None:
        """Loop thread, for every event of job ``index``: note it, never write here."""
        if event.kind == "log" and event.lines:
            self._record(index, event.lines)

    def _record(self, index: int, lines: Sequence[Any]) -> None:
        """Loop thread: log lines of job ``index`` arrived."""

    def drain(self) -> None:
        """Text view: print what changed since the last call (main thread)."""

    def finish(self, *, interrupted: bool = False) -> None:
        """The sweep ended (or was interrupted): last output, then the table as text."""
        self._last_output()
        if self.runs.done or interrupted:
            self._write_summary()
        if self.runs.done:
            self.close()

    def _last_output(self) -> None:
        """Main thread, finishing: bring the view up to date."""

    def _write_summary(self) -> None:
        with self._lock:
            if self._summary_shown and self.runs.done:
                return
            self._summary_shown = self.runs.done
        self._show_summary(self.summary())

    def summary(self) -> str:
        """The sweep in plain text: a line, then its table."""
        runs = self.runs
        head = f"sweep {runs.name}: {len(runs)} jobs, {runs.status}"
        if runs.failed:
            failed = ", ".join(f"#{runs.index(job)}" for job in runs.failed[:10])
            head += f" (did not succeed: {failed}{', …' if len(runs.failed) > 10 else ''})"
        return f"{head}\n{runs.table().text()}"

    def _show_summary(self, text: str) -> None:
        self._print(text)

    def close(self) -> None:
        """Stop following the jobs (a widget view stays on screen as it last was)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []


class SweepTextView(SweepView):
    """A line per job when its status changes, then the table (main thread)."""

    mode = "text"

    def __init__(self, runs: Runs, **options: Any) -> None:
        super().__init__(runs, **options)
        self._last: dict[int, str] = {}

    def _open(self) -> None:
        runs = self.runs
        self._print(f"sweep {runs.name}: {len(runs)} jobs on {runs.network.name}, at most "
                    f"{runs.parallel} at once")

    def drain(self) -> None:
        if self._background:
            return
        for index, job in enumerate(self.runs):
            status = self.runs.status_of(index)
            # The steps that matter in a terminal: taken by a host, and how it ended.
            if status not in _SAID or self._last.get(index) == status:
                continue
            self._last[index] = status
            line = f"  #{index} {label(self.runs.params[index])}: {status}"
            if job.done and not job.ok and job.reason:
                line += f": {job.reason}"
            elif job.done and job.results:
                line += " (" + " ".join(f"{k}={format_value(v)}" for k, v in
                                        list(job.results.items())[:4]) + ")"
            self._print(line)

    def _last_output(self) -> None:
        self.drain()


class SweepWidgetView(SweepView):
    """The table and one fold per job as ipywidgets, written from the loop thread by one
    coalescing tick; the outcome through a display handle."""

    mode = "widget"

    def __init__(self, runs: Runs, **options: Any) -> None:
        super().__init__(runs, **options)
        panes = min(len(runs), PANES)
        self._tails: list[deque[tuple[str, str]]] = [deque(maxlen=self.tail)
                                                     for _ in range(panes)]
        self._logs_dirty: set[int] = set()
        self._log_written = [0.0] * panes
        self._table_written = 0.0
        self._html = ""
        self._titles: tuple[str, ...] = ()
        self._timer: asyncio.TimerHandle | None = None
        self._finalised = False
        self.widget: Any = None
        self._table_w: Any = None
        self._panes_w: Any = None
        self._logs_w: list[Any] = []
        self._summary_handle: Any = None
        #: Widget writes so far (for tests and benchmarks).
        self.writes = 0

    def _open(self) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        runs = self.runs
        self._html = runs.table().html()
        self._table_w = widgets.HTML(self._html)
        children: list[Any] = [self._table_w]
        if self._tails:
            self._logs_w = [widgets.Output(layout=widgets.Layout(max_height="20em",
                                                                 overflow="auto"))
                            for _ in self._tails]
            self._titles = self._pane_titles()
            self._panes_w = widgets.Accordion(children=self._logs_w, titles=self._titles)
            children.append(self._panes_w)
            if len(runs) > len(self._tails):
                children.append(widgets.HTML(
                    f"<i>logs of jobs {len(self._tails)}–{len(runs) - 1}: runs[i].logs</i>"))
        self.widget = widgets.VBox(children)
        bundle = dict(self.widget._repr_mimebundle_())
        bundle["text/plain"] = "nosana sweep view (live widget; the table below is saved)"
        display(bundle, raw=True)  # type: ignore[no-untyped-call]
        self._summary_handle = display(  # type: ignore[no-untyped-call]
            {"text/plain": f"nosana sweep {runs.name}: running… the table replaces this line "
                           "when it ends"}, raw=True, display_id=True)

    def _pane_titles(self) -> tuple[str, ...]:
        runs = self.runs
        titles = []
        for index in range(len(self._tails)):
            job = runs[index]
            title = f"#{index} {label(runs.params[index])} · {runs.status_of(index)}"
            if job.results:
                title += " · " + " ".join(f"{k}={format_value(v, 12)}"
                                          for k, v in list(job.results.items())[:3])
            titles.append(title)
        return tuple(titles)

    def _following(self) -> None:
        call_soon(self._tick)
        self.runs.future.add_done_callback(lambda _: call_soon(self._finalise))

    # -- loop thread ---------------------------------------------------------------------

    def _record(self, index: int, lines: Sequence[Any]) -> None:
        if index < len(self._tails):
            with self._lock:
                self._tails[index].extend(map(format_line, lines[-self.tail:]))
                self._logs_dirty.add(index)

    def _tick(self) -> None:
        self._timer = None
        if self._finalised:
            return
        self._flush()
        self._timer = get_loop().call_later(TABLE_EVERY_S, self._tick)

    def _flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._table_written >= TABLE_EVERY_S:
            self._table_written = now
            html = self.runs.table().html()
            if html != self._html:
                self._html = html
                self._table_w.value = html
                self.writes += 1
            if self._panes_w is not None:
                titles = self._pane_titles()
                if titles != self._titles:
                    self._titles = titles
                    self._panes_w.titles = titles
                    self.writes += 1
        with self._lock:
            due = [i for i in self._logs_dirty
                   if force or now - self._log_written[i] >= LOG_EVERY_S]
            snapshots = {i: list(self._tails[i]) for i in due}
            self._logs_dirty -= set(due)
        for index, lines in snapshots.items():
            self._log_written[index] = now
            self._logs_w[index].outputs = _stream_outputs(lines, 0)
            self.writes += 1

    def _finalise(self) -> None:
        """The sweep ended: last flush, stop the tick, and (background) write the outcome."""
        if self._finalised:
            return
        self._finalised = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush(force=True)
        if self._background:
            self._write_summary()

    # -- main thread ---------------------------------------------------------------------

    def _last_output(self) -> None:
        def final() -> None:
            if self.runs.done:
                self._finalise()
            else:
                self._flush(force=True)

        call_and_wait(final, timeout=5)

    def _show_summary(self, text: str) -> None:
        if self._summary_handle is not None:
            self._summary_handle.update({"text/plain": text}, raw=True)
        else:
            self._print(text)


def follow_sweep(runs: Runs, view: SweepView, *,
                 each: Callable[[], object] | None = None) -> None:
    """Block until every job of the sweep is done, the view drained on this thread every
    slice (and ``each()`` called), then write its table. Ctrl-C stops every job of the
    sweep (:meth:`~nosana_magic.sweeps.Runs.wait`); the view writes where they are, and the
    ``JobInterrupted`` is raised."""

    def tick() -> None:
        if each is not None:
            each()
        view.drain()

    try:
        runs.wait(each=tick)
    except KeyboardInterrupt:
        view.finish(interrupted=True)
        raise
    if each is not None:
        each()
    view.finish()
