"""MoEfication: split each MLP of a dense Llama model into experts and train a router for each layer.

After Zhang et al. 2022 ("MoEfication: Transformer Feed-forward Layers are Mixtures of Experts"), with real weights:

1. **Calibration.** The dense model runs on calibration text (sparcom uses the ``sparcom-sft`` tuning rows, never
   HexaInst), formatted as sparcom formats prompts (chat template, reference response appended); the input of
   every MLP (the post-attention-norm hidden state x) is kept for every real token.
2. **Experts.** Per layer, the neurons are split into E groups of equal size by balanced clustering of their
   co-activation: neuron i's feature on token t is its contribution magnitude |h_i(t)| · ||down[:, i]|| (h = act(gate
   x) · up x, the value the down projection multiplies), or with ``coactivation="firing"`` whether it fires,
   1[A_i(t) > 0]. For equal sizes, balanced k-means on these vectors maximises the within-group co-activation
   Σ_e Σ_{i,j∈e} C_ij with C = FᵀF — the objective of MoEfication's co-activation graph split — so the neurons
   that carry a token's output together land in the same expert. Deterministic for a seed.
3. **Expert weights** are exact slices of the dense MLP: expert e holds gate/up rows and down columns of its
   neurons (in ascending dense order); the down slice is multiplied by k (see 5).
4. **Router.** A linear map of x per layer, fitted by ridge regression on the calibration tokens to the norm of each
   expert's output contribution ||down_e h_e(x)||; a token goes to the k experts with the largest predicted norm.
5. **Routing weights.** The model is saved as a GraniteMoE model (``model_type`` ``granitemoe``), whose attention,
   norms, rotary embedding and residual stream equal Llama's exactly once its multipliers are 1 and its attention
   multiplier is head_dim^-0.5. Its router ranks the raw logits (top-k of ``x @ Wᵀ``) and weights the chosen
   experts by a softmax over their logits only. The router weight is stored multiplied by a power of two so small
   (:func:`router_scale`) that all calibration logits lie within 2^-30 of each other: ranking is unchanged (scaling by a
   power of two is exact in floating point), and every exp(l_i − l_max) rounds to 1, so each chosen expert gets
   weight exactly 1/k. With the down slices multiplied by k, the routed output is the plain sum of the chosen
   experts (MoEfication's sum), and with k = E it is the dense MLP up to summation order. (Mixtral and Qwen-MoE rank
   softmax probabilities instead: a temperature small enough to make the weights uniform also makes the
   probabilities tie, and the ranking is lost — see docs/moe.md.)
"""

from __future__ import annotations

import itertools
import math
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

COACTIVATIONS: tuple[str, ...] = ("magnitude", "firing")
#: Every router logit of the calibration tokens is scaled to at most this magnitude (see module docstring, 5).
LOGIT_BOUND_LOG2 = -30


