"""The linear estimate of a deactivation, per row and component, from one forward and one backward pass.

Deactivating neuron i of layer j replaces its post-activation value A_ij^t by r_ij at every position t of a row
(zero ablation: r = 0; mean ablation: r = the neuron's mean activation). To first order the change of the row's
summed NLL over its scored (response) tokens is

    Δ_ij ≈ Σ_t ∂NLL/∂A_ij^t · (r_ij − A_ij^t)

(attribution patching). One backward pass of the summed NLL gives every gradient at once; rows of a batch do not
interact, so the gradient of the batch's total with respect to one row's activations is that row's own gradient and
Σ_t runs per row. Positions that do not reach a scored token (the padding on the right, the positions after the last
scored token) have gradient 0 exactly. The sites are those of the model's one site map (:mod:`sparcom.models.sites`),
the modules the profiler counts and the causal check deactivates. Parameters are frozen during the pass: only the
activations' gradients are computed, which keeps the backward near the cost of one forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sparcom.causal.nll import LOGIT_CHUNK
from sparcom.causal.scoring import ScoringBatch
from sparcom.errors import SparcomError
from sparcom.kinds import KIND_TABLE
from sparcom.models.logits import logits_at
from sparcom.models.sites import ModelSites, NeuronSite

#: The replacement values a deactivation writes: zero, or each neuron's mean activation.
REPLACEMENTS: tuple[str, ...] = ("zero", "mean")
#: Kinds the pass attributes: those living at an activation module (routed experts are not attributed yet).
ATTRIBUTED_KINDS: tuple[str, ...] = tuple(k.name for k in KIND_TABLE.values() if not k.routed)


@dataclass(frozen=True)
class Replacement:
    """What a deactivated component's activation becomes: ``zero``, or ``mean`` with a value per neuron.

    ``values`` maps (kind, layer) to the per-neuron replacement [I] (the mean activation, from a profile that
    recorded activation sums); ``zero`` needs none.
    """

    name: str = "zero"
    values: Mapping[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in REPLACEMENTS:
            raise SparcomError(f"unknown replacement {self.name!r}; choose from {', '.join(REPLACEMENTS)}")
        if self.name == "zero" and self.values:
            raise SparcomError("replacement 'zero' takes no values")

    @classmethod
    def mean(cls, values: Mapping[tuple[str, int], np.ndarray]) -> Replacement:
        return cls("mean", {key: np.asarray(value, dtype=np.float64) for key, value in values.items()})

    def check(self, sites: Mapping[tuple[str, int], NeuronSite]) -> None:
        """Refuse mean values that miss a site or have another width than the model's."""
        if self.name == "zero":
            return
        for (kind, layer), site in sites.items():
            value = self.values.get((kind, layer))
            if value is None or value.shape != (site.width,):
                found = "none" if value is None else f"shape {value.shape}"
                raise SparcomError(f"mean replacement: {kind} layer {layer} needs {site.width} mean activations, "
                                   f"found {found}; take the means from a profile of this model")

    def at(self, kind: str, layer: int, like: torch.Tensor) -> torch.Tensor | float:
        """The replacement of one site, broadcastable to its activations ``like`` [..., I]."""
        if self.name == "zero":
            return 0.0
        return torch.as_tensor(self.values[(kind, layer)], dtype=torch.float64, device=like.device)


def attributed_sites(sites: ModelSites, kinds: tuple[str, ...] = ATTRIBUTED_KINDS) -> dict[tuple[str, int], NeuronSite]:
    """The activation sites of ``kinds`` in layer order: (kind, layer) → site."""
    unknown = [k for k in kinds if k not in ATTRIBUTED_KINDS]
    if unknown:
        raise SparcomError(f"attribution covers {', '.join(ATTRIBUTED_KINDS)}; {', '.join(unknown)} cannot be "
                           "attributed yet")
    return {(kind, layer): site for kind in kinds for layer, site in sorted(sites.sites_of(kind).items())}


