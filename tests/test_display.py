"""JobView: coalesced widget traffic, bounded memory, the text view, the final summary.

These tests drive the view with a stand-in job whose events are delivered on the runner's
loop thread, as the real ``ConfidentialJob`` delivers them. Widget messages are counted by
installing a counting comm (``comm.create_comm`` is what ipywidgets opens each widget with).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import comm
import pytest
from comm.base_comm import BaseComm

from nosana_magic import runner
from nosana_magic.display import FLUSH_INTERVAL_S, JobView, Table, format_line, summary_text
from nosana_magic.network.base import Market
from nosana_magic.results import ServiceUrl

from .waiting import PATIENCE


@dataclass(frozen=True)
class Line:
    op_id: str | None
    stream: str
    text: str
    timestamp: float = 0.0


@dataclass(frozen=True)
class Event:
    kind: str
    job: Any
    lines: tuple[Line, ...] = ()


@dataclass
class Op:
    op_id: str
    status: str
    exit_code: int | None
    logs: list[Line] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    ran: bool = True


class FakeJob:
    """Just what the view reads from a ConfidentialJob; events go out on the loop thread."""

    def __init__(self) -> None:
        self.address: str | None = "FAe4sisG95oZ42w7buUn5qEE4TAnfTTFPiguZUHmhiF"
        self.network_name = "local"
        self.market: Market | None = Market("mkt", "local-cpu", price_per_second=20)
        self.node: str | None = "Node1111111111111111111111111111111111111111"
        self.phase = "running"
        self.status = "running"
        self.reason = ""
        self.done = False
        self.ok = False
        self.elapsed: float | None = 1.0
        self.cost: float | None = None
        self.cost_usd: float | None = None
        self.ops: dict[str, Op] = {}
        self.results: dict[str, Any] = {}
        self.urls: list[ServiceUrl] = []
        self.error: BaseException | None = None
        self.logs: list[Line] = []
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if event.kind == "done":
                self.done = True
            for listener in list(self._listeners):
                listener(event)

    def emit(self, *events: Event) -> None:
        """Deliver events on the loop thread and wait until they were handled."""
        handled = threading.Event()

        def run() -> None:
            self._dispatch(list(events))
            handled.set()

        runner.call_soon(run)
        assert handled.wait(PATIENCE)

    def log(self, text: str, stream: str = "stdout", op_id: str | None = "train") -> Event:
        line = Line(op_id, stream, text)
        self.logs.append(line)
        return Event("log", self, (line,))

    def finish(self, status: str = "succeeded") -> None:
        self.status = status
        self.phase = "done"
        self.ok = status == "succeeded"
        self.reason = "" if self.ok else f"it {status}"
        self.ops = {"train": Op("train", status, 0 if self.ok else 143)}
        self.emit(Event("done", self))


class CountingComm(BaseComm):
    """A comm that records what would be sent to the frontend."""

    sent: ClassVar[list[tuple[str, int]]] = []

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        CountingComm.sent.append((msg_type, len(repr(data))))


@pytest.fixture
def counting_comm(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    CountingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", CountingComm)
    yield CountingComm.sent


def _updates(sent: list[tuple[str, int]]) -> list[int]:
    return [size for kind, size in sent if kind == "comm_msg"]


def _wait_for(predicate: Callable[[], bool], timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_ten_thousand_lines_in_one_second_cost_tens_of_messages(
        counting_comm: list[tuple[str, int]]) -> None:
    job = FakeJob()
    view = JobView(job, mode="widget", tail=1000, stdout=io.StringIO()).show()
    before = len(_updates(counting_comm))
    start = time.monotonic()
    # 10,000 lines over one second, in 100 bursts of 100 (a fast training loop).
    for burst in range(100):
        job.emit(*(job.log(f"step {burst * 100 + i} loss=0.{i:04d}") for i in range(100)))
        time.sleep(max(0.0, start + (burst + 1) / 100 - time.monotonic()))
    job.finish()
    view.finish()
    elapsed = time.monotonic() - start
    messages = len(_updates(counting_comm)) - before
    # About 10 log flushes per second plus a few header/URL updates: tens, not thousands.
    print(f"{messages} messages, {view.flushes} flushes in {elapsed:.2f} s")
    assert messages <= 15 * elapsed / 1.0 + 10, (messages, elapsed)
    assert view.flushes <= 10 * elapsed + 3
    # The last state shows the tail, the newest line included.
    text = "".join(o["text"] for o in view._log_w.outputs)
    assert "step 9999 loss=0.0099" in text
    assert "9,000 earlier lines not shown" in text


def test_view_memory_is_bounded_by_the_tail(counting_comm: list[tuple[str, int]]) -> None:
    job = FakeJob()
    view = JobView(job, mode="widget", tail=200, stdout=io.StringIO()).show()
    for chunk in range(50):
        job.emit(*(job.log("x" * 80 + f" {chunk}:{i}") for i in range(2000)))
    job.finish()
    view.finish()
    assert len(view._lines) == 200
    assert view._dropped == 100_000 - 200
    outputs = view._log_w.outputs
    shown = sum(o["text"].count("\n") for o in outputs)
    assert shown == 201  # the tail plus the "earlier lines not shown" note
    # Every message is bounded by the tail size, not by the number of lines received.
    assert max(_updates(counting_comm)) < 200 * 120
    assert len(job.logs) == 100_000  # the handle keeps every line


def test_stderr_is_distinguishable_and_node_lines_are_marked() -> None:
    assert format_line(Line("train", "stderr", "boom\n")) == ("stderr", "[train] boom")
    assert format_line(Line("train", "stdout", "ok")) == ("stdout", "[train] ok")
    # The host's own lines are shown as it wrote them, marked as the host's.
    assert format_line(Line(None, "node", "pulling image")) == ("stdout", "· host: pulling image")
    # A live line whose op could not be told (several ran; a host does not say) is marked.
    assert format_line(Line(None, "output", "epoch 1")) == ("stdout", "[?] epoch 1")
    assert format_line(Line("train", "output", "epoch 1")) == ("stdout", "[train] epoch 1")


def test_widget_streams_keep_stderr_apart(counting_comm: list[tuple[str, int]]) -> None:
    job = FakeJob()
    view = JobView(job, mode="widget", stdout=io.StringIO()).show()
    job.emit(job.log("a"), job.log("b"), job.log("bad", "stderr"), job.log("c"))
    job.finish()
    view.finish()
    assert [(o["name"], o["text"]) for o in view._log_w.outputs] == [
        ("stdout", "[train] a\n[train] b\n"), ("stderr", "[train] bad\n"),
        ("stdout", "[train] c\n")]


def test_timer_stops_when_the_job_ends_and_no_thread_leaks(
        counting_comm: list[tuple[str, int]]) -> None:
    runner.get_loop()
    threads = threading.active_count()
    job = FakeJob()
    view = JobView(job, mode="widget", stdout=io.StringIO()).show()
    job.emit(job.log("hello"))
    time.sleep(3 * FLUSH_INTERVAL_S)
    job.finish()
    _wait_for(lambda: view._finalised)
    view.finish()
    settled = len(counting_comm)
    time.sleep(5 * FLUSH_INTERVAL_S)
    assert len(counting_comm) == settled  # nothing sent after the end
    assert view._timer is None
    assert job._listeners == []  # unsubscribed
    assert threading.active_count() == threads


def test_urls_show_as_links_as_soon_as_known(counting_comm: list[tuple[str, int]]) -> None:
    job = FakeJob()
    view = JobView(job, mode="widget", stdout=io.StringIO()).show()
    job.urls = [ServiceUrl("http://127.0.0.1:9/service/abc", 8080, "serve", True, "ONLINE")]
    job.emit(Event("urls", job))
    _wait_for(lambda: "href" in view._urls_w.value)
    assert "(private)" in view._urls_w.value
    job.finish()
    view.finish()


def test_quiet_widget_has_no_log_area(counting_comm: list[tuple[str, int]]) -> None:
    job = FakeJob()
    view = JobView(job, mode="widget", quiet=True, stdout=io.StringIO()).show()
    job.emit(*(job.log(f"line {i}") for i in range(100)))
    job.finish()
    view.finish()
    assert view._log_w is None and view.flushes == 0
    assert len(job.logs) == 100


def test_text_view_is_written_by_the_main_thread_only() -> None:
    out, err = io.StringIO(), io.StringIO()
    job = FakeJob()
    view = JobView(job, mode="text", stdout=out, stderr=err).show()
    job.emit(job.log("first"), job.log("oops", "stderr"))
    assert "first" not in out.getvalue()  # queued: the loop thread never writes
    view.drain()
    assert "[train] first" in out.getvalue()
    assert "[train] oops" in err.getvalue()
    job.finish()
    view.finish()
    summary = out.getvalue().splitlines()
    assert any(line.startswith(f"nosana job {job.address} on local: succeeded")
               for line in summary)
    assert "  op train: succeeded (exit 0)" in summary
    assert not any(line.startswith("  why:") for line in summary)


def test_quiet_text_view_prints_status_only() -> None:
    out = io.StringIO()
    job = FakeJob()
    view = JobView(job, mode="text", quiet=True, stdout=out, stderr=out).show()
    job.emit(job.log("noise"))
    view.drain()
    job.finish()
    view.finish()
    assert "noise" not in out.getvalue()
    assert "succeeded" in out.getvalue()


def test_summary_lists_ops_results_urls_and_cost() -> None:
    job = FakeJob()
    job.finish()
    job.results = {"loss": 0.0123, "accuracy": 0.97}
    job.urls = [ServiceUrl("http://127.0.0.1:9/service/xyz", 8080, "serve", True, "ONLINE")]
    job.cost = 0.0004
    text = summary_text(job)
    assert "results: loss=0.0123, accuracy=0.97" in text
    # The job is done: its service is no longer served, whatever its last health check said.
    assert "url: http://127.0.0.1:9/service/xyz (private, op serve, port 8080, ended)" in text
    assert "ONLINE" not in text
    assert "cost 0.0004 NOS" in text


def test_services_show_their_health_while_running_and_ended_after(
        counting_comm: list[tuple[str, int]]) -> None:
    job = FakeJob()
    job.urls = [ServiceUrl("http://127.0.0.1:9/service/xyz", 8080, "serve", True, "ONLINE")]
    assert "(private, op serve, port 8080, ONLINE)" in summary_text(job)
    view = JobView(job, mode="widget", stdout=io.StringIO()).show()
    _wait_for(lambda: "ONLINE" in view._urls_w.value)
    job.finish()
    view.finish()
    assert "ONLINE" not in view._urls_w.value and "(ended)" in view._urls_w.value


def test_links_are_styled_as_links(counting_comm: list[tuple[str, int]]) -> None:
    job = FakeJob()
    job.urls = [ServiceUrl("http://127.0.0.1:9/service/xyz", 8080, "serve", True, "ONLINE")]
    view = JobView(job, mode="widget", stdout=io.StringIO()).show()
    _wait_for(lambda: "href" in view._urls_w.value)
    assert 'style="color:#0969da;text-decoration:underline"' in view._urls_w.value
    job.finish()
    view.finish()


def test_summary_placeholder_names_no_status(monkeypatch: pytest.MonkeyPatch,
                                            counting_comm: list[tuple[str, int]]) -> None:
    shown: list[dict[str, str]] = []

    def fake_display(obj: Any, raw: bool = False, display_id: Any = None) -> RecordingHandle:
        shown.append(obj)
        return RecordingHandle()

    monkeypatch.setattr("IPython.display.display", fake_display)
    job = FakeJob()
    job.phase = "queued"
    view = JobView(job, mode="widget", stdout=io.StringIO()).show()
    assert shown[-1] == {"text/plain": "nosana job on local: running… the summary replaces "
                                       "this line when the job ends"}
    job.finish()
    view.finish()


def test_the_factory_picks_one_of_two_views_over_one_summary() -> None:
    from nosana_magic.display import Summary, TextView, WidgetView

    job = FakeJob()
    assert type(JobView(job, mode="text")) is TextView
    assert type(JobView(job, mode="widget")) is WidgetView
    assert type(JobView(job)) is TextView  # auto, outside a kernel
    assert isinstance(JobView(job, mode="widget"), JobView)
    job.phase = job.status = "queued"
    summary = Summary.of(job)
    assert summary.phase_line() == (f"· queued: job {job.address} on market local-cpu "
                                    "(0.072 NOS/h)")
    assert "<b style=\"color:#0969da\">queued</b>" in summary.header_html()
    assert "FAe4…mhiF" in summary.header_html() and "Node…1111" in summary.header_html()
    assert summary.text() == summary_text(job)


def test_table_renders_text_and_html() -> None:
    table = Table(["a", "bb"], [["1", "<x>"]], title="t")
    assert repr(table).splitlines() == ["t", "a  bb", "-  ---", "1  <x>"]
    assert "&lt;x&gt;" in table._repr_html_()
    assert "(none)" in repr(Table(["a"], []))


def test_log_box_scrolls_from_the_bottom(counting_comm: list[tuple[str, int]]) -> None:
    """Each flush replaces the whole output area; the box that scrolls it is a reversed flex
    column (scroll origin at the end of the log), so redraws keep the newest lines in view.
    The Output inside must not shrink, or its own output area becomes the scroller."""
    job = FakeJob()
    view = JobView(job, mode="widget", stdout=io.StringIO()).show()
    box = view.widget.children[-1]
    assert box.children == (view._log_w,)
    assert box.layout.display == "flex"
    assert box.layout.flex_flow == "column-reverse"
    assert box.layout.overflow == "auto" and box.layout.max_height
    assert view._log_w.layout.flex == "none"
    assert not view._log_w.layout.max_height  # only the box scrolls
    job.finish()
    view.finish()


class RecordingHandle:
    """Stands for the summary's display handle: keeps what it was updated with."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def update(self, bundle: dict[str, str], raw: bool = False) -> None:
        self.texts.append(bundle["text/plain"])


