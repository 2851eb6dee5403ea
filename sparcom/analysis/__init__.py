"""Analysis of profile runs: select instruction-specific components, describe their sets, compare models.

Pure functions over arrays (see the modules); :mod:`sparcom.analysis.pipeline` ties them to loaded runs, and
:mod:`sparcom.analysis.validity` measures whether a selection is specific, from groups below the category.
"""

from sparcom.analysis.frequencies import KindFrequencies, kind_frequencies
from sparcom.analysis.groups import GroupCounts, by_source, pool, stratified_folds
from sparcom.analysis.pipeline import CompareResult, IdentifyResult, compare, identify
from sparcom.analysis.selection import DEFAULT_EPSILON, RULES, SelectionRule
from sparcom.analysis.validity import ValidityResult, validity, validity_sweep
from sparcom.artifacts.selection import Selection, load_selection
from sparcom.components import Layout

__all__ = ["DEFAULT_EPSILON", "RULES", "CompareResult", "GroupCounts", "IdentifyResult", "KindFrequencies",
           "Layout", "Selection", "SelectionRule", "ValidityResult", "by_source", "compare", "identify",
           "kind_frequencies", "load_selection", "pool", "stratified_folds", "validity", "validity_sweep"]
