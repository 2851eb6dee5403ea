"""How the causal check is run: its settings and the named targets (component kinds deactivated together)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparcom.analysis.selection import DEFAULT_RULE, SelectionRule
from sparcom.artifacts.causal import CAUSAL_FORMAT, CAUSAL_VERSION
from sparcom.causal.controls import CONTROL_TABLE
from sparcom.causal.statistics import REPLICATES
from sparcom.errors import SparcomError
from sparcom.kinds import KINDS
from sparcom.settings import check, comma_list, group, setting

FORMAT, VERSION = CAUSAL_FORMAT, CAUSAL_VERSION
#: The random-set controls (:data:`sparcom.causal.controls.CONTROL_TABLE` names and draws them).
CONTROL_NAMES: tuple[str, ...] = tuple(CONTROL_TABLE)
#: Named targets: the component kinds ablated together. Any single kind name is a target too.
TARGETS: dict[str, tuple[str, ...]] = {
    "neurons": ("neuron", "shared_neuron", "expert_neuron"),
    "experts": ("expert",),
}
DEFAULT_SEEDS = 20
#: How a removed expert's slot is refilled (:mod:`sparcom.causal.interventions`); the first is the default.
EXPERT_REMOVAL: tuple[str, ...] = ("renormalize", "next-best")
#: The names of :data:`sparcom.causal.plan.INTERVENTIONS` (kept here, without torch, so that the CLI checks its
#: arguments before importing it; tests/test_causal_plan.py checks that they agree).
INTERVENTION_NAMES: tuple[str, ...] = ("zero", "mean", "resample")
#: The intervention a check runs unless told otherwise: ``mean`` keeps the model on-distribution where ``zero``
#: breaks it (+2 nats per token on every category, SmolLM2; docs/causal.md "Which intervention by default").
DEFAULT_INTERVENTION = "mean"
#: The random-set control a check runs unless told otherwise: ``frequency-bin`` matches random sets on what the
#: frequency rules select on, drawn from whole bins — near misses (``frequency``) are biased by the selection
#: (docs/causal.md "Which control by default"); ``shape`` matches layer and expert only.
DEFAULT_CONTROL = "frequency-bin"


def _names_or(default: str):
    """A list flag's parser: the names given (repeated and/or comma-separated), or ``(default,)`` when none."""
    return lambda value: comma_list(value) or (default,)


