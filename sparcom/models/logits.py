"""Logits at chosen positions only: the LM head runs where tokens are scored, not over whole prompts.

Scoring responses (the causal check) and training on them (tune) both need the logits of the positions that
predict a response token. Models that accept ``logits_to_keep`` with a boolean mask project only those rows onto
the vocabulary, which matters when the head is a large part of a small model's compute; others are run whole and
the rows are picked afterwards.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from sparcom.errors import SparcomError


def input_device(model: nn.Module) -> torch.device:
    """Where a model's input ids go (the embedding's device, also under a device map)."""
    return model.get_input_embeddings().weight.device


def accepts_logits_to_keep(model: nn.Module) -> bool:
    target = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper forwards kwargs
    return "logits_to_keep" in inspect.signature(target.forward).parameters


def logits_at(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              keep: torch.Tensor) -> torch.Tensor:
    """Logits [n_keep, V] at the True positions of ``keep`` [B, T], in row-major order."""
    device = input_device(model)
    ids, attention, keep = input_ids.to(device), attention_mask.to(device), keep.to(device)
    if accepts_logits_to_keep(model):
        logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep, use_cache=False).logits
    else:
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits
    if logits.dim() == 3 and logits.shape[:2] == keep.shape:  # the model ignored the mask: pick the rows
        logits = logits[keep]
    elif logits.dim() == 3 and logits.shape[0] == 1:
        logits = logits[0]
    if logits.shape[0] != int(keep.sum()):
        raise SparcomError(f"{type(model).__name__} returned logits of shape {tuple(logits.shape)} for "
                           f"{int(keep.sum())} kept positions")
    return logits
