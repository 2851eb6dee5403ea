"""The two analyses end to end, from loaded runs to tables and summaries (no files, no plots, no model).

:func:`identify` selects the components of each kind for each category and describes the sets;
:func:`compare` does it for a base and a tuned run with the same rule and reports what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparcom.analysis import bootstrap as boot
from sparcom.analysis import compare as cmp
from sparcom.analysis import sets
from sparcom.analysis.attribution import (
    attributed_kinds,
    attribution_of,
    checked_attribution,
    fold_effects,
    rule_effects,
)
from sparcom.analysis.evidence import (
    NO_GROUPS_NOTE,
    ValiditySettings,
    component_rows,
    has_groups,
    resample_masks,
    run_groups,
)
from sparcom.analysis.frequencies import KindFrequencies, kind_frequencies, replicate_count, replicate_frequencies
from sparcom.analysis.groups import GroupCounts
from sparcom.analysis.nulls import ClaimNulls, claim_nulls
from sparcom.analysis.probing import ProbingCurves, lexical_table, probing_curves
from sparcom.analysis.selection import GROUPS_NEEDED, SelectionRule, lape
from sparcom.analysis.validity import Specificity, Stability, ValidityResult, source_agreement, specificity
from sparcom.analysis.validity import validity as validity_of
from sparcom.artifacts.attribution import AttributionRun
from sparcom.artifacts.run import ProfileRun
from sparcom.artifacts.selection import masks_by_key, write_selection
from sparcom.artifacts.summaries import COMPARE_FORMAT, IDENTIFY_FORMAT, SUMMARY_VERSION
from sparcom.artifacts.summary import run_header
from sparcom.errors import SparcomError
from sparcom.kinds import KINDS, kinds_in
from sparcom.provenance import measurement
from sparcom.results import Tabular
from sparcom.stats import LEVEL

#: What the summary keeps of each interval row: the plug-in estimate and the interval; the trend-corrected value
#: and its bias (subsampling) or the replicates' mean (the Poisson bootstrap's spread).
INTERVAL_FIELDS = ("estimate", "low", "high", "corrected", "bias", "replicate_mean")
ATTRIBUTION_NOTE = ("rule 'attribution' ranks estimated effects, so the frequency-based validity evidence and bootstrap "
                    "intervals are left out; judge its sets with the causal check, cross-fitted (--crossfit-folds)")


@dataclass
class KindAnalysis:
    """Selection and set statistics of one component kind."""

    freqs: KindFrequencies
    rule: SelectionRule
    mask: np.ndarray  # [K, N] bool
    counts: dict[str, int]
    activity: dict[str, int]
    overlap: sets.Overlap
    per_layer: list[dict]
    per_expert: list[dict]
    selected_per_layer: list[dict]
    sweep: list[dict] = field(default_factory=list)
    intervals: list[dict] | None = None
    replicates: int | None = None
    lape_details: dict[str, Any] | None = None
    #: How the intervals were made: subsampling instructions, or the spread of the profile's Poisson counters.
    replicate_method: str = boot.POISSON_COUNTERS

    @property
    def kind(self) -> str:
        return self.freqs.kind

    @property
    def categories(self) -> tuple[str, ...]:
        return self.freqs.categories

    def summary(self) -> dict[str, Any]:
        cats = self.categories
        counts = self.counts
        result: dict[str, Any] = {
            "components": counts["components"], "layers": len(self.freqs.layout.layers),
            "selected": {c: counts[f"selected_{c}"] for c in cats},
            "selected_any": counts["selected_any"], "general": counts["general"],
            "shared_by": {str(m): counts[f"shared_by_{m}"] for m in range(2, len(cats))},
            "unique": {c: counts[f"unique_{c}"] for c in cats}, "unique_total": counts["unique_total"],
            "never_selected": counts["never_selected"], **self.activity,
            "shares": sets.shares(counts, cats),
            "chance_baseline": sets.chance_baseline([counts[f"selected_{c}"] for c in cats], counts["components"]),
            "overlap": {"categories": list(cats), "jaccard": self.overlap.jaccard.tolist(),
                        "containment_row_in_column": self.overlap.containment.tolist(),
                        "intersection": self.overlap.intersection.tolist()},
        }
        if self.intervals is None:
            result["bootstrap"] = {"available": False, "note": boot.HOW_TO_ENABLE}
        else:
            result["bootstrap"] = {
                "available": True, "replicates": self.replicates, "method": self.replicate_method,
                "level": self.intervals[0]["level"] if self.intervals else None,
                "intervals": {row["statistic"]: {key: row[key] for key in INTERVAL_FIELDS if key in row}
                              for row in self.intervals}}
        if self.lape_details:
            result["lape"] = self.lape_details
        if self.freqs.empty_categories:
            result["categories_without_tokens"] = self.freqs.empty_categories
        return result


def analyse_kind(freqs: KindFrequencies, rule: SelectionRule, sweep: bool | list[float] = True,
                 replicates=None, replicate_total: int | None = None, ci_level: float = LEVEL,
                 groups: GroupCounts | None = None, effects: np.ndarray | None = None,
                 subsample_seed: int | None = None) -> KindAnalysis:
    """Select with ``rule`` and compute every set statistic (optionally the ε sweep and intervals).

    ``groups`` are the groups pooled into ``freqs`` (rows in its category order); the ``test`` rule needs them, and
    the ``attribution`` rule needs the estimated ``effects`` [K, N] (:mod:`sparcom.analysis.attribution`).
    Intervals (:mod:`sparcom.analysis.bootstrap`): with ``subsample_seed`` and ``groups`` of one instruction each,
    by subsampling the instructions; else from ``replicates`` (p of each Poisson replicate, the rule applied to
    each), as the bootstrap's spread.
    """
    layout, cats, p = freqs.layout, freqs.categories, freqs.p
    mask = rule.apply(p, layout, groups, effects)
    details = None
    if rule.name == "lape":
        result = lape(p, rule.epsilon, rule.filter_rate, rule.activation_bar_ratio)
        details = {"filter_value": result.filter_value, "activation_bar": result.activation_bar,
                   "candidates": int(result.candidates.sum())}
    analysis = KindAnalysis(
        freqs=freqs, rule=rule, mask=mask, counts=sets.set_counts(mask, cats),
        activity=sets.activity_counts(p, freqs.tokens), overlap=sets.overlap(mask, cats),
        per_layer=sets.group_table(mask, layout, cats, "layer", p, freqs.tokens),
        per_expert=sets.group_table(mask, layout, cats, "expert", p, freqs.tokens) if layout.has_experts else [],
        selected_per_layer=sets.selected_per_group(mask, layout, cats, "layer"),
        lape_details=details,
    )
    if sweep:
        grid = None if sweep is True else list(sweep)
        analysis.sweep = sets.epsilon_sweep(p, layout, cats, rule, grid, groups, effects)
    if groups is not None and subsample_seed is not None:
        analysis.intervals = boot.subsampling_rows(groups, rule, ci_level, subsample_seed)
        analysis.replicate_method = boot.SUBSAMPLING
    elif replicates is not None:
        samples = boot.replicate_statistics(replicates, layout, cats, rule)
        analysis.replicates = replicate_total
        analysis.intervals = boot.interval_rows(freqs.kind, sets.summary_statistics(mask, cats), samples, ci_level)
    return analysis


def _select_kinds(run: ProfileRun, kinds: list[str] | None) -> list[str]:
    present = kinds_in(run.counts)
    if not present:
        raise SparcomError(f"{run.path}: the run has no component counts (no neuron/ or expert/ keys)")
    if not kinds:
        return present
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SparcomError(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    missing = [k for k in kinds if k not in present]
    if missing:
        raise SparcomError(f"{run.path}: the run has no {', '.join(missing)} counts; it has {', '.join(present)}")
    return [k for k in KINDS if k in kinds]


@dataclass
class IdentifyResult(Tabular):
    """Everything ``sparcom identify`` reports about one run."""

    run: ProfileRun
    rule: SelectionRule
    kinds: dict[str, KindAnalysis]
    ci_level: float
    #: Validity evidence per kind (empty when the run has no groups or validity was turned off).
    validity: dict[str, ValidityResult] = field(default_factory=dict)
    validity_settings: ValiditySettings = field(default_factory=ValiditySettings)
    #: Specificity scores of every component, per kind (from the validity evidence when there is some).
    scores: dict[str, Specificity] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: The generality null and the uniqueness test per kind (runs with counts per instruction).
    nulls: dict[str, ClaimNulls] = field(default_factory=dict)
    #: Sparse-probing curves per kind (``--probing`` on a run with counts per instruction).
    probing: dict[str, ProbingCurves] = field(default_factory=dict)

    @property
    def categories(self) -> tuple[str, ...]:
        return next(iter(self.kinds.values())).categories

    def masks(self) -> dict[str, np.ndarray]:
        result = {}
        for analysis in self.kinds.values():
            result.update(masks_by_key(analysis.freqs.layout, analysis.categories, analysis.mask))
        return result

    def write_selection(self, directory: Path) -> None:
        """Write the selection artifact (masks + selection.json) that the causal check and the report read."""
        write_selection(directory, self.masks(), self.selection_meta())

    def selection_meta(self) -> dict[str, Any]:
        """The content of selection.json."""
        return {"rule": self.rule.name, "epsilon": self.rule.epsilon, "parameters": self.rule.parameters,
                "description": self.rule.describe(), "categories": list(self.categories),
                "kinds": list(self.kinds), "source_run": str(self.run.path.resolve()),
                "manifest": measurement(self.run.manifest),
                "layouts": {k: a.freqs.layout.to_json() for k, a in self.kinds.items()},
                "selected": {k: {c: a.counts[f"selected_{c}"] for c in a.categories} for k, a in self.kinds.items()}}

    def validity_summary(self) -> dict[str, Any]:
        """Per kind, the validity evidence of the selection; ``available: false`` and why when there is none."""
        if not self.validity:
            reason = next((n for n in self.notes if "validity" in n), NO_GROUPS_NOTE)
            return {"available": False, "note": reason}
        return {"available": True, "settings": self.validity_settings.parameters(),
                **{kind: {**v.summary(), **({"probing": self.probing[kind].summary()} if kind in self.probing else {})}
                   for kind, v in self.validity.items()}}

    def summary(self) -> dict[str, Any]:
        notes = list(self.notes)
        if any(a.intervals is None for a in self.kinds.values()) and not any(n.startswith("bootstrap") for n in notes):
            notes.append(boot.HOW_TO_ENABLE)
        settings = {"rule": self.rule.parameters, "ci_level": self.ci_level,
                    "validity": self.validity_settings.parameters()}
        return {**run_header(IDENTIFY_FORMAT, SUMMARY_VERSION, self.run, settings),
                "rule": self.rule.parameters, "rule_description": self.rule.describe(),
                "kinds": {k: {**a.summary(), **({"claim_nulls": self.nulls[k].summary()} if k in self.nulls else {})}
                      for k, a in self.kinds.items()},
                "validity": self.validity_summary(), "notes": notes}

    def tables(self) -> dict[str, list[dict]]:
        """CSV tables by file stem, every row tagged with its kind."""
        tables: dict[str, list[dict]] = {"selected_per_layer": [], "sets_per_layer": [], "sets_per_expert": [],
                                         "overlap": [], "epsilon_sweep": [], "selected_components": [],
                                         "bootstrap_intervals": [], "expert_frequency": []}
        for kind, a in self.kinds.items():
            tables["selected_per_layer"] += [{"kind": kind, **r} for r in a.selected_per_layer]
            tables["sets_per_layer"] += [{"kind": kind, **r} for r in a.per_layer]
            tables["sets_per_expert"] += [{"kind": kind, **r} for r in a.per_expert]
            tables["overlap"] += [{"kind": kind, **r} for r in a.overlap.rows()]
            tables["epsilon_sweep"] += [{"kind": kind, **r} for r in a.sweep]
            scores = self.scores.get(kind) or specificity(a.freqs.p, a.categories)
            tables["selected_components"] += [{"kind": kind, **r} for r in
                                              component_rows(a.mask, a.freqs.p, a.freqs.layout, a.categories, scores)]
            tables["bootstrap_intervals"] += a.intervals or []
            if kind == "expert":
                tables["expert_frequency"] += expert_frequency_rows(a.freqs)
        for v in self.validity.values():
            for name, rows in v.tables().items():
                if name != "specificity":  # the same scores are columns of selected_components
                    tables.setdefault(name, []).extend(rows)
        for curves in self.probing.values():
            tables.setdefault("probing_curves", []).extend(curves.rows())
        return {name: rows for name, rows in tables.items() if rows}


def expert_frequency_rows(freqs: KindFrequencies) -> list[dict]:
    """Routed-token count and frequency f_ej(c) of every expert, per category and layer."""
    rows = []
    for i, category in enumerate(freqs.categories):
        for layer, routed in freqs.layout.split(freqs.counts[i]).items():
            values = freqs.layout.split(freqs.p[i])[layer]
            rows += [{"category": category, "layer": layer, "expert": e, "routed_tokens": int(routed[e]),
                      "frequency": float(values[e])} for e in range(routed.shape[0])]
    return rows


def identify(run: ProfileRun, rule: SelectionRule | None = None, kinds: list[str] | None = None,
             sweep: bool | list[float] = True, bootstrap: bool = True, ci_level: float = LEVEL,
             validity: ValiditySettings | None = None, resamples: int = 0, token_bags=None,
             reference: ProfileRun | None = None) -> IdentifyResult:
    """Select and describe the instruction-specific components of every (or the given) kind of ``run``.

    When the run keeps groups below the category, every kind also gets its validity evidence
    (:func:`sparcom.analysis.validity.validity`: held-out decoding against random sets, stability, cross-source
    agreement, specificity scores) unless ``validity.enabled`` is False. Bootstrap intervals come from the run's
    Poisson counters, or, with ``resamples`` = B > 0 on a grouped run, from B resamples of the instructions (the
    only way for rules that need per-instruction counts, such as ``test``); the same resamples then give the
    bootstrap stability of the validity evidence. On runs with counts per instruction each kind also gets the
    claims' nulls (:mod:`sparcom.analysis.nulls`; the generality null needs ``reference``, a reference corpus
    profiled raw by the same model with counts per instruction). With ``validity.probing`` every kind also gets
    its sparse-probing curves, and ``token_bags`` (:class:`sparcom.data.lexical.TokenBags` of the run's rows) add
    the lexical baseline.
    """
    rule = rule or SelectionRule()
    settings = (validity or ValiditySettings()).check()
    if resamples < 0 or resamples == 1:
        raise SparcomError(f"--resamples must be 0 (off) or at least 2, got {resamples}")
    grouped = has_groups(run)
    per_instruction = grouped and run.manifest.get("group_by") == "instruction"
    if rule.needs_groups and not per_instruction:
        raise SparcomError(f"{run.path}: {GROUPS_NEEDED}")
    if reference is not None and not (per_instruction and reference.manifest.get("group_by") == "instruction"):
        raise SparcomError(f"{reference.path if per_instruction else run.path}: --reference compares counts per "
                           "instruction; profile both runs with --group-by instruction")
    if resamples and not per_instruction:
        raise SparcomError(f"{run.path}: --resamples resamples instructions, which needs counts per instruction; "
                           "profile with 'sparcom profile ... --group-by instruction', or use --bootstrap counters")
    categories = run.categories
    analyses, evidence, scores, notes, nulls, probing = {}, {}, {}, [], {}, {}
    attribution, selected = _attribution_kinds(run, rule, _select_kinds(run, kinds), resamples, notes)
    probed = (_probed_attribution(run, rule, attribution) if settings.probing and settings.enabled and per_instruction
              else None)
    for kind in selected:
        freqs = kind_frequencies(run.counts, categories, kind)
        effects = rule_effects(run, attribution, kind) if attribution is not None else None
        subsampled = bootstrap and per_instruction and effects is None
        groups = run_groups(run, kind) if grouped and (settings.enabled or rule.needs_groups or subsampled) else None
        # the resamples only give the validity evidence its bootstrap stability (the intervals are subsampled)
        masks = (resample_masks(groups, rule, resamples, settings.seed)
                 if groups is not None and resamples and settings.enabled and effects is None else None)
        total = (replicate_count(run.counts, categories, kind)
                 if bootstrap and not subsampled and effects is None else None)
        replicates = replicate_frequencies(run.counts, categories, freqs.layout) if total else None
        analyses[kind] = analyse_kind(freqs, rule, sweep, replicates, total, ci_level, groups, effects,
                                      settings.seed if subsampled else None)
        if groups is not None and settings.enabled and effects is None:
            try:
                evidence[kind] = (validity_of(groups, rule, settings.folds, settings.seed, settings.random_sets,
                                              settings.level) if per_instruction else source_agreement(groups, rule))
            except SparcomError as exc:
                notes.append(f"validity of the {kind} selection left out: {exc}")
            else:
                if masks is not None:
                    evidence[kind].bootstrap = Stability(groups.category_order, "bootstrap", masks)
                scores[kind] = evidence[kind].scores
            if per_instruction:
                nulls[kind] = claim_nulls(groups, rule, run_groups(reference, kind) if reference else None,
                                          settings.folds, settings.random_sets, settings.seed)
        if settings.probing and per_instruction and groups is not None and settings.enabled:
            estimated = probed is not None and kind in probed.manifest.get("kinds", [])
            probing[kind] = _probing(groups, settings, token_bags, notes, probed if estimated else None)
        if kind not in scores:
            moments = groups.moments if groups is not None and per_instruction else None
            scores[kind] = specificity(freqs.p, categories, moments)
    if not grouped:
        notes.append(NO_GROUPS_NOTE)
    elif not settings.enabled:
        notes.append("validity evidence turned off (--no-validity)")
    if settings.probing and not per_instruction:
        notes.append("probing curves left out: they need counts per instruction (--group-by instruction)")
    return IdentifyResult(run, rule, analyses, ci_level, evidence, settings, scores, notes, nulls,
                          {k: v for k, v in probing.items() if v is not None})


def _probed_attribution(run: ProfileRun, rule: SelectionRule, loaded: AttributionRun | None) -> AttributionRun | None:
    """The attribution run whose effects the probing curves rank too (``--attribution``, whatever the rule), read
    once: the one the rule already loaded, if it did."""
    if loaded is not None or not rule.attribution:
        return loaded
    return checked_attribution(rule.attribution, run)


def _probing(groups: GroupCounts, settings: ValiditySettings, token_bags, notes: list[str],
             attribution: AttributionRun | None = None) -> ProbingCurves | None:
    """The kind's probing curves on the validity's folds, with the lexical baseline when the bags are given and the
    attribution rule's ranking when an attribution run is."""
    def effects_by_fold(assignment: np.ndarray, folds: int) -> list[np.ndarray]:
        return fold_effects(attribution, groups.kind, groups.labels, groups.category_index,
                            len(groups.category_order), assignment, folds)

    try:
        tables = [lexical_table(token_bags, groups)] if token_bags is not None else []
        return probing_curves(groups, folds=settings.folds, seed=settings.seed, tables=tables,
                              effects_by_fold=effects_by_fold if attribution is not None else None)
    except SparcomError as exc:
        notes.append(f"probing curves of the {groups.kind} kind left out: {exc}")
        return None


def _attribution_kinds(run: ProfileRun, rule: SelectionRule, kinds: list[str], resamples: int,
                       notes: list[str]) -> tuple[AttributionRun | None, list[str]]:
    """For rule ``attribution``: its attribution run and the kinds it estimated (notes say what is left out)."""
    attribution = attribution_of(rule, run)
    if attribution is None:
        return None, kinds
    if resamples:
        raise SparcomError("--resamples resamples the instructions' counts; rule 'attribution' ranks effects, whose "
                           "intervals it cannot resample yet: leave --resamples out")
    chosen = attributed_kinds(attribution, kinds)
    if len(chosen) < len(kinds):
        notes.append(f"rule 'attribution': {', '.join(k for k in kinds if k not in chosen)} left out (not attributed)")
    notes.append(ATTRIBUTION_NOTE)
    return attribution, chosen


@dataclass
class KindComparison:
    """Base → tuned changes of one kind."""

    base: KindAnalysis
    tuned: KindAnalysis
    changes: list[dict]
    changes_per_layer: list[dict]
    correlation: list[dict]
    transitions: np.ndarray
    structure: list[dict]
    routing: list[dict]

    @property
    def kind(self) -> str:
        return self.base.kind

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "per_category": {r["category"]: {k: v for k, v in r.items() if k != "category"} for r in self.changes},
            "correlation": {r["category"]: {k: v for k, v in r.items() if k != "category"} for r in self.correlation},
            "structure": {r["statistic"]: {"base": r["base"], "tuned": r["tuned"], "change": r["change"]}
                          for r in self.structure},
            "class_transitions": {"classes": list(sets.CLASSES), "base_rows_tuned_columns": self.transitions.tolist()},
            "base": self.base.summary(), "tuned": self.tuned.summary(),
        }
        if self.routing:
            values = np.array([r["js_divergence_bits"] for r in self.routing], dtype=np.float64)
            finite = values[np.isfinite(values)]
            result["routing_shift"] = {"mean_js_divergence_bits": float(finite.mean()) if finite.size else None,
                                       "max_js_divergence_bits": float(finite.max()) if finite.size else None}
        return result


