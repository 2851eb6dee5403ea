"""Neuron and expert cards: for the top members of each category's set, what the component is and where it fires.

A card shows the component's frequency on every category (from the selection's profile run), its class
(general / shared / unique), its rank and score, and — when an examples pass recorded it — the instructions where
it fires most with the tokens highlighted by value. Rankings: ``frequency`` and ``margin`` (see
:mod:`sparcom.analysis.ranking`), plus any score a :class:`~sparcom.report.context.Context` score source gives
(e.g. the validity work's per-component specificity, once a selection carries it).
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

import numpy as np

from sparcom.analysis.frequencies import kind_frequencies
from sparcom.analysis.ranking import SCORE_DESCRIPTIONS, Component, flat_position, top_components
from sparcom.artifacts.selection import load_selection
from sparcom.data.schema import category_label
from sparcom.errors import SparcomError
from sparcom.examples.files import Event
from sparcom.kinds import KIND_NOUNS
from sparcom.report.plots import category_color
from sparcom.report.studies import Output
from sparcom.report.widgets import fmt_num, not_computed, note

SCORE_TITLES = {"frequency": "by frequency", "margin": "by specificity (margin)"}


def source_halves(run_output: Output, kind: str, component: Component) -> dict[str, dict[str, float]] | None:
    """Frequencies on the AI-written and human-written halves of each category, when the run has per-source
    counts. Runs do not record them yet; this is the hook that will read them."""
    return None


def _has_halves(run_output: Output) -> bool:
    """Whether the run records per-source counts (the hook :func:`source_halves` reads them)."""
    return False


def render_cards(ctx, output: Output, kind: str) -> str:
    """The cards block of one kind of one identify output, or a "not computed" line saying what is missing."""
    run_path = output.summary.header.data.run
    run_output = ctx.study.run_for(run_path)
    if run_output is None:
        return not_computed("Cards", f"They need the profile run {run_path} (its frequencies), which is not readable "
                                     "here; pass the run folder to the report too.")
    try:
        selection = load_selection(output.path)
    except SparcomError as exc:
        return not_computed("Cards", f"The selection masks are not readable ({exc}).")
    if kind not in selection.kinds:
        return not_computed("Cards", f"the selection has no {kind} masks")
    categories = list(output.summary.categories)
    freqs = kind_frequencies(run_output.run.counts, categories, kind)
    layout = freqs.layout
    mask = np.stack([layout.flatten({j: selection.mask(kind, c, j) for j in layout.layers}) for c in categories])
    # Specificity first: the most frequent members of a set tend to fire on nearly every token of every category.
    scores: dict[str, Any] = {"margin": "margin", "frequency": "frequency"}
    for name, source in ctx.score_sources.items():
        values = source(output, kind, freqs.p)
        if values is not None:
            scores[name] = values
    examples_output = ctx.study.examples_for(output.path)
    recorded = examples_output.summary if examples_output else None
    examples = recorded.components if recorded else {}
    rows = recorded.rows if recorded else {}
    n = ctx.cards_per_category
    membership = mask.sum(axis=0)

    groups = []
    for order, (score_name, score) in enumerate(scores.items()):
        ranked = top_components(freqs.p, mask, layout, categories, n, score)
        for category in categories:
            cards = [_card(ctx, categories, freqs.p, mask, membership, layout, component, category, rank + 1,
                           score_name, value, examples, rows, run_output, kind)
                     for rank, (component, value) in enumerate(ranked[category])]
            if not cards:
                cards = [f'<p class="missing">The {escape(category_label(category))} set is empty.</p>']
            inner = f'<div class="cards">{"".join(cards)}</div>'
            if order:  # the other rankings stay inert until their button is pressed (a lighter page to load)
                inner = f"<template>{inner}</template>"
            groups.append(f'<div class="card-group" data-cat="{escape(category)}" data-score="{escape(score_name)}">'
                          f'<h5>{ctx.badge(category)} top {n} {escape(SCORE_TITLES.get(score_name, "by " + score_name))}'
                          f'</h5>{inner}</div>')
    buttons = "".join(f'<button type="button" data-score-button="{escape(s)}"{" class=on" if i == 0 else ""}>'
                      f'{escape(SCORE_TITLES.get(s, "by " + s))}</button>' for i, s in enumerate(scores))
    described = "; ".join(f"<b>{escape(s)}</b>: {escape(SCORE_DESCRIPTIONS.get(s, 'score from the selection'))}"
                          for s in scores)
    intro = note(f"Members of each category's set, ranked {described}. Bars: p on every category (the card's "
                 "category outlined; faded where the component is not in that category's set) and, when the "
                 "examples pass recorded it, the mean value on the category's counted tokens. Long instructions "
                 "offer more tokens, so they are over-represented among the top examples.")
    if not _has_halves(run_output):
        intro += not_computed("AI / human halves", "The run has no per-source counts, so the cards show each "
                                                   "category's frequency only.")
    if recorded is None:
        intro += not_computed("Token examples", "Record them with sparcom.record_examples "
                                                "(the planned 'sparcom examples' command) and pass its folder.")
    else:
        intro += note(f"Examples: the top {recorded.top_k} instructions of {escape(str(recorded.data))} by the "
                      f"component's largest value on a counted token ({escape(recorded.values.get(kind, ''))}); "
                      f"±{recorded.window} tokens shown, shaded by value; tokens outside the counted scope in grey.")
    return (f'<div class="card-controls" role="group" aria-label="ranking">{buttons}</div>{intro}'
            f'<div class="card-groups" data-kind="{escape(kind)}">{"".join(groups)}</div>')


def _class_label(members: int, total: int) -> str:
    if members == total:
        return "general"
    if members == 1:
        return "unique"
    return f"shared by {members}"


def _card(ctx, categories, p, mask, membership, layout, component: Component, category: str, rank: int,
          score_name: str, score: float, examples: dict, rows: dict, run_output: Output, kind: str) -> str:
    flat = flat_position(layout, component)
    own = categories.index(category)
    members = int(membership[flat])
    entry = examples.get(component.key)
    means = entry.means if entry else {}
    peak = max((abs(v) for v in means.values() if v is not None), default=0.0) or 1.0
    bars = [f'<div class="pbar head{" with-mean" if means else ""}"><span></span><span class="ph">p</span><span></span>'
            + ('<span class="ph">mean value</span><span></span>' if means else "") + "</div>"]
    for i, c in enumerate(categories):
        value = float(p[i, flat])
        colour = category_color(c, categories)
        chosen = " own" if i == own else ""
        selected = " sel" if mask[i, flat] else ""
        mean = means.get(c)
        mean_html = ""
        tip = f"{category_label(c)}: p = {value:.4f}{' (in its set)' if mask[i, flat] else ' (not in its set)'}"
        if means:
            shown = "–" if mean is None else f"{mean:.3f}"
            width = 0 if mean is None else 100 * max(mean, 0.0) / peak
            mean_html = (f'<span class="pt"><span style="width:{width:.1f}%;background:{colour}"></span></span>'
                         f'<span class="pv">{shown}</span>')
            tip += f"; mean value {shown} on its counted tokens"
        bars.append(f'<div class="pbar{chosen}{selected}{" with-mean" if means else ""}" data-tip="{escape(tip)}">'
                    f'<span class="pl">{escape(category_label(c))}</span>'
                    f'<span class="pt"><span style="width:{100 * value:.1f}%;background:{colour}"></span></span>'
                    f'<span class="pv">{value:.3f}</span>{mean_html}</div>')
    halves = source_halves(run_output, kind, component)
    halves_html = "" if halves is None else _halves(halves, categories)
    head = (f'<div class="card-head"><span class="cid">{escape(component.key)}</span>'
            f'<span class="cls {_class_label(members, len(categories)).split()[0]}">'
            f'{escape(_class_label(members, len(categories)))}</span></div>'
            f'<div class="card-sub">{escape(KIND_NOUNS.get(kind, kind)[:-1] if kind != "expert" else "ISE")} · '
            f'{escape(component.describe())} · #{rank} by {escape(score_name)} ({fmt_num(score)})</div>')
    recorded = _examples(entry.events, rows, categories) if entry else (
        '<p class="missing small">Not in the examples pass (record it with components=[...]).</p>' if examples else "")
    own_events = entry.events_by_category.get(category) if entry else None
    if own_events is not None:
        # Inert until opened (the script instantiates the template), so the page stays light to load.
        recorded += (f'<details class="own"><summary>top {len(own_events)} within '
                     f'{escape(category_label(category))}</summary><template>'
                     f'{_examples(own_events, rows, categories)}</template></details>')
    body = f'<div class="pbars">{"".join(bars)}</div>{halves_html}{recorded}'
    return (f'<article class="card" data-cat="{escape(category)}" data-layer="{component.layer}" '
            f'data-component="{escape(component.key)}">{head}{body}</article>')


def _halves(halves: dict[str, dict[str, float]], categories) -> str:
    cells = " · ".join(f"{escape(category_label(c))} AI {fmt_num(v.get('ai'))} / human {fmt_num(v.get('human'))}"
                       for c, v in halves.items())
    return f'<p class="small">{cells}</p>'


def _examples(events: list[Event], rows: dict, categories) -> str:
    if not events:
        return '<p class="missing small">No counted token of the recorded data activated it.</p>'
    peak = max((abs(v) for e in events for v in e.values if v is not None), default=1.0) or 1.0
    lines = []
    for event in events:
        row = rows.get(event.row, {})
        category = row.get("category", "")
        tokens = []
        for offset, (text, value) in enumerate(zip(event.tokens, event.values, strict=False)):
            position = event.start + offset
            shown = escape(text).replace("\n", "↵")
            if value is None:
                tokens.append(f'<span class="tk off">{shown}</span>')
                continue
            alpha = min(abs(value) / peak, 1.0)
            hue = "230,97,0" if value >= 0 else "0,114,178"
            top = " top" if position == event.position else ""
            tokens.append(f'<span class="tk{top}" style="background:rgba({hue},{alpha:.2f})" '
                          f'data-tip="{escape(repr(text))}: {value:.3f}">{shown}</span>')
        badge = (f'<span class="cat" style="--c:{category_color(category, categories)}">'
                 f'{escape(category_label(category))}</span>') if category else ""
        source = f' <span class="src">{escape(row.get("source", ""))}</span>' if row.get("source") else ""
        lines.append(f'<li><div class="ex-meta">{badge}{source} <span class="rid">{escape(event.row)}</span> '
                     f'<span class="val">max {_value(event.value)}</span></div>'
                     f'<div class="ex-text">{"".join(tokens)}</div></li>')
    return f'<ol class="examples">{"".join(lines)}</ol>'


def _value(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "–"
