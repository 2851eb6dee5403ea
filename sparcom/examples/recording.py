"""Where chosen components fire most: a second, small forward pass that records only those components.

For each component (a dense or shared-expert neuron, an expert, or an expert neuron) it keeps the ``top_k``
instructions with the highest value on a counted token — over all rows and within each category — the position of
that token, and the component's values on a window of tokens around it (with the token strings), so a reader sees
the token highlighted in context.
It also keeps, per category, the component's mean value over the counted tokens where it has one and how many
of them are > 0 (for a neuron on the profiled rows, that share is its frequency p). Nothing else is stored: no
full activations.

Values: a neuron's value is its activation A = f(gate(x)) (DESIGN §1, the quantity whose sign is counted); an
expert's value is its routing weight on tokens routed to it (no value where it was not chosen); an expert
neuron's value is A of that neuron of that expert on the tokens routed to the expert, recomputed from the
expert's weights. Only counted tokens (the selection's scope) compete for the top; the window shows the values of
every counted token in it and no value for the others (template tokens, padding).

:func:`sparcom.api.record_examples` plans the pass (:mod:`sparcom.examples.plan`) and :func:`record` computes
it; :func:`write_examples` writes ``examples.json`` into a directory; :func:`load_examples` reads it back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparcom.analysis.ranking import SCORE_DESCRIPTIONS
from sparcom.components import Component, ComponentSet
from sparcom.data.batching import collate, plan_batches
from sparcom.data.formatting import check_tokenizer, encode_row, resolve_template
from sparcom.errors import SparcomError
from sparcom.examples.plan import ExamplesPlan
from sparcom.examples.settings import EXAMPLES_FILE, FORMAT, VERSION
from sparcom.models.loading import LoadedModel, tokenizer_fingerprint
from sparcom.models.moe import expert_activation
from sparcom.models.sites import ExpertsCall, ModelSites, MoeSite, NeuronSite, model_sites
from sparcom.outputs import staged_directory
from sparcom.progress import progress_bar
from sparcom.provenance import ABLATE_ASPECTS, file_sha256, mismatches, software_versions
from sparcom.zoo.catalog import load_model, preview_model


class _TopK:
    """The ``k`` largest values per component [M, k], with their row, position and value window."""

    def __init__(self, m: int, k: int, span: int) -> None:
        self.k = k
        self.value = torch.full((m, k), float("-inf"))
        self.row = torch.full((m, k), -1, dtype=torch.long)
        self.position = torch.zeros((m, k), dtype=torch.long)
        self.window = torch.full((m, k, span), float("nan"))

    def add(self, value: torch.Tensor, row: torch.Tensor, position: torch.Tensor, window: torch.Tensor) -> None:
        """Merge candidates [M, n] (window [M, n, span]) and keep the top ``k`` of each component."""
        values = torch.cat([self.value, value], dim=1)
        keep = values.topk(self.k, dim=1).indices
        self.value = values.gather(1, keep)
        self.row = torch.cat([self.row, row], dim=1).gather(1, keep)
        self.position = torch.cat([self.position, position], dim=1).gather(1, keep)
        windows = torch.cat([self.window, window], dim=1)
        self.window = windows.gather(1, keep.unsqueeze(-1).expand(-1, -1, windows.shape[-1]))


class _Recorder:
    """Hooks that write the chosen components' values of the current batch into ``values`` [B·T, M], column ``m``
    for the ``m``-th component of the plan. The components are read as one :class:`ComponentSet` over the model's
    site map (which also checks that each one exists), one hook per (kind, layer) of the set."""

    def __init__(self, sites: ModelSites, components: Sequence[Component]) -> None:
        self.sites = sites
        self.chosen = ComponentSet.from_ids(components, sites)
        self.column = {c: m for m, c in enumerate(components)}
        self.values: torch.Tensor | None = None

    def _store(self, columns: list[int], flat: torch.Tensor) -> None:
        if self.values is not None:
            self.values[:, columns] = flat.to(self.values.device, torch.float32)

    def attach(self) -> list:
        """One hook per (kind, layer): an activation site's output, or a routed-experts module's inputs."""
        handles = []
        for (kind, layer), group in groupby(self.chosen.ids(), key=lambda c: (c.kind, c.layer)):
            members = list(group)
            columns = [self.column[c] for c in members]
            site = self.sites.site(kind, layer)
            if isinstance(site, NeuronSite):
                index = torch.tensor([c.index for c in members], dtype=torch.long)

                def hook(module, args, output, columns=columns, index=index):
                    flat = output.reshape(-1, output.shape[-1])
                    self._store(columns, flat.index_select(1, index.to(output.device)))

                handles.append(site.module.register_forward_hook(hook))
            else:
                def pre_hook(module, args, kwargs, site=site, members=members, columns=columns):
                    if self.values is not None:
                        self._store(columns, _routed_values(site, members, module, ExpertsCall.parse(args, kwargs)))

                handles.append(site.experts.register_forward_pre_hook(pre_hook, with_kwargs=True))
        return handles


def _routed_values(site: MoeSite, members: list[Component], module, call: ExpertsCall) -> torch.Tensor:
    """The values [tokens, members] of one MoE layer's chosen experts (routing weight) or expert neurons
    (recomputed activation), NaN on the tokens not routed to the member's expert."""
    x = call.hidden_states.reshape(-1, call.hidden_states.shape[-1])
    index = call.top_k_index.reshape(x.shape[0], -1).to(torch.int64)
    weights = call.top_k_weights
    result = torch.full((x.shape[0], len(members)), float("nan"), device=x.device)
    if members[0].expert is None:  # experts: each member's index is its expert
        for column, c in enumerate(members):
            hit = index == c.index
            routed = hit.any(dim=1)
            value = routed.to(torch.float32) if weights is None else \
                (weights.reshape(hit.shape).to(torch.float32) * hit).sum(dim=1)
            result[routed, column] = value[routed]
        return result
    for expert in sorted({c.expert for c in members}):
        rows = (index == expert).any(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        wanted = [k for k, c in enumerate(members) if c.expert == expert]
        neurons = torch.tensor([members[k].index for k in wanted], dtype=torch.long, device=x.device)
        activation = expert_activation(module, site.layout, x.index_select(0, rows), expert)
        result[rows.unsqueeze(1), torch.tensor(wanted, device=x.device)] = \
            activation.index_select(1, neurons).to(torch.float32)
    return result


@dataclass
class ExamplesResult:
    """The top instructions of each component, with token windows, and how they were recorded."""

    components: list[Component]
    #: Per component, up to top_k events: row id, position, value, window start, tokens and values.
    events: list[list[dict[str, Any]]]
    rows: dict[str, dict[str, Any]]
    settings: dict[str, Any]
    model: dict[str, Any]
    selection: dict[str, Any]
    data: dict[str, Any]
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_time_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        components = []
        for c, events in zip(self.components, self.events, strict=True):
            entry = {"key": c.key, "kind": c.kind, "layer": c.layer, "index": c.index, "expert": c.expert,
                     **self.extra.get(c.key, {}), "events": events}
            components.append(entry)
        return {"format": FORMAT, "version": VERSION, "model": self.model, "selection": self.selection,
                "data": self.data, "settings": self.settings, "rows": self.rows, "components": components,
                "wall_time_seconds": round(self.wall_time_seconds, 3), "software": software_versions()}


def check_model_matches(selection, model: LoadedModel) -> None:
    """Refuse a model that is not the one the selection was made on (architecture, sizes, weights, tokenizer):
    its components would be other neurons. Fields the selection does not record are not checked."""
    recorded = selection.meta.get("manifest") or {}
    ours = {"model.architecture": type(model.model).__name__, "model.fingerprint": model.info.get("fingerprint"),
            "tokenizer_hash": tokenizer_fingerprint(model.tokenizer),
            "model.sizes": model_sites(model.model).description(model.model)["sizes"]}
    theirs = {dotted: recorded.get(dotted, ours[dotted]) for dotted in ours}
    reasons = mismatches(theirs, ours, ABLATE_ASPECTS, names=("selection", "this model"))
    if reasons:
        raise SparcomError(f"{selection.path}: selection made on another model: {reasons[0]}; record examples with "
                           "the model the selection was made on")


def _token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def record(model: str | LoadedModel, plan: ExamplesPlan, *, dtype: str = "auto", device: str = "cpu",
           progress: bool = False) -> ExamplesResult:
    """Record, for each planned component, the ``top_k`` instructions of the planned rows where it fires most
    (and, per category, its mean value and positive share over the counted tokens)."""
    started = time.perf_counter()
    if isinstance(model, str):
        skeleton = preview_model(model, dtype=dtype, device=device)
        if skeleton is not None:  # another model's selection, or components it lacks: refused before loading
            check_model_matches(plan.selection, skeleton)
            ComponentSet.from_ids(plan.components, model_sites(skeleton.model))
        model = load_model(model, dtype=dtype, device=device)
    check_model_matches(plan.selection, model)
    check_tokenizer(model.tokenizer)
    template = resolve_template(model.tokenizer, plan.template)
    fmt = plan.format
    examples = [encode_row(row, i, model.tokenizer, template, fmt.system_prompt, fmt.needs_response)
                for i, row in enumerate(plan.rows)]
    best, totals = _scan(model, plan, examples, progress)
    events, used, extra = _describe(plan, examples, model.tokenizer, best, totals)
    settings = plan.settings
    meta = plan.selection.meta
    recorded = {"top_k": settings.top_k, "window": settings.window, "scope": fmt.scope, "template": template,
                "system_prompt": fmt.system_prompt, "rows_per_category": settings.rows_per_category,
                "batch_size": settings.batch_size,
                "per_category": None if plan.listed else settings.components_per_category,
                "scores": None if plan.listed else SCORE_DESCRIPTIONS, "values": VALUES}
    net = model.model
    info = {**model.info, "architecture": type(net).__name__,
            "dtype": str(next(net.parameters()).dtype).replace("torch.", "")}
    selection_info = {"path": str(Path(plan.selection.path).resolve()), "rule": meta.get("rule"),
                      "epsilon": meta.get("epsilon"), "source_run": meta.get("source_run"),
                      "categories": plan.selection.categories, "manifest": plan.manifest}
    data_info = {"path": str(plan.data), "sha256": file_sha256(plan.data), "rows": len(plan.rows),
                 "instructions": {c: sum(r.category == c for r in plan.rows) for c in totals}}
    return ExamplesResult(plan.components, events, used, recorded, info, selection_info, data_info, extra,
                          time.perf_counter() - started)


#: What a recorded value is, per kind (written with the examples).
VALUES = {"neuron": "activation A = f(gate(x))", "shared_neuron": "activation A = f(gate(x))",
          "expert": "routing weight (tokens routed to the expert only)",
          "expert_neuron": "activation A of the expert neuron (tokens routed to the expert only)"}


def _scan(model: LoadedModel, plan: ExamplesPlan, examples: list, progress: bool
          ) -> tuple[dict[str, _TopK], dict[str, torch.Tensor]]:
    """One forward pass over the rows: per category the top values of each component with their windows, and
    the sum of the values, the tokens with a value and the tokens with a value > 0 (counted tokens only)."""
    settings, net = plan.settings, model.model
    order = list(dict.fromkeys(r.category for r in plan.rows))
    batches = plan_batches(examples, order, settings.batch_size)
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    sites = model_sites(net)  # the same modules the profiler counts and the causal check deactivates
    backbone = sites.backbone
    recorder = _Recorder(sites, plan.components)
    m, window = len(plan.components), settings.window
    span = 2 * window + 1
    best = {c: _TopK(m, settings.top_k, span) for c in order}  # per category; the overall top is merged from them
    totals: dict[str, torch.Tensor] = {c: torch.zeros((3, m), dtype=torch.float64) for c in order}
    device_in = net.get_input_embeddings().weight.device
    handles = recorder.attach()
    bar = progress_bar("instructions", enabled=progress)
    try:
        with bar, torch.inference_mode():
            task = bar.add_task("recording", total=len(plan.rows))
            for planned in batches:
                batch = collate(planned, plan.format.scope, pad_id, "right")
                b, t = batch.input_ids.shape
                recorder.values = torch.full((b * t, m), float("nan"))
                backbone(input_ids=batch.input_ids.to(device_in), attention_mask=batch.attention_mask.to(device_in),
                         position_ids=batch.position_ids.to(device_in), use_cache=False)
                values = recorder.values.reshape(b, t, m)
                recorder.values = None
                values[~batch.counted] = float("nan")
                defined = ~torch.isnan(values)
                total = totals[batch.category]
                total[0] += torch.where(defined, values, 0.0).sum(dim=(0, 1), dtype=torch.float64)
                total[1] += defined.sum(dim=(0, 1))
                total[2] += (values > 0).sum(dim=(0, 1))
                ranked = torch.where(torch.isnan(values), float("-inf"), values)
                top, where = ranked.max(dim=1)  # [B, M]
                padded = torch.nn.functional.pad(values.permute(0, 2, 1), (window, window), value=float("nan"))
                take = where.unsqueeze(-1) + torch.arange(span)  # [B, M, span] in padded coordinates
                windows = padded.gather(2, take).permute(1, 0, 2)  # [M, B, span]
                row_ids = torch.tensor([e.row_index for e in batch.examples], dtype=torch.long)
                best[batch.category].add(top.T, row_ids.expand(m, b), where.T, windows)
                bar.advance(task, len(batch.examples))
    finally:
        for handle in handles:
            handle.remove()
        recorder.values = None
    return best, totals


def _describe(plan: ExamplesPlan, examples: list, tokenizer, best: dict[str, _TopK],
              totals: dict[str, torch.Tensor]) -> tuple[list[list[dict[str, Any]]], dict, dict]:
    """The events of each component (overall and per category), the rows they come from, and per category the
    component's mean value and positive share."""
    top_k, window, m = plan.settings.top_k, plan.settings.window, len(plan.components)
    overall = _TopK(m, top_k, 2 * window + 1)
    for kept in best.values():
        overall.add(kept.value, kept.row, kept.position, kept.window)
    used: dict[str, dict[str, Any]] = {}

    def describe(kept: _TopK, i: int) -> list[dict[str, Any]]:
        found = []
        for k in range(top_k):
            value = float(kept.value[i, k])
            if not np.isfinite(value):
                continue
            row_index, position = int(kept.row[i, k]), int(kept.position[i, k])
            example, row = examples[row_index], plan.rows[row_index]
            start = max(0, position - window)
            stop = min(len(example), position + window + 1)
            offset = start - (position - window)
            vals = kept.window[i, k, offset : offset + stop - start].tolist()
            found.append({
                "row": row.id, "position": position, "value": value, "start": start,
                "tokens": [_token_text(tokenizer, tid) for tid in example.input_ids[start:stop]],
                "values": [None if v != v else round(v, 4) for v in vals]})
            used[row.id] = {"category": row.category, "source": row.source, "tokens": len(example)}
        return found

    events: list[list[dict[str, Any]]] = []
    extra = {key: dict(value) for key, value in plan.extra.items()}
    for i, component in enumerate(plan.components):
        events.append(describe(overall, i))
        entry = extra.setdefault(component.key, {})
        entry["events_by_category"] = {c: describe(kept, i) for c, kept in best.items()}
        stats = {}
        for category, total in totals.items():
            tokens = int(total[1, i])
            stats[category] = {"mean": float(total[0, i] / tokens) if tokens else None, "tokens": tokens,
                               "positive": int(total[2, i])}
        entry["per_category"] = stats
    return events, used, extra


def write_examples(result: ExamplesResult, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``examples.json`` into the directory ``out`` (built under a temporary name, then renamed)."""
    with staged_directory(out, overwrite, marker=EXAMPLES_FILE, kind="examples output") as staging:
        (staging / EXAMPLES_FILE).write_text(json.dumps(result.to_json(), ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    return Path(out)


__all__ = ["ExamplesResult", "record", "write_examples"]
