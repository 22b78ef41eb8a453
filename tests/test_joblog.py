"""The job's log made whole from the live lines and the results' per-op logs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nosana_magic.joblog import JobLog, OpLines, reconcile
from nosana_magic.results import LogLine


def live(text: str, at: float, op: str | None = None) -> LogLine:
    """A container line as the live /log gives it: stream unknown, op where it was told."""
    return LogLine(op, "output", text, at)


def node(text: str, at: float) -> LogLine:
    return LogLine(None, "node", text, at)


def out(op: str, text: str, at: float, stream: str = "stdout") -> LogLine:
    """A line of an op's log in the results."""
    return LogLine(op, stream, text, at)


def shape(lines: list[LogLine]) -> list[tuple[str | None, str, str]]:
    return [(line.op_id, line.stream, line.text) for line in lines]


def test_live_lines_take_op_and_stream_from_the_results() -> None:
    got = reconcile(
        [node("Running op a", 1), live("x", 2), live("oops", 3), live("y", 4),
         node("Op a finished", 5)],
        {"a": [out("a", "x", 2.1), out("a", "oops", 3.1, "stderr"), out("a", "y", 4.1)]},
    )
    assert shape(got.lines) == [
        (None, "node", "Running op a"), ("a", "stdout", "x"), ("a", "stderr", "oops"),
        ("a", "stdout", "y"), (None, "node", "Op a finished")]
    assert (got.restored, got.not_in_results, got.missing) == (0, 0, [])


def test_missed_lines_come_back_in_place_and_repeats_are_kept_apart() -> None:
    # The live stream missed the second "tick" and "b2" (a reconnect); two ops ran at once.
    results = {"a": [out("a", "tick", 2), out("a", "tick", 3), out("a", "done", 4)],
               "b": [out("b", "b1", 2.5), out("b", "b2", 3.5), out("b", "b3", 4.5)]}
    got = reconcile([live("tick", 2), live("b1", 2.5), live("done", 4), live("b3", 4.5)],
                    results)
    assert shape(got.lines) == [
        ("a", "stdout", "tick"), ("b", "stdout", "b1"), ("a", "stdout", "tick"),
        ("a", "stdout", "done"), ("b", "stdout", "b2"), ("b", "stdout", "b3")]
    assert got.restored == 2


def test_lines_that_never_arrived_go_after_the_output_and_before_the_closing_lines() -> None:
    # The live stream was cut before any op output; the host's closing lines did arrive.
    got = reconcile(
        [node("Job definition received", 1), node("Running op a", 2),
         node("Job finished", 9)],
        {"a": [out("a", "one", 3), out("a", "two", 4, "stderr")]},
    )
    assert [line.text for line in got.lines] == [
        "Job definition received", "Running op a", "one", "two", "Job finished"]
    assert got.restored == 2


def test_a_line_put_on_the_wrong_op_finds_its_own() -> None:
    # The live op was a guess from a late /info: the line is b's.
    got = reconcile([live("a1", 1, "a"), live("b1", 2, "a")],
                    {"a": [out("a", "a1", 1)], "b": [out("b", "b1", 2)]})
    assert shape(got.lines) == [("a", "stdout", "a1"), ("b", "stdout", "b1")]
    assert (got.restored, got.not_in_results) == (0, 0)


def test_what_the_results_no_longer_hold_is_kept_or_said_missing() -> None:
    # The host keeps the last 3 lines of an op: l0..l2 are only in the live stream; when the
    # live stream did not have the op's first kept line either, lines may be missing.
    kept = [out("a", f"l{i}", i) for i in range(3, 6)]
    whole = reconcile([live(f"l{i}", i, "a") for i in range(6)], {"a": kept}, cap=3)
    assert [line.text for line in whole.lines] == [f"l{i}" for i in range(6)]
    assert whole.not_in_results == 3 and whole.missing == []
    cut = reconcile([live("l0", 0, "a"), live("l5", 5, "a")], {"a": kept}, cap=3)
    assert [line.text for line in cut.lines] == ["l0", "l3", "l4", "l5"]
    [warning] = cut.missing
    assert warning.startswith("lines of op a before ") and "(3 lines)" in warning


# ---------------------------------------------------------------------- the log in memory