@contextmanager
def activation_gradients_only(model: nn.Module) -> Iterator[None]:
    """Freeze every parameter (no weight gradients are computed) and enable autograd; restore both afterwards."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


@dataclass
class BatchEffects:
    """One batch's linear estimates: per site [B, I] float64, and each row's summed NLL [B] (float64)."""

    effects: dict[tuple[str, int], torch.Tensor]
    nll: torch.Tensor


def _hook(key: tuple[str, int], site: NeuronSite, replacement: Replacement, rows: int,
          into: dict[tuple[str, int], torch.Tensor]):
    """A forward hook on an activation module: registers a gradient hook that adds Σ_t grad · (r − A) per row."""

    def hook(module: nn.Module, args, output):
        if not isinstance(output, torch.Tensor) or output.shape[-1] != site.width or output.numel() % rows:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise SparcomError(f"{key[0]} layer {key[1]}: the activation output has shape {shape}, expected "
                               f"[{rows}, T, {site.width}]")
        if not output.requires_grad:  # the first site: nothing before it needs a gradient
            output = output.detach().requires_grad_(True)
        value = output.detach()  # the same storage autograd keeps anyway: no copy held per layer

        def on_gradient(gradient: torch.Tensor) -> None:
            # One layer at a time: (r − A) and the product in the activations' dtype (at least float32), the sum
            # over positions in float64.
            dtype = torch.promote_types(value.dtype, torch.float32)
            a = value.reshape(rows, -1, site.width).to(dtype)
            target = replacement.at(*key, a)
            delta = (target.to(dtype) if isinstance(target, torch.Tensor) else target) - a
            into[key] = (gradient.reshape(rows, -1, site.width).to(dtype) * delta).sum(1, dtype=torch.float64)

        output.register_hook(on_gradient)
        return output

    return hook


def summed_nll(model: nn.Module, batch: ScoringBatch) -> torch.Tensor:
    """Each row's summed NLL [B] (at least float32, differentiable): the LM head at the scored positions only."""
    logits = logits_at(model, batch.input_ids, batch.attention, batch.keep)
    targets = batch.targets.to(logits.device)
    owner = batch.owner.to(logits.device)
    dtype = torch.promote_types(logits.dtype, torch.float32)  # float32, or float64 for a float64 model
    total = torch.zeros(len(batch.rows), dtype=dtype, device=logits.device)
    for start in range(0, targets.shape[0], LOGIT_CHUNK):
        chunk = logits[start:start + LOGIT_CHUNK].to(dtype)
        losses = nn.functional.cross_entropy(chunk, targets[start:start + LOGIT_CHUNK], reduction="none")
        total = total.index_add(0, owner[start:start + LOGIT_CHUNK], losses)
    return total


def batch_effects(model: nn.Module, sites: Mapping[tuple[str, int], NeuronSite], batch: ScoringBatch,
                  replacement: Replacement) -> BatchEffects:
    """The linear estimate of every component's deactivation for every row of ``batch`` (one forward + backward)."""
    rows = len(batch.rows)
    found: dict[tuple[str, int], torch.Tensor] = {}
    handles = [site.module.register_forward_hook(_hook(key, site, replacement, rows, found))
               for key, site in sites.items()]
    try:
        with activation_gradients_only(model):
            nll = summed_nll(model, batch)
            if not bool(torch.isfinite(nll).all()):
                raise SparcomError("non-finite NLL (NaN/inf) in a batch; check the model's weights, or use "
                                   "--dtype float32 if a half-precision dtype overflows")
            nll.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    effects = {}
    for key, site in sites.items():
        value = found.get(key)
        # A site the loss does not depend on (after the last scored position's layer reach) has gradient 0.
        effects[key] = value.cpu() if value is not None else torch.zeros(rows, site.width, dtype=torch.float64)
    return BatchEffects(effects, nll.detach().to("cpu", torch.float64))
