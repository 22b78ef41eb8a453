"""The local store: records, logs in bounded chunks, several processes, crashes, file modes,
migrations, and no secret in the file's bytes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nosana_magic import store as store_module
from nosana_magic.secrets import Redactor
from nosana_magic.settings import Settings
from nosana_magic.store import (
    SCHEMA_VERSION,
    Store,
    StoredJob,
    StoreError,
    default_path,
    open_store,
)
from nosana_magic.store import _Columns as Columns

from .waiting import PATIENCE, wait_until

SECRET = 'hf_Pl4nted"Secret\nValue42'
DEFINITION = {"version": "0.1", "type": "container", "ops": [
    {"type": "container/run", "id": "train",
     "args": {"image": "python:3.11", "cmd": "train --lr ${param:lr}",
              "env": {"HF_TOKEN": "${env:HF_TOKEN}"}}}]}


@dataclass(frozen=True)
class Line:
    op_id: str | None
    stream: str
    text: str
    timestamp: float


def lines(start: int, count: int, text: str = "line {i}") -> list[Line]:
    now = time.time()
    return [Line("train", "stdout", text.format(i=i), now) for i in range(start, start + count)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "runs.sqlite3")
    yield opened
    opened.close()


def database_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


# --------------------------------------------------------------------------- records


def test_a_job_is_recorded_as_it_goes_and_read_back(store: Store) -> None:
    rec = store.record(network="local", market="local-gpu", definition=DEFINITION,
                       params={"lr": 0.001}, timeout=600, status="pinning")
    assert store.flush()
    first = store.job(rec.key)
    assert (first.status, first.network, first.market, first.params) == (
        "pinning", "local", "local-gpu", {"lr": 0.001})
    assert first.definition == DEFINITION and not first.finished and not first.stale
    assert first.pid == os.getpid()

    rec.update(address="9aXkD2vT8QpLmN3rS5uW7yZbC1dE4fG6hJ8kL0mN2pQ", status="running",
               node="NodeAddr111", placeholder="QmPlaceholder", started_at=100.0)
    rec.finish(status="succeeded", ended_at=160.0, cost=0.12, results={"loss": 0.25},
               ops={"train": {"status": "success", "exit_code": 0}},
               warnings=["one warning"], timings={"listed": 90.0})
    assert store.flush()
    done = store.job("9aXkD2vT8Qp")  # an address prefix
    assert done == store.job(rec.key)
    assert (done.status, done.finished, done.ended_at, done.cost) == ("succeeded", True, 160.0,
                                                                      0.12)
    assert done.results == {"loss": 0.25} and done.warnings == ["one warning"]
    assert done.ops["train"]["exit_code"] == 0 and done.timings == {"listed": 90.0}


def test_lookups_say_what_is_wrong_in_one_line(store: Store) -> None:
    for address in ("AbcdEFG1", "AbcdXYZ2"):
        store.record(network="local", address=address)
    assert store.flush()
    with pytest.raises(StoreError) as info:
        store.job("Abcd")
    assert str(info.value) == ("'Abcd' matches 2 jobs in the local store (AbcdXYZ2, AbcdEFG1): "
                               "give more of the address")
    with pytest.raises(StoreError, match=r"^no job 'abcdEFG1' in the local store$"):
        store.job("abcdEFG1")  # base58 is case-sensitive
    with pytest.raises(StoreError, match=r"^no job 'Abc' in the local store$"):
        store.job("Abc")  # too short to be a prefix
    with pytest.raises(TypeError, match="unknown field 'colour'"):
        store.record(network="local").update(colour="red")


def test_listing_filters_newest_first(store: Store) -> None:
    made = []
    for i, status in enumerate(["succeeded", "failed", "succeeded", "stopped"]):
        rec = store.record(network="devnet" if i == 2 else "local", status=status)
        made.append(rec.key)
        time.sleep(0.002)  # distinct creation times
    assert store.flush()
    assert [j.key for j in store.jobs()] == made[::-1]
    assert [j.key for j in store.jobs(last=2)] == made[:1:-1]
    assert [j.key for j in store.jobs(status="succeeded")] == [made[2], made[0]]
    assert [j.key for j in store.jobs(status=["failed", "stopped"])] == [made[3], made[1]]
    assert [j.key for j in store.jobs(network="devnet")] == [made[2]]


def test_a_record_whose_writer_stopped_writing_is_stale() -> None:
    old = time.time() - 10 * store_module.HEARTBEAT_S
    assert StoredJob("k", "local", old, seen_at=old).stale
    assert not StoredJob("k", "local", old, seen_at=old, finished=True).stale
    assert not StoredJob("k", "local", old, seen_at=time.time()).stale


# --------------------------------------------------------------------------- logs


def test_logs_come_back_in_order_as_a_stream_or_a_range(store: Store) -> None:
    rec = store.record(network="local")
    for start in range(0, 5000, 250):
        rec.append_logs(lines(start, 250))
    rec.append_logs([Line(None, "node", "Job definition received", time.time())])
    rec.finish(status="succeeded")
    assert store.flush()
    got = list(store.iter_logs(rec.key))
    assert [g.index for g in got] == list(range(5001))
    assert got[1234].text == "line 1234" and got[1234].op_id == "train"
    assert (got[-1].stream, got[-1].op_id, got[-1].text) == ("node", None, "Job definition "
                                                                          "received")
    assert [g.text for g in store.logs(rec.key, 4998, 5000)] == ["line 4998", "line 4999"]
    assert store.job(rec.key).log_lines == 5001 and not store.job(rec.key).log_truncated


def test_a_log_made_whole_replaces_the_live_lines_once(store: Store) -> None:
    # Live lines first (their op and stream not known), then the log rebuilt from the
    # results, then a line after it: the store holds the rebuilt log and that line, once.
    rec = store.record(network="local")
    rec.append_logs([Line(None, "output", f"live {i}", time.time()) for i in range(300)])
    assert store.flush()
    rec.replace_logs([Line("train", "stderr" if i % 2 else "stdout", f"line {i}", time.time())
                      for i in range(200)])
    rec.append_logs([Line(None, "node", "Job finished", time.time())])
    rec.finish(status="succeeded")
    assert store.flush()
    got = list(store.iter_logs(rec.key))
    assert [g.text for g in got] == [f"line {i}" for i in range(200)] + ["Job finished"]
    assert [g.index for g in got] == list(range(201))
    assert (got[1].op_id, got[1].stream) == ("train", "stderr")
    assert store.job(rec.key).log_lines == 201


def test_the_last_part_of_a_log_is_made_whole_and_the_rest_kept(store: Store) -> None:
    # Many chunks of live lines; the last 1,500 (the handle's window) are made again from
    # the results: one chunk is cut in two, those after it go, the lines before stay.
    rec = store.record(network="local")
    for start in range(0, 6000, 500):
        rec.append_logs([Line(None, "output", f"live {i}", time.time())
                         for i in range(start, start + 500)])
        assert store.flush()
    commits: list[tuple[int, bool]] = []
    rec.on_commit = lambda count, replaced: commits.append((count, replaced))
    rec.replace_logs([Line("train", "stdout", f"line {i}", time.time())
                      for i in range(4500, 6100)], start=4500)
    rec.finish(status="succeeded")
    assert store.flush()
    got = list(store.iter_logs(rec.key))
    assert [g.text for g in got] == ([f"live {i}" for i in range(4500)]
                                     + [f"line {i}" for i in range(4500, 6100)])
    assert [g.index for g in got] == list(range(6100))
    assert store.job(rec.key).log_lines == 6100
    assert commits and commits[-1] == (6100, True)


def test_a_long_log_keeps_its_first_and_last_part_and_says_so(tmp_path: Path) -> None:
    limit = 400_000
    store = Store(tmp_path / "runs.sqlite3", max_log_bytes=limit)
    try:
        rec = store.record(network="local")
        for start in range(0, 40_000, 1000):
            rec.append_logs(lines(start, 1000, "step {i} loss 0.123456"))
        rec.finish(status="succeeded")
        assert store.flush()
        record = store.job(rec.key)
        got = store.logs(rec.key)
        kept = [g for g in got if g.index is not None]
        markers = [g for g in got if g.index is None]
        assert record.log_lines == 40_000 and record.log_truncated
        assert len(markers) == 1 and markers[0].stream == "store"
        assert f"{record.log_dropped:,} log lines not kept" in markers[0].text
        assert len(kept) + record.log_dropped == 40_000
        assert kept[0].text == "step 0 loss 0.123456"
        assert kept[-1].text == "step 39999 loss 0.123456"
        where = got.index(markers[0])
        assert got[where + 1].index == got[where - 1].index + record.log_dropped + 1  # type: ignore[operator]
        with sqlite3.connect(store.path) as conn:
            raw = conn.execute("SELECT SUM(raw_bytes) FROM log_chunks").fetchone()[0]
        assert limit // 2 < raw <= limit + store_module.CHUNK_BYTES
        assert store.logs(rec.key, 39_998)[-1].text == "step 39999 loss 0.123456"
    finally:
        store.close()


def test_slow_logs_fill_a_few_chunks_not_one_per_flush(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.sqlite3", flush_interval=0.01)
    try:
        rec = store.record(network="local")
        for i in range(60):
            rec.append_logs(lines(i, 1))
            assert store.flush()
        rec.finish()
        assert store.flush()
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM log_chunks").fetchone()[0] == 1
        assert [g.text for g in store.logs(rec.key)] == [f"line {i}" for i in range(60)]
    finally:
        store.close()


# --------------------------------------------------------------------------- secrets, modes


def test_no_secret_value_reaches_the_database_files(store: Store) -> None:
    redactor = Redactor({"HF_TOKEN": SECRET})
    rec = store.record(network="local", definition=DEFINITION, params={"lr": 0.1},
                       redactor=redactor)
    escaped = json.dumps(SECRET)[1:-1]
    rec.append_logs([Line("train", "stdout", f"token is {SECRET}!", time.time()),
                     Line("train", "stderr", f'{{"token": "{escaped}"}}', time.time())])
    rec.append_logs(lines(0, 2000, "step {i} " + SECRET))
    rec.finish(status="failed", error=f"op train: {SECRET}", warnings=[f"saw {SECRET}"],
               results={"echo": SECRET, SECRET: 1, "nested": [{"x": escaped}]})
    assert store.flush()
    with sqlite3.connect(store.path) as conn:  # logs are compressed: look inside them too
        logs = b"".join(zlib.decompress(data) for (data,) in conn.execute(
            "SELECT data FROM log_chunks"))
    assert b"[secret:HF_TOKEN]" in logs
    for blob in (database_bytes(store.path), logs):
        for form in (SECRET, escaped, "Pl4nted"):
            assert form.encode() not in blob
    record = store.job(rec.key)
    assert record.results["echo"] == "[secret:HF_TOKEN]"
    assert record.definition is not None
    assert record.definition["ops"][0]["args"]["env"]["HF_TOKEN"] == "${env:HF_TOKEN}"
    assert store.logs(rec.key)[0].text == "token is [secret:HF_TOKEN]!"
    assert store.logs(rec.key)[2].text == "step 0 [secret:HF_TOKEN]"


def test_the_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = Store(tmp_path / "new" / "runs.sqlite3")
        store.record(network="local")
        assert store.flush()
    finally:
        os.umask(old)
    try:
        files = sorted(tmp_path.joinpath("new").iterdir())
        assert [f.name for f in files] == ["runs.sqlite3", "runs.sqlite3-shm",
                                           "runs.sqlite3-wal"]
        assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}
        assert oct(tmp_path.joinpath("new").stat().st_mode & 0o777) == "0o700"
    finally:
        store.close()
    loose = tmp_path / "loose.sqlite3"
    loose.touch(mode=0o644)
    loose.chmod(0o644)
    Store(loose).close()
    assert oct(loose.stat().st_mode & 0o777) == "0o600"


def test_forgetting_removes_the_records_and_their_bytes(store: Store) -> None:
    keep = store.record(network="local", address="KeepAddress1")
    gone = store.record(network="local", address="GoneAddress1",
                        results={"marker": "forget-me-result"})
    gone.append_logs(lines(0, 10, "forget-me-log {i}"))
    old = store.record(network="local", address="OldAddress11")
    assert store.flush()
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE jobs SET created_at = created_at - 7200 WHERE key = ?", (old.key,))
    assert store.forget(["GoneAddress1"]) == 1
    gone.append_logs(lines(10, 5, "forget-me-log {i}"))  # a recorder of a forgotten job
    gone.finish(status="succeeded")
    assert store.flush()
    assert [j.address for j in store.jobs()] == ["KeepAddress1", "OldAddress11"]
    assert store.logs(gone.key) == []
    blob = database_bytes(store.path)
    assert b"forget-me" not in blob
    assert store.forget(older_than=3600) == 1
    assert [j.key for j in store.jobs()] == [keep.key]
    assert store.forget(everything=True) == 1 and store.jobs() == []


def test_urls_are_kept_while_valid(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "HEARTBEAT_S", 0.05)  # purge expired URLs at once
    soon = time.time() + 1.0
    rec = store.record(network="local", urls=[
        {"url": "https://private-url-abc.node.example", "port": 8888, "op_id": "train",
         "private": True, "expires_at": soon}])
    assert store.flush()
    [url] = store.job(rec.key).urls
    assert (url.url, url.port, url.private) == ("https://private-url-abc.node.example", 8888,
                                                True)
    wait_until(lambda: time.time() > soon + 0.1, what="the URL's expiry")
    assert store.job(rec.key).urls == []

    def purged() -> bool:
        store.flush()
        return b"private-url-abc" not in database_bytes(store.path)

    wait_until(purged, what="the expired URL removed from the file")


# --------------------------------------------------------------------------- schema


def test_a_new_database_has_the_current_schema(store: Store) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def make_v1_database(path: Path) -> None:
    """A database as schema version 1 wrote it (released steps are never edited, so step 1
    is exactly that schema), holding one finished job with three log lines."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in store_module._MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO jobs (key, network, created_at, address, status, finished, results, "
        "params, log_lines, writer) VALUES ('oldkey', 'local', 1000.0, 'OldJobAddress1', "
        "'succeeded', 1, '{\"loss\": 0.5}', '{\"lr\": 0.1}', 3, 'gone')")
    payload = Columns([1.0] * 3, ["stdout"] * 3, ["train"] * 3,
                      [f"old line {i}" for i in range(3)]).encode()
    conn.execute("INSERT INTO log_chunks VALUES ('oldkey', 0, 0, 3, ?, 1, ?)",
                 (len(payload), zlib.compress(payload)))
    conn.close()