@dataclass(frozen=True)
class MoefySettings:
    """How a dense model becomes a MoE model (the defaults build ``smollm2-135m-moe``)."""

    num_experts: int = 16
    top_k: int = 4
    seed: int = 0
    #: Calibration tokens (prompt and reference response of whole rows, taken round-robin over categories).
    calibration_tokens: int = 8192
    coactivation: str = "magnitude"
    #: Ridge penalty of the router fit, relative to the mean diagonal of XᵀX.
    ridge: float = 1e-3
    #: Balanced k-means: iterations per start, and starts (the best within-group co-activation is kept).
    iterations: int = 40
    restarts: int = 1
    template: str = "auto"
    system_prompt: str | None = None
    batch_size: int = 8

    def check(self, neurons: int | None = None) -> None:
        if self.num_experts < 2:
            raise SparcomError(f"--experts must be at least 2, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise SparcomError(f"--top-k must be between 1 and the number of experts ({self.num_experts}), "
                               f"got {self.top_k}")
        if neurons is not None and neurons % self.num_experts:
            raise SparcomError(f"the MLP has {neurons} neurons, which do not split into {self.num_experts} equal "
                               f"experts; choose --experts dividing {neurons}")
        if self.coactivation not in COACTIVATIONS:
            raise SparcomError(f"unknown co-activation {self.coactivation!r}; choose {' or '.join(COACTIVATIONS)}")
        if self.calibration_tokens < 16 * self.num_experts:
            raise SparcomError(f"--calibration-tokens {self.calibration_tokens} is too few to fit "
                               f"{self.num_experts} experts; use at least {16 * self.num_experts}")
        if self.ridge <= 0 or self.iterations < 1 or self.restarts < 1 or self.batch_size < 1:
            raise SparcomError("ridge must be positive and iterations, restarts and batch size at least 1")

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class LayerSplit:
    """How one dense MLP became experts."""

    #: [E, I_e] dense neuron index of each expert neuron (ascending within an expert).
    members: np.ndarray
    #: [E, H] router weight before scaling (predicts each expert's output norm from x).
    router: np.ndarray
    #: Power of two the router weight is multiplied by when saved (:func:`router_scale`).
    scale: float
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class MoefyResult:
    """The MoE model with the splits it was assembled from and what the build measured."""

    model: nn.Module
    splits: list[LayerSplit]
    settings: MoefySettings
    calibration: dict
    seconds: dict[str, float]


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


# ------------------------------------------------------------------------------------------------- experts


def _balanced_assign(score: torch.Tensor, capacity: int) -> torch.Tensor:
    """Labels maximising Σ score[i, label_i] greedily under equal capacities (largest regret chooses first).

    Each round, every unassigned neuron asks for its best cluster that still has room; a cluster takes its askers
    in order of regret (best minus second-best open score), up to its room; the rest ask again next round.
    """
    n, groups = score.shape
    labels = torch.full((n,), -1, dtype=torch.long)
    room = torch.full((groups,), capacity, dtype=torch.long)
    while bool((labels < 0).any()):
        free = (labels < 0).nonzero().squeeze(1)
        open_ = room > 0
        masked = score[free].masked_fill(~open_, -math.inf)
        if int(open_.sum()) > 1:
            top = masked.topk(2, dim=1)
            best, regret = top.indices[:, 0], top.values[:, 0] - top.values[:, 1]
        else:
            best, regret = masked.argmax(dim=1), torch.zeros(free.numel(), dtype=score.dtype)
        order = torch.argsort(regret, descending=True, stable=True)
        for cluster in torch.unique(best).tolist():
            askers = free[order[best[order] == cluster]][: int(room[cluster])]
            labels[askers] = cluster
            room[cluster] -= askers.numel()
    return labels


def within_share(coactivation: torch.Tensor, labels: torch.Tensor, groups: int) -> float:
    """Σ_e Σ_{i,j∈e} C_ij / Σ_ij C_ij: the share of co-activation kept inside experts (random split: ≈ 1/E)."""
    member = nn.functional.one_hot(labels, groups).to(coactivation.dtype)
    return float((member * (coactivation @ member)).sum() / coactivation.sum())


def balanced_clusters(coactivation: torch.Tensor, groups: int, seed: int = 0, iterations: int = 40,
                      restarts: int = 1) -> torch.Tensor:
    """Labels [n] splitting n items into ``groups`` of n / groups, maximising within-group co-activation.

    Balanced k-means on the items' feature vectors, computed from their Gram matrix ``coactivation`` = FᵀF alone
    (distance to a centroid: C_ii − 2 mean_{j∈e} C_ij + mean_{j,l∈e} C_jl). Each start is a seeded random balanced
    split; the best of ``restarts`` starts is kept. Labels are renumbered so that group 0 holds the lowest item index,
    group 1 the lowest of the rest, and so on — the same split always gets the same numbers.
    """
    n = coactivation.shape[0]
    capacity = n // groups
    generator = torch.Generator().manual_seed(seed)
    best_labels, best_value = None, -math.inf
    for _ in range(restarts):
        labels = torch.randperm(n, generator=generator) % groups
        for _ in range(iterations):
            member = nn.functional.one_hot(labels, groups).to(coactivation.dtype)
            linked = coactivation @ member  # [n, E]: Σ_{j∈e} C_ij
            size = member.sum(0)
            spread = (member * linked).sum(0) / size**2  # ||centroid_e||²
            new = _balanced_assign(2 * linked / size - spread, capacity)
            if torch.equal(new, labels):
                break
            labels = new
        value = within_share(coactivation, labels, groups)
        if value > best_value:
            best_labels, best_value = labels, value
    first = torch.full((groups,), n, dtype=torch.long).scatter_reduce(0, best_labels, torch.arange(n), "amin")
    rank = torch.empty(groups, dtype=torch.long)
    rank[torch.argsort(first)] = torch.arange(groups)
    return rank[best_labels]


