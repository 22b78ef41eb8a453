"""The log path handles lines in batches: each batch must come out exactly as the same lines
handled one at a time (the frames decoded, the lines made, redacted and shown)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nosana_magic.hostlog import LogReader
from nosana_magic.results import LiveEntry, LogLine, NodeLogEntry, OutputEntry
from nosana_magic.secrets import CUT_MIN_CHARS, Redactor

SECRETS = {"TOKEN": "hf_abcdefghijklmnop",
           "PEM": "-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END"}

PIECES = [*"ab \r\t\"\\\n\x1b[31m é😀\u2028{}:,", "hf_abcdefghijklmnop", "hf_abc", "AAAABBBBCCCC",
          "mnop"]
text = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
long_text = st.builds(lambda head, tail: head + "x" * (CUT_MIN_CHARS - len(head)) + tail,
                      st.text(max_size=5), st.sampled_from(["", "hf_abcdefg", "hf_a"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(text, long_text), max_size=40))
def test_a_batch_is_redacted_as_its_lines_one_after_the_other(lines: list[str]) -> None:
    one, many = Redactor(SECRETS), Redactor(SECRETS)
    assert many.redact_many(list(lines)) == [one.redact(line) for line in lines]
    # and the state a cut leaves carries over to the next batch alike
    assert many.redact_many(["AAAABBBBCCCC tail", "nothing"]) == [
        one.redact("AAAABBBBCCCC tail"), one.redact("nothing")]


field_values = st.one_of(st.none(), st.integers(-2, 2**53), st.booleans(), text,
                         st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.sampled_from(["isPending", "opId", "stream"]),
                                         st.one_of(st.booleans(), text), max_size=2))
entry_fields = st.dictionaries(
    st.sampled_from(["log", "method", "type", "timestamp", "job", "pending", "payload",
                     "other"]),
    st.one_of(field_values, st.just("log")), max_size=7)


def frame_of(fields: Any, *, as_dict: bool = False) -> str:
    data = fields if as_dict else json.dumps(fields, ensure_ascii=False)
    return json.dumps({"path": "log", "data": data}, separators=(",", ":"))


def read(*raws: str) -> tuple[Any, int]:
    """What the reader makes of frames that arrived together (and how many it found
    unreadable)."""
    reader = LogReader("test")
    got: list[LiveEntry] = []
    reader.on_entries = got.extend

    async def together() -> None:
        reader.connected()
        reader.frame('{"path":"log","data":"{\\"log\\":\\"first\\",\\"type\\":\\"log\\"}"}')
        reader.hand_over()  # (the first frame of a connection is checked against a replay)
        for raw in raws:
            reader.frame(raw)
        reader.hand_over()

    asyncio.run(together())
    return got[1:], reader.unreadable


@settings(max_examples=400, deadline=None)
@given(st.one_of(entry_fields, st.lists(st.integers(), max_size=3), text),
       st.booleans())
def test_a_frame_read_fast_is_the_entry_the_model_reads(fields: Any, as_dict: bool) -> None:
    raw = frame_of(fields, as_dict=as_dict)
    got, unreadable = read(raw)
    slow = LogReader("test")._entry(raw)
    assert slow is not None
    expected, _key = slow
    assert len(got) == 1 and unreadable == slow_unreadable(raw)
    entry = got[0]
    if type(entry) is OutputEntry:
        # Taken without a model: exactly what the model says of it.
        assert expected.type == "log" and expected.payload is None
        assert expected.pending is None
        assert (entry.log, entry.timestamp, entry.method, entry.job) == (
            expected.log, expected.timestamp, expected.method, expected.job)
    else:
        assert entry == expected
    # And the line a batch makes of it is the line one entry makes.
    redactor = Redactor(SECRETS)
    assert LogLine.from_live_entries([entry], redactor, op_id="a")[0][:3] == \
        LogLine.from_log_entry(expected, Redactor(SECRETS).redact, op_id="a")[:3]


def slow_unreadable(raw: str) -> int:
    reader = LogReader("test")
    reader._entry(raw)
    return reader.unreadable


def test_a_plain_container_line_is_read_without_a_model() -> None:
    raw = frame_of({"log": "12\n", "method": "NodeRepository.displayLog", "type": "log",
                    "timestamp": 1796137499197, "job": "J"})
    got, unreadable = read(raw)
    assert got == [OutputEntry("12\n", "log", 1796137499197, "NodeRepository.displayLog", "J")]
    assert unreadable == 0
    # A host's own line, one with a payload, an array: the model reads them.
    for fields in ({"log": "Job definition received", "type": "success", "timestamp": 1},
                   {"log": "x", "type": "log", "payload": {"opId": "a"}}, ["x", "log"]):
        got, _ = read(frame_of(fields))
        assert type(got[0]) is NodeLogEntry


def test_entries_that_arrived_together_make_the_lines_each_makes() -> None:
    entries: list[LiveEntry] = [
        OutputEntry("one\n", "log", 1000), NodeLogEntry(log="host line", type="info"),
        OutputEntry("\x1b[31mred hf_abcdefghijklmnop\x1b[0m\n", "log", 3000),
        NodeLogEntry(log="legacy", type="log", payload={"opId": "b", "stream": "stderr"},
                     timestamp=4000)]
    batch = LogLine.from_live_entries(entries, Redactor(SECRETS), op_id="a")
    single = [LogLine.from_log_entry(NodeLogEntry.model_validate(e._asdict())
                                     if type(e) is OutputEntry else e,
                                     Redactor(SECRETS).redact, op_id="a") for e in entries]
    assert [line[:3] for line in batch] == [line[:3] for line in single]
    assert batch[2].text == "red [secret:TOKEN]" and batch[3][:2] == ("b", "stderr")


def reference_position(entries: list[tuple[int | None, str]]) -> tuple[int, Any, Any, dict]:
    """Where a reader is after these entries, counted one at a time."""
    count, first, last_ts, at_last = 0, None, None, Counter[str]()
    for stamp, key in entries:
        count += 1
        first = key if first is None else first
        if stamp is None:
            continue
        if stamp != last_ts:
            last_ts, at_last = stamp, Counter()
        at_last[key] += 1
    return count, first, last_ts, dict(at_last)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 3)), st.sampled_from("abc")),
                max_size=30),
       st.lists(st.integers(1, 6), max_size=10))
def test_a_readers_position_is_the_same_in_batches(
        entries: list[tuple[int | None, str]], cuts: list[int]) -> None:
    from nosana_magic.hostlog import _LogPosition

    position = _LogPosition()
    rest = list(entries)
    for size in [*cuts, len(rest)]:
        batch, rest = rest[:size], rest[size:]
        position.add_many([stamp for stamp, _ in batch], [key for _, key in batch])
    expected = reference_position(entries)
    assert (position.count, position.first, position.last_ts,
            dict(position.at_last)) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(entry_fields, st.lists(st.integers(), max_size=3)), max_size=8))
def test_frames_read_together_are_the_entries_each_makes(batch: list[Any]) -> None:
    raws = [frame_of(fields) for fields in batch]
    together, unreadable = read(*raws)
    alone = [read(raw) for raw in raws]
    assert together == [entry for got, _ in alone for entry in got]
    assert unreadable == sum(count for _, count in alone)
