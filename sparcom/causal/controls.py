"""Random-set controls matched on what a selection rule selects on, and how well the drawn sets match.

The ``shape`` control keeps a selected set's count in every layer (and expert) and draws uniformly there. A frequent
neuron and a median one differ in more than their layer: zeroing a neuron that fires on 99% of tokens shifts the
residual stream on every token. A *matched* control also keeps the count in every bin of a per-component statistic:

- ``frequency``: the activation frequency pooled over every category of the selection's profile run
  (Σ_c count_c / Σ_c T_c), the quantity the paper's rule ranks by;
- ``magnitude``: the expected contribution E|A| × ‖W_down[:, i]‖, with E|A| from the run's activation sums
  (pooled likewise; expert neurons over the tokens routed to their expert) and the column norm from the model.

Bins are quantile bins of the statistic over all components of a kind, halving towards the top (levels
1 − 2^−k: the top half, quarter, eighth, … of the components, down to a top bin of :data:`CONTROL_TOP_BIN`), so the
most frequent components are matched finely. Two ways to draw from the bins:

- ``frequency-bin`` and ``magnitude-bin`` (``frequency-bin`` is the default) draw from the *whole* bin, the selected
  components included: under the null "any set with this layer × bin profile", the selected set is one such set;
- ``frequency`` and ``magnitude`` draw "near misses" — the bin's components outside the set; where a bin of a block
  holds fewer candidates than selected components, it is merged with the bins below it
  (:func:`sparcom.random_sets.merge_short_strata`, deterministic, recorded as
  :class:`~sparcom.random_sets.Widening`). Near misses are conditioned on the selection: for a set that fills the
  top bins they are less frequent than the set, and a null in which frequent components matter most lets "critical
  role" hold for the paper's sets in 0.86 of simulated data sets (benchmarks/control_calibration.py; whole bins:
  0.04, at α). They stay available for comparison.

How well the drawn sets match is measured (:func:`match_row`: the statistic's mean over the selected set against
the drawn sets', and the share of the set's members a drawn set shares) and stored in the result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sparcom.components import ComponentSet, Layout
from sparcom.errors import SparcomError
from sparcom.random_sets import TooFewCandidates, Widening, merge_short_strata, quantile_strata, random_like

#: The causal controls' smallest top bin, in components of a kind pooled over its layers (validity's baseline keeps
#: :data:`sparcom.random_sets.MIN_TOP_BIN`, 32). The paper's sets fill the top bins, and within a bin they are its
#: most frequent members: where only frequency matters, steeply (damage ∝ f⁸), the whole-bin control let "critical
#: role" hold in 0.10 ± 0.03 of simulated data sets with top bins of 32, in 0.043 ± 0.008 with 8 (600 data sets),
#: and 4 did no better (benchmarks/control_calibration.py; docs/causal.md "Which control by default").
CONTROL_TOP_BIN = 8


@dataclass(frozen=True)
class Matching:
    """What a matched control matches on: per kind, the statistic [N] over the kind's layout and its bins [N]."""

    statistic: str  # e.g. "pooled activation frequency"
    source: str  # where the statistic was read (a run folder)
    layouts: dict[str, Layout]
    values: dict[str, np.ndarray]
    strata: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def binned(cls, statistic: str, source: str, layouts: dict[str, Layout], values: dict[str, np.ndarray]
               ) -> Matching:
        return cls(statistic, source, layouts, values,
                   {k: quantile_strata(v, CONTROL_TOP_BIN) for k, v in values.items()})

    def digest(self) -> str:
        """What fixes the drawn sets: the statistic's name and every kind's bins."""
        hashed = hashlib.sha256(self.statistic.encode())
        for kind in sorted(self.strata):
            hashed.update(kind.encode())
            hashed.update(np.ascontiguousarray(self.strata[kind], dtype=np.int64).tobytes())
        return hashed.hexdigest()

    def kind(self, selected: ComponentSet, kind: str) -> str:
        """``kind``, checked: the statistic covers it, over the same layers and shapes as ``selected``."""
        if kind not in self.strata:
            raise SparcomError(f"the {self.statistic} ({self.source}) has no {kind} components; a control matched on "
                               f"it cannot draw {kind} sets (drop --control or the target)")
        if self.layouts[kind] != selected.layout(kind):
            raise SparcomError(f"the {self.statistic} ({self.source}) covers {kind} layers "
                               f"{list(self.layouts[kind].layers)}, the set {list(selected.layout(kind).layers)}; "
                               "use the run the selection was made from")
        return kind

    def widened(self, selected: ComponentSet) -> tuple[dict[str, np.ndarray], list[Widening]]:
        """Per kind, the bins with the short ones merged for ``selected`` (its members excluded), and the merges."""
        strata, widenings = {}, []
        for kind in selected.shapes:
            mask = selected.flat(self.kind(selected, kind))
            strata[kind], found = merge_short_strata(self.layouts[kind], mask, self.strata[kind], exclude=mask)
            widenings += found
        return strata, widenings

    def mean(self, components: ComponentSet) -> float:
        """The statistic's mean over a set's members (every kind pooled); NaN for an empty set."""
        parts = [self.values[self.kind(components, k)][components.flat(k)] for k in components.shapes]
        pooled = np.concatenate(parts) if parts else np.zeros(0)
        return float(pooled.mean()) if pooled.size else float("nan")