def neuron_outputs(mlp: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, A) for rows x: h = act(gate x) · up x [T, I] (what down multiplies) and A = act(gate x)."""
    with torch.no_grad():
        activation = mlp.act_fn(nn.functional.linear(x, mlp.gate_proj.weight))
        return activation * nn.functional.linear(x, mlp.up_proj.weight), activation


def expert_norms(mlp: nn.Module, h: torch.Tensor, members: np.ndarray) -> torch.Tensor:
    """||down_e h_e|| [T, E]: the norm of each expert's contribution to the dense MLP output.

    Computed as sqrt(h_eᵀ (down_eᵀ down_e) h_e), a sixth of the work of forming each contribution for SmolLM2's
    shapes (96 × 96 Gram matrices instead of 576-wide outputs).
    """
    index = torch.from_numpy(members)  # [E, I_e]
    with torch.no_grad():
        down = mlp.down_proj.weight[:, index].permute(1, 0, 2)  # [E, H, I_e]
        gram = down.transpose(1, 2) @ down  # [E, I_e, I_e]
        grouped = h[:, index].permute(1, 0, 2)  # [E, T, I_e]
        squared = ((grouped @ gram) * grouped).sum(-1)  # [E, T]
        return squared.clamp_min(0).sqrt().T.contiguous()


def fit_router(x: torch.Tensor, target: torch.Tensor, ridge: float) -> np.ndarray:
    """[E, H] weight W minimising ||x Wᵀ − target||² + λ||W||² (λ = ridge × mean diagonal of xᵀx), in float64."""
    x64, y64 = x.to(torch.float64), target.to(torch.float64)
    gram = x64.T @ x64
    gram += ridge * float(gram.diagonal().mean()) * torch.eye(gram.shape[0], dtype=torch.float64)
    return torch.cholesky_solve(x64.T @ y64, torch.linalg.cholesky(gram)).T.numpy()  # gram is positive definite


def top_k_overlap(predicted: torch.Tensor, actual: torch.Tensor, k: int) -> float:
    """Mean |top-k(predicted) ∩ top-k(actual)| / k over rows (a random choice scores k / E on average)."""
    chosen = torch.zeros_like(actual, dtype=torch.bool).scatter_(1, predicted.topk(k, dim=1).indices, True)
    best = torch.zeros_like(actual, dtype=torch.bool).scatter_(1, actual.topk(k, dim=1).indices, True)
    return float((chosen & best).sum(1).double().mean() / k)


def routed_share(scores: torch.Tensor, norms: torch.Tensor, k: int) -> float:
    """Mean over tokens of Σ_{chosen e} ||y_e|| / Σ_e ||y_e||, the experts chosen by top-k of ``scores``."""
    chosen = torch.zeros_like(norms, dtype=torch.bool).scatter_(1, scores.topk(k, dim=1).indices, True)
    return float(((norms * chosen).sum(1) / norms.sum(1).clamp_min(1e-30)).double().mean())


@torch.no_grad()
def split_layer(mlp: nn.Module, x: torch.Tensor, settings: MoefySettings, seed: int) -> LayerSplit:
    """Cluster one MLP's neurons into experts and fit its router on the calibration inputs ``x``."""
    h, activation = neuron_outputs(mlp, x)
    if settings.coactivation == "firing":
        features = (activation > 0).to(torch.float32)
    else:
        features = h.abs() * mlp.down_proj.weight.norm(dim=0)
    coactivation = (features.T @ features).to(torch.float64)
    labels = balanced_clusters(coactivation, settings.num_experts, seed, settings.iterations, settings.restarts)
    members = np.stack([np.flatnonzero(labels.numpy() == e) for e in range(settings.num_experts)])
    norms = expert_norms(mlp, h, members)
    router = fit_router(x, norms, settings.ridge)
    router = router.astype(np.float32)
    predicted = x @ torch.from_numpy(router).T
    k = settings.top_k
    stats = {
        "within_coactivation": within_share(coactivation, labels, settings.num_experts),
        "router_overlap": top_k_overlap(predicted, norms, k),
        "router_share": routed_share(predicted, norms, k),
        "best_share": routed_share(norms, norms, k),
    }
    return LayerSplit(members=members, router=router, scale=router_scale(predicted), stats=stats)


