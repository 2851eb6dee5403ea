"""The HTML report's page: its parts top to bottom, each rendered from whatever outputs a study has.

A section function takes the :class:`~sparcom.report.context.Context` (and the output it describes) and returns a
list of :class:`~sparcom.report.widgets.Section` — empty when it has nothing to show, or a "not computed" line where
a reader would expect the result. The sections live by the output they describe: :mod:`sparcom.report.page_head`
(at a glance, provenance), :mod:`sparcom.report.identify_sections`, :mod:`sparcom.report.compare_sections` and
:mod:`sparcom.report.causal_sections`; to add one, write a function and add it to that module's list. Results that
other work adds to the summaries (validity measures, new causal statistics) are shown by the generic renderers
(:func:`sparcom.report.generic.generic_value`) until they get a section of their own.
"""

from __future__ import annotations

from collections.abc import Callable

from sparcom.report.causal_sections import ablate_sections
from sparcom.report.compare_sections import compare_sections
from sparcom.report.context import Context
from sparcom.report.generic import notes_section
from sparcom.report.identify_sections import identify_sections
from sparcom.report.page_head import overview, provenance
from sparcom.report.widgets import Section

#: The page, top to bottom.
PAGE: list[Callable[[Context], list[Section]]] = [overview, provenance, identify_sections, compare_sections,
                                                  ablate_sections, notes_section]


def build_sections(ctx: Context) -> list[Section]:
    """Every section of the page, in order (the summaries were checked by their typed readers)."""
    return [section for part in PAGE for section in part(ctx)]


__all__ = ["PAGE", "build_sections"]
