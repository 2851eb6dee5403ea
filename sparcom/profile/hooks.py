"""Forward hooks that turn activations into counts inside the hook call.

The runner publishes, before each forward pass, which flattened token positions of the batch are counted for
which category (:class:`CountedBatch`, on the :class:`CurrentBatch` slot every hook reads) and, when the run keeps
counts below the category (``--group-by``), which group each counted row belongs to (:class:`BatchGroups`). Each hook
compares the activation with zero on those rows only — views of one range of rows per example, never a gathered
copy — and adds the column sums to its layer's counter; with groups, each range is counted once and the category's
counts are the sum of its groups'. The activation tensor is dropped when the hook returns.
Mixture-of-Experts layers are counted by :class:`ExpertCounter` from inside the routed experts module. The modules
hooked are those of the model's one site map (:mod:`sparcom.models.sites`), the same the causal check intervenes on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from sparcom.errors import SparcomError
from sparcom.kinds import bootstrap_key, count_key, group_key, sum_key
from sparcom.models.moe import (
    PLANNED_IMPLEMENTATIONS,
    activate,
    activation_module,
    call_plan,
    expert_activation,
    gate_of_pairs,
)
from sparcom.models.sites import ExpertsCall, MoeSite, PerDevice, ShadowAttribute
from sparcom.profile.counters import CountStore


def row_spans(counted: torch.Tensor) -> tuple[tuple[tuple[int, int], ...], list[int]]:
    """The counted rows of a [B, T] mask as ranges [start, end) of the flattened batch, each inside one example
    (in order), and each range's example."""
    steps = torch.nn.functional.pad(counted.to(torch.int8), (1, 1)).diff(dim=1)  # +1 where a range starts, -1 after
    starts, ends = (steps == 1).nonzero().tolist(), (steps == -1).nonzero().tolist()
    width = counted.shape[1]
    spans = tuple((b * width + t, b * width + u) for (b, t), (_, u) in zip(starts, ends, strict=True))
    return spans, [b for b, _ in starts]


@dataclass
class CountedRows:
    """The counted rows of one category in the flattened [batch × sequence] activations."""

    category: str
    rows: torch.Tensor  # int64 [n]
    #: The same rows as ranges [start, end) (:func:`row_spans`): hooks compare and count views, never a gathered copy.
    spans: tuple[tuple[int, int], ...]
    #: Poisson bootstrap weight of each counted row [replicates, n], or None when bootstrap is off.
    replicate_weights: torch.Tensor | None = None

    @classmethod
    def of(cls, category: str, counted: torch.Tensor, replicate_weights: torch.Tensor | None = None) -> CountedRows:
        """From a batch's counted mask [B, T]."""
        return cls(category, counted.reshape(-1).nonzero().squeeze(1), row_spans(counted)[0], replicate_weights)

    def to(self, device: torch.device) -> CountedRows:
        weights = self.replicate_weights
        return CountedRows(self.category, self.rows.to(device, non_blocking=True), self.spans,
                           None if weights is None else weights.to(device, non_blocking=True))


@dataclass
class BatchGroups:
    """Which group (an instruction, or one source half of a category) each row of the batch counts for.

    ``slots`` [batch × sequence]: the row's slot in this batch (0 … S−1), −1 for rows that are not counted;
    ``groups`` [S]: each slot's index in the run's group list. ``spans`` are the counted rows as ranges inside one
    example each (:func:`row_spans`) and ``span_groups`` [R] the group of each: a dense hook counts every range with
    one byte sum and adds them to the run's ``groups/{kind}/{layer}`` counters with one ``index_add``.
    """

    slots: torch.Tensor
    groups: torch.Tensor
    total: int  # groups in the whole run (the counters' first axis)
    spans: tuple[tuple[int, int], ...]
    span_groups: torch.Tensor  # int64 [R]

    @classmethod
    def of(cls, counted: torch.Tensor, example_groups: list[int], total: int) -> BatchGroups:
        """From a batch's counted mask [B, T] and each example's group index."""
        distinct = list(dict.fromkeys(example_groups))
        slot = torch.tensor([distinct.index(g) for g in example_groups], dtype=torch.int64)
        slots = torch.where(counted, slot[:, None], torch.full_like(counted, -1, dtype=torch.int64))
        spans, examples = row_spans(counted)
        return cls(slots.reshape(-1), torch.tensor(distinct, dtype=torch.int64), total, spans,
                   torch.tensor([example_groups[e] for e in examples], dtype=torch.int64))

    def to(self, device: torch.device) -> BatchGroups:
        return BatchGroups(self.slots.to(device, non_blocking=True), self.groups.to(device, non_blocking=True),
                           self.total, self.spans, self.span_groups.to(device, non_blocking=True))