def test_an_older_database_migrates_forward_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    make_v1_database(path)
    store = Store(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        old = store.job("OldJobAddress1")
        assert (old.status, old.results, old.params, old.sweep_id) == (
            "succeeded", {"loss": 0.5}, {"lr": 0.1}, None)
        assert [g.text for g in store.logs(old.key)] == ["old line 0", "old line 1",
                                                        "old line 2"]
        sweep = store.record_sweep(name="grid", params=[{"lr": 1}])
        store.record(network="local", sweep_id=sweep, sweep_index=0, status="queued")
        assert store.flush()
        assert [j.sweep_name for j in store.jobs()] == ["grid", None]
    finally:
        store.close()


OPENER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nosana_magic.store import Store

    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.001)
    store = Store(sys.argv[1])
    store.record(network="local", status=sys.argv[3])
    assert store.flush(60)
    store.close()
    print("ok")
""")


@pytest.mark.parametrize("start", ["fresh", "version 1"])
def test_two_processes_opening_at_once_create_or_migrate_once(tmp_path: Path,
                                                              start: str) -> None:
    path, go = tmp_path / "runs.sqlite3", tmp_path / "go"
    if start == "version 1":
        make_v1_database(path)
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(path), str(go), tag],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("first", "second")]
    go.touch()
    try:
        outs = [p.communicate(timeout=PATIENCE * 2) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [o[0].strip() for o in outs] == ["ok", "ok"], [o[1] for o in outs]
    store = Store(path)
    try:
        expected = ["first", "second"] + (["succeeded"] if start == "version 1" else [])
        assert sorted(j.status or "" for j in store.jobs()) == expected
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        store.close()


def test_a_newer_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError) as info:
        Store(path)
    assert str(info.value) == (
        f"the local store {path} has schema version {SCHEMA_VERSION + 1}, newer than this "
        f"nosana_magic knows ({SCHEMA_VERSION}): upgrade nosana_magic to read it")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError) as info:
        Store(path)
    assert str(info.value) == f"cannot open the local store {path}: file is not a database"


def test_the_store_lives_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=str(tmp_path / "data"))
    assert default_path(settings) == tmp_path / "data" / "runs.sqlite3"
    assert open_store(settings) is open_store(path=tmp_path / "data" / "runs.sqlite3")
    assert (tmp_path / "data" / "runs.sqlite3").exists()


# --------------------------------------------------------------------------- threads, processes


def test_a_locked_database_delays_records_and_loses_none(store: Store) -> None:
    rec = store.record(network="local")
    assert store.flush()
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        rec.append_logs(lines(0, 100))
        rec.update(status="running")
        assert not store.flush(timeout=0.5)  # waiting for the lock
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert store.flush(timeout=PATIENCE)
    assert store.job(rec.key).status == "running"
    assert len(store.logs(rec.key)) == 100 and store.error is None


def test_the_loop_thread_and_the_main_thread_record_at_once(store: Store) -> None:
    recs = [store.record(network="local") for _ in range(4)]

    def write(rec_index: int) -> None:
        for start in range(0, 2000, 100):
            recs[rec_index].append_logs(lines(start, 100))
            recs[rec_index].update(status=f"running {start}")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.flush()
    for rec in recs:
        assert [g.index for g in store.logs(rec.key)] == list(range(2000))
        assert store.job(rec.key).status == "running 1900"


WRITER = textwrap.dedent("""
    import sys, time
    from dataclasses import dataclass
    from nosana_magic.store import Store

    @dataclass
    class Line:
        op_id: str
        stream: str
        text: str
        timestamp: float

    path, tag, jobs, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = Store(path)
    recs = [store.record(network="local", address=f"{tag}-{j}") for j in range(jobs)]
    for start in range(0, count, 50):
        for j, rec in enumerate(recs):
            rec.append_logs([Line("op", "stdout", f"{tag}-{j} line {i}", time.time())
                             for i in range(start, start + 50)])
            rec.update(status=f"at {start}")
        time.sleep(0.001)
    for rec in recs:
        rec.finish(status="succeeded")
    assert store.flush(60), "flush"
    store.close()
    print("ok", store.error)
