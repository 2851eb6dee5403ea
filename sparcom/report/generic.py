"""Any JSON value of a summary as readable HTML, for results that have no section of their own yet, and the
outputs' notes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from sparcom.report.context import Context, category_labels
from sparcom.report.widgets import Section, details, fmt_num, heatmap, key_values, table


def _is_matrix(value: Any) -> bool:
    return (isinstance(value, list) and bool(value) and all(isinstance(r, list) and r for r in value)
            and all(isinstance(x, int | float) or x is None for r in value for x in r))


def generic_value(value: Any, categories: Sequence[str], rows: Sequence[str] | None = None,
                  cols: Sequence[str] | None = None, depth: int = 0) -> str:
    """Any JSON value as readable HTML: scalars as key–value tables, row lists as tables, matrices as heatmaps."""
    if isinstance(value, dict):
        scalars = [(k, v) for k, v in value.items() if not isinstance(v, dict | list)]
        nested = [(k, v) for k, v in value.items() if isinstance(v, dict | list)]
        html = key_values([(k.replace("_", " "), v) for k, v in scalars]) if scalars else ""
        for k, v in nested:
            inner = generic_value(v, categories, rows, cols, depth + 1)
            html += f"<h6>{escape(k.replace('_', ' '))}</h6>{inner}" if depth < 3 else details(k, inner)
        return html
    if _is_matrix(value):
        n_rows, n_cols = len(value), len(value[0])
        row_labels = list(rows) if rows and len(rows) == n_rows else (
            list(categories) if len(categories) == n_rows else [str(i) for i in range(n_rows)])
        col_labels = list(cols) if cols and len(cols) == n_cols else (
            list(categories) if len(categories) == n_cols else [str(i) for i in range(n_cols)])
        finite = [float(x) for r in value for x in r if x is not None and math.isfinite(float(x))]
        diverging = bool(finite) and min(finite) < 0 < max(finite)
        return heatmap(value, category_labels(row_labels), category_labels(col_labels), row_title="", col_title="",
                       diverging=diverging)
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        flat = [{k: v for k, v in r.items() if not isinstance(v, dict | list)} for r in value]
        return table(flat, row_attrs=lambda r: {"data-cat": r.get("category") or r.get("ablated")})
    if isinstance(value, list):
        return f"<p>{escape(', '.join(fmt_num(v) for v in value))}</p>"
    return f"<p>{escape(fmt_num(value))}</p>"


def notes_section(ctx: Context) -> list[Section]:
    notes = [f"<li><b>{escape(output.kind)} · {escape(output.name)}</b>: {escape(text)}</li>"
             for output in ctx.study.outputs for text in getattr(output.summary, "notes", [])]
    if not notes:
        return []
    return [Section("notes", "Notes from the outputs", f'<ul>{"".join(notes)}</ul>')]


__all__ = ["generic_value", "notes_section"]