@dataclass
class CountedBatch:
    """What the hooks count in the current batch; cached per device for models spread over devices."""

    groups: list[CountedRows]
    #: Rows of the flattened batch (batch × sequence), to check that a module saw the whole batch.
    tokens: int | None = None
    #: Counts below the category (``--group-by source|instruction``), or None.
    below: BatchGroups | None = None
    #: The index in ``groups`` of the category whose rows are exactly the rows with a group (in a profile run every
    #: counted row belongs to one): its counts are the sum of the groups' counts, not counted a second time.
    summed_group: int | None = None
    _per_device: PerDevice[list[CountedRows]] = field(init=False)
    _below: PerDevice[BatchGroups | None] = field(init=False)
    _lookups: dict[tuple[torch.device, int], list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._per_device = PerDevice(lambda device: [g.to(device) for g in self.groups])
        self._below = PerDevice(lambda device: None if self.below is None else self.below.to(device))

    def on(self, device: torch.device) -> list[CountedRows]:
        return self._per_device.on(device)

    def below_on(self, device: torch.device) -> BatchGroups | None:
        return self._below.on(device)

    def lookup(self, device: torch.device, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per group: a bool mask [n] of counted rows and each row's position in ``rows`` ([n], -1 if not counted)."""
        key = (device, n)
        if key not in self._lookups:
            tables = []
            for group in self.on(device):
                position = torch.full((n,), -1, dtype=torch.int64, device=device)
                position[group.rows] = torch.arange(group.rows.numel(), device=device)
                tables.append((position >= 0, position))
            self._lookups[key] = tables
        return self._lookups[key]


class CurrentBatch:
    """Shared slot the runner writes the current batch's counted rows into and every hook reads."""

    def __init__(self) -> None:
        self.current: CountedBatch | None = None


def column_counts(active: torch.Tensor) -> torch.Tensor:
    """Per-column number of True values of a bool [n, width] tensor.

    Summing the bytes into int32 is several times faster on CPU than PyTorch's bool → int64 reduction and exact
    for any batch (n < 2^31).
    """
    return active.view(torch.uint8).sum(0, dtype=torch.int32)


def span_counts(flat: torch.Tensor, spans: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """int32 [len(spans), width]: per range of rows of ``flat`` [n, width], how many rows have a value > 0.

    Comparing views of the activation (one range per example) reads it once; gathering the counted rows first
    would copy them and read them twice.
    """
    if not spans:
        return flat.new_zeros((0, flat.shape[1]), dtype=torch.int32)
    return torch.stack([column_counts(flat[start:end] > 0) for start, end in spans])


def group_counter(store: CountStore, kind: str, layer: int, shape: tuple[int, ...], device: torch.device,
                  ) -> torch.Tensor:
    """The int32 [groups, ...] counter of one kind and layer (int32: a group's count never exceeds its tokens)."""
    counter = store.zeros(group_key(kind, layer), shape, device, dtype=torch.int32)
    if counter.device != device:  # created earlier on another device (resume, device map)
        counter.data = counter.data.to(device)
    return counter


def slot_sums(below: BatchGroups, values: torch.Tensor) -> torch.Tensor:
    """Per-slot sums [S, ...] of the counted rows of ``values`` [n, ...] (0/1 values: exact in float32)."""
    slots = below.slots
    keep = (slots >= 0).nonzero().squeeze(1)
    out = torch.zeros((below.groups.numel(), *values.shape[1:]), dtype=torch.float32, device=values.device)
    return out.index_add_(0, slots.index_select(0, keep), values.index_select(0, keep).to(torch.float32))


def add_group_counts(store: CountStore, kind: str, layer: int, below: BatchGroups, sums: torch.Tensor) -> None:
    """Add per-slot sums [S, ...] to the run's group counters at the slots' group indices."""
    counter = group_counter(store, kind, layer, (below.total, *sums.shape[1:]), sums.device)
    counter.index_add_(0, below.groups, sums.round().to(torch.int32))


def sum_counters(store: CountStore, kind: str, category: str, layer: int, shape: tuple[int, ...],
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 counters of Σ A and Σ |A| of one kind, category and layer, on ``device`` (mean ablation and
    magnitude-matched controls read them: :mod:`sparcom.artifacts.sums`)."""
    found = []
    for absolute in (False, True):
        counter = store.zeros(sum_key(kind, category, layer, absolute), shape, device, dtype=torch.float64)
        if counter.device != device:  # created earlier on another device (resume, device map)
            counter.data = counter.data.to(device)
        found.append(counter)
    return found[0], found[1]


def make_count_hook(store: CountStore, board: CurrentBatch, kind: str, layer: int, width: int, replicates: int):
    """Build a forward hook that counts rows with activation > 0 into ``{kind}/{cat}/{layer}`` and adds their
    activations (and |activations|) into ``sums/…`` and ``abs_sums/…`` (and, with groups below the category, counts
    into ``groups/{kind}/{layer}``)."""
    counters: dict[str, torch.Tensor] = {}
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    boot: dict[str, torch.Tensor] = {}

    def counter_of(category: str, device: torch.device) -> torch.Tensor:
        counter = counters.get(category)
        if counter is None or counter.device != device:
            counter = store.zeros(count_key(kind, category, layer), (width,), device)
            if counter.device != device:  # created earlier on another device (resume, device map)
                counter.data = counter.data.to(device)
            counters[category] = counter
        return counter

    def hook(module: nn.Module, args, output: torch.Tensor) -> None:
        selection = board.current
        if selection is None:
            return
        flat = output.reshape(-1, width)
        below = selection.below_on(flat.device)
        if below is not None:
            per_span = span_counts(flat, below.spans)
            group_counter(store, kind, layer, (below.total, width), flat.device).index_add_(
                0, below.span_groups, per_span)
        for index, group in enumerate(selection.on(flat.device)):
            if below is None or index != selection.summed_group:
                per_span = span_counts(flat, group.spans)
            counter_of(group.category, flat.device).add_(per_span.sum(0))
            total, magnitude = sums.get(group.category) or (None, None)
            if total is None or total.device != flat.device:
                total, magnitude = sums[group.category] = sum_counters(store, kind, group.category, layer, (width,),
                                                                       flat.device)
            for start, end in group.spans:  # views of the counted rows, as for the counts
                rows = flat[start:end]
                total += rows.sum(0, dtype=torch.float64)
                magnitude += rows.abs().sum(0, dtype=torch.float64)
            if replicates:
                key = bootstrap_key(count_key(kind, group.category, layer))
                target = boot.get(group.category)
                if target is None:
                    target = store.zeros(key, (replicates, width), flat.device)
                    boot[group.category] = target
                active = flat.index_select(0, group.rows) > 0
                # Exact: float32 sums of small integers stay exact far beyond any batch's token count.
                target += (group.replicate_weights @ active.to(torch.float32)).round().to(torch.int64)

    return hook


# --------------------------------------------------------------------------------------------- Mixture-of-Experts

#: What to do about non-finite activations (the end of every such refusal).
NON_FINITE_ADVICE = ("a NaN would count as inactive, so nothing is counted; check the model's weights, or use "
                     "--dtype float32 if a half-precision dtype overflows")

#: Experts implementations whose activation calls sparcom can map back to (token, expert) pairs.
CAPTURED_IMPLEMENTATIONS = PLANNED_IMPLEMENTATIONS


@dataclass
class _RoutedForward:
    """One experts forward being counted, from its pre-hook to its post-hook."""

    x: torch.Tensor  # [n, H] the hidden states the experts received
    index: torch.Tensor  # [n, K] the expert indices the experts received
    groups: list[CountedRows]
    lookups: list[tuple[torch.Tensor, torch.Tensor]]  # per group: counted mask [n], position in rows [n]
    implementation: str = ""
    #: Capture plan: row r of the concatenated activation calls is pair order[r] (pair p = token · K + slot).
    order: torch.Tensor | None = None
    sizes: list[int] = field(default_factory=list)  # rows of each activation call, in call order
    call_experts: list[int] | None = None  # the expert of each call (the eager loop), None when calls mix experts
    calls: int = 0
    rows: int = 0
    failure: str | None = None
    samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    #: Per group: counts [E, I] of this forward as float32 (exact: integers far below 2^24), committed if verified.
    deltas: dict[int, torch.Tensor] = field(default_factory=dict)
    #: Per group: Σ A and Σ |A| [E, I] of this forward (float64), committed with the counts.
    value_sums: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    #: Rows for the bootstrap replicates: (group index, tokens, experts, A > 0).
    boot_rows: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    #: Counts below the category: the batch's slots and this forward's per-slot counts [S, E, I] (float32).
    below: BatchGroups | None = None
    below_delta: torch.Tensor | None = None


def _agrees(captured: torch.Tensor, reference: torch.Tensor) -> bool:
    """Captured gate rows equal the recomputed ones up to the rounding of different matmul kernels."""
    tolerance = 1e-3 if captured.dtype in (torch.float32, torch.float64) else 5e-2
    captured, reference = captured.to(torch.float32), reference.to(torch.float32)
    scale = reference.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return bool(((captured - reference).abs() <= tolerance * scale).all())


def _fired(activation: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """float32 [len(rows), I]: 1.0 where A > 0 on the given rows of an activation call, else 0 (NaN stays NaN)."""
    active = activation.index_select(0, rows)  # a new tensor: safe to change in place
    if active.dtype != torch.float32:
        active = active.to(torch.float32)
    return active.sign_().clamp_(min=0)


class ExpertCounter:
    """Counts one MoE layer from inside its experts module.

    ``expert/{cat}/{layer}`` [E]: a forward pre-hook on the experts module reads the ``top_k_index`` it is called
    with — the routing actually used, whatever the router did (bias correction, group limits, sparsemixer) — and
    counts the experts of the counted rows. Nothing is recomputed from router logits.

    ``expert_neuron/{cat}/{layer}`` [E, I]: the activations are captured where the model computes them (a forward
    hook on the experts' activation module, or around ``_apply_gate`` for families with their own gating rule).
    Which (token, expert) pair a captured row belongs to follows from the implementation that runs: the family's
    eager loop (one call per expert hit, in expert order, rows in (slot, token) order), ``batched_mm`` (one call,
    rows in (token, slot) order) or ``grouped_mm`` (one call, rows sorted by expert with the same ``torch.sort``
    the implementation runs). Every forward is verified — each call's row count must match the plan, and sampled
    rows' captured gate values must equal the gate recomputed from the expert weights — and its counts are
    committed only when all of it checked out. Otherwise (an unknown kernel, expert parallelism, a changed
    implementation) the layer switches, with a warning, to recomputing A = f(gate_e(x)) from the weights for the
    counted (token, expert) pairs: exact for any implementation, at the cost of the gate half of the expert
    compute. ``neurons="recompute"`` selects that path from the start; ``"off"`` counts experts only.
    """

    def __init__(self, store: CountStore, board: CurrentBatch, site: MoeSite, replicates: int = 0,
                 neurons: str = "auto") -> None:
        self.store, self.board, self.layer = store, board, site.layer
        self.experts, self.layout = site.experts, site.layout
        self.replicates = replicates
        self.neurons = neurons
        self.recompute = neurons == "recompute"
        self.fallback_reason: str | None = None
        self.captured_from: set[str] = set()
        self._verified: set[str] = set()  # implementations whose first forward passed the full check
        self._pending: _RoutedForward | None = None

    @property
    def source(self) -> str | None:
        """How this layer's expert-neuron activations were obtained (for the manifest)."""
        if self.neurons == "off":
            return None
        parts = [f"captured ({', '.join(sorted(self.captured_from))})"] if self.captured_from else []
        if self.recompute:
            parts.append("recomputed from the expert weights"
                         + (f" after: {self.fallback_reason}" if self.fallback_reason else ""))
        return "; ".join(parts) or "nothing counted yet"

    def attach(self) -> list:
        handles = [self.experts.register_forward_pre_hook(self._pre, with_kwargs=True),
                   self.experts.register_forward_hook(self._post)]
        if self.neurons == "auto":
            capture = self._capture_point()
            if capture is None:
                self.recompute = True
                self.fallback_reason = f"{type(self.experts).__name__} has no activation module or _apply_gate"
            else:
                handles.append(capture)
        return handles

    def _capture_point(self):
        experts, layout = self.experts, self.layout
        module = activation_module(experts, layout)
        if module is not None:
            return module.register_forward_hook(lambda module, args, output: self._captured(args[0], output))
        original = getattr(experts, "_apply_gate", None)
        if original is None:
            return None

        def apply_gate(gate_up: torch.Tensor) -> torch.Tensor:
            output = original(gate_up)
            if self._pending is not None and self._pending.order is not None:
                gate = gate_up[..., 0::2] if layout.interleaved else gate_up[..., : layout.width]
                self._captured(gate, activate(experts, layout, gate))
            return output

        return ShadowAttribute(experts, "_apply_gate", apply_gate)

    def _counter(self, kind: str, category: str, shape: tuple[int, ...], device: torch.device,
                 bootstrap: bool = False) -> torch.Tensor:
        key = count_key(kind, category, self.layer)
        counter = self.store.zeros(bootstrap_key(key) if bootstrap else key, shape, device)
        if counter.device != device:  # created earlier on another device (resume, device map)
            counter.data = counter.data.to(device)
        return counter

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._pending = None
        selection = self.board.current
        if selection is None:
            return
        call = ExpertsCall.parse(args, kwargs)
        x, index = call.hidden_states, call.top_k_index
        x = x.reshape(-1, x.shape[-1])
        n = x.shape[0]
        index = index.reshape(n, -1).to(torch.int64)
        if selection.tokens is not None and n != selection.tokens:
            raise SparcomError(f"layer {self.layer}: the experts received {n} token rows but the batch has "
                               f"{selection.tokens}; this family does not route every position, which sparcom "
                               "cannot map to counted tokens")
        device = x.device
        groups = selection.on(device)
        num_experts = self.layout.num_experts
        for group in groups:
            routed = index.index_select(0, group.rows)
            valid = (routed >= 0) & (routed < num_experts)
            self._counter("expert", group.category, (num_experts,), device).add_(
                torch.bincount(routed[valid], minlength=num_experts))
            if self.replicates:
                hits = torch.zeros(routed.shape[0], num_experts, device=device).scatter_add_(
                    1, routed.clamp(0, num_experts - 1), valid.to(torch.float32))
                boot = self._counter("expert", group.category, (self.replicates, num_experts), device, bootstrap=True)
                boot += (group.replicate_weights @ hits).round().to(torch.int64)
        below = selection.below_on(device)
        if below is not None:  # routed-expert hits of every row, summed per group slot
            valid = (index >= 0) & (index < num_experts)
            hits = torch.zeros(n, num_experts, device=device).scatter_add_(
                1, index.clamp(0, num_experts - 1), valid.to(torch.float32))
            add_group_counts(self.store, "expert", self.layer, below, slot_sums(below, hits))
        if self.neurons == "off":
            return
        pending = _RoutedForward(x, index, groups, selection.lookup(device, n), below=below)
        if below is not None:
            pending.below_delta = torch.zeros(below.groups.numel(), num_experts, self.layout.width, device=device)
        if not self.recompute:
            self._plan(module, pending)
        self._pending = pending

    def _plan(self, module: nn.Module, pending: _RoutedForward) -> None:
        """Which pair each row of the activation calls will be, for the implementation about to run."""
        implementation = getattr(getattr(module, "config", None), "_experts_implementation", None) or "eager"
        pending.implementation = implementation
        if implementation not in CAPTURED_IMPLEMENTATIONS or getattr(module, "_is_expert_parallel", False):
            pending.failure = f"experts implementation {implementation!r} cannot be observed"
            return
        plan = call_plan(implementation, pending.index, self.layout.num_experts)
        pending.order, pending.sizes, pending.call_experts = plan.order, plan.sizes, plan.call_experts

    def _captured(self, gate: torch.Tensor, activation: torch.Tensor) -> None:
        pending = self._pending
        if pending is None or pending.order is None or pending.failure is not None:
            return
        width = self.layout.width
        if gate.shape[-1] != width or activation.shape != gate.shape:
            pending.failure = f"an activation call had shape {tuple(activation.shape)}, not [rows, {width}]"
            return
        gate, activation = gate.reshape(-1, width), activation.reshape(-1, width)
        rows = gate.shape[0]
        if pending.calls >= len(pending.sizes) or rows != pending.sizes[pending.calls]:
            pending.failure = f"activation call {pending.calls + 1} had {rows} rows, not as planned"
            return
        pairs = pending.order[pending.rows : pending.rows + rows]
        tokens = pairs // pending.index.shape[1]
        experts = pending.index.reshape(-1)[pairs]
        # Spot checks: 8 rows per forward until an implementation has passed once, then 2; in the eager loop
        # 2 rows of every call at first, then 1 row of the first and of the last call.
        first = pending.implementation not in self._verified
        if pending.call_experts is None:
            per_call = 8 if first else 2
        else:
            per_call = 2 if first else int(pending.calls in (0, len(pending.sizes) - 1))
        if per_call:
            count = min(rows, per_call)
            sample = torch.tensor([round(i * (rows - 1) / max(count - 1, 1)) for i in range(count)],
                                  device=gate.device)
            pending.samples.append((gate.index_select(0, sample), tokens[sample], experts[sample]))
        # Few tensor ops, on the counted rows only (on a busy CPU each op costs more than its arithmetic): gather
        # the rows, turn A into 1.0 where A > 0 and 0 elsewhere in place (sign + clamp is several times faster on
        # CPU than a bool compare and a cast; a NaN stays NaN, so the counts become non-finite and verification
        # rejects them), and add each row to its expert's counts (float32 sums of 0/1: exact below 2^24 rows).
        num_experts = self.layout.num_experts
        for index, (mask, _) in enumerate(pending.lookups):
            keep = mask[tokens].nonzero().squeeze(1)
            delta = pending.deltas.get(index)
            if delta is None:
                delta = pending.deltas[index] = torch.zeros(num_experts, width, device=activation.device)
            values = activation.index_select(0, keep).to(torch.float64)
            total, magnitude = pending.value_sums.get(index) or pending.value_sums.setdefault(index, (
                torch.zeros(num_experts, width, dtype=torch.float64, device=activation.device),
                torch.zeros(num_experts, width, dtype=torch.float64, device=activation.device)))
            active = _fired(activation, keep)
            if pending.call_experts is not None:  # one expert per call
                expert = pending.call_experts[pending.calls]
                delta[expert] += active.sum(0)
                total[expert] += values.sum(0)
                magnitude[expert] += values.abs().sum(0)
            else:
                routed = experts.index_select(0, keep)
                delta.index_add_(0, routed, active)
                total.index_add_(0, routed, values)
                magnitude.index_add_(0, routed, values.abs())
            if self.replicates:
                pending.boot_rows.append((index, tokens.index_select(0, keep), experts.index_select(0, keep),
                                          active > 0.5))
        if pending.below is not None:  # per (group slot, expert) sums of the rows that belong to a group
            slot = pending.below.slots.index_select(0, tokens)
            keep = (slot >= 0).nonzero().squeeze(1)
            pending.below_delta.view(-1, width).index_add_(
                0, (slot * num_experts + experts).index_select(0, keep), _fired(activation, keep))
        pending.calls += 1
        pending.rows += rows

    def _post(self, module: nn.Module, args: tuple, output) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if not self.recompute:
            reason = pending.failure or self._verify(pending)
            if reason is None:
                self.captured_from.add(pending.implementation)
                self._verified.add(pending.implementation)
                layout = self.layout
                for index, delta in pending.deltas.items():
                    group = pending.groups[index]
                    counter = self._counter("expert_neuron", group.category, (layout.num_experts, layout.width),
                                            delta.device)
                    counter += delta.round().to(torch.int64)
                for index, (total, magnitude) in pending.value_sums.items():
                    self._add_sums(pending.groups[index].category, total, magnitude)
                for index, tokens, experts, active in pending.boot_rows:
                    self._add_bootstrap(pending.groups[index], pending.lookups[index][1][tokens], experts, active)
                if pending.below is not None:
                    add_group_counts(self.store, "expert_neuron", self.layer, pending.below, pending.below_delta)
                return
            self.recompute = True
            self.fallback_reason = reason
            warnings.warn(f"layer {self.layer}: counting expert neurons by recomputing the expert gates ({reason})",
                          stacklevel=2)
        self._recount(pending)

    def _verify(self, pending: _RoutedForward) -> str | None:
        if pending.calls != len(pending.sizes) or pending.rows != sum(pending.sizes):
            return f"{pending.rows} of {sum(pending.sizes)} routed rows were seen by the activation"
        deltas = [*pending.deltas.values(), *([pending.below_delta] if pending.below_delta is not None else [])]
        if not pending.samples:
            return "no activation rows could be checked"
        captured = torch.cat([s[0] for s in pending.samples])
        if not all(bool(delta.sum().isfinite()) for delta in deltas) or not bool(captured.isfinite().all()):
            # The model computes them so: recomputing would give the same NaN/inf, counted as inactive.
            raise SparcomError(f"layer {self.layer}: non-finite values (NaN/inf) in the routed experts' "
                               f"activations; {NON_FINITE_ADVICE}")
        tokens = torch.cat([s[1] for s in pending.samples])
        experts = torch.cat([s[2] for s in pending.samples]).tolist()
        reference = gate_of_pairs(self.experts, self.layout, pending.x.index_select(0, tokens), experts)
        if not _agrees(captured, reference):
            return "captured gate values differ from the gates recomputed from the expert weights"
        return None

    def _add_sums(self, category: str, total: torch.Tensor, magnitude: torch.Tensor) -> None:
        """Add one forward's Σ A and Σ |A| [E, I] into the run's expert-neuron sums of ``category``."""
        shape = (self.layout.num_experts, self.layout.width)
        run_total, run_magnitude = sum_counters(self.store, "expert_neuron", category, self.layer, shape, total.device)
        run_total += total
        run_magnitude += magnitude

    def _add_bootstrap(self, group: CountedRows, positions: torch.Tensor, experts: torch.Tensor,
                       active: torch.Tensor) -> None:
        """Poisson-weighted expert-neuron counts of rows (their positions in ``group.rows``, experts, A > 0)."""
        layout = self.layout
        boot = self._counter("expert_neuron", group.category, (self.replicates, layout.num_experts, layout.width),
                             active.device, bootstrap=True)
        weights = group.replicate_weights.index_select(1, positions)  # [R, k]
        for expert in torch.unique(experts).tolist():
            chosen = experts == expert
            # Exact: float32 sums of small integers.
            boot[:, expert] += (weights[:, chosen] @ active[chosen].to(torch.float32)).round().to(torch.int64)

    def _recount(self, pending: _RoutedForward) -> None:
        """Count the counted rows' (token, expert) pairs by recomputing A = f(gate_e(x)) from the weights."""
        k = pending.index.shape[1]
        num_experts = self.layout.num_experts
        for group, (_, position) in zip(pending.groups, pending.lookups, strict=True):
            routed = pending.index.index_select(0, group.rows).reshape(-1)
            tokens = group.rows.repeat_interleave(k)
            valid = (routed >= 0) & (routed < num_experts)
            routed, tokens = routed[valid], tokens[valid]
            order = torch.argsort(routed, stable=True)
            routed, tokens = routed[order], tokens[order]
            start = 0
            for expert, size in enumerate(torch.bincount(routed, minlength=num_experts).tolist()):
                if not size:
                    continue
                rows = tokens[start : start + size]
                start += size
                values = expert_activation(self.experts, self.layout, pending.x.index_select(0, rows), expert)
                active = values > 0
                counter = self._counter("expert_neuron", group.category, (num_experts, self.layout.width),
                                        active.device)
                counter[expert] += active.sum(0)
                total, magnitude = sum_counters(self.store, "expert_neuron", group.category, self.layer,
                                                (num_experts, self.layout.width), active.device)
                total[expert] += values.sum(0, dtype=torch.float64)
                magnitude[expert] += values.abs().sum(0, dtype=torch.float64)
                if self.replicates:
                    self._add_bootstrap(group, position[rows], routed[start - size : start], active)
                if pending.below is not None:
                    below = pending.below
                    counts = group_counter(self.store, "expert_neuron", self.layer,
                                           (below.total, num_experts, self.layout.width), active.device)
                    counts[:, expert].index_add_(0, below.groups.index_select(0, below.slots.index_select(0, rows)),
                                                 active.to(torch.int32))