@dataclass
class CompareResult(Tabular):
    """Everything ``sparcom compare`` reports about a base and a tuned run."""

    base_run: ProfileRun
    tuned_run: ProfileRun
    rule: SelectionRule
    categories: tuple[str, ...]
    kinds: dict[str, KindComparison]
    overridden: list[str]
    notes: list[str]

    def summary(self) -> dict[str, Any]:
        settings = {"rule": self.rule.parameters}
        return {**run_header(COMPARE_FORMAT, SUMMARY_VERSION, self.base_run, settings),
                "tuned": run_header(COMPARE_FORMAT, SUMMARY_VERSION, self.tuned_run, settings),
                "rule": self.rule.parameters, "rule_description": self.rule.describe(),
                "forced_despite": self.overridden, "notes": self.notes,
                "kinds": {k: c.summary() for k, c in self.kinds.items()}}

    def tables(self) -> dict[str, list[dict]]:
        tables: dict[str, list[dict]] = {"compare_sets": [], "compare_per_layer": [], "compare_correlation": [],
                                         "compare_structure": [], "compare_transitions": [], "routing_shift": []}
        for kind, c in self.kinds.items():
            tables["compare_sets"] += [{"kind": kind, **r} for r in c.changes]
            tables["compare_per_layer"] += [{"kind": kind, **r} for r in c.changes_per_layer]
            tables["compare_correlation"] += [{"kind": kind, **r} for r in c.correlation]
            tables["compare_structure"] += [{"kind": kind, **r} for r in c.structure]
            tables["compare_transitions"] += [{"kind": kind, **r} for r in cmp.transition_rows(c.transitions)]
            tables["routing_shift"] += c.routing
        return {name: rows for name, rows in tables.items() if rows}