@dataclass(frozen=True)
class CausalSettings:
    """How the causal check is run."""

    seeds: int = setting(DEFAULT_SEEDS, flag="--seeds", low=0, help="Random control sets per category (0: none).")
    seed: int = setting(0, flag="--random-set-seed", help=(
        "First seed of the random control sets (set i draws from seed + i); also seeds the cross-fitting folds."))
    per_category: int | None = setting(None, flag="--per-category", low=1,
                                       help="Evaluate only N rows of each category, half AI-written, half human-written (each source's first rows).")
    batch_size: int = setting(8, flag="--batch-size", low=1, help="Rows per forward pass.")
    expert_removal: str = setting(EXPERT_REMOVAL[0], flag="--expert-removal", choices=EXPERT_REMOVAL, help=(
        "renormalize (drop the expert, rescale the token's other weights) or next-best (route to the best "
        "remaining experts)."))
    targets: tuple[str, ...] | None = setting(
        None, flag="--targets", choices=(*TARGETS, *KINDS), cli_type=list[str] | None, parse=comma_list,
        help="What to deactivate (repeat or comma-separate): neurons (dense, shared-expert and expert neurons), "
             "experts, or a single kind. Default: every target the selection has.")
    #: How a set is deactivated; several give one result per intervention (the first: the plain target names).
    interventions: tuple[str, ...] = setting(
        (DEFAULT_INTERVENTION,), flag="--intervention", choices=INTERVENTION_NAMES, cli_type=list[str] | None,
        cli_default=None, parse=_names_or(DEFAULT_INTERVENTION), help="How selected neurons are deactivated (repeat or comma-separate): mean (default: their "
        "mean activation over the profile run's counted tokens), zero or resample (their values on a row of another "
        "category, same position class). Experts are removed from the routing under each.")
    generate: bool = setting(False, flag="--generate", help=(
        "Also measure greedy exact-match accuracy on cls, math and short qa answers."))
    max_new_tokens: int = setting(64, flag="--max-new-tokens", low=1, help="Generation bound per answer.")
    generate_seeds: int = setting(3, flag="--generate-seeds", low=0, help=(
        "Random sets also scored by generation (the first N of --seeds)."))
    exclude_profiled: bool = setting(False, flag="--exclude-profiled", help=(
        "Skip rows the selection's profile run counted (held-out check)."))
    force: bool = setting(False, flag="--force", help=(
        "Ablate even if the selection was made on other weights or another tokenizer."))
    #: Deactivate only the components unique to each category (in its set and in no other category's set).
    unique: bool = setting(False, flag="--unique", help=(
        "Deactivate only the components unique to each category (selected for it and for no other category)."))
    #: Bootstrap replicates over rows for the intervals (statistics only: they do not change any NLL pass).
    replicates: int = setting(REPLICATES, flag="--replicates", low=1, help="Bootstrap replicates over rows.")
    #: Score only the first N tokens of each reference response (None: all); the sequence ends after them.
    max_scored_tokens: int | None = setting(None, flag="--max-scored-tokens", low=1, help=(
        "Score only the first N tokens of each reference response."))
    #: Cross-fitting: select on k − 1 folds of a run's instructions, score the held-out fold (None: a selection).
    folds: int | None = setting(None, flag="--crossfit-folds", low=2, help=(
        "Cross-fitting (with --run): select on k − 1 folds of the run's instructions with the rule (--rule, "
        "--epsilon, ...), score the held-out fold."))
    #: The random-set controls, each with its own null and results (the first is the check's main one).
    controls: tuple[str, ...] = setting(
        (DEFAULT_CONTROL,), flag="--control", choices=CONTROL_NAMES, cli_type=list[str] | None, cli_default=None,
        parse=_names_or(DEFAULT_CONTROL),
        help="How random control sets are matched to a selected set (repeat or comma-separate; each gets its own "
             "random sets and results, the first is the main one): frequency-bin (default: same count per layer, "
             "expert and bin of the pooled activation frequency, drawn from the whole bin; needs the selection's "
             "profile run), frequency (the same bins, near misses: the selected components excluded, short bins "
             "widened; biased by the selection, for comparison), shape (same count per layer and expert only), "
             "magnitude-bin / magnitude (per bin of mean |activation| × ‖W_down column‖, whole bins / near misses; "
             "needs a run with activation sums).")
    #: Dose–response: also deactivate the top-k of every set for this many k on a geometric grid (None: off).
    dose_points: int | None = setting(None, flag="--dose-response", low=2, help=(
        "Dose–response: also deactivate the top-k of each category's set (ranked by the selection rule's score) "
        "for N set sizes k on a geometric grid up to the set's size, each against random sets matched to it by "
        "every --control (N passes more per category and random set)."))
    #: Draw the random sets one round at a time and stop once no further round can change a decision.
    stop_when_decided: bool = setting(False, flag="--stop-when-decided", help=(
        "Run the random sets one draw at a time (draw r of every category together) and stop as soon as no "
        "further draw could change any decision: the decisions are exactly those of all --seeds random sets, "
        "the numbers rest on the draws run (docs/causal.md, 'Stopping when decided')."))
    #: Cross-fitting: the rule each fold's complement is selected with.
    rule: SelectionRule = group(SelectionRule, name=DEFAULT_RULE)

    def __post_init__(self) -> None:
        for name, default in (("interventions", DEFAULT_INTERVENTION), ("controls", DEFAULT_CONTROL)):
            value = getattr(self, name)
            if not isinstance(value, tuple):  # "mean", "zero,mean", None or a list from Python
                object.__setattr__(self, name, _names_or(default)(value))

    def check_together(self) -> None:
        if self.folds is not None and self.exclude_profiled:
            raise SparcomError("--crossfit-folds scores each profiled row with sets selected without it; "
                               "--exclude-profiled does not apply (drop it)")
        if self.folds is not None and self.dose_points is not None:
            raise SparcomError("--dose-response ranks one selection's sets; it is not available with "
                               "--crossfit-folds (drop one of them)")
        if len(set(self.controls)) != len(self.controls):
            raise SparcomError(f"--control lists {', '.join(self.controls)}: name each control once")
        if len(set(self.interventions)) != len(self.interventions):
            raise SparcomError(f"--intervention lists {', '.join(self.interventions)}: name each intervention once")
        if "resample" in self.interventions and self.generate:
            raise SparcomError("--generate is not available with --intervention resample (generated tokens have no "
                               "donor positions); run the generation check with zero or mean")
        if self.stop_when_decided and self.dose_points is not None:
            raise SparcomError("--stop-when-decided stops drawing the random sets that --dose-response's full-size "
                               "point shares; drop one of them")
        if self.folds is not None and self.generate:
            raise SparcomError("--generate is not available with --crossfit-folds yet; run it on a selection with "
                               "--exclude-profiled")

    def check(self) -> CausalSettings:
        return check(self)

    def to_json(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "seed": self.seed, "per_category": self.per_category,
                "batch_size": self.batch_size, "expert_removal": self.expert_removal,
                "targets": list(self.targets) if self.targets else None, "interventions": list(self.interventions),
                "generate": self.generate,
                "max_new_tokens": self.max_new_tokens, "generate_seeds": self.generate_seeds,
                "exclude_profiled": self.exclude_profiled, "force": self.force, "unique": self.unique,
                "replicates": self.replicates, "max_scored_tokens": self.max_scored_tokens,
                "folds": self.folds, **({"controls": list(self.controls)} if self.controls != ("shape",) else {}),
                **({"dose_points": self.dose_points} if self.dose_points is not None else {}),
                **({"stop_when_decided": True} if self.stop_when_decided else {})}
