"""HTML building blocks of the report: number formats, colour scales, tables, heatmaps, figures, notes.

Everything returns a string of HTML with its values escaped. Colours are computed here (inline styles), so a
heatmap reads without the script; the script only adds hover values, sorting and filtering on the
``data-tip``, ``data-cat``, ``data-layer`` and ``data-v`` attributes these helpers write.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from sparcom.data.schema import category_label
from sparcom.report.plots import category_color

# Anchors of viridis and of a purple–orange diverging scale (both colour-blind safe), interpolated linearly.
VIRIDIS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
DIVERGING = ("#2d004b", "#8073ac", "#f7f7f7", "#e08214", "#7f3b08")


@dataclass
class Section:
    """One block of the page: an anchor id, a title for the contents list, its HTML and its nesting level."""

    id: str
    title: str
    body: str
    level: int = 2


def fmt_int(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def fmt_num(value: Any, digits: int = 3) -> str:
    """Integers with separators, floats with ``digits`` significant digits, None/NaN as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def fmt_pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * float(value):.1f}%"


def fmt_signed(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{float(value):+.{digits}f}"


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def scale_colour(t: float, anchors: Sequence[str] = VIRIDIS) -> str:
    """The colour at ``t`` in [0, 1] along ``anchors``."""
    t = min(max(t, 0.0), 1.0) * (len(anchors) - 1)
    i = min(int(t), len(anchors) - 2)
    start, end = _hex(anchors[i]), _hex(anchors[i + 1])
    f = t - i
    red, green, blue = (round(x + (y - x) * f) for x, y in zip(start, end, strict=True))
    return f"#{red:02x}{green:02x}{blue:02x}"


def text_colour(background: str) -> str:
    r, g, b = _hex(background)
    return "#111" if (0.299 * r + 0.587 * g + 0.114 * b) / 255 > 0.55 else "#fff"


def cat_badge(category: str, categories: Sequence[str]) -> str:
    colour = category_color(category, categories)
    return f'<span class="cat" style="--c:{colour}">{escape(category_label(category))}</span>'


def note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{text}</p>'


def not_computed(what: str, how: str = "") -> str:
    """The standard line for a result a reader expects but this study does not have."""
    extra = f" {how}" if how else ""
    return f'<p class="missing"><strong>{escape(what)}: not computed.</strong>{escape(extra)}</p>'


def key_values(pairs: Sequence[tuple[str, Any]], css: str = "kv") -> str:
    rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{v if isinstance(v, Markup) else escape(fmt_num(v))}</td></tr>"
                   for k, v in pairs if v is not None)
    return f'<table class="{css}">{rows}</table>'


class Markup(str):
    """A string that is already HTML (not escaped again by the helpers)."""


