"""Splitting one dense MLP into a shared expert, routed experts and a router (the statistics of a split included).

- **Shared expert**: the neurons that carry most of the output on almost every token — the largest mean contribution
  magnitude E_t |h_i(t)| · ||down[:, i]|| (default), or the highest firing frequency P(A_i > 0).
- **Routed experts**: the rest, split into equal groups by balanced k-means on the neurons' co-activation (contribution
  magnitudes by default, co-firing optionally), which maximises Σ_e Σ_{i,j∈e} C_ij — MoEfication's objective.
- **Router**: a linear map of the MLP input, fitted by ridge regression to each expert's output norm ||down_e h_e||.

Everything here is a pure function of weights and calibration activations; deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

SHARED_BY: tuple[str, ...] = ("magnitude", "frequency")


@dataclass
class LayerSplit:
    """How one dense MLP became a shared expert, routed experts and a router."""

    #: [E, I_e] dense neuron index of each routed expert neuron (ascending within an expert).
    members: np.ndarray
    #: [E, H] router weight before scaling (predicts each expert's output norm from x).
    router: np.ndarray
    #: Power of two the router weight is multiplied by when saved (:func:`sparcom.zoo.moe_assembly.router_scale`).
    scale: float
    #: [S] dense neuron index of each shared-expert neuron (ascending; empty without a shared expert).
    shared: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: [H, I] refitted down projection in dense neuron order (recovery), or None: the dense one, exact slices.
    down: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)


def shared_neurons(contribution: torch.Tensor, activation: torch.Tensor, size: int, by: str) -> np.ndarray:
    """The ``size`` neurons (ascending) of largest mean contribution magnitude or firing frequency (ties: lower index)."""
    score = contribution.mean(0) if by == "magnitude" else (activation > 0).to(torch.float32).mean(0)
    chosen = torch.argsort(score, descending=True, stable=True)[:size]
    return np.sort(chosen.numpy()).astype(np.int64)


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


def routed_mask(x: torch.Tensor, router: torch.Tensor, members: torch.Tensor, shared: torch.Tensor, k: int,
                width: int) -> torch.Tensor:
    """[T, I] bool: the neurons a token uses — the shared ones and those of the k experts its router ranks first."""
    chosen = members[(x @ router.T).topk(k, dim=1).indices].reshape(x.shape[0], -1)
    mask = torch.zeros((x.shape[0], width), dtype=torch.bool).scatter_(1, chosen, True)
    mask[:, shared] = True
    return mask
