"""The table of a sweep: one row per job, as text and as HTML (pure: no jobs, no widgets).

A row shows the job's place, its parameters, its status, elapsed time and cost, then its
results, one column per result name (in the order they first appear), and its short address.
A table of many jobs stays bounded: at most ``max_rows`` rows are shown, those that need a look
first (running, then failed, then the rest in order), and the footer counts every job by
status, with the total cost. The views (``views``) render it live; the sweep's handle renders
it in its ``repr`` and ``_repr_html_``.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .protocol import format_duration

__all__ = ["MAX_ROWS", "Row", "Table", "format_value"]

#: Rows shown at most; the footer still counts every job.
MAX_ROWS = 40
#: A cell's text is cut to this many characters.
CELL_WIDTH = 24

#: Statuses that end a job, best first (the footer's order).
_FINAL = ("succeeded", "failed", "stopped", "expired", "lost")
_COLOURS = {"succeeded": "#1a7f37", "failed": "#cf222e", "lost": "#cf222e",
            "expired": "#9a6700", "stopped": "#9a6700"}


@dataclass(frozen=True)
class Row:
    """One job of a sweep, as the table shows it."""

    index: int
    params: Mapping[str, Any]
    status: str
    elapsed: float | None = None
    cost: float | None = None
    results: Mapping[str, Any] = field(default_factory=dict)
    address: str | None = None

    @property
    def final(self) -> bool:
        return self.status in _FINAL


def format_value(value: Any, width: int = CELL_WIDTH) -> str:
    """A cell: numbers to 4 significant digits, None as blank, text cut to ``width``."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.4g}" if math.isfinite(value) else str(value)
    elif isinstance(value, (int, str)):
        text = str(value)
    else:
        text = json.dumps(value, default=str)
    text = " ".join(text.split())  # one line
    return text if len(text) <= width else text[:width - 1] + "…"


def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return "<1s" if seconds < 1 else format_duration(seconds)


def _cost(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _short(address: str | None) -> str:
    return "" if not address else address[:8] + "…"


@dataclass(frozen=True)
class Table:
    """The rows of a sweep and how to show them."""

    rows: Sequence[Row]
    max_rows: int = MAX_ROWS
    #: The unit of the cost column (``NOS`` on Nosana's networks).
    unit: str = "NOS"

    # -- what is shown ----------------------------------------------------------------------

    def param_names(self) -> list[str]:
        return list(dict.fromkeys(name for row in self.rows for name in row.params))

    def result_names(self) -> list[str]:
        return list(dict.fromkeys(name for row in self.rows for name in row.results))

    def header(self) -> list[str]:
        return ["#", *self.param_names(), "status", "elapsed", f"cost ({self.unit})",
                *self.result_names(), "job"]

    def visible(self) -> list[Row]:
        """The rows shown, in order: all of them, or the ``max_rows`` that matter most."""
        if len(self.rows) <= self.max_rows:
            return list(self.rows)

        def rank(row: Row) -> tuple[int, int]:
            first = 0 if not row.final and row.status != "queued" else \
                1 if row.status in ("failed", "lost", "expired") else 2
            return first, row.index

        chosen = sorted(self.rows, key=rank)[:self.max_rows]
        return sorted(chosen, key=lambda row: row.index)

    def cells(self, row: Row) -> list[str]:
        params = [format_value(row.params.get(name)) for name in self.param_names()]
        results = [format_value(row.results.get(name)) for name in self.result_names()]
        return [str(row.index), *params, row.status, _elapsed(row.elapsed), _cost(row.cost),
                *results, _short(row.address)]

    def footer(self) -> str:
        """``6 jobs: 4 succeeded, 1 failed, 1 running · cost 0.0123 NOS``."""
        counts = Counter(row.status for row in self.rows)
        order = [s for s in _FINAL if s in counts] + sorted(s for s in counts if s not in _FINAL)
        parts = ", ".join(f"{counts[s]} {s}" for s in order)
        costs = [row.cost for row in self.rows if row.cost is not None]
        total = f" · cost {sum(costs):.4g} {self.unit}" if costs else ""
        hidden = len(self.rows) - len(self.visible())
        shown = f" ({hidden} not shown)" if hidden else ""
        jobs = "job" if len(self.rows) == 1 else "jobs"
        return f"{len(self.rows)} {jobs}{shown}: {parts}{total}"

    # -- renderings -------------------------------------------------------------------------

    def text(self) -> str:
        """Aligned columns (numbers to the right), then the footer."""
        header = self.header()
        body = [self.cells(row) for row in self.visible()]
        widths = [max(len(cell) for cell in column) for column in zip(header, *body,
                                                                         strict=True)]
        numeric = [all(_is_number(r[i]) for r in body) and bool(body) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.rjust(w) if num else c.ljust(w)
                             for c, w, num in zip(cells, widths, numeric, strict=True)).rstrip()

        return "\n".join([line(header), *(line(cells) for cells in body), self.footer()])

    def html(self) -> str:
        """A ``<table>`` (every value escaped), statuses coloured, then the footer."""
        header = "".join(f"<th>{html.escape(h)}</th>" for h in self.header())
        rows = []
        status_at = 1 + len(self.param_names())
        for row in self.visible():
            cells = []
            for i, cell in enumerate(self.cells(row)):
                style = ""
                if i == status_at and row.status in _COLOURS:
                    style = f' style="color:{_COLOURS[row.status]}"'
                title = f' title="{html.escape(row.address)}"' if (
                    i == len(self.header()) - 1 and row.address) else ""
                cells.append(f"<td{style}{title}>{html.escape(cell)}</td>")
            rows.append(f"<tr>{''.join(cells)}</tr>")
        return (f'<table class="nosana-sweep"><thead><tr>{header}</tr></thead>'
                f"<tbody>{''.join(rows)}</tbody></table>"
                f"<div>{html.escape(self.footer())}</div>")


def _is_number(text: str) -> bool:
    if not text:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True
