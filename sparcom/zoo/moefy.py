"""MoEfication: split each MLP of a dense Llama model into a shared expert and routed experts with a router per layer.

After Zhang et al. 2022 ("MoEfication: Transformer Feed-forward Layers are Mixtures of Experts") and the shared-expert
constructions that followed (CMoE, LLaMA-MoE), with real weights:

1. **Calibration.** Text that is not HexaInst (sparcom uses the ``sparcom-sft`` tuning rows), formatted as sparcom
   formats prompts (chat template, reference response appended), runs through the model once, as one right-padded
   batch, and the layers are split **in order, each on the inputs the MoE built so far gives it**: a forward hook on
   layer j's MLP takes the MLP input x of every real token, splits the layer (2–4) and returns the MoE layer's output,
   so layer j + 1 is calibrated on what it will see in the MoE.
2. **Split** (:mod:`sparcom.zoo.moe_split`): a shared expert of the neurons with the largest mean contribution
   magnitude |h_i| · ||down[:, i]|| (h = act(gate x) · up x, what the down projection multiplies); the other neurons
   in E equal experts by balanced k-means on their co-activation; a ridge-regression router per layer predicting
   each expert's output norm. Deterministic for a seed.
3. **Recovery** (:mod:`sparcom.zoo.moe_recovery`, optional, on by default): the down projections are refitted by
   ridge least squares so that the routed MLP reproduces the dense MLP on the calibration tokens, and kept only where
   that lowers the error on held-out calibration rows. Gate/up rows stay exact slices.
4. **Assembly** (:mod:`sparcom.zoo.moe_assembly`): a GraniteMoE model (GraniteMoeShared with a shared expert) whose
   non-MLP parts are the dense model's, routing weight exactly 1/k and down slices × k, so the routed output is the
   sum of the chosen experts plus the shared expert and, with k = E and exact slices, the dense MLP.
5. **Distillation** (:mod:`sparcom.zoo.moe_distill`, optional): the assembled model's down projections are trained
   end to end towards the dense model's next-token distributions on the calibration rows, and kept only when the
   KL on held-out calibration rows falls.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sparcom.data.formatting import encode_row, resolve_template
from sparcom.data.schema import InstructionRow
from sparcom.errors import SparcomError
from sparcom.models.families import family_for
from sparcom.models.sites import get_path, model_sites
from sparcom.zoo.moe_assembly import assemble, router_scale
from sparcom.zoo.moe_distill import distill_downs, padded
from sparcom.zoo.moe_recovery import refit_down, relative_error
from sparcom.zoo.moe_split import (
    SHARED_BY,
    LayerSplit,
    balanced_clusters,
    expert_norms,
    fit_router,
    neuron_outputs,
    routed_mask,
    routed_share,
    shared_neurons,
    top_k_overlap,
    within_share,
)

COACTIVATIONS: tuple[str, ...] = ("magnitude", "firing")
#: Expert widths must be a multiple of this: transformers' default experts kernel (grouped_mm) needs 16-byte strides.
EXPERT_WIDTH_MULTIPLE = 4
#: Every HELD_OUT_EVERY-th calibration row is held out of the down-projection refit to check it.
HELD_OUT_EVERY = 8


@dataclass(frozen=True)
class MoefySettings:
    """How a dense model becomes a MoE model (the defaults build ``smollm2-135m-moe``; docs/moe.md has the curve that
    chose them)."""

    num_experts: int = 64
    top_k: int = 16
    #: Neurons per layer in the shared expert every token uses (0: none, and the model is a plain GraniteMoE).
    shared_neurons: int = 512
    #: How the shared neurons are chosen: "magnitude" (largest mean contribution) or "frequency" (fire most often).
    shared_by: str = "magnitude"
    seed: int = 0
    #: Calibration tokens (prompt and reference response of whole rows, taken round-robin over categories).
    calibration_tokens: int = 8192
    coactivation: str = "magnitude"
    #: Ridge penalty of the router fit, relative to the mean diagonal of XᵀX.
    ridge: float = 1e-3
    #: Recovery: ridge penalty of the down-projection refit (relative; :mod:`sparcom.zoo.moe_recovery`); 0: no refit,
    #: the experts are exact slices of the dense MLP.
    refit: float = 0.3
    #: End-to-end recovery (:mod:`sparcom.zoo.moe_distill`): epochs of distilling the dense model into the down
    #: projections (0: none), over a calibration budget of ``distill_tokens`` (the same rows, round-robin, further).
    distill_epochs: int = 0
    distill_tokens: int = 16384
    distill_lr: float = 1e-3
    distill_batch: int = 4
    #: Balanced k-means: iterations per start, and starts (the best within-group co-activation is kept).
    iterations: int = 40
    restarts: int = 1
    template: str = "auto"
    system_prompt: str | None = None

    def check(self, neurons: int | None = None) -> None:
        if self.num_experts < 2:
            raise SparcomError(f"--experts must be at least 2, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise SparcomError(f"--top-k must be between 1 and the number of experts ({self.num_experts}), "
                               f"got {self.top_k}")
        if self.shared_neurons < 0 or (neurons is not None and self.shared_neurons >= neurons):
            raise SparcomError(f"--shared-neurons must be at least 0 and below the MLP width ({neurons}), "
                               f"got {self.shared_neurons}")
        routed = None if neurons is None else neurons - self.shared_neurons
        if routed is not None and routed % self.num_experts:
            raise SparcomError(f"the MLP has {neurons} neurons; the {routed} outside the shared expert do not split "
                               f"into {self.num_experts} equal experts; choose --experts dividing {routed}")
        if routed is not None and (routed // self.num_experts) % EXPERT_WIDTH_MULTIPLE:
            raise SparcomError(f"experts of {routed // self.num_experts} neurons: transformers' grouped expert kernel "
                               f"needs a multiple of {EXPERT_WIDTH_MULTIPLE} (16-byte strides); choose --experts and "
                               f"--shared-neurons so that (MLP width − shared) / experts is one")
        for name, value, allowed in (("co-activation", self.coactivation, COACTIVATIONS),
                                     ("shared-expert choice", self.shared_by, SHARED_BY)):
            if value not in allowed:
                raise SparcomError(f"unknown {name} {value!r}; choose {' or '.join(allowed)}")
        if self.calibration_tokens < 16 * self.num_experts:
            raise SparcomError(f"--calibration-tokens {self.calibration_tokens} is too few to fit "
                               f"{self.num_experts} experts; use at least {16 * self.num_experts}")
        if self.ridge <= 0 or self.refit < 0 or self.iterations < 1 or self.restarts < 1:
            raise SparcomError("ridge must be positive, refit at least 0, and iterations and restarts at least 1")
        if self.distill_epochs < 0 or self.distill_lr <= 0 or self.distill_batch < 1:
            raise SparcomError("--distill-epochs must be at least 0, its learning rate positive and its batch at "
                               "least 1")
        if self.distill_epochs and self.distill_tokens < self.calibration_tokens:
            raise SparcomError(f"--distill-tokens {self.distill_tokens} is below --calibration-tokens "
                               f"{self.calibration_tokens}; the recovery trains on at least the calibration rows")

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class MoefyResult:
    """The MoE model with the splits it was assembled from and what the build measured."""

    model: nn.Module
    splits: list[LayerSplit]
    settings: MoefySettings
    calibration: dict
    seconds: dict[str, float]
    #: What the distillation recovery measured (empty when it is off).
    recovery: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- calibration


def check_dense(model: nn.Module) -> None:
    """Refuse models whose every part but the MLP would not survive the move to GraniteMoE bit for bit."""
    config = model.config
    family = family_for(getattr(config, "model_type", "unknown"))  # one line for families sparcom does not know
    if family.name != "llama":
        raise SparcomError(f"MoEfication needs a Llama-architecture model (family llama); this one is "
                           f"{family.name!r}; pass a Llama model such as smollm2-135m-instruct")
    problems = [name for name, bad in (
        ("attention_bias", getattr(config, "attention_bias", False)),
        ("mlp_bias", getattr(config, "mlp_bias", False)),
        ("pretraining_tp", getattr(config, "pretraining_tp", 1) != 1),
    ) if bad]
    if problems:
        raise SparcomError(f"MoEfication supports Llama models without {', '.join(problems)}; this one has them")


def mlp_blocks(model: nn.Module) -> list[nn.Module]:
    """The MLP block of every decoder layer, from the family table: the module that owns the experts (MoE) or the
    gate projection (dense). Its input is the post-attention-norm hidden state x in both."""
    sites = model_sites(model)
    family = sites.family
    inner = family.experts if family.is_moe else family.width_from
    path = inner.rsplit(".", 1)[0]  # "mlp" (Llama), "block_sparse_moe" (GraniteMoE)
    return [get_path(layer, path) for layer in get_path(sites.backbone, family.layers)]


def calibration_examples(
    rows: Sequence[InstructionRow], tokenizer, max_tokens: int, template: str = "auto",
    system_prompt: str | None = None,
) -> list[tuple[int, ...]]:
    """Token ids of whole formatted rows (prompt + reference response), round-robin over categories, within budget."""
    template = resolve_template(tokenizer, template)
    by_category: dict[str, list[tuple[int, ...]]] = {}
    for index, row in enumerate(rows):
        encoded = encode_row(row, index, tokenizer, template, system_prompt, with_response=True)
        by_category.setdefault(row.category, []).append(encoded.input_ids)
    chosen, total = [], 0
    for ids in itertools.chain.from_iterable(itertools.zip_longest(*by_category.values())):
        if ids is not None and total + len(ids) <= max_tokens:
            chosen.append(ids)
            total += len(ids)
    if not chosen:
        raise SparcomError(f"no calibration row fits in {max_tokens} tokens; raise --calibration-tokens")
    return chosen


def mlp_inputs(model: nn.Module, examples: Sequence[Sequence[int]], batch_size: int = 8,
               pad_id: int = 0) -> list[torch.Tensor]:
    """Per decoder layer, the MLP input x [tokens, H] (float32) of every real token, in example order."""
    blocks = mlp_blocks(model)
    backbone = model_sites(model).backbone
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]), i))
    stored: list[list[tuple[int, torch.Tensor]]] = [[] for _ in blocks]
    current: dict[str, object] = {}

    def keep(layer: int):
        def hook(module, args):
            x = args[0]
            stored[layer].append((current["batch"], x[current["mask"]].detach().to(torch.float32).clone()))
        return hook

    handles = [block.register_forward_pre_hook(keep(j)) for j, block in enumerate(blocks)]
    device = model.get_input_embeddings().weight.device
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                width = len(examples[batch[0]])
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.bool)
                for row, i in enumerate(batch):
                    ids[row, :len(examples[i])] = torch.tensor(examples[i])
                    mask[row, :len(examples[i])] = True
                current.update(batch=start, mask=mask.to(device))
                backbone(input_ids=ids.to(device), attention_mask=mask.long().to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    # Rows back in example order: batches hold examples in ``order``; undo that permutation token-wise.
    lengths = [len(examples[i]) for i in order]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    back = np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in np.argsort(order, kind="stable")])
    index = torch.from_numpy(back)
    return [torch.cat([x.cpu() for _, x in parts]).index_select(0, index) for parts in stored]


# ------------------------------------------------------------------------------------------------- splitting


@torch.no_grad()
def split_layer(mlp: nn.Module, x: torch.Tensor, held: torch.Tensor, settings: MoefySettings,
                seed: int) -> LayerSplit:
    """Split one MLP on its calibration inputs ``x`` [T, H] (``held`` [T]: tokens held out of the refit)."""
    h, activation = neuron_outputs(mlp, x)
    contribution = h.abs() * mlp.down_proj.weight.norm(dim=0)
    shared = shared_neurons(contribution, activation, settings.shared_neurons, settings.shared_by)
    rest = np.setdiff1d(np.arange(h.shape[1]), shared)
    features = (activation[:, rest] > 0).to(torch.float32) if settings.coactivation == "firing" \
        else contribution[:, rest]
    coactivation = (features.T @ features).to(torch.float64)
    labels = balanced_clusters(coactivation, settings.num_experts, seed, settings.iterations, settings.restarts)
    members = np.stack([rest[labels.numpy() == e] for e in range(settings.num_experts)])
    norms = expert_norms(mlp, h, members)
    router = fit_router(x, norms, settings.ridge).astype(np.float32)
    predicted = x @ torch.from_numpy(router).T
    k = settings.top_k
    stats = {
        "within_coactivation": within_share(coactivation, labels, settings.num_experts),
        "router_overlap": top_k_overlap(predicted, norms, k),
        "router_share": routed_share(predicted, norms, k),
        "best_share": routed_share(norms, norms, k),
    }
    mask = routed_mask(x, torch.from_numpy(router), torch.from_numpy(members), torch.from_numpy(shared), k, h.shape[1])
    dense_down = mlp.down_proj.weight.detach()
    stats["relative_error"] = relative_error((h * mask) @ dense_down.T, h @ dense_down.T)
    down = None
    if settings.refit > 0:
        down, refit_stats = refit_down(h, mask, dense_down, held, settings.refit)
        stats.update(refit_stats)
    return LayerSplit(members=members, router=router, scale=router_scale(predicted), shared=shared, down=down,
                      stats=stats)


def routed_output(mlp: nn.Module, x: torch.Tensor, split: LayerSplit, k: int) -> torch.Tensor:
    """What the MoE layer computes for rows x (the sum of the shared and chosen experts; summation order aside)."""
    h, _ = neuron_outputs(mlp, x)
    mask = routed_mask(x, torch.from_numpy(split.router), torch.from_numpy(split.members),
                       torch.from_numpy(split.shared), k, h.shape[1])
    down = split.down if split.down is not None else mlp.down_proj.weight
    return (h * mask) @ down.T


def sequential_splits(dense: nn.Module, examples: Sequence[Sequence[int]], settings: MoefySettings, pad_id: int,
                      progress=None) -> list[LayerSplit]:
    """Split every layer in order, each on the MLP inputs the MoE built so far produces (module docstring, 1)."""
    blocks = mlp_blocks(dense)
    ids, mask = padded(examples, pad_id)
    real = mask.bool()
    held = torch.cat([torch.full((len(e),), i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) for i, e in enumerate(examples)])
    splits: list[LayerSplit] = []

    def replace(j: int):
        def hook(module, args, output):
            x = args[0].to(torch.float32)
            split = split_layer(module, x[real], held, settings, settings.seed + j)
            splits.append(split)
            if progress is not None:
                progress(j + 1, len(blocks))
            flat = x.reshape(-1, x.shape[-1])
            return routed_output(module, flat, split, settings.top_k).reshape(output.shape).to(output.dtype)
        return hook

    handles = [block.register_forward_hook(replace(j)) for j, block in enumerate(blocks)]
    try:
        with torch.inference_mode():
            model_sites(dense).backbone(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return splits


def moefy(dense: nn.Module, tokenizer, rows: Sequence[InstructionRow], settings: MoefySettings = MoefySettings(),
          progress=None, distill_progress=None) -> MoefyResult:
    """Turn a dense Llama causal LM into a GraniteMoE(Shared) model (in memory), calibrated on ``rows``."""
    check_dense(dense)
    settings.check(dense.config.intermediate_size)
    started = time.perf_counter()
    examples = calibration_examples(rows, tokenizer, settings.calibration_tokens, settings.template,
                                    settings.system_prompt)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    splits = sequential_splits(dense, examples, settings, pad, progress)
    seconds = {"calibration_and_splits": time.perf_counter() - started}
    model = assemble(dense, splits, settings.top_k)
    recovery = {}
    if settings.distill_epochs:
        more = calibration_examples(rows, tokenizer, settings.distill_tokens, settings.template, settings.system_prompt)
        distilling = time.perf_counter()
        recovery = distill_downs(dense, model, more, epochs=settings.distill_epochs, lr=settings.distill_lr,
                                 batch_size=settings.distill_batch, seed=settings.seed, pad_id=pad,
                                 held_every=HELD_OUT_EVERY, progress=distill_progress)
        seconds["distillation"] = time.perf_counter() - distilling
    seconds["total"] = time.perf_counter() - started
    held = [e for i, e in enumerate(examples) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    calibration = {"rows": len(examples), "tokens": sum(len(e) for e in examples),
                   "held_out_rows": len(held), "held_out_tokens": sum(len(e) for e in held)}
    return MoefyResult(model, splits, settings, calibration, seconds, recovery)