class FakeStore:
    """What the store would read back: every line handed to it, by index."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self.reads = 0

    def read(self, start: int, stop: int | None) -> Iterator[LogLine]:
        self.reads += 1
        yield from self.lines[start:stop]


def numbered(start: int, count: int, op: str | None = "a") -> list[LogLine]:
    return [LogLine(op, "stdout", str(i), float(i)) for i in range(start, start + count)]


def test_a_running_log_keeps_its_window_and_reads_the_rest_back() -> None:
    store, log = FakeStore(), JobLog(window=100)
    log.keep_in(store.read)
    for start in range(0, 1000, 250):
        batch = numbered(start, 250)
        store.lines += batch
        log.extend(batch)
    assert "1,000 lines, 1,000 in memory" in repr(log)  # nothing committed yet: all kept
    log.committed(600)
    assert "400 in memory" in repr(log)  # down to the window, never below what is stored
    log.committed(1000)
    assert "100 in memory" in repr(log)
    assert len(log) == 1000 and log == numbered(0, 1000)
    assert log[0].text == "0" and log[899].text == "899" and log[-1].text == "999"
    assert [line.text for line in log[895:905]] == [str(i) for i in range(895, 905)]
    assert [line.text for line in log[-3:]] == ["997", "998", "999"]
    assert log[10:5] == [] and len(log[::100]) == 10
    with pytest.raises(IndexError):
        log[1000]
    log.done()
    assert "0 in memory" in repr(log) and list(log) == numbered(0, 1000)


def test_without_a_store_every_line_stays_in_memory() -> None:
    log = JobLog(window=10)
    log.extend(numbered(0, 50))
    log.committed(50)
    log.done()
    assert "50 lines, 50 in memory" in repr(log) and log == numbered(0, 50)


def test_the_end_made_whole_waits_for_the_store_to_have_it() -> None:
    store, log = FakeStore(), JobLog(window=10)
    log.keep_in(store.read)
    store.lines += numbered(0, 50, op=None)
    log.extend(numbered(0, 50, op=None))
    log.committed(50)
    assert log.tail(10) == (40, numbered(40, 10, op=None))
    log.replace_from(40, numbered(40, 12))  # two lines put back
    log.done()
    log.committed(52)  # a commit from before the replacement says nothing of the new lines
    assert "12 in memory" in repr(log)
    store.lines[40:] = numbered(40, 12)
    log.committed(52, replaced=True)
    assert "52 lines, 0 in memory" in repr(log)
    assert log == numbered(0, 40, op=None) + numbered(40, 12)


def test_an_ops_lines_are_read_from_the_log() -> None:
    log = JobLog()
    log.extend([LogLine("a", "stdout", "x", 1), LogLine(None, "node", "host", 2),
                LogLine("b", "stderr", "y", 3), LogLine("a", "stderr", "z", 4)])
    lines = OpLines(log, "a")
    assert len(lines) == 2 and [line.text for line in lines] == ["x", "z"]
    assert lines[-1].text == "z" and lines == [log[0], log[3]]


def test_the_end_of_a_long_log_is_made_whole_without_repeating_what_came_before() -> None:
    # Only the last lines are in memory; the results hold more than those.
    results = {"a": [out("a", str(i), i) for i in range(100)], "b": [out("b", "early", 0)]}
    window = [live(str(i), i + 0.5, "a") for i in range(60, 100)]
    got = reconcile(window, results, after_more=True)
    assert shape(got.lines) == [("a", "stdout", str(i)) for i in range(60, 100)]
    assert (got.restored, got.missing) == (0, [])
    # A line the live stream missed inside what is in memory still comes back.
    got = reconcile([line for line in window if line.text != "70"], results, after_more=True)
    assert [line.text for line in got.lines] == [str(i) for i in range(60, 100)]
    assert got.restored == 1
    # The whole log in memory: the same results put every line back.
    assert len(reconcile(window, results).lines) == 101


def test_the_end_made_whole_may_reach_back_into_the_store() -> None:
    store, log = FakeStore(), JobLog(window=10)
    log.keep_in(store.read)
    store.lines += numbered(0, 100, op=None)
    log.extend(numbered(0, 100, op=None))
    log.committed(100)
    assert "10 in memory" in repr(log)
    start, tail = log.tail(30)  # 20 of them read back
    assert (start, tail) == (70, numbered(70, 30, op=None)) and store.reads == 1
    log.replace_from(start, numbered(70, 30))
    assert "30 in memory" in repr(log) and log[70:] == numbered(70, 30)
    assert log[:70] == numbered(0, 70, op=None)


def test_the_usual_case_the_results_are_the_last_lines_in_order() -> None:
    # One op, nothing missed: its lines in the results are the last ones that arrived
    # (repeated texts among the earlier ones are not taken for them).
    lines = [node("start", 0), *[live(f"l{i % 3}", i, "a") for i in range(10)], node("end", 11)]
    results = {"a": [out("a", f"l{i % 3}", i + 0.1, "stderr" if i == 9 else "stdout")
                     for i in range(6, 10)]}
    got = reconcile(lines, results)
    assert shape(got.lines) == [
        (None, "node", "start"), *[("a", "output", f"l{i % 3}") for i in range(6)],
        ("a", "stdout", "l0"), ("a", "stdout", "l1"), ("a", "stdout", "l2"),
        ("a", "stderr", "l0"), (None, "node", "end")]
    assert (got.restored, got.not_in_results, got.missing) == (0, 6, [])
