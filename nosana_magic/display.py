"""The live view of one confidential job in a notebook or a terminal, and its summary.

Two views over one :class:`Summary` (what they say about the job, read from the handle once
per rendering); ``JobView(job, mode=…)`` picks one (``auto``: widgets in a Jupyter kernel
with ipywidgets, text elsewhere):

* :class:`WidgetView`: a header (status, address, market, node, elapsed time, price), a log
  area and the service URLs. Log lines arrive on the runner's loop thread
  (``job.subscribe``); they go into a bounded tail and the log area is rewritten by
  *assigning* ``Output.outputs`` at most ~10 times per second (in a box that scrolls from
  the bottom, so redraws keep the newest lines in view). We never use ``with out:`` (it
  captures by the current parent message, which is racy from threads) and never ``print()``
  from the loop thread (ipykernel routes such output to whichever cell it guesses, and the
  guess changed across releases). Each assignment sends the whole tail, so the tail is
  bounded (1,000 lines by default) and the full log stays on the job handle.
* :class:`TextView` (terminal IPython, plain Python, or no ipywidgets): lines are queued by
  the listener and printed by the *main* thread, which calls :meth:`JobView.drain` between
  its short timed waits on the job (:func:`follow`).

Either way the view ends with the plain-text summary. In a kernel it is written through a
display handle (``display(..., display_id=True)`` then ``update``), because a widget's content
is not part of the cell's saved output: a notebook saved or rendered without widget state
still shows how the job ended.
"""

from __future__ import annotations

import contextlib
import html
import itertools
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TextIO

from .protocol import format_duration, short_address
from .runner import call_and_wait, call_soon, get_loop, in_runner_thread, run_sync

if TYPE_CHECKING:
    import asyncio

    from .job import ConfidentialJob, JobEvent, LogLine
    from .results import ServiceUrl

__all__ = [
    "FLUSH_INTERVAL_S",
    "JobView",
    "Summary",
    "Table",
    "TextView",
    "ViewMode",
    "WidgetView",
    "follow",
    "format_line",
    "in_kernel",
    "summary_text",
]

#: The shortest time between two updates of the log area: at most ~10 messages per second
#: per view, whatever the log rate (each update resends the whole visible tail).
FLUSH_INTERVAL_S = 0.1

#: How often the header is re-rendered while nothing else happens (the elapsed time moves).
#: A header update is sent only when its text changed, so at most one per second.
_HEADER_EVERY_S = 1.0

#: Text view: lines queued for the main thread beyond this are dropped (and counted), so a
#: caller that stops draining cannot make the queue grow without bound.
_TEXT_QUEUE_MAX = 20_000

ViewMode = Literal["auto", "widget", "text"]

_STATUS_COLOUR = {"succeeded": "#1a7f37", "failed": "#cf222e", "lost": "#cf222e",
                  "stopped": "#9a6700", "expired": "#9a6700"}

#: JupyterLab styles ``<a>`` in widget HTML as plain text: the links say what they are.
_LINK_STYLE = "color:#0969da;text-decoration:underline"


async def _call(fn: Callable[[], None]) -> None:
    fn()


