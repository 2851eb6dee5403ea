"""Two small inline SVG charts for the HTML report: stacked bars and lines. Every mark carries its value in
``data-tip`` (shown on hover by the report's script), and per-layer marks carry ``data-layer`` for the filter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

FONT = 11


def _attrs(**values) -> str:
    return " ".join(f'{k.replace("_", "-")}="{escape(str(v))}"' for k, v in values.items() if v is not None)


def _nice_max(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _ticks(top: float, count: int = 4) -> list[float]:
    return [top * i / count for i in range(count + 1)]


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.3g}"


def stacked_bars(labels: Sequence[int | str], series: Sequence[tuple[str, str, Sequence[float]]], *,
                 x_title: str, y_title: str, width: int = 900, height: int = 240, layer_attr: bool = True,
                 tip_prefix: str = "layer") -> str:
    """Bars per label (e.g. layer), stacked from the given ``(name, colour, values)`` series, with a legend."""
    left, right, top, bottom = 56, 12, 26, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(float(s[2][i] or 0) for s in series) for i in range(len(labels))]
    y_max = _nice_max(max(totals, default=0))
    n = max(len(labels), 1)
    slot = plot_w / n
    bar = max(slot * 0.8, 1)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" role="img" '
             f'aria-label="{escape(y_title)} per {escape(x_title)}">']
    for tick in _ticks(y_max):
        y = top + plot_h - plot_h * tick / y_max
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{_fmt(tick)}</text>')
    every = max(1, math.ceil(n / 30))
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar) / 2
        base = 0.0
        group = [f'<g {_attrs(data_layer=label if layer_attr else None)}>']
        tip_lines = [f"{tip_prefix} {label}".strip()]
        tip_lines += [f"{name}: {_fmt(float(values[i] or 0))}" for name, _, values in series]
        tip = " · ".join(tip_lines)
        for _, colour, values in series:
            value = float(values[i] or 0)
            if value <= 0:
                continue
            h = plot_h * value / y_max
            y = top + plot_h - plot_h * (base + value) / y_max
            group.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}" '
                         f'data-tip="{escape(tip)}"/>')
            base += value
        if not base:
            group.append(f'<rect x="{x:.1f}" y="{top + plot_h - 1:.1f}" width="{bar:.1f}" height="1" fill="#ccc" '
                         f'data-tip="{escape(tip)}"/>')
        if i % every == 0:
            group.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 13}" text-anchor="middle" '
                         f'class="axis">{escape(str(label))}</text>')
        group.append("</g>")
        parts.append("".join(group))
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" class="axis-title">'
                 f'{escape(x_title)}</text>')
    parts.append(f'<text x="12" y="{top + plot_h / 2:.1f}" transform="rotate(-90 12 {top + plot_h / 2:.1f})" '
                 f'text-anchor="middle" class="axis-title">{escape(y_title)}</text>')
    x = left
    for name, colour, _ in series:
        parts.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="15" class="legend">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def line_chart(x: Sequence[float], series: Sequence[tuple[str, str, Sequence[float | None], bool]], *,
               x_title: str, y_title: str, marker: float | None = None, log_x: bool = True, width: int = 640,
               height: int = 260, y_max: float | None = None) -> str:
    """Lines over ``x`` from ``(name, colour, values, dashed)`` series; ``marker`` draws a vertical rule (the default ε)."""
    left, right, top, bottom = 56, 16, 26, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    finite = [float(v) for _, _, values, _ in series for v in values if v is not None and math.isfinite(float(v))]
    top_value = y_max if y_max is not None else _nice_max(max(finite, default=1.0))
    xs = [float(v) for v in x]
    transform = (lambda v: math.log10(v)) if log_x and all(v > 0 for v in xs) else (lambda v: v)
    lo, hi = (transform(min(xs)), transform(max(xs))) if xs else (0.0, 1.0)
    span = (hi - lo) or 1.0

    def px(value: float) -> float:
        return left + plot_w * (transform(value) - lo) / span

    def py(value: float) -> float:
        return top + plot_h - plot_h * value / top_value

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" role="img" '
             f'aria-label="{escape(y_title)} against {escape(x_title)}">']
    for tick in _ticks(top_value):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end" class="axis">{_fmt(tick)}</text>')
    for value in xs:
        parts.append(f'<text x="{px(value):.1f}" y="{top + plot_h + 14}" text-anchor="middle" class="axis">'
                     f'{value:g}</text>')
    if marker is not None and xs and min(xs) <= marker <= max(xs):
        parts.append(f'<line x1="{px(marker):.1f}" x2="{px(marker):.1f}" y1="{top}" y2="{top + plot_h}" '
                     f'class="marker"/><text x="{px(marker) + 4:.1f}" y="{top + 10}" class="axis">default</text>')
    for name, colour, values, dashed in series:
        points = [(px(xv), py(float(v)), xv, float(v)) for xv, v in zip(xs, values, strict=True)
                  if v is not None and math.isfinite(float(v))]
        if not points:
            continue
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in points)
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for a, b, xv, v in points:
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{colour}" '
                         f'data-tip="{escape(name)} at ε = {xv:g}: {v:.3g}"/>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" class="axis-title">'
                 f'{escape(x_title)}</text>')
    parts.append(f'<text x="12" y="{top + plot_h / 2:.1f}" transform="rotate(-90 12 {top + plot_h / 2:.1f})" '
                 f'text-anchor="middle" class="axis-title">{escape(y_title)}</text>')
    x0 = left
    for name, colour, _, dashed in series:
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        parts.append(f'<line x1="{x0}" x2="{x0 + 16}" y1="11" y2="11" stroke="{colour}" stroke-width="2"{dash}/>'
                     f'<text x="{x0 + 20}" y="15" class="legend">{escape(name)}</text>')
        x0 += 30 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)
