"""Sufficiency (a pilot, no verdict): does amplifying a category's set move the model toward that category?

The causal check asks whether a set is *necessary* (deactivating it damages its category). This pilot asks the
converse on other categories' prompts (docs/causal.md, "Sufficiency (pilot)"): multiply the activations of
category c's set by a factor α > 1 on every token (:func:`~sparcom.causal.interventions.amplify`) while the model
reads the prompt of a row of another category d, and score two kinds of continuation, teacher-forced: the first
tokens of c's reference responses ("c openings") and of d's own ("d openings"). If the set carries c, the c
openings should become likelier relative to the d openings. Per target category d, with ΔNLL the change in pooled
NLL per token from the unamplified model:

    pull_d(c) = ΔNLL(d openings | d prompts) − ΔNLL(c openings | d prompts)

and the set's pull is the mean over the five d ≠ c. Amplifying anything perturbs the model, so the pull is compared
with random sets drawn as the causal check's control draws them (matched on layer and pooled frequency by
default): the empirical one-sided p is (1 + #{random pull ≥ selected pull}) / (1 + R).

It is a pilot: few rows, no multiple-testing correction, no calibrated decision — the numbers describe, they do
not conclude. No claim of the claims table reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from sparcom.causal.controls import control_matching
from sparcom.causal.inputs import known_profiled_ids
from sparcom.causal.interventions import amplify
from sparcom.causal.nll import ScoredExample, encode_scored
from sparcom.causal.plan import CONTROLS
from sparcom.causal.scoring import ScoringPlan
from sparcom.causal.settings import DEFAULT_CONTROL
from sparcom.components import ComponentSet
from sparcom.data.batching import length_batches
from sparcom.data.formatting import pad_token_id, resolve_template
from sparcom.data.schema import InstructionRow, source_balanced_rows
from sparcom.errors import SparcomError
from sparcom.models.sites import model_sites
from sparcom.stats import empirical_p

#: Kinds the pilot amplifies (activation sites; routed kinds have no single "scale").
STEERED_KINDS: tuple[str, ...] = ("neuron", "shared_neuron")


@dataclass(frozen=True)
class CrossExamples:
    """Every prompt paired with every opening, teacher-forced; which category each side comes from."""

    examples: list[ScoredExample]
    prompt_category: np.ndarray  # [n] str
    opening_category: np.ndarray  # [n] str

    def needed_for(self, source: str) -> np.ndarray:
        """Positions a pull of ``source`` reads: prompts of other categories, with source or own openings."""
        other = self.prompt_category != source
        return np.flatnonzero(other & ((self.opening_category == source)
                                       | (self.opening_category == self.prompt_category)))


def cross_examples(prompts: Sequence[InstructionRow], openings: Sequence[InstructionRow], tokenizer, template: str,
                   system_prompt: str | None, opening_tokens: int) -> CrossExamples:
    """Each prompt row followed by each opening row's reference response, its first ``opening_tokens`` scored."""
    pairs = [replace(p, id=f"{p.id}>{o.id}", output=o.output) for p in prompts for o in openings]
    examples = encode_scored(pairs, tokenizer, template, system_prompt, max_scored=opening_tokens)
    return CrossExamples(examples, np.array([p.category for p in prompts for _ in openings]),
                         np.array([o.category for _ in prompts for o in openings]))


def pooled_delta(delta: np.ndarray, counts: np.ndarray, where: np.ndarray) -> float:
    """Σ ΔNLL / Σ scored tokens over the examples ``where`` (nats per token)."""
    tokens = counts[where].sum()
    return float(delta[where].sum() / tokens) if tokens else float("nan")


def steering_pull(delta: np.ndarray, counts: np.ndarray, cross: CrossExamples, source: str
                  ) -> tuple[float, float, float]:
    """(pull, toward, away) of amplifying ``source``'s set: mean over targets d ≠ source of ΔNLL(d openings) −
    ΔNLL(source openings) after d's prompts, and the two means separately (``delta``: per example, summed)."""
    toward, away = [], []
    for target in sorted(set(cross.prompt_category) - {source}):
        prompt = cross.prompt_category == target
        toward.append(pooled_delta(delta, counts, prompt & (cross.opening_category == source)))
        away.append(pooled_delta(delta, counts, prompt & (cross.opening_category == target)))
    toward_mean, away_mean = float(np.mean(toward)), float(np.mean(away))
    return away_mean - toward_mean, toward_mean, away_mean


@dataclass(frozen=True)
class SteeringCell:
    """One category's set amplified by one factor: its pull, the random sets' pulls and the empirical p."""

    category: str
    factor: float
    size: int
    pull: float
    toward: float  # ΔNLL of the category's openings after other prompts (negative: likelier)
    away: float  # ΔNLL of the prompts' own openings
    random_pulls: tuple[float, ...]
    p: float


