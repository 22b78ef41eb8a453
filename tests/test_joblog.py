"""The job's log made whole from the live lines and the results' per-op logs."""

from __future__ import annotations

from nosana_magic.joblog import reconcile
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