def shape_like(selected: ComponentSet, seed: int, stream: str, matching: Matching | None = None) -> ComponentSet:
    """The ``shape`` control: ``selected``'s count in every layer and expert, uniformly (``matching`` unused)."""
    return random_like(selected, seed, stream)


def binned_like(selected: ComponentSet, seed: int, stream: str, matching: Matching | None = None) -> ComponentSet:
    """A whole-bin control (``frequency-bin``, ``magnitude-bin``): ``selected``'s count in every layer, expert and
    bin of ``matching``, drawn from the whole bin, the selected components included — the unconditional null (near
    misses are, by the selection, the bin's components less frequent or less active on the set's category)."""
    if matching is None:
        raise SparcomError(f"the control of {stream} matches on a statistic, but none was given")
    strata = {kind: matching.strata[matching.kind(selected, kind)] for kind in selected.shapes}
    return random_like(selected, seed, stream, strata=strata)


def matched_like(selected: ComponentSet, seed: int, stream: str, matching: Matching | None = None) -> ComponentSet:
    """A matched control: ``selected``'s count in every layer, expert and bin of ``matching`` (short bins widened),
    drawn from the components outside ``selected``."""
    if matching is None:
        raise SparcomError(f"the control of {stream} matches on a statistic, but none was given")
    strata, _ = matching.widened(selected)
    try:
        return random_like(selected, seed, stream, strata=strata, exclude=selected)
    except TooFewCandidates as exc:  # a block the set fills more than half of has too few near misses
        raise SparcomError(f"{stream}: {exc.block}: a control matched on the {matching.statistic} draws near misses "
                           "outside the set from the same layer and expert, and the set holds more than half of this "
                           "one; pass --control shape, or select fewer components (a smaller --epsilon)") from None


def pooled_frequency(run, kinds: Sequence[str]) -> Matching:
    """The ``frequency`` control's statistic: per kind, Σ_c count_c / Σ_c T_c over every category of ``run``."""
    from sparcom.analysis.frequencies import kind_frequencies

    layouts, values = {}, {}
    for kind in kinds:
        found = kind_frequencies(run.counts, run.categories, kind)
        total = int(found.tokens.sum())
        if total == 0:
            raise SparcomError(f"{run.path}: the run counted no tokens; a frequency-matched control needs its counts")
        layouts[kind], values[kind] = found.layout, found.counts.sum(axis=0) / total
    return Matching.binned("pooled activation frequency", str(run.path), layouts, values)


#: Where a dense or shared MLP's down projection sits beside its activation module (the activation path's last
#: name replaced), in the families' own names; the one found is checked to map the layer's neurons to the hidden size.
DOWN_PROJECTIONS: tuple[str, ...] = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out")


