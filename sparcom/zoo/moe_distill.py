"""End-to-end recovery of a MoEfied model: distil the dense parent into the MoE's down projections.

The closed-form refit (:mod:`sparcom.zoo.moe_recovery`) fits each layer's down projections to that layer's dense MLP
output alone, so what one layer leaves out reaches every later layer. This step trains the down projections of every
routed expert (and of the shared expert) at once, so that the MoE's next-token distribution matches its dense
parent's: the loss is KL(dense ‖ MoE) over every real token of the calibration rows. Gate and up rows stay exact
slices (every expert neuron still fires exactly when its dense neuron does) and the routers are unchanged (their
routing weights are exactly 1/k by construction, :mod:`sparcom.zoo.moe_assembly`, so they get no gradient).

The batch order comes from the seed, Adam with a cosine learning rate, float32 on the build's pinned thread count; two
builds in one process give the same weights, but two 2-thread builds of SmolLM2's MoE in separate processes have
been seen to differ after this step (docs/moe.md). Every :data:`~sparcom.zoo.moefy.HELD_OUT_EVERY`-th row is held out; the trained weights are kept only
when the held-out KL falls (the numbers go into the build record).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from sparcom.errors import SparcomError


def down_parameters(moe: nn.Module) -> list[nn.Parameter]:
    """The down projections a recovery trains: every layer's routed experts' ``down_proj`` [E, H, I_e] and, when
    there is a shared expert, its ``output_linear`` weight."""
    found = []
    for layer in moe.model.layers:
        block = layer.block_sparse_moe
        found.append(block.experts.down_proj)
        shared = getattr(layer, "shared_mlp", None)
        if shared is not None:
            found.append(shared.output_linear.weight)
    return found


def padded(examples: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, T] and their attention mask of a batch of token-id rows."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        ids[row, :len(example)] = torch.tensor(example, dtype=torch.long)
        mask[row, :len(example)] = 1
    return ids, mask


def token_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ over real tokens of KL(teacher ‖ student) of the next-token distributions (nats; a scalar)."""
    real = mask.bool()
    teacher = torch.log_softmax(teacher_logits[real].to(torch.float32), dim=-1)
    student = torch.log_softmax(student_logits[real].to(torch.float32), dim=-1)
    return (teacher.exp() * (teacher - student)).sum()


def batches(examples: Sequence[Sequence[int]], size: int, seed: int | None) -> list[list[int]]:
    """Batches of row indices of similar length (longest first); shuffled as whole batches when ``seed`` is given."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]), i))
    groups = [order[i:i + size] for i in range(0, len(order), size)]
    if seed is not None:
        permutation = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
        groups = [groups[i] for i in permutation]
    return groups


def mean_kl(dense: nn.Module, moe: nn.Module, examples: Sequence[Sequence[int]], pad_id: int, size: int) -> float:
    """KL(dense ‖ MoE) per real token over ``examples``."""
    total, tokens = 0.0, 0
    with torch.no_grad():
        for group in batches(examples, size, None):
            ids, mask = padded([examples[i] for i in group], pad_id)
            total += float(token_kl(dense(input_ids=ids, attention_mask=mask).logits,
                                    moe(input_ids=ids, attention_mask=mask).logits, mask))
            tokens += int(mask.sum())
    return total / tokens


def distill_downs(dense: nn.Module, moe: nn.Module, examples: Sequence[Sequence[int]], *, epochs: int, lr: float,
                  batch_size: int, seed: int, pad_id: int, held_every: int,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Train ``moe``'s down projections in place towards ``dense`` (module docstring); the numbers of the check
    (no timings: they go into the build record, so that two builds write the same split file)."""
    held = [e for i, e in enumerate(examples) if i % held_every == held_every - 1]
    train = [e for i, e in enumerate(examples) if i % held_every != held_every - 1]
    if not held or not train:
        raise SparcomError("the distillation recovery needs calibration rows both to train on and to hold out; raise "
                           "--distill-tokens or turn it off (--distill-epochs 0)")
    was_training = moe.training
    moe.eval()  # no dropout: the same weights on every build
    params = down_parameters(moe)
    saved = [p.detach().clone() for p in params]
    frozen = [p for p in moe.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    before = mean_kl(dense, moe, held, pad_id, batch_size)
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = [batches(train, batch_size, seed + epoch) for epoch in range(epochs)]
    steps, step = sum(len(s) for s in schedule), 0
    try:
        for groups in schedule:
            for group in groups:
                ids, mask = padded([train[i] for i in group], pad_id)
                for entry in optimizer.param_groups:
                    entry["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                with torch.no_grad():
                    teacher = dense(input_ids=ids, attention_mask=mask).logits
                loss = token_kl(teacher, moe(input_ids=ids, attention_mask=mask).logits, mask) / mask.sum()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if progress is not None:
                    progress(step, steps)
        after = mean_kl(dense, moe, held, pad_id, batch_size)
        kept = after < before
        if not kept:
            with torch.no_grad():
                for p, original in zip(params, saved, strict=True):
                    p.copy_(original)
    finally:
        for p in params:
            p.requires_grad_(False)
        for p in frozen:
            p.requires_grad_(True)
        moe.train(was_training)
    return {"distill_heldout_kl_before": before, "distill_heldout_kl_after": after, "distill_kept": float(kept),
            "distill_steps": float(steps), "distill_train_tokens": float(sum(len(e) for e in train)),
            "distill_heldout_tokens": float(sum(len(e) for e in held))}