@dataclass(frozen=True)
class SufficiencyPilot:
    """The pilot's cells and what they were measured on (no decision: see the module's docstring)."""

    cells: list[SteeringCell]
    control: str
    rows: dict[str, dict[str, list[str]]]  # category → {"prompts": ids, "openings": ids}
    opening_tokens: int
    examples: int
    dtype: str

    def to_json(self) -> dict:
        return {"pilot": True, "decision": None, "control": self.control, "opening_tokens": self.opening_tokens,
                "examples": self.examples, "dtype": self.dtype, "rows": self.rows,
                "cells": [asdict(c) for c in self.cells]}


def pilot_rows(rows: Sequence[InstructionRow], prompts: int, openings: int, exclude: set[str]
               ) -> tuple[list[InstructionRow], list[InstructionRow]]:
    """Per category ``prompts + openings`` rows shared over the sources, the profiled ones skipped; alternately
    prompts and openings so that both sides mix AI-written and human-written rows."""
    kept, categories = source_balanced_rows(rows, prompts + openings, exclude)
    prompt_rows, opening_rows = [], []
    for category in categories:
        members = [r for r in kept if r.category == category]
        if len(members) < prompts + openings:
            raise SparcomError(f"category {category}: {len(members)} unprofiled rows, the pilot needs "
                               f"{prompts + openings}; give more rows or ask for fewer prompts and openings")
        prompt_rows += (members[0::2] + members[1::2])[:prompts]
        opening_rows += [r for r in members if r not in prompt_rows][:openings]
    return prompt_rows, opening_rows


def _delta_sums(model, plan: ScoringPlan, baseline: np.ndarray, components: ComponentSet, factor: float,
                sites) -> np.ndarray:
    with amplify(model, components, factor, sites=sites):
        return plan.run(model) - baseline


def sufficiency_pilot(loaded, selection, rows: Sequence[InstructionRow], *, factors: Sequence[float] = (2.0, 4.0),
                      seeds: int = 10, seed: int = 0, control: str = DEFAULT_CONTROL, prompts: int = 3,
                      openings: int = 3, opening_tokens: int = 8, batch_size: int = 8,
                      on_pass: Callable[[str], None] | None = None) -> SufficiencyPilot:
    """Amplify each category's selected neurons by each factor on the other categories' prompts; compare the pull
    toward the category with ``seeds`` random sets of ``control`` (see the module's docstring)."""
    if control not in CONTROLS:
        raise SparcomError(f"unknown control {control!r}; known: {', '.join(CONTROLS)}")
    kinds = [k for k in STEERED_KINDS if k in selection.kinds]
    if not kinds:
        raise SparcomError("the selection has no neurons at activation sites to amplify (dense or shared-expert)")
    model, sites = loaded.model, model_sites(loaded.model)
    manifest = selection.meta.get("manifest") or {}
    prompt_rows, opening_rows = pilot_rows(rows, prompts, openings, known_profiled_ids(selection))
    template = resolve_template(loaded.tokenizer, manifest.get("template") or "auto")
    cross = cross_examples(prompt_rows, opening_rows, loaded.tokenizer, template, manifest.get("system_prompt"),
                           opening_tokens)
    pad_id = pad_token_id(loaded.tokenizer)
    matching = None
    if control != "shape":
        run = selection.source_run(f"the {control} control reads its statistic from the profile run", "control='shape'")
        matching = control_matching([control], run, kinds, sites)[control]
    missing = [c for c in selection.categories if c not in set(cross.prompt_category)]
    if missing:
        raise SparcomError(f"the rows have no instruction of the selection's categories {', '.join(missing)}; give "
                           "the dataset the selection was made from")
    cells = []
    for category in selection.categories:
        needed = cross.needed_for(category)
        subset = [cross.examples[i] for i in needed]
        plan = ScoringPlan.build(subset, length_batches([len(e) for e in subset], batch_size), pad_id)
        with torch.no_grad():
            baseline = plan.run(model)
        selected = ComponentSet.from_masks(selection.masks, category, kinds, label=f"neurons/{category}")
        randoms = [CONTROLS[control](selected, seed + i, f"sufficiency/{category}", matching) for i in range(seeds)]
        part = CrossExamples(subset, cross.prompt_category[needed], cross.opening_category[needed])
        for factor in factors:
            pulls = []
            for components in [selected, *randoms]:
                delta = _delta_sums(model, plan, baseline, components, factor, sites)
                pulls.append(steering_pull(delta, plan.counts, part, category))
                if on_pass is not None:
                    on_pass(f"{category} ×{factor:g} set {len(pulls)}/{seeds + 1}")
            random_pulls = tuple(p[0] for p in pulls[1:])
            cells.append(SteeringCell(category, float(factor), selected.size(), *pulls[0], random_pulls,
                                      float(empirical_p(pulls[0][0], np.array(random_pulls)))))
    used = {c: {"prompts": [r.id for r in prompt_rows if r.category == c],
                "openings": [r.id for r in opening_rows if r.category == c]} for c in selection.categories}
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    return SufficiencyPilot(cells, control, used, opening_tokens, len(cross.examples), dtype)


__all__ = ["CrossExamples", "SteeringCell", "SufficiencyPilot", "cross_examples", "pilot_rows", "pooled_delta",
           "steering_pull", "sufficiency_pilot"]