def router_scale(logits: torch.Tensor) -> float:
    """The power of two that brings every logit in ``logits`` to at most 2^LOGIT_BOUND_LOG2 in magnitude.

    Scaling by a power of two is exact in floating point (far from underflow), so the top-k of the scaled logits is
    the top-k of the fitted ones, and their differences are too small for exp to tell apart from 1 in float32.
    """
    largest = max(float(logits.abs().max()), 2.0**-100)
    return 2.0 ** (LOGIT_BOUND_LOG2 - math.ceil(math.log2(largest)))


# ------------------------------------------------------------------------------------------------- assembly


def moe_config(dense_config, num_experts: int, top_k: int):
    """The GraniteMoE config whose every non-MLP part computes exactly what the Llama config computes."""
    from transformers import GraniteMoeConfig

    head_dim = getattr(dense_config, "head_dim", None) or dense_config.hidden_size // dense_config.num_attention_heads
    extra = {} if head_dim == dense_config.hidden_size // dense_config.num_attention_heads else {"head_dim": head_dim}
    return GraniteMoeConfig(
        vocab_size=dense_config.vocab_size,
        hidden_size=dense_config.hidden_size,
        intermediate_size=dense_config.intermediate_size // num_experts,
        num_hidden_layers=dense_config.num_hidden_layers,
        num_attention_heads=dense_config.num_attention_heads,
        num_key_value_heads=dense_config.num_key_value_heads,
        hidden_act=dense_config.hidden_act,
        max_position_embeddings=dense_config.max_position_embeddings,
        initializer_range=dense_config.initializer_range,
        rms_norm_eps=dense_config.rms_norm_eps,
        pad_token_id=dense_config.pad_token_id,
        bos_token_id=dense_config.bos_token_id,
        eos_token_id=dense_config.eos_token_id,
        tie_word_embeddings=dense_config.tie_word_embeddings,
        rope_parameters=dict(dense_config.rope_parameters),
        attention_bias=False,
        attention_dropout=dense_config.attention_dropout,
        embedding_multiplier=1.0,
        logits_scaling=1.0,
        residual_multiplier=1.0,
        attention_multiplier=head_dim**-0.5,  # Llama's scaling, computed the same way
        num_local_experts=num_experts,
        num_experts_per_tok=top_k,
        output_router_logits=False,
        **extra,
    )


