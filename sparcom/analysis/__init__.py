"""Analysis of profile runs: select instruction-specific components, describe their sets, compare models.

Pure functions over arrays (see the modules); :mod:`sparcom.analysis.pipeline` ties them to loaded runs.
"""

from sparcom.analysis.frequencies import KindFrequencies, Layout, kind_frequencies
from sparcom.analysis.pipeline import CompareResult, IdentifyResult, compare, identify
from sparcom.analysis.selection import DEFAULT_EPSILON, RULES, SelectionRule
from sparcom.analysis.selection_file import Selection, load_selection

__all__ = ["DEFAULT_EPSILON", "RULES", "CompareResult", "IdentifyResult", "KindFrequencies", "Layout",
           "Selection", "SelectionRule", "compare", "identify", "kind_frequencies", "load_selection"]
