"""The sparse-probing figure of an identify output: held-out accuracy against k per method (renders only).

Reads the ``probing_curves`` table (:meth:`sparcom.analysis.probing.ProbingCurves.rows`): per target (six-way, or
a category one-vs-rest) one line per ranking, the random and frequency-matched random means of the paper's rule
and of ``contrast`` dashed, the bag of tokens, and the all-component / all-token levels as flat lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sparcom.report import svg
from sparcom.report.widgets import fmt_pct, table

#: Colour-blind-safe colours per method (Okabe–Ito), in the legend's order.
METHOD_COLORS = {"percentile": "#E69F00", "layer-percentile": "#F0E442", "lape": "#CC79A7", "contrast": "#0072B2",
                 "contrast-mean": "#56B4E9", "test": "#009E73", "threshold": "#E69F00",
                 "mean-difference": "#555555", "l1-probe": "#000000", "lexical": "#D55E00"}
#: Whose controls are drawn (all methods have them in the table; two keep the figure readable).
CONTROLS_SHOWN = ("percentile", "contrast")
SIX_WAY = "six-way"


def _series(rows: Sequence[dict[str, Any]], ks: list[int]) -> list[tuple[str, str, list, bool]]:
    by_method: dict[str, dict[int, dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[int(r["k"])] = r
    series = []
    for method, points in by_method.items():
        if method.startswith("all "):
            level = next(iter(points.values()))["accuracy"]
            series.append((method, "#999999" if "components" in method else "#D55E00", [level] * len(ks), True))
            continue
        colour = METHOD_COLORS.get(method, "#777777")
        series.append((method, colour, [points.get(k, {}).get("accuracy") for k in ks], False))
        if method in CONTROLS_SHOWN:
            for control in ("random", "matched"):
                series.append((f"{method}: {control} sets", colour,
                               [points.get(k, {}).get(f"{control}_mean") for k in ks], True))
    return series


def probing_figure(rows: Sequence[dict[str, Any]], kind: str, table_id: str) -> str:
    """The six-way chart, a table of every method at every k, and the one-vs-rest means per category."""
    mine = [r for r in rows if r.get("kind") == kind]
    six = [r for r in mine if r["target"] == SIX_WAY]
    ks = sorted({int(r["k"]) for r in six if int(r["k"]) > 0})
    if not ks:
        return ""
    chart = svg.line_chart(ks, _series(six, ks), x_title="k (components per category)",
                           y_title="held-out accuracy (six-way)", y_max=1.0)
    legend = ('<p class="note">Solid: a ranking\'s k best components per category (chosen on training folds), '
              'decoded by the nearest training centroid; dashed: its random and frequency-matched random sets, '
              'the centroid on all components (grey) and on all tokens (orange).</p>')
    wide = {}
    for r in six:
        if int(r["k"]) > 0:
            wide.setdefault(r["method"], {"method": r["method"]})[f"k{int(r['k'])}"] = r["accuracy"]
    columns = [("method", "method"), *[(f"k{k}", f"k = {k}") for k in ks]]
    grid = table(list(wide.values()), columns, formats={f"k{k}": fmt_pct for k in ks}, table_id=table_id)
    return chart + legend + grid