def test_interrupted_view_says_stopping_then_the_final_summary(
        counting_comm: list[tuple[str, int]]) -> None:
    job = FakeJob()
    view = JobView(job, mode="widget", stdout=io.StringIO()).show()
    handle = view._summary_handle = RecordingHandle()
    view.finish(interrupted=True)  # the cell ends; the job is still winding down
    assert len(handle.texts) == 1
    assert handle.texts[0].startswith(f"nosana job {job.address} on local: running")
    assert "stopping: the stop was requested, the job had not ended yet" in handle.texts[0]
    job.finish("stopped")  # the loop writes the final summary over it
    _wait_for(lambda: len(handle.texts) == 2)
    assert handle.texts[1].startswith(f"nosana job {job.address} on local: stopped")
    assert "stopping:" not in handle.texts[1]
    view.finish(interrupted=True)
    view.close()
    assert len(handle.texts) == 2


def test_interrupted_text_view_prints_a_stopping_summary_once() -> None:
    out = io.StringIO()
    job = FakeJob()
    view = JobView(job, mode="text", stdout=out, stderr=out).show()
    view.finish(interrupted=True)
    view.finish(interrupted=True)
    assert out.getvalue().count("stopping: the stop was requested") == 1
    job.finish("stopped")
    view.finish()
    assert f"nosana job {job.address} on local: stopped" in out.getvalue()
    assert "  op train: stopped (exit 143)" in out.getvalue()
    assert "  why: it stopped" in out.getvalue()
    view.close()


def test_uninterrupted_finish_of_a_running_job_writes_no_summary() -> None:
    out = io.StringIO()
    job = FakeJob()
    view = JobView(job, mode="text", stdout=out, stderr=out).show()
    view.finish()
    assert "nosana job" not in out.getvalue()
    job.finish()
    view.finish()