""")


def test_two_processes_write_one_store_at_once(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, "5", "1000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("a", "b")]
    reader = None
    try:
        wait_until(path.exists, what="the database created")
        reader = Store(path)
        wait_until(lambda: len(reader.jobs()) == 10, what="both processes' jobs listed")
        outs = [p.communicate(timeout=PATIENCE * 4) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [o[0].strip() for o in outs] == ["ok None", "ok None"], [o[1] for o in outs]
    assert reader is not None
    try:
        for tag in ("a", "b"):
            for j in range(5):
                job = reader.job(f"{tag}-{j}")
                assert (job.status, job.finished, job.log_lines) == ("succeeded", True, 1000)
                texts = [g.text for g in reader.logs(job.key)]
                assert texts == [f"{tag}-{j} line {i}" for i in range(1000)]
    finally:
        reader.close()


CRASHER = textwrap.dedent("""
    import sys, time
    from dataclasses import dataclass
    from nosana_magic.store import Store

    @dataclass
    class Line:
        op_id: str
        stream: str
        text: str
        timestamp: float

    store = Store(sys.argv[1])
    rec = store.record(network="local", address="crash-job", status="running")
    i = 0
    while True:
        now = time.time()
        rec.append_logs([Line("op", "stdout", f"{i} {now!r}", now)])
        if i % 100 == 0:
            rec.update(status=f"line {i}")
        i += 1
        time.sleep(0.002)