def cell(value: Any, formatter: Callable[[Any], str] | None = None) -> str:
    """A table cell; numbers carry their exact value in ``data-v`` for sorting and for tests."""
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    text = (formatter or fmt_num)(value)
    if isinstance(value, bool) or value is None:
        return f"<td>{escape(text)}</td>"
    if isinstance(value, int | float):
        number = "" if isinstance(value, float) and not math.isfinite(value) else repr(value)
        return f'<td class="n" data-v="{number}">{escape(text)}</td>'
    return f"<td>{escape(text)}</td>"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]] | None = None, *,
          formats: dict[str, Callable[[Any], str]] | None = None, sortable: bool = True,
          row_attrs: Callable[[dict[str, Any]], dict[str, Any]] | None = None, css: str = "",
          table_id: str | None = None, caption: str | None = None) -> str:
    """A table of ``rows``; ``columns`` are (key, header) pairs (all keys of the first row by default)."""
    if not rows:
        return ""
    columns = list(columns or [(k, k) for k in rows[0]])
    formats = formats or {}
    classes = " ".join(x for x in ("data", "sortable" if sortable else "", css) if x)
    head = "".join(f'<th title="{escape(key)}">{escape(title)}</th>' for key, title in columns)
    body = []
    for row in rows:
        attrs = row_attrs(row) if row_attrs else {}
        attr = "".join(f' {k}="{escape(str(v))}"' for k, v in attrs.items() if v is not None)
        body.append(f"<tr{attr}>" + "".join(cell(row.get(key), formats.get(key)) for key, _ in columns) + "</tr>")
    ident = f' id="{escape(table_id)}"' if table_id else ""
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (f'<div class="table-wrap"><table class="{classes}"{ident}>{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def heatmap(values: Sequence[Sequence[float | None]], rows: Sequence[str], cols: Sequence[str], *,
            row_title: str, col_title: str, fmt: Callable[[Any], str] = fmt_num, diverging: bool = False,
            tips: Sequence[Sequence[str]] | None = None, row_attrs: Sequence[dict[str, Any]] | None = None,
            col_attrs: Sequence[dict[str, Any]] | None = None, vmin: float | None = None,
            vmax: float | None = None, marks: Sequence[Sequence[bool]] | None = None, heat_id: str | None = None,
            compact: bool = False) -> str:
    """A coloured table: one cell per value, the exact value in ``data-v`` and a hover text in ``data-tip``.

    ``row_attrs``/``col_attrs`` add attributes (``data-cat``, ``data-layer``) to every cell of a row/column, so
    the filters hide whole rows and columns. ``marks`` outlines cells (e.g. significant ones).
    """
    finite = [float(v) for r in values for v in r if v is not None and math.isfinite(float(v))]
    if diverging:
        bound = max((abs(v) for v in finite), default=1.0) or 1.0
        lo, hi = (-bound if vmin is None else vmin), (bound if vmax is None else vmax)
    else:
        lo = min(finite, default=0.0) if vmin is None else vmin
        hi = max(finite, default=1.0) if vmax is None else vmax
    span = (hi - lo) or 1.0
    anchors = DIVERGING if diverging else VIRIDIS

    def attrs(extra: dict[str, Any] | None) -> str:
        return "".join(f' {k}="{escape(str(v))}"' for k, v in (extra or {}).items() if v is not None)

    def merged(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
        result = dict(a or {})
        for key, value in (b or {}).items():
            result[key] = f"{result[key]} {value}" if key in result and key == "data-cat" else value
        return result

    head = f'<th class="corner">{escape(row_title)} ↓ · {escape(col_title)} →</th>' + "".join(
        f"<th{attrs(col_attrs[j] if col_attrs else None)}>{escape(str(c))}</th>" for j, c in enumerate(cols))
    body = []
    for i, label in enumerate(rows):
        row_extra = row_attrs[i] if row_attrs else None
        cells = [f'<th{attrs(row_extra)}>{escape(str(label))}</th>']
        for j, value in enumerate(values[i]):
            extra = merged(row_extra, col_attrs[j] if col_attrs else None)
            tip = tips[i][j] if tips else f"{label} · {cols[j]}: {fmt(value)}"
            mark = " mark" if marks and marks[i][j] else ""
            if value is None or not math.isfinite(float(value)):
                cells.append(f'<td class="nan{mark}" data-v="" data-tip="{escape(tip)}"{attrs(extra)}>–</td>')
                continue
            background = scale_colour((float(value) - lo) / span, anchors)
            cells.append(f'<td class="hc{mark}" data-v="{float(value)!r}" data-tip="{escape(tip)}" '
                         f'style="background:{background};color:{text_colour(background)}"{attrs(extra)}>'
                         f'{escape(fmt(value))}</td>')
        body.append(f"<tr{attrs(row_extra)}>" + "".join(cells) + "</tr>")
    legend = (f'<div class="scale"><span>{escape(fmt(lo))}</span><span class="bar" style="background:linear-gradient'
              f'(90deg,{",".join(anchors)})"></span><span>{escape(fmt(hi))}</span></div>')
    ident = f' id="{escape(heat_id)}"' if heat_id else ""
    css = "heat compact" if compact else "heat"
    return (f'<div class="heat-wrap"><table class="{css}"{ident}><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{legend}</div>')


def png_figure(data: bytes, caption: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{encoded}" loading="lazy">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def details(summary: str, body: str, open_: bool = False) -> str:
    return f'<details{" open" if open_ else ""}><summary>{escape(summary)}</summary>{body}</details>'