def assemble(dense: nn.Module, splits: Sequence[LayerSplit], top_k: int) -> nn.Module:
    """A GraniteMoE model (float32, eval) holding the dense weights, the experts' slices and the scaled routers."""
    from transformers import GraniteMoeForCausalLM

    num_experts = splits[0].members.shape[0]
    config = moe_config(dense.config, num_experts, top_k)
    source, target = model_sites(dense).family, family_for(config.model_type)
    mlp_path = source.width_from.rsplit(".", 1)[0]
    state = {}
    for name, tensor in dense.state_dict().items():
        if f".{mlp_path}." not in name:
            state[name] = tensor.detach().to(torch.float32)
    for j, (mlp, split) in enumerate(zip(mlp_blocks(dense), splits, strict=True)):
        experts, width = split.members.shape
        order = torch.from_numpy(split.members.reshape(-1))
        gate = mlp.gate_proj.weight.detach().index_select(0, order).view(experts, width, -1)
        up = mlp.up_proj.weight.detach().index_select(0, order).view(experts, width, -1)
        down = mlp.down_proj.weight.detach().index_select(1, order).view(-1, experts, width).transpose(0, 1)
        layer = f"{target.backbone}.{target.layers}.{j}."  # names from the family table (granitemoe)
        state[layer + f"{target.experts}.gate_up_proj"] = torch.cat([gate, up], dim=1)  # [E, 2 I_e, H]: gate, up
        # Each chosen expert's routing weight is exactly 1/k (module docstring, 5): k · down undoes it.
        state[layer + f"{target.experts}.down_proj"] = (down * float(top_k)).contiguous()  # [E, H, I_e]
        state[layer + f"{target.router}.weight"] = torch.from_numpy(split.router) * split.scale
    with torch.device("meta"):  # no random init of weights that are all replaced (seconds for 135M parameters)
        model = GraniteMoeForCausalLM(config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [name for name in missing if not (config.tie_word_embeddings and name == "lm_head.weight")]
    if missing or unexpected:
        raise SparcomError(f"MoE assembly mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}; "
                           "this is a bug in sparcom.zoo.moefy")
    if config.tie_word_embeddings:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    backbone = get_path(model, target.backbone)
    backbone.rotary_emb = type(backbone.rotary_emb)(config=config)  # its buffers were made on meta
    left = [name for name, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left:
        raise SparcomError(f"MoE assembly left {left[:3]} unset; this is a bug in sparcom.zoo.moefy")
    return model.eval()


def moefy(dense: nn.Module, tokenizer, rows: Sequence[InstructionRow], settings: MoefySettings = MoefySettings(),
          progress=None) -> MoefyResult:
    """Turn a dense Llama causal LM into a GraniteMoE model (in memory) using ``rows`` as calibration text."""
    check_dense(dense)
    settings.check(dense.config.intermediate_size)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    examples = calibration_examples(rows, tokenizer, settings.calibration_tokens, settings.template,
                                    settings.system_prompt)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    inputs = mlp_inputs(dense, examples, settings.batch_size, pad)
    seconds["calibration_forward"] = time.perf_counter() - started
    splits = []
    for j, (mlp, x) in enumerate(zip(mlp_blocks(dense), inputs, strict=True)):
        splits.append(split_layer(mlp, x, settings, settings.seed + j))
        if progress is not None:
            progress(j + 1, len(inputs))
    seconds["experts_and_routers"] = time.perf_counter() - started - seconds["calibration_forward"]
    model = assemble(dense, splits, settings.top_k)
    seconds["total"] = time.perf_counter() - started
    calibration = {"rows": len(examples), "tokens": int(inputs[0].shape[0])}
    return MoefyResult(model, splits, settings, calibration, seconds)


def retarget(moe: nn.Module, top_k: int) -> nn.Module:
    """A copy of a MoEfied model routing each token to ``top_k`` experts instead (down slices rescaled to match).

    The router is unchanged, so the chosen experts are the first ``top_k`` of the same ranking. Exact when the
    ratio of the new to the old k is a power of two (4 → 8, 16); otherwise the rescaling rounds once per weight.
    """
    import copy

    old = int(moe.config.num_experts_per_tok)
    if not 1 <= top_k <= int(moe.config.num_local_experts):
        raise SparcomError(f"top_k must be between 1 and {moe.config.num_local_experts}, got {top_k}")
    model = copy.deepcopy(moe)
    model.config.num_experts_per_tok = top_k
    with torch.no_grad():
        for site in model_sites(model).moe.values():
            site.router.top_k = top_k
            site.experts.down_proj.mul_(top_k / old)
    return model.eval()
