"""One self-contained HTML page per study: every section sparcom can show for the outputs it is given.

:func:`render_report` reads the outputs (:mod:`sparcom.report.studies`), renders the sections
(:mod:`sparcom.report.sections`, one small function each) and writes one HTML file with its style sheet, script
and figures inline, so it opens from disk with no network. The file is written under a temporary name and
renamed into place, so a failed run never leaves half a page.
"""

from __future__ import annotations

import importlib.resources
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path

from sparcom.data.schema import CATEGORIES, category_label
from sparcom.errors import SparcomError
from sparcom.outputs import check_parent, write_text_atomic
from sparcom.report.context import DEFAULT_CARDS, Context
from sparcom.report.sections import build_sections
from sparcom.report.studies import load_study
from sparcom.report.widgets import Section, cat_badge

ASSETS = "assets"


def _asset(name: str) -> str:
    return importlib.resources.files("sparcom.report").joinpath(ASSETS, name).read_text(encoding="utf-8")


def _categories(study) -> list[str]:
    found: list[str] = []
    for output in study.outputs:
        listed = output.header.data.categories if output.header is not None else []
        found += [c for c in listed if c not in found]
    ordered = [c for c in CATEGORIES if c in found]
    return ordered + [c for c in found if c not in ordered]


def _layers(study) -> int | None:
    return next((o.header.model.layers for o in study.outputs if o.header is not None and o.header.model.layers), None)


def _title(study) -> str:
    from sparcom.report.files import short_model_name

    names: list[str] = []
    for output in study.outputs:
        headers = [output.header] + ([output.summary.tuned] if output.kind == "compare" else [])
        for header in headers:
            if header is not None and short_model_name(header.model.name_or_path) not in names:
                names.append(short_model_name(header.model.name_or_path))
    return " · ".join(names[:3]) or "sparcom study"


def _controls(categories: list[str], layers: int | None) -> str:
    boxes = "".join(f'<label class="chip">{cat_badge(c, categories)}<input type="checkbox" data-filter-cat="{escape(c)}"'
                    f' checked aria-label="{escape(category_label(c))}"></label>' for c in categories)
    layer = ""
    if layers:
        layer = (f'<span class="layer-filter">layers <input type="number" id="layer-min" min="0" max="{layers - 1}" '
                 f'value="0" aria-label="first layer"> – <input type="number" id="layer-max" min="0" '
                 f'max="{layers - 1}" value="{layers - 1}" aria-label="last layer"></span>')
    return (f'<div class="controls" id="controls"><span class="lbl">show</span>{boxes}{layer}'
            f'<button type="button" id="reset-filters">reset</button><span id="filter-status"></span></div>')


def _toc(sections: Sequence[Section]) -> str:
    items = []
    for s in sections:
        if s.level <= 3:
            items.append(f'<li class="l{s.level}"><a href="#{escape(s.id)}">{escape(s.title)}</a></li>')
    return f'<nav id="toc"><div class="brand">sparcom</div><ol>{"".join(items)}</ol></nav>'


def _body(sections: Sequence[Section]) -> str:
    parts = []
    for s in sections:
        tag = f"h{min(s.level + 0, 5)}"
        parts.append(f'<section id="{escape(s.id)}" class="lvl{s.level}"><{tag}>{escape(s.title)}</{tag}>{s.body}'
                     "</section>")
    return "".join(parts)


def render_html(study_dirs: Sequence[str | Path], *, title: str | None = None,
                cards_per_category: int = DEFAULT_CARDS, score_sources=None) -> str:
    """The report page as a string (see :func:`render_report`)."""
    if cards_per_category < 1:
        raise SparcomError(f"--cards must be at least 1, got {cards_per_category}")
    study = load_study(list(study_dirs))
    categories = _categories(study)
    ctx = Context(study, cards_per_category, categories, dict(score_sources or {}))
    sections = build_sections(ctx)
    title = title or _title(study)
    from sparcom import __version__ as version

    generated = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    head = (f'<header><h1>{escape(title)}</h1><p class="sub">sparcom {escape(version)} report · generated '
            f'{escape(generated)} · {len(study.outputs)} inputs</p></header>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)} — sparcom report</title><style>{_asset('report.css')}</style></head>"
            f'<body>{_toc(sections)}<main>{head}{_controls(categories, _layers(study))}{_body(sections)}'
            f'<footer>Written by sparcom {escape(version)}. Self-contained: no network needed.</footer></main>'
            f"<script>{_asset('report.js')}</script></body></html>\n")


def render_report(study_dirs: Sequence[str | Path], out_html: str | Path, *, title: str | None = None,
                  cards_per_category: int = DEFAULT_CARDS, score_sources=None, overwrite: bool = False) -> Path:
    """Write one self-contained HTML report of the outputs in ``study_dirs`` to ``out_html``.

    ``study_dirs`` are sparcom output folders (identify, compare, ablate, profile runs, examples) or folders that
    hold them. ``cards_per_category`` is the number of cards per category and ranking; ``score_sources`` adds
    rankings (name → function(identify output, kind, p[K, N]) → [K, N] score or None). An existing file is
    replaced only with ``overwrite``.
    """
    out_html = Path(out_html)
    if out_html.is_dir():
        raise SparcomError(f"{out_html}: is a folder; --out must be an .html file path")
    if out_html.exists() and not overwrite:
        raise SparcomError(f"{out_html}: exists; choose another --out or pass --overwrite")
    page = render_html(study_dirs, title=title, cards_per_category=cards_per_category, score_sources=score_sources)
    check_parent(out_html)  # only now: a bad study folder must not leave an empty --out folder behind
    return write_text_atomic(out_html, page)


__all__ = ["render_html", "render_report"]