def _neuron_down_norms(sites, kind: str, layer: int) -> np.ndarray:
    """[I] ‖W_down[:, i]‖ of a dense or shared-expert MLP: its down projection, found beside the activation."""
    import torch

    from sparcom.models.sites import find_path, get_path

    family = sites.family
    path = family.activation if kind == "neuron" else family.shared_activation
    site = sites.site(kind, layer)
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    decoder = get_path(sites.backbone, family.layers)[layer]
    for name in DOWN_PROJECTIONS:
        module = find_path(decoder, f"{parent}.{name}" if parent else name)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.device.type == "meta":
            continue
        weight = weight.detach().to(torch.float64).cpu()
        if isinstance(module, torch.nn.Linear) and weight.shape[1] == site.width:
            return weight.norm(dim=0).numpy()
        if type(module).__name__ == "Conv1D" and weight.shape[0] == site.width:  # GPT-2's [in, out]
            return weight.norm(dim=1).numpy()
    raise SparcomError(f"--control magnitude: no loaded down projection of {site.width} neurons beside {path} in "
                       f"layer {layer} of this {family.name} model (looked for {', '.join(DOWN_PROJECTIONS)}); use "
                       "--control frequency-bin")


def _expert_down_norms(sites, layer: int) -> np.ndarray:
    """[E, I_e] ‖W_down[e][:, i]‖ of the routed experts (their 3-D ``down_proj``)."""
    import torch

    site = sites.site("expert_neuron", layer)
    weight = getattr(site.experts, "down_proj", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 3 or weight.device.type == "meta":
        raise SparcomError(f"--control magnitude: layer {layer}'s experts hold no loaded 3-D down_proj; use "
                           "--control frequency-bin")
    weight = weight.detach().to(torch.float64).cpu()
    return (weight.norm(dim=2) if site.layout.transposed else weight.norm(dim=1)).numpy()  # [E, I, H] / [E, H, I]


def down_column_norms(sites, kind: str, layer: int) -> np.ndarray:
    """‖W_down[:, i]‖ of every component of ``kind`` in ``layer`` (the layer's component shape)."""
    if kind == "expert_neuron":
        return _expert_down_norms(sites, layer)
    if kind in ("neuron", "shared_neuron"):
        return _neuron_down_norms(sites, kind, layer)
    raise SparcomError(f"--control magnitude matches neurons; {kind} components have no activation of their own "
                       "(use --control frequency-bin for them)")


def expected_contribution(run, kinds: Sequence[str], sites=None) -> Matching:
    """The ``magnitude`` control's statistic: per kind, E|A| (pooled over every category of ``run``; expert neurons:
    over the tokens routed to the expert) × ‖W_down[:, i]‖ — a component's expected contribution to the residual
    stream."""
    from sparcom.analysis.frequencies import kind_frequencies
    from sparcom.artifacts.sums import kind_means, require_sums

    require_sums(run, "--control magnitude")
    if sites is None:
        raise SparcomError("--control magnitude needs the model's down projections")
    layouts, values = {}, {}
    for kind in kinds:
        layout = kind_frequencies(run.counts, run.categories, kind).layout
        means = kind_means(run, kind)
        layouts[kind] = layout
        values[kind] = layout.flatten({j: means[j].mean_abs * down_column_norms(sites, kind, j)
                                       for j in layout.layers})
    return Matching.binned("mean |activation| × ‖W_down column‖", str(run.path), layouts, values)


def _frequency(run, kinds: Sequence[str], sites=None) -> Matching:
    return pooled_frequency(run, kinds)


#: A control's drawer: (selected set, seed, stream label, matching) → one random set.
Drawer = Callable[[ComponentSet, int, str, "Matching | None"], ComponentSet]


@dataclass(frozen=True)
class Control:
    """One way of drawing random control sets: one row of :data:`CONTROL_TABLE`, the one place a control is named."""

    draw: Drawer
    #: (profile run, kinds, model sites) → the binned statistic it matches on; None: matched on shape only.
    statistic: Callable[..., Matching] | None = None
    #: What it reads from the selection's profile run (the subject of its refusal when the run is missing).
    reads: str = ""
    #: Its whole-bin twin when it draws near misses (the selected components excluded, short top bins widened).
    whole_bins: str | None = None


_FREQUENCIES, _SUMS = "each component's frequency", "each component's activation sums"
#: Every control by name (``--control``; the first of a check's controls is its main one).
CONTROL_TABLE: dict[str, Control] = {
    "shape": Control(shape_like),
    "frequency": Control(matched_like, _frequency, _FREQUENCIES, whole_bins="frequency-bin"),
    "magnitude": Control(matched_like, expected_contribution, _SUMS, whole_bins="magnitude-bin"),
    "frequency-bin": Control(binned_like, _frequency, _FREQUENCIES),
    "magnitude-bin": Control(binned_like, expected_contribution, _SUMS),
}
#: What a matched control matches on, by control name (derived from :data:`CONTROL_TABLE`).
STATISTICS = {name: c.statistic for name, c in CONTROL_TABLE.items() if c.statistic is not None}
#: The matched controls that draw near misses (derived from :data:`CONTROL_TABLE`).
NEAR_MISSES: frozenset[str] = frozenset(name for name, c in CONTROL_TABLE.items() if c.whole_bins)


@dataclass(frozen=True)
class MatchRow:
    """How well one category's random sets of one control match its selected set on one statistic."""

    target: str
    control: str
    category: str
    statistic: str
    selected_mean: float  # the statistic's mean over the selected set (folds: the mean of the fold means)
    random_means: tuple[float, ...]  # each random set's mean (folds: averaged over the folds)
    widened_blocks: int  # blocks in which short bins were merged (summed over folds)
    widened_components: int  # selected components in merged bins (summed over folds)
    #: the mean share of the selected set's members that a random set holds too (whole bins: how much of the set
    #: the control cannot tell from its bins; near misses: 0)
    shared: float = float("nan")

    def row(self) -> dict[str, object]:
        means = np.asarray(self.random_means, dtype=np.float64)
        finite = means.size > 0
        return {"target": self.target, "control": self.control, "category": self.category,
                "statistic": self.statistic, "selected_mean": self.selected_mean,
                "random_mean": float(means.mean()) if finite else float("nan"),
                "random_min": float(means.min()) if finite else float("nan"),
                "random_max": float(means.max()) if finite else float("nan"),
                "random_sets": int(means.size), "widened_blocks": self.widened_blocks,
                "widened_components": self.widened_components, "shared": self.shared}


def match_row(target: str, control: str, category: str, matching: Matching, selected: Sequence[ComponentSet],
              drawn: Sequence[Sequence[ComponentSet]], widenings: Sequence[Widening]) -> MatchRow:
    """One category's match: ``selected`` per fold, ``drawn[f][r]`` random set r of fold f, the folds' merges."""
    random = np.array([[matching.mean(s) for s in sets] for sets in drawn], dtype=np.float64)
    shared = [shared_share(s, r) for s, sets in zip(selected, drawn, strict=True) for r in sets]
    return MatchRow(target, control, category, matching.statistic,
                    float(np.mean([matching.mean(s) for s in selected])),
                    tuple(float(v) for v in (random.mean(axis=0) if random.size else ())),
                    len(widenings), sum(w.selected for w in widenings),
                    float(np.mean(shared)) if shared else float("nan"))


def shared_share(selected: ComponentSet, drawn: ComponentSet) -> float:
    """The share of ``selected``'s members that ``drawn`` holds too (NaN for an empty set)."""
    size = selected.size()
    return (size - selected.without([drawn]).size()) / size if size else float("nan")


def control_matching(controls: Sequence[str], run, kinds: Sequence[str], sites=None) -> dict[str, Matching]:
    """Per matched control among ``controls``, its binned statistic over ``kinds``, read from ``run`` (and, for
    ``magnitude``, the model's ``sites``)."""
    return {c: STATISTICS[c](run, kinds, sites) for c in controls if c in STATISTICS}
