"""The overview table as HTML: fast to draw, readable, linkable, and real text on the page.

Why HTML (shown with `st.html`) rather than `st.dataframe` or `st.table`: on a 100-method board
the canvas grid and the Markdown table each spent 1.3-1.5 s drawing in the browser, a plain table
a tenth of that; a plain table also puts its text in the page (copyable, searchable, readable by a
screen reader and by the browser test), takes per-cell classes for "best in column", header
tooltips, and links to each method's page that open in the same tab. Sorting is the sidebar's
job (server-side, by the numbers), so nothing here needs JavaScript.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

import pandas as pd

from leaderboard.queries import is_reference
from leaderboard.ranking import Overview

CSS = """
<style>
.sb-board-wrap { overflow-x: auto; }
.sb-board { border-collapse: collapse; width: 100%; font-size: 0.9rem; font-variant-numeric: tabular-nums; }
.sb-board th { font-weight: 600; opacity: 0.75; padding: 6px 8px; text-align: right; white-space: nowrap;
  border-bottom: 2px solid rgba(128, 128, 128, 0.35); cursor: help; }
.sb-board td { padding: 5px 8px; text-align: right; white-space: nowrap;
  border-bottom: 1px solid rgba(128, 128, 128, 0.18); }
.sb-board .text { text-align: left; }
.sb-board tr:hover td { background: rgba(31, 111, 139, 0.06); }
.sb-board td.best { background: rgba(46, 160, 67, 0.20); font-weight: 700; }
.sb-board .ci, .sb-board .params, .sb-board .place { opacity: 0.6; }
.sb-board .params { font-size: 0.8em; white-space: normal; }
.sb-board td.source { font-size: 0.8em; white-space: normal; min-width: 9rem; opacity: 0.8; }
.sb-board .place { font-size: 0.85em; }
.sb-board a { text-decoration: none; font-weight: 600; color: #1f6f8b; }
.sb-board tr.reference a { font-weight: 400; }
.sb-stats { display: flex; gap: 1rem; flex-wrap: wrap; margin: 0.25rem 0 1rem 0; }
.sb-stat { flex: 1 1 12rem; }
.sb-stat .label { font-size: 0.875rem; opacity: 0.8; }
.sb-stat .value { font-size: 2.25rem; line-height: 1.3; }
.sb-stat .note { display: inline-block; font-size: 0.8rem; opacity: 0.75; padding: 0 0.45rem;
  border-radius: 0.5rem; background: rgba(128, 128, 128, 0.12); }
</style>
"""

TEXT_COLUMNS = ("method", "source", "family", "uses", "base")
FORMATS = {"average": "{:.3f}", "hidden": "{:.3f}", "composition gain": "{:+.3f}", "retention": "{:.3f}",
           "merge s": "{:,.1f}", "peak MB": "{:,.0f}", "seeds": "{:d}", "rank": "{:d}"}


def _method_cell(label: str) -> str:
    """The name links to the method's page; a parameter setting sits under it, smaller."""
    name, _, params = label.partition(" [")
    link = f'<a href="method?method={quote(label)}" target="_self">{escape(name)}</a>'
    return link + (f'<br><span class="params">{escape(params.rstrip("]"))}</span>' if params else "")


def _task_cell(mean: float, half: float, rank: object) -> str:
    if pd.isna(mean):
        return "—"
    return f'{mean:.3f} <span class="ci">± {half:.3f}</span> <span class="place">#{rank}</span>'


def overview_columns(ov: Overview) -> list[str]:
    """The columns worth a place on screen (constant ones are said once above the table)."""
    table = ov.table
    several_bases = table["base"].nunique() > 1 or table["base"].str.contains(" + ", regex=False).any()
    hidden = {"peak MB"} | ({"base"} if not several_bases else set())
    hidden |= {"seeds"} if table["seeds"].nunique() == 1 else set()
    return [c for c in table.columns if c not in hidden]


def stats_html(stats: list[tuple[str, str, str]]) -> str:
    """Headline numbers (label, value, note) above the table: in the same HTML as the table,
    because Streamlit's metric widget alone loads five script files on a first visit."""
    cards = "".join(f'<div class="sb-stat"><div class="label">{escape(label)}</div>'
                    f'<div class="value">{escape(value)}</div><span class="note">{escape(note)}</span></div>'
                    for label, value, note in stats)
    return f'<div class="sb-stats">{cards}</div>'


def overview_html(ov: Overview, help: dict[str, str] | None = None,
                  stats: list[tuple[str, str, str]] | None = None) -> str:
    """The overview as one HTML table (headline `stats` above it); `help` gives header tooltips."""
    help = help or {}
    columns = overview_columns(ov)
    head = "".join(
        f'<th class="{"text" if c in TEXT_COLUMNS else "num"}" title="{escape(help.get(c, ""))}">{escape(c)}</th>'
        for c in columns)
    # Plain dicts: per-cell pandas lookups would cost more than the rest of the page.
    half, rank = ov.half_width.to_dict(), ov.task_rank.to_dict()
    best = ov.best.to_dict()
    rows = []
    for label, row in zip(ov.table.index, ov.table.to_dict("records")):
        cells = []
        for column in columns:
            value = row[column]
            if column == "method":
                content = _method_cell(str(label))
            elif column in ov.tasks:
                content = _task_cell(value, half[column][label], rank[column][label])
            elif column in TEXT_COLUMNS:
                content = escape(str(value))
            else:
                content = "—" if pd.isna(value) else FORMATS.get(column, "{}").format(value)
            classes = ("text source" if column == "source" else "text") if column in TEXT_COLUMNS else "num"
            cells.append(f'<td class="{classes} best">{content}</td>' if best[column][label]
                         else f'<td class="{classes}">{content}</td>')
        kind = "reference" if is_reference(str(label).partition(" [")[0]) else "merge"
        rows.append(f'<tr class="{kind}">{"".join(cells)}</tr>')
    return (f'{CSS}{stats_html(stats) if stats else ""}<div class="sb-board-wrap"><table class="sb-board"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')
