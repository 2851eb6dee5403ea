"""The settings of the analysis steps (identify, compare, evaluate, sweep), declared once for the API and the
CLI (:mod:`sparcom.settings`): the selection rule and the validity settings are groups shared by the steps that
use them, so their options are written once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparcom.analysis.evidence import ValiditySettings
from sparcom.analysis.selection import DEFAULT_RULE, SelectionRule
from sparcom.errors import SparcomError
from sparcom.kinds import KINDS
from sparcom.settings import check, comma_list, group, setting
from sparcom.stats import LEVEL as DEFAULT_LEVEL


def parse_grid(text: str | None) -> bool | tuple[float, ...]:
    """``--sweep``: comma-separated ε values, 'off' (no sweep), or nothing (the rule's own grid)."""
    if text is None:
        return True
    if isinstance(text, (bool, tuple, list)):
        return text if isinstance(text, bool) else tuple(text)
    if text.strip().lower() in ("", "none", "off"):
        return False
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SparcomError(f"--sweep must be comma-separated numbers such as 0.005,0.01,0.02, got {text!r}") from None


@dataclass(frozen=True)
class AnalysisSettings:
    """What every analysis step shares: the component kinds it looks at."""

    kinds: tuple[str, ...] | None = setting(
        None, flag="--kinds", choices=KINDS, cli_type=list[str] | None, parse=comma_list,
        help="Component kinds to analyse (repeat or comma-separate): neuron, shared_neuron, expert, expert_neuron. "
             "Default: all in the run.")

    def check(self) -> Any:
        return check(self)


@dataclass(frozen=True)
class IdentifySettings(AnalysisSettings):
    """``identify``: the rule, the ε sweep, the set statistics' intervals and the validity evidence."""

    rule: SelectionRule = group(SelectionRule, name=DEFAULT_RULE)
    sweep: bool | tuple[float, ...] = setting(
        True, flag="--sweep", cli_type=str | None, cli_default=None, parse=parse_grid,
        help="Comma-separated ε values for the ε sweep ('off' to skip). Default: a grid per rule.")
    ci_level: float = setting(DEFAULT_LEVEL, flag="--ci-level", low=0, high=1, open="both",
                              help="Level of the set statistics' intervals.")
    resamples: int = setting(
        0, flag="--resamples", low=0,
        help="Bootstrap stability of the selection over this many resamples of the instructions (runs with counts "
             "per instruction; ~1–8 s each on SmolLM2). The set statistics' intervals come from subsampling.")
    validity: ValiditySettings = group(ValiditySettings)
    reference: str | None = setting(
        None, flag="--reference",
        help="A reference corpus (not instructions) profiled raw by the same model with --group-by instruction: "
             "the generality claim's null (are the general components just as frequent there?).")
    bootstrap: bool = setting(True, keyword="bootstrap",
                              help="Bootstrap intervals from the run's Poisson counters when it has them.")


@dataclass(frozen=True)
class CompareSettings(AnalysisSettings):
    """``compare``: the rule both runs are selected with."""

    rule: SelectionRule = group(SelectionRule, name=DEFAULT_RULE)
    force: bool = setting(False, flag="--force", help="Compare despite different architecture, sizes, tokenizer, "
                                                      "scope, template or system prompt.")


@dataclass(frozen=True)
class EvaluateSettings(AnalysisSettings):
    """``evaluate``: the held-out decoding of other instructions with a selection's fixed sets."""

    validity: ValiditySettings = group(ValiditySettings, hide=("enabled", "probing"))


@dataclass(frozen=True)
class SweepSettings(AnalysisSettings):
    """``sweep``: the rules studied, their ε grids and the validity settings of every point."""

    rules: tuple[SelectionRule | str, ...] | None = setting(
        None, flag="--rules", cli_type=str | None, parse=comma_list,
        help="Comma-separated rules to study: percentile (the paper's), layer-percentile, lape, contrast, "
             "contrast-mean, test, threshold. Default: all of them.")
    epsilons: dict[str, list[float]] | None = setting(None, keyword="epsilons",
                                                      help="The ε grid of each rule (default: the rule's own).")
    validity: ValiditySettings = group(ValiditySettings, hide=("enabled", "probing"))


__all__ = ["AnalysisSettings", "CompareSettings", "EvaluateSettings", "IdentifySettings", "SweepSettings",
           "parse_grid"]
