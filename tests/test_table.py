"""The sweep table: columns, cells, bounds, text and HTML."""

from __future__ import annotations

from nosana_magic.table import Row, Table, format_value


def rows() -> list[Row]:
    spec = [(1e-3, 32, "succeeded"), (1e-3, 64, "failed"), (3e-4, 32, "running"),
            (3e-4, 64, "queued")]
    return [Row(i, {"lr": lr, "batch": batch}, status, elapsed=61.0 * i or 0.4,
                cost=0.0012 * i if status != "queued" else None,
                results={"loss": 0.5 / (i + 1), "acc": 0.9} if status == "succeeded" else
                ({"loss": 0.7} if status == "running" else {}),
                address=f"Job{i}AddressXYZ") for i, (lr, batch, status) in enumerate(spec)]


def test_columns_are_parameters_then_state_then_results() -> None:
    table = Table(rows())
    assert table.header() == ["#", "lr", "batch", "status", "elapsed", "cost (NOS)", "loss",
                              "acc", "job"]
    assert table.cells(table.rows[0]) == ["0", "0.001", "32", "succeeded", "<1s", "0", "0.5",
                                          "0.9", "Job0Addr…"]
    assert table.cells(table.rows[3]) == ["3", "0.0003", "64", "queued", "3m 3s", "", "", "",
                                          "Job3Addr…"]


def test_the_text_table_is_aligned_and_counts_every_job() -> None:
    lines = Table(rows()).text().splitlines()
    assert lines[0] == "#      lr  batch  status     elapsed  cost (NOS)  loss  acc  job"
    assert lines[1] == "0   0.001     32  succeeded  <1s               0   0.5  0.9  Job0Addr…"
    assert lines[3] == "2  0.0003     32  running    2m 2s        0.0024   0.7       Job2Addr…"
    assert lines[-1] == "4 jobs: 1 succeeded, 1 failed, 1 queued, 1 running · cost 0.0036 NOS"


def test_a_large_table_shows_what_matters_and_says_how_many_are_hidden() -> None:
    many = [Row(i, {"seed": i}, "succeeded" if i % 7 else "failed") for i in range(100)]
    many[50] = Row(50, {"seed": 50}, "running")
    table = Table(many, max_rows=10)
    shown = table.visible()
    assert len(shown) == 10
    assert [r.index for r in shown] == sorted(r.index for r in shown)
    assert shown[0].index == 0 and 50 in [r.index for r in shown]  # running, then failed
    assert {r.status for r in shown} == {"failed", "running"}
    assert table.footer() == "100 jobs (90 not shown): 84 succeeded, 15 failed, 1 running"
    assert len(table.text().splitlines()) == 12


def test_cells_are_one_short_line() -> None:
    assert format_value(None) == "" and format_value(True) == "true"
    assert format_value(0.123456789) == "0.1235" and format_value(float("nan")) == "nan"
    assert format_value("a\nb   c") == "a b c"
    assert format_value("x" * 40) == "x" * 23 + "…"
    assert format_value({"layers": [1, 2]}) == '{"layers": [1, 2]}'


def test_the_html_table_escapes_every_value() -> None:
    table = Table([Row(0, {"name": "<b>x</b>"}, "failed", results={"out": "a&b"},
                       address="Addr<script>")])
    page = table.html()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "a&amp;b" in page and "<script>" not in page
    assert 'style="color:#cf222e">failed' in page
    assert page.endswith("<div>1 job: 1 failed</div>")
