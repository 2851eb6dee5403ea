"""The settings of ``report``, declared once for the API and the CLI (:mod:`sparcom.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from sparcom.report.context import DEFAULT_CARDS
from sparcom.settings import check, setting


@dataclass(frozen=True)
class ReportSettings:
    """What the HTML page shows besides the study's outputs."""

    title: str | None = setting(None, flag="--title", help="Page title (default: the model names).")
    cards_per_category: int = setting(DEFAULT_CARDS, flag="--cards", low=0, aliases=("cards_per_category",),
                                      help="Neuron/expert cards per category and ranking.")

    def check(self) -> ReportSettings:
        return check(self)


__all__ = ["ReportSettings"]