def _rule_groups(run: ProfileRun, rule: SelectionRule, kind: str, categories) -> GroupCounts | None:
    """The groups a rule needs (``test``), in the order of ``categories``; None for rules that need none."""
    if not rule.needs_groups:
        return None
    if not has_groups(run):
        raise SparcomError(f"{run.path}: {GROUPS_NEEDED}")
    return run_groups(run, kind, categories)


def compare(base_run: ProfileRun, tuned_run: ProfileRun, rule: SelectionRule | None = None,
            kinds: list[str] | None = None, force: bool = False) -> CompareResult:
    """Compare the selections and frequencies of a base and a tuned run of the same architecture and settings."""
    rule = rule or SelectionRule()
    if rule.needs_effects:
        raise SparcomError("compare selects both runs with one rule; rule 'attribution' would need an attribution run "
                           "of each model, which compare does not take yet: compare with a frequency rule")
    reasons = cmp.incompatibilities(base_run.manifest, tuned_run.manifest)
    if reasons and not force:
        raise SparcomError(f"cannot compare {tuned_run.path} with {base_run.path}: {reasons[0]}"
                           f"{f' (and {len(reasons) - 1} more)' if len(reasons) > 1 else ''}; "
                           "pass --force for a deliberate cross-setting comparison")
    notes = []
    categories = tuple(c for c in base_run.categories if c in tuned_run.categories)
    if not categories:
        raise SparcomError(f"{base_run.path} and {tuned_run.path} have no category in common")
    dropped = sorted(set(base_run.categories) ^ set(tuned_run.categories))
    if dropped:
        notes.append(f"categories in only one run are left out: {', '.join(dropped)}")
    base_fp = base_run.manifest.get("model", {}).get("fingerprint")
    if base_fp and base_fp == tuned_run.manifest.get("model", {}).get("fingerprint"):
        notes.append("both runs have the same model fingerprint: the weights are identical")
    present = [k for k in kinds_in(base_run.counts) if k in kinds_in(tuned_run.counts)]
    if kinds:
        missing = [k for k in kinds if k not in present]
        if missing:
            raise SparcomError(f"kind(s) {', '.join(missing)} are not in both runs; both have {', '.join(present) or 'none'}")
        present = [k for k in KINDS if k in kinds]
    if not present:
        raise SparcomError(f"{base_run.path} and {tuned_run.path} have no component kind in common")
    comparisons = {}
    for kind in present:
        fb = kind_frequencies(base_run.counts, categories, kind)
        ft = kind_frequencies(tuned_run.counts, categories, kind)
        cmp.check_layouts(fb.layout, ft.layout)
        gb, gt = (_rule_groups(r, rule, kind, categories) for r in (base_run, tuned_run))
        a, b = analyse_kind(fb, rule, sweep=False, groups=gb), analyse_kind(ft, rule, sweep=False, groups=gt)
        comparisons[kind] = KindComparison(
            base=a, tuned=b,
            changes=cmp.set_changes(a.mask, b.mask, categories),
            changes_per_layer=cmp.set_changes_per_group(a.mask, b.mask, fb.layout, categories, "layer"),
            correlation=cmp.frequency_correlation(fb.p, ft.p, categories),
            transitions=cmp.class_transitions(a.mask, b.mask),
            structure=cmp.structure_change(a.mask, b.mask, categories),
            routing=cmp.routing_shift(fb.p, ft.p, fb.layout, categories) if kind == "expert" else [],
        )
    return CompareResult(base_run, tuned_run, rule, categories, comparisons, reasons if force else [], notes)