def in_kernel() -> bool:
    """True inside a Jupyter kernel (a ZMQ shell), where widgets and display handles work.

    Checked by class name so that terminal IPython and plain Python never import ipykernel.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and any(
        cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__
    )


def _widgets_available() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def format_line(line: LogLine) -> tuple[Literal["stdout", "stderr"], str]:
    """The stream a log line is shown on, and its text (prefixed with its op, ``[?]`` when it
    could not be told; no newline).

    Host messages (``node``) go to stdout as the host wrote them, marked ``· host:``: they
    are the host's commentary (a host says "finished successfully" after a failed op), never
    the package's verdict, which the summary gives. Container stderr stays on stderr, which
    frontends and terminals show distinctly.
    """
    text = line.text.rstrip("\n")
    if line.stream == "node":
        return "stdout", f"· host: {text}"
    # A host does not say which op printed a line (docs/protocol.md §7): "[?]" marks one
    # whose op could not be told (several ran); the results say afterwards.
    prefix = f"[{line.op_id}] " if line.op_id else "[?] " if line.stream == "output" else ""
    return ("stderr" if line.stream == "stderr" else "stdout"), prefix + text


def _on_stderr(shown: tuple[str, str]) -> bool:
    return shown[0] == "stderr"


def _run_on_stderr(run: tuple[bool, list[str]]) -> bool:
    return run[0]


# --------------------------------------------------------------------------- the summary


def _elapsed_text(seconds: float) -> str:
    return "under 1s" if seconds < 1 else format_duration(seconds)


def _nos(amount: float) -> str:
    """NOS with up to 6 decimals (1e-6 NOS is the smallest unit), no exponent."""
    text = f"{amount:.6f}".rstrip("0").rstrip(".")
    return text if text != "0" or amount == 0 else "<0.000001"


@dataclass(frozen=True)
class Summary:
    """What the views say about a job, read from its handle once: every rendering of one
    moment (header, phase line, URLs, the summary) comes from the same snapshot.

    Everything comes from the handle, whose logs, results and errors are already redacted;
    no secret value is added here (URLs are the user's own, private ones are labelled).
    """

    address: str | None
    network: str
    status: str
    done: bool
    elapsed: float | None
    market: str | None
    #: The market's price, ``"… NOS/h"`` ("" when unknown).
    price: str
    node: str | None
    cost: float | None
    #: ``(op id, status, exit code shown or None)`` per op.
    ops: tuple[tuple[str, str, int | None], ...]
    results: tuple[tuple[str, Any], ...]
    urls: tuple[ServiceUrl, ...]
    reason: str
    #: USD, when credits pay (then ``price`` and the cost are in credits, not NOS).
    cost_usd: float | None = None

    @classmethod
    def of(cls, job: ConfidentialJob) -> Summary:
        market = job.market
        price = (f"{market.nos_per_hour:.4g} NOS/h"
                 if market is not None and market.price_per_second else "")
        cost_usd = job.cost_usd
        if cost_usd is not None and market is not None:
            # Paid with credits: the NOS on chain are Nosana's, the dollars are the user's.
            from .network.markets import format_usd  # (loaded by then: not at %load_ext)

            price = f"{format_usd(market.usd_per_hour_with_fee or 0)}/h in credits"
        done = job.done
        return cls(
            address=job.address, network=job.network_name, status=str(job.status),
            done=done, elapsed=job.elapsed, market=market.slug if market else None,
            price=price, node=job.node, cost=job.cost,
            ops=tuple((op_id, op.status, None if op.exit_code is None or not op.ran
                       else op.exit_code) for op_id, op in job.ops.items()),
            results=tuple(job.results.items()), urls=tuple(job.urls),
            reason=job.reason if done else "", cost_usd=cost_usd,
        )

    def service_status(self, url: ServiceUrl) -> str:
        """A service's status as shown: its last health check while the job runs, ``ended``
        once the job is done (the host no longer serves it, whatever the last check said)."""
        if self.done:
            return "ended"
        return "" if url.status == "UNKNOWN" else url.status

    def text(self) -> str:
        """A plain-text account of how the job ended (or where it is), a few lines long."""
        head = f"nosana job {self.address or '(not listed)'} on {self.network}: {self.status}"
        if self.elapsed is not None:
            head += f" after {_elapsed_text(self.elapsed)}"
        lines = [head]
        details = []
        if self.market is not None:
            details.append(f"market {self.market}")
        if self.node:
            details.append(f"node {self.node}")
        if self.cost_usd is not None:
            from .network.markets import format_usd

            details.append(f"{'cost' if self.done else 'at most'} {format_usd(self.cost_usd)} "
                           "in credits")
        elif self.cost is not None:
            details.append(f"{'cost' if self.done else 'at most'} {_nos(self.cost)} NOS")
        if details:
            lines.append("  " + " · ".join(details))
        for op_id, status, code in self.ops:
            lines.append(f"  op {op_id}: {status}" + ("" if code is None else f" (exit {code})"))
        if self.results:
            values = ", ".join(f"{name}={value!r}" for name, value in self.results)
            lines.append(f"  results: {values}")
        for url in self.urls:
            tags = ["private" if url.private else "public", f"op {url.op_id}", f"port {url.port}"]
            status = self.service_status(url)
            if status:
                tags.append(status)
            lines.append(f"  url: {url.url} ({', '.join(tags)})")
        if self.done and self.reason:
            lines.append(f"  why: {self.reason}")
        return "\n".join(lines)

    def phase_line(self) -> str:
        """The text view's line for the job's (new) status."""
        if self.status == "queued":
            market = f" on market {self.market}" if self.market is not None else ""
            price = f" ({self.price})" if self.price else ""
            return f"· queued: job {self.address}{market}{price}"
        if self.status == "running" and self.node:
            return f"· running on node {self.node}"
        return f"· {self.status.replace('-', ' ')}"

    def header_html(self) -> str:
        """The widget view's header line."""
        colour = _STATUS_COLOUR.get(self.status, "#0969da")
        parts = [
            f'<b style="color:{colour}">{html.escape(self.status)}</b>',
            f'job <code title="{html.escape(self.address or "")}">'
            f"{html.escape(short_address(self.address or '…'))}</code>",
            html.escape(self.network),
        ]
        if self.market is not None:
            parts.append(f"market <code>{html.escape(self.market)}</code>")
        if self.node:
            parts.append(f'node <code title="{html.escape(self.node)}">'
                         f"{html.escape(short_address(self.node))}</code>")
        if self.elapsed is not None:
            parts.append(html.escape(_elapsed_text(self.elapsed)))
        if self.price:
            parts.append(html.escape(self.price))
        return "<div>" + " · ".join(parts) + "</div>"

    def urls_html(self) -> str:
        """The widget view's list of service links."""
        items = []
        for url in self.urls:
            badge = " <i>(private)</i>" if url.private else ""
            shown = self.service_status(url)
            status = f" ({html.escape(shown)})" if shown == "ended" else (
                f" {html.escape(shown)}" if shown else "")
            items.append(
                f'<li><a href="{html.escape(url.url)}" target="_blank" '
                f'rel="noopener noreferrer" style="{_LINK_STYLE}">{html.escape(url.url)}</a>'
                f"{badge} · op {html.escape(url.op_id)} · port {html.escape(str(url.port))}"
                f"{status}</li>"
            )
        return f"<ul style='margin:0'>{''.join(items)}</ul>" if items else ""


def summary_text(job: ConfidentialJob) -> str:
    """A plain-text account of how the job ended (or where it is): :meth:`Summary.text`."""
    return Summary.of(job).text()


# --------------------------------------------------------------------------- the views


class JobView:
    """The live view of one job. Create and :meth:`show` it on the main thread.

    ``JobView(job, mode=…)`` makes the view ``mode`` names: a :class:`WidgetView` or a
    :class:`TextView` (``auto``: widgets in a kernel when ipywidgets is installed). ``tail``
    bounds the lines the widget holds (the handle keeps every line); ``quiet`` shows the
    status only.
    """

    mode: ClassVar[Literal["widget", "text"]]

    def __new__(cls, job: ConfidentialJob, *, tail: int = 1000, quiet: bool = False,
                mode: ViewMode = "auto", stdout: TextIO | None = None,
                stderr: TextIO | None = None) -> JobView:
        if cls is JobView:
            if mode == "auto":
                mode = "widget" if in_kernel() and _widgets_available() else "text"
            cls = WidgetView if mode == "widget" else TextView
        return super().__new__(cls)

    def __init__(self, job: ConfidentialJob, *, tail: int = 1000, quiet: bool = False,
                 mode: ViewMode = "auto", stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> None:
        if tail < 1:
            raise ValueError(f"tail must be at least 1 line, got {tail}")
        self.job = job
        self.tail = tail
        self.quiet = quiet
        self._out = stdout
        self._err = stderr
        self._lock = threading.Lock()
        self._summary_lock = threading.Lock()
        self._urls_dirty = False
        self._summary_shown = False
        self._stopping_shown = False
        self._background = False
        self._unsubscribe: Callable[[], None] | None = None
        self._post_run_hook: Callable[..., None] | None = None

    # -- what each view does its own way -------------------------------------------------

    def _open(self) -> None:
        """Main thread, before following: put the view on screen."""

    def _following(self) -> None:
        """Main thread, once subscribed."""

    def _record(self, lines: Sequence[LogLine]) -> None:
        """Loop thread: log lines arrived (what came together, in order)."""

    def _on_event(self, event: JobEvent) -> None:
        """Loop thread, for every job event: record, never write output here."""
        if event.kind == "log" and event.lines and not self.quiet:
            self._record(event.lines)
        elif event.kind == "urls":
            self._urls_dirty = True

    def _last_output(self) -> None:
        """Main thread, finishing: bring the view up to date."""

    def _show_summary(self, text: str, *, final: bool) -> None:
        """Write the summary (``final``: how the job ended; else it is still stopping)."""
        self._print(text)

    def drain(self) -> None:
        """Text view: print what the job said since the last call (main thread)."""

    # -- showing ------------------------------------------------------------------------

    def show(self, *, background: bool = False) -> JobView:
        """Display the view (main thread) and start following the job.

        With ``background`` the view finishes on its own: at the end of the first cell that
        runs once the job is done (for instance the one calling ``job.wait()``), the main
        thread writes the summary; a widget view also writes it from the loop thread as soon
        as the job ends (live frontends apply a display update by its id, whichever cell is
        running) and sends its final state again then (headless runs, nbclient, record only
        messages of the cell they are executing, so this is what makes a saved notebook hold
        the outcome).
        """
        self._background = background
        self._open()
        if in_runner_thread():
            self._follow()
        else:
            run_sync(_call(self._follow), timeout=10)
        self._following()
        if background:
            self._hook_post_run()
        return self

    def _follow(self) -> None:
        """On the loop thread: take the lines so far and subscribe, with nothing in between.

        Jobs append log lines on the loop thread and do not replay them to new listeners, so
        doing both here means no line is missed or shown twice (a job that started a moment
        ago, or one re-attached with ``%nosana attach``).
        """
        backlog = self.job.logs
        self._unsubscribe = self.job.subscribe(self._on_event)
        if not self.quiet and backlog:
            self._record(backlog)
        if self.job.urls:
            self._urls_dirty = True

    def finish(self, *, interrupted: bool = False) -> None:
        """The job ended (or the caller stops following it): last output, then the summary.

        Main thread. Safe to call more than once; the summary is written once. With
        ``interrupted`` (the cell was interrupted and the job told to stop) a job that has not
        ended yet still gets a summary, saying it was stopping; the widget view replaces it
        with the final one when the job ends.
        """
        self._last_output()
        if self.job.done:
            self._write_summary()
            self.close()
        elif interrupted:
            self._write_stopping_summary()

    def _write_stopping_summary(self) -> None:
        """The interrupted cell ends before the job: say so, where the summary goes."""
        with self._summary_lock:
            if self._summary_shown or self._stopping_shown:
                return
            self._stopping_shown = True
            self._show_summary(summary_text(self.job) + "\n  stopping: the stop was requested, "
                               "the job had not ended yet (job.wait() waits for the end)",
                               final=False)

    def _write_summary(self) -> None:
        # One lock around check and write: the final summary is never overwritten by the
        # "stopping" one, whichever thread writes first.
        with self._summary_lock:
            if self._summary_shown:
                return
            self._summary_shown = True
            self._show_summary(summary_text(self.job), final=True)

    def close(self) -> None:
        """Stop following the job (a widget view stays on screen with its last content)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._unhook_post_run()

    def _print(self, text: str, *, err: bool = False) -> None:
        stream = (self._err or sys.stderr) if err else (self._out or sys.stdout)
        print(text, file=stream, flush=True)

    # -- background views finish from the main thread ------------------------------------

    def _hook_post_run(self) -> None:
        """Background view: finish from the main thread after a cell, once the job is done."""
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover
            return
        shell = get_ipython()
        if shell is None or self._post_run_hook is not None:
            return

        def _after_cell(*_: object) -> None:
            if not self.job.done:
                return
            self._unhook_post_run()
            self.finish()
            self._finished_in_background()

        self._post_run_hook = _after_cell
        shell.events.register("post_run_cell", _after_cell)

    def _finished_in_background(self) -> None:
        """Main thread, after the cell that found a background job done."""

    def _unhook_post_run(self) -> None:
        hook, self._post_run_hook = self._post_run_hook, None
        if hook is None:
            return
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            with contextlib.suppress(ValueError):  # already gone
                shell.events.unregister("post_run_cell", hook)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.job!r}, mode={self.mode!r}, tail={self.tail}, "
                f"quiet={self.quiet})")


class TextView(JobView):
    """Lines and phase changes printed by the main thread (:meth:`drain`), then the summary."""

    mode = "text"

    def __init__(self, job: ConfidentialJob, **options: Any) -> None:
        super().__init__(job, **options)
        # What the main thread still has to print, queued by the loop thread.
        #: Lines waiting for the main thread, as runs on one stream: (stderr?, texts).
        self._pending: deque[tuple[bool, list[str]]] = deque()
        self._pending_lines = 0
        self._skipped = 0
        self._last_status: str | None = None
        self._urls_shown: set[tuple[str, str]] = set()

    def _open(self) -> None:
        summary = Summary.of(self.job)
        self._last_status = summary.status
        if summary.address:
            self._print(summary.phase_line())
        else:
            self._print(f"nosana: confidential job on {summary.network}")

    def _following(self) -> None:
        if self._background:
            self._print("running in background: the summary follows when the job ends "
                        "(`.wait()` blocks until then)")

    def _record(self, lines: Sequence[LogLine]) -> None:
        if self._background:
            return  # nobody drains a background text view; the handle keeps every line
        with self._lock:
            room = max(0, _TEXT_QUEUE_MAX - self._pending_lines)
            if len(lines) > room:
                self._skipped += len(lines) - room
                lines = lines[:room]
            for err, run in itertools.groupby(map(format_line, lines), key=_on_stderr):
                texts = [text for _stream, text in run]
                self._pending.append((err, texts))
                self._pending_lines += len(texts)

    def drain(self) -> None:
        """Print the queued lines, status changes and new service URLs (main thread)."""
        with self._lock:
            runs = list(self._pending)
            self._pending.clear()
            self._pending_lines = 0
            skipped, self._skipped = self._skipped, 0
        summary = Summary.of(self.job)
        if summary.status != self._last_status and not summary.done:
            self._last_status = summary.status
            self._print(summary.phase_line())
        if skipped:
            self._print(f"… {skipped:,} lines not shown (job.logs has them all)")
        # One write per run of lines on the same stream.
        for err, group in itertools.groupby(runs, key=_run_on_stderr):
            self._print("\n".join(text for _err, texts in group for text in texts), err=err)
        if self._urls_dirty:
            self._urls_dirty = False
            for url in summary.urls:
                # Once per URL and status (a health-checked service goes OFFLINE -> ONLINE).
                if (url.url, url.status) not in self._urls_shown:
                    self._urls_shown.add((url.url, url.status))
                    kind = "private" if url.private else "public"
                    self._print(f"· {kind} service of op {url.op_id}: {url.url} ({url.status})")

    def _last_output(self) -> None:
        self.drain()


class WidgetView(JobView):
    """A header, the log's bounded tail and the service URLs as ipywidgets, written from the
    loop thread at most every ``FLUSH_INTERVAL_S``; the summary through a display handle."""

    mode = "widget"

    def __init__(self, job: ConfidentialJob, **options: Any) -> None:
        super().__init__(job, **options)
        # The visible tail, lines that fell off it, and what changed since the last flush.
        # Only the loop thread writes widgets while the job runs.
        self._lines: deque[tuple[str, str]] = deque(maxlen=self.tail)
        self._dropped = 0
        self._logs_dirty = False
        self._header_dirty = False
        self._header = ""
        self._last_header_at = 0.0
        self._ticking = False
        self._timer: asyncio.TimerHandle | None = None
        self._finalised = False
        #: Set by an interrupted cell: the loop writes the final summary when the job ends.
        self._summary_when_done = False
        self.widget: Any = None
        self._header_w: Any = None
        self._urls_w: Any = None
        self._log_w: Any = None
        self._summary_handle: Any = None
        #: Number of times the log area was rewritten (for tests and benchmarks).
        self.flushes = 0

    def _open(self) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        summary = Summary.of(self.job)
        self._header_w = widgets.HTML(summary.header_html())
        self._urls_w = widgets.HTML(summary.urls_html())
        children = [self._header_w, self._urls_w]
        if not self.quiet:
            # Every flush replaces the whole output area, which resets an ordinary scroll
            # box to its top. The log scrolls in a box laid out as a reversed flex column
            # instead, whose scroll origin (scrollTop 0) is the end of the log: it shows the
            # newest lines across redraws, and the user can still scroll up (during or after
            # the job). The Output itself must not shrink (``flex: none``), or its inner
            # output area (overflow auto in JupyterLab) becomes the scroller, from the top.
            self._log_w = widgets.Output(layout=widgets.Layout(flex="none"))
            children.append(widgets.Box([self._log_w], layout=widgets.Layout(
                display="flex", flex_flow="column-reverse", max_height="24em",
                overflow="auto", border="1px solid #ddd")))
        self.widget = widgets.VBox(children)
        self._header = self._header_w.value
        # The widget's own plain-text fallback is its repr (raw HTML of the header); a saved
        # notebook opened without widget state shows this line instead.
        bundle = dict(self.widget._repr_mimebundle_())
        bundle["text/plain"] = "nosana job view (live widget; the summary below is saved)"
        display(bundle, raw=True)  # type: ignore[no-untyped-call]
        # The plain-text record of the outcome: updated in place when the job ends.
        self._summary_handle = display(  # type: ignore[no-untyped-call]
            # Neutral: written once, it must not freeze a status ("queued") in the notebook.
            {"text/plain": f"nosana job on {summary.network}: running… the summary "
                           "replaces this line when the job ends"},
            raw=True, display_id=True)

    def _following(self) -> None:
        call_soon(self._start_ticking)
        if self.job.done:  # finished before we subscribed: no "done" event will come
            call_soon(self._finalise)

    # -- loop thread ---------------------------------------------------------------------

    def _on_event(self, event: JobEvent) -> None:
        super()._on_event(event)
        if event.kind in ("phase", "state"):
            self._header_dirty = True  # shown at the next tick, if its text changed
        elif event.kind == "done":
            self._finalise()

    def _record(self, lines: Sequence[LogLine]) -> None:
        with self._lock:
            before = len(self._lines)
            self._lines.extend(map(format_line, lines[-self.tail:]))  # only these stay
            self._dropped += before + len(lines) - len(self._lines)
            self._logs_dirty = True

    def _start_ticking(self) -> None:
        if self._ticking or self._finalised:
            return
        self._ticking = True
        self._tick()

    def _tick(self) -> None:
        """One coalescing step on the loop: flush what changed, then re-arm unless done."""
        self._timer = None
        if self._finalised:
            return
        if self.job.done:
            self._finalise()
            return
        self._flush()
        self._timer = get_loop().call_later(FLUSH_INTERVAL_S, self._tick)

    def _flush(self, *, force_header: bool = False) -> None:
        with self._lock:
            logs_dirty, self._logs_dirty = self._logs_dirty, False
            snapshot = list(self._lines) if logs_dirty else []
            dropped = self._dropped
        if logs_dirty and self._log_w is not None:
            self._log_w.outputs = _stream_outputs(snapshot, dropped)
            self.flushes += 1
        now = time.monotonic()
        header_due = self._header_dirty or now - self._last_header_at >= _HEADER_EVERY_S
        urls_due = self._urls_dirty and self._urls_w is not None
        if not (urls_due or (self._header_w is not None and (force_header or header_due))):
            return
        summary = Summary.of(self.job)
        if urls_due:
            self._urls_dirty = False
            self._urls_w.value = summary.urls_html()
        if self._header_w is not None and (force_header or header_due):
            self._header_dirty = False
            self._last_header_at = now
            header = summary.header_html()
            if header != self._header:
                self._header = header
                self._header_w.value = header

    def _finalise(self) -> None:
        """The job ended: last flush, stop the timer, and (background) write the summary."""
        with self._lock:
            if self._finalised:
                return
            self._finalised = True
        self._stop_ticking()
        self._urls_dirty = True
        self._flush(force_header=True)
        if self._background or self._summary_when_done:
            self._write_summary()

    def _stop_ticking(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- main thread ---------------------------------------------------------------------

    def _last_output(self) -> None:
        def final() -> None:
            if self.job.done:
                self._finalise()
            else:
                self._flush(force_header=True)

        call_and_wait(final, timeout=5)

    def _show_summary(self, text: str, *, final: bool) -> None:
        if not final:
            self._summary_when_done = True  # the loop writes the final one when the job ends
        if self._summary_handle is not None:
            self._summary_handle.update({"text/plain": text}, raw=True)
        else:
            self._print(text)

    def _write_stopping_summary(self) -> None:
        super()._write_stopping_summary()
        if self._finalised and self.job.done:
            self._write_summary()  # it ended meanwhile, maybe before the loop saw the flag

    def close(self) -> None:
        super().close()
        if not self._finalised:
            def stop() -> None:
                self._finalised = True
                self._stop_ticking()

            call_soon(stop)

    def _finished_in_background(self) -> None:
        """The widgets' last state and the summary, sent once more from the main thread."""
        # Only the content traits: the Output widget's full state also carries its (empty)
        # msg_id, which nbclient's output-widget capture mishandles.
        for widget, key in ((self._header_w, "value"), (self._urls_w, "value"),
                            (self._log_w, "outputs")):
            if widget is not None:
                widget.send_state(key)
        if self._summary_handle is not None:
            self._summary_handle.update({"text/plain": summary_text(self.job)}, raw=True)


def _stream_outputs(lines: Iterable[tuple[str, str]], dropped: int) -> tuple[dict[str, str], ...]:
    """Jupyter stream outputs for ``lines``, consecutive lines of one stream merged."""
    outputs: list[dict[str, str]] = []
    if dropped:
        outputs.append({"output_type": "stream", "name": "stdout",
                        "text": f"… {dropped:,} earlier lines not shown (job.logs has them all)\n"})
    for stream, text in lines:
        if outputs and outputs[-1]["name"] == stream:
            outputs[-1]["text"] += text + "\n"
        else:
            outputs.append({"output_type": "stream", "name": stream, "text": text + "\n"})
    return tuple(outputs)


# --------------------------------------------------------------------------- following


def follow(job: ConfidentialJob, view: JobView, *,
           each: Callable[[], object] | None = None) -> None:
    """Block until the job is done, its view drained on this thread every slice (and
    ``each()`` called), then write the view's summary: the one follow loop of the cell
    magic, ``%nosana attach`` and the demo.

    Ctrl-C stops the job as :meth:`ConfidentialJob.wait` does (a further Ctrl-C does not
    cancel the stop; the end is waited for, bounded); the view then writes its summary,
    saying so if the job has not ended yet, and the ``JobInterrupted`` is raised.
    """

    def tick() -> None:
        if each is not None:
            each()
        view.drain()

    try:
        job.wait(each=tick)
    except KeyboardInterrupt:  # JobInterrupted: the job was told to stop
        view.finish(interrupted=True)
        raise
    if each is not None:
        each()
    view.finish()


# --------------------------------------------------------------------------- tables


class Table:
    """A small table that renders as HTML in a notebook and as aligned text elsewhere.

    What ``%nosana jobs``, ``markets`` and ``config`` return: it lands in ``Out`` and shows
    both ways, and the cells are plain strings (the caller decides what may be shown).
    """

    def __init__(self, columns: list[str], rows: list[list[str]], *, title: str = "",
                 empty: str = "(none)") -> None:
        self.columns = columns
        self.rows = rows
        self.title = title
        self.empty = empty

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        lines = [self.title] if self.title else []
        if not self.rows:
            return "\n".join([*lines, self.empty])
        widths = [max(len(str(c)) for c in column)
                  for column in zip(self.columns, *self.rows, strict=True)]

        def fmt(cells: list[str]) -> str:
            return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        lines += [fmt(self.columns), fmt(["-" * w for w in widths])]
        lines += [fmt(row) for row in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        title = f"<b>{html.escape(self.title)}</b>" if self.title else ""
        if not self.rows:
            return f"{title}<p>{html.escape(self.empty)}</p>"
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>"
                       for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'><code>{html.escape(str(c))}</code>"
                             "</td>" for c in row) + "</tr>"
            for row in self.rows)
        return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