""")


def test_a_killed_writer_loses_at_most_the_last_second(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(path)],
                            stderr=subprocess.PIPE, text=True)
    try:
        reader = Store(path)
        try:
            # Let it write for a while: well past a second of lines.
            wait_until(lambda: any(j.log_lines > 800 for j in reader.jobs()),
                       what="the writer's first lines committed")
        finally:
            reader.close()
        time.sleep(1.5)
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    reader = Store(path)
    try:
        job = reader.job("crash-job")
        got = reader.logs(job.key)
        assert [g.index for g in got] == list(range(len(got)))  # no hole, no damage
        last = float(got[-1].text.split()[1])
        assert last > killed_at - 1.0, f"lost {killed_at - last:.2f} s of lines"
        assert not job.finished and job.status is not None and job.status.startswith("line")
    finally:
        reader.close()


# --------------------------------------------------------------------------- sweeps


def test_a_sweep_and_its_jobs_are_recorded_and_found(store: Store) -> None:
    sets = [{"lr": 0.001, "batch": 32}, {"lr": 0.001, "batch": 64}]
    first = store.record_sweep(name="grid", network="local", definition=DEFINITION,
                               params=sets, parallel=2, estimate=0.0, status="running")
    keys = [store.record(network="local", sweep_id=first, sweep_index=i, params=p).key
            for i, p in enumerate(sets)][::-1]
    time.sleep(0.002)
    again = store.record_sweep(name="grid", params=sets[:1])
    store.record(network="local", sweep_id=again, sweep_index=0, params=sets[0])
    store.record(network="local")  # a job of no sweep
    store.update_sweep(first, status="succeeded")
    assert store.flush()

    latest, older = store.sweeps(name="grid")
    assert (latest.id, older.id) == (again, first)
    assert (older.status, older.parallel, older.params, older.definition) == (
        "succeeded", 2, sets, DEFINITION)
    assert store.sweep("grid").id == again  # a name means its latest sweep
    assert store.sweep(first[:8]).id == first
    in_sweep = store.jobs(sweep=first)
    assert [j.key for j in in_sweep] == keys[::-1]  # in sweep order
    assert [(j.sweep_index, j.sweep_name, j.params) for j in in_sweep] == [
        (0, "grid", sets[0]), (1, "grid", sets[1])]
    with pytest.raises(StoreError, match=r"^no sweep 'nope' in the local store$"):
        store.jobs(sweep="nope")
    with pytest.raises(TypeError, match="sweep records have no field 'colour'"):
        store.update_sweep(first, colour="red")

    assert store.forget(sweep=first) == 2
    assert [s.id for s in store.sweeps()] == [again]
    assert store.forget([store.jobs(sweep=again)[0].key]) == 1
    assert store.sweeps() == []  # a sweep goes with its last job
    assert len(store.jobs()) == 1


def test_a_job_taken_over_is_written_by_its_new_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    before, after = Store(path), Store(path)  # two kernels: the first one restarted
    try:
        old = before.record(network="local", address="TakenOver111", status="running")
        old.append_logs(lines(0, 10))
        assert before.flush()
        new = after.take_over("TakenOver111")
        assert after.flush()
        old.append_logs(lines(10, 5, "stale {i}"))  # the old kernel, still writing
        old.update(status="from the old kernel")
        assert before.flush()
        new.append_logs(lines(10, 5))
        new.finish(status="succeeded")
        assert after.flush()
        job = after.job("TakenOver111")
        assert (job.status, job.finished, job.log_lines) == ("succeeded", True, 15)
        assert [g.text for g in after.logs(job.key)] == [f"line {i}" for i in range(15)]
    finally:
        before.close()
        after.close()


def test_the_writer_thread_ends_when_idle_and_comes_back(store: Store,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "IDLE_EXIT_S", 0.05)
    first = store.record(network="local")
    first.append_logs(lines(0, 3))
    assert store._writer._thread is not None
    first.finish(status="succeeded")
    assert store.flush()
    wait_until(lambda: store._writer._thread is None, what="the idle writer ended")
    assert store.flush()  # nothing waiting: no thread needed
    second = store.record(network="local", status="queued")
    assert store.flush()
    assert [j.key for j in store.jobs()] == [second.key, first.key]
    assert len(store.logs(first.key)) == 3
