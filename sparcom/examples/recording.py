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

:func:`record_examples` computes; :func:`write_examples` writes ``examples.json`` into a directory;
:func:`load_examples` reads it back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparcom.analysis.ranking import SCORE_DESCRIPTIONS, card_components, flat_position
from sparcom.components import Component, ComponentSet
from sparcom.data.batching import collate, plan_batches
from sparcom.data.formatting import FormatSettings, check_tokenizer, encode_row, resolve_template
from sparcom.data.schema import InstructionRow, first_rows_per_category, read_rows
from sparcom.errors import SparcomError
from sparcom.kinds import kind_of
from sparcom.models.loading import LoadedModel
from sparcom.models.moe import expert_activation
from sparcom.models.sites import ExpertsCall, ModelSites, MoeSite, model_sites
from sparcom.outputs import check_output_dir, lock, read_json, staged_directory
from sparcom.progress import progress_bar
from sparcom.provenance import ABLATE_ASPECTS, file_sha256, measurement, mismatches, software_versions
from sparcom.zoo.catalog import load_model

FORMAT = "sparcom-examples"
VERSION = 1
EXAMPLES_FILE = "examples.json"
DEFAULT_TOP_K = 5
DEFAULT_WINDOW = 12
#: Components per category and ranking chosen by default (from the selection's source run).
DEFAULT_PER_CATEGORY = 6


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
    """Hooks that write the recorded components' values of the current batch into ``values`` [B·T, M], one column
    per member of the recorded set, in the set's order (kind, layer, index)."""

    def __init__(self, sites: ModelSites, recorded: ComponentSet) -> None:
        self.sites, self.recorded = sites, recorded
        self.values: torch.Tensor | None = None

    def _store(self, columns: slice, values: torch.Tensor) -> None:
        if self.values is not None:
            self.values[:, columns] = values.to(self.values.device, torch.float32)

    def attach(self) -> list:
        handles, start = [], 0
        for kind in self.recorded.kinds:
            for layer, members in sorted(self.recorded.members[kind].items()):
                columns, start = slice(start, start + len(members)), start + len(members)
                site = self.sites.site(kind, layer)
                if kind_of(kind).routed:
                    hook = partial(self._routed, site, kind_of(kind).ndim, np.asarray(members), columns)
                    handles.append(site.experts.register_forward_pre_hook(hook, with_kwargs=True))
                else:
                    hook = partial(self._activation, torch.as_tensor(np.asarray(members), dtype=torch.long), columns)
                    handles.append(site.module.register_forward_hook(hook))
        return handles

    def _activation(self, index: torch.Tensor, columns: slice, module, args, output) -> None:
        width = output.shape[-1]
        self._store(columns, output.reshape(-1, width).index_select(1, index.to(output.device)))

    def _routed(self, site: MoeSite, ndim: int, members: np.ndarray, columns: slice, module, args: tuple,
                kwargs: dict) -> None:
        """An expert's routing weight (``ndim`` 1) or an expert neuron's activation (2), on its routed tokens."""
        if self.values is None:
            return
        call = ExpertsCall.parse(args, kwargs)
        x, index, weights = call.hidden_states, call.top_k_index, call.top_k_weights
        x = x.reshape(-1, x.shape[-1])
        index = index.reshape(x.shape[0], -1).to(torch.int64)
        result = torch.full((x.shape[0], len(members)), float("nan"), device=x.device)
        if ndim == 1:
            for column, expert in enumerate(members.tolist()):
                hit = index == expert
                routed = hit.any(dim=1)
                value = routed.to(torch.float32) if weights is None else \
                    (weights.reshape(hit.shape).to(torch.float32) * hit).sum(dim=1)
                result[routed, column] = value[routed]
        else:
            for expert in sorted(set(members[:, 0].tolist())):
                rows = (index == expert).any(dim=1).nonzero().squeeze(1)
                if rows.numel() == 0:
                    continue
                wanted = np.flatnonzero(members[:, 0] == expert)
                neurons = torch.as_tensor(members[wanted, 1], dtype=torch.long, device=x.device)
                activation = expert_activation(module, site.layout, x.index_select(0, rows), expert)
                result[rows.unsqueeze(1), torch.as_tensor(wanted, device=x.device)] = \
                    activation.index_select(1, neurons).to(torch.float32)
        self._store(columns, result)


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


def default_components(selection, run=None, per_category: int = DEFAULT_PER_CATEGORY,
                       kinds: Sequence[str] | None = None) -> tuple[list[Component], dict[str, dict[str, Any]]]:
    """The top ``per_category`` members of each category's set by frequency and by the margin score, per kind,
    with each one's frequencies across categories (from the selection's source run, or ``run``)."""
    from sparcom.analysis.frequencies import kind_frequencies
    from sparcom.artifacts.run import ProfileRun, load_run

    if run is None:
        source = selection.meta.get("source_run")
        if not source or not Path(source).is_dir():
            raise SparcomError(f"{selection.path}: its source run {source!r} is not readable here; pass the run "
                               "(run=...) or list the components to record")
        run = source
    if not isinstance(run, ProfileRun):
        run = load_run(run)
    categories = selection.categories
    check_run_matches(selection, run)
    chosen: list[Component] = []
    extra: dict[str, dict[str, Any]] = {}
    for kind in kinds or selection.kinds:
        freqs = kind_frequencies(run.counts, categories, kind)
        mask = np.stack([freqs.layout.flatten({j: selection.mask(kind, c, j) for j in freqs.layout.layers})
                         for c in categories])
        picked = card_components(freqs.p, mask, freqs.layout, categories, per_category)
        for c in picked:
            flat = flat_position(freqs.layout, c)
            extra[c.key] = {"p": {cat: float(freqs.p[i, flat]) for i, cat in enumerate(categories)},
                            "selected_for": [cat for i, cat in enumerate(categories) if mask[i, flat]]}
        chosen += picked
    return chosen, extra


def check_run_matches(selection, run) -> None:
    """Refuse a profile run that is not the selection's measurement (another model, sizes or tokenizer) or lacks
    a category the selection names: its frequencies would describe other components."""
    missing = [c for c in selection.categories if c not in run.categories]
    if missing:
        raise SparcomError(f"{run.path}: the run has no {', '.join(missing)} rows but the selection {selection.path} "
                           f"names {'that category' if len(missing) == 1 else 'those categories'}; pass the "
                           "selection's own profile run (--run)")
    recorded = selection.meta.get("manifest") or {}
    reasons = mismatches(recorded, measurement(run.manifest), ABLATE_ASPECTS, names=("selection", "run"))
    if recorded and reasons:
        raise SparcomError(f"{run.path}: not the run the selection {selection.path} was made from: {reasons[0]}; "
                           "pass the selection's own profile run (--run)")


def check_model_matches(selection, model: LoadedModel) -> None:
    """Refuse a model that is not the one the selection was made on (architecture, sizes, weights, tokenizer):
    its components would be other neurons. Fields the selection does not record are not checked."""
    recorded = selection.meta.get("manifest") or {}
    ours = model.measurement()
    theirs = {dotted: recorded.get(dotted, ours[dotted]) for dotted in ours}
    reasons = mismatches(theirs, ours, ABLATE_ASPECTS, names=("selection", "this model"))
    if reasons:
        raise SparcomError(f"{selection.path}: selection made on another model: {reasons[0]}; record examples with "
                           "the model the selection was made on")


def _token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)


#: What a component's recorded value is, per kind (written into examples.json's settings).
VALUES: dict[str, str] = {"neuron": "activation A = f(gate(x))", "shared_neuron": "activation A = f(gate(x))",
                          "expert": "routing weight (tokens routed to the expert only)",
                          "expert_neuron": "activation A of the expert neuron (tokens routed to the expert only)"}


def _check_options(top_k: int, window: int, batch_size: int, rows_per_category: int | None) -> None:
    for flag, value, least in (("--top-k", top_k, 1), ("--window", window, 0), ("--batch-size", batch_size, 1),
                               ("--rows-per-category", rows_per_category, 1)):
        if value is not None and value < least:
            raise SparcomError(f"{flag} must be {'at least 1' if least else '0 or more'}, got {value}")


@dataclass
class _Pass:
    """What one recording pass keeps, per recorded component (columns in the recorded set's order)."""

    best: dict[str, _TopK]  # per category; the overall top is merged from them
    totals: dict[str, torch.Tensor]  # per category [3, M]: sum of values, tokens with a value, tokens with a value > 0


def _record(model: LoadedModel, recorded: ComponentSet, examples: list, order: list[str], fmt: FormatSettings,
            batch_size: int, top_k: int, window: int, progress: bool) -> _Pass:
    """One forward pass over the rows' batches with the recorder's hooks, keeping the top windows and totals."""
    net, tokenizer = model.model, model.tokenizer
    sites = model_sites(net)  # the same modules the profiler counts and the causal check deactivates
    m, span = recorded.size(), 2 * window + 1
    kept = _Pass({c: _TopK(m, top_k, span) for c in order}, {c: torch.zeros((3, m), dtype=torch.float64) for c in order})
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    device_in = net.get_input_embeddings().weight.device
    recorder = _Recorder(sites, recorded)
    handles = recorder.attach()
    bar = progress_bar("instructions", enabled=progress)
    try:
        with bar, torch.inference_mode():
            task = bar.add_task("recording", total=len(examples))
            for planned in plan_batches(examples, order, batch_size):
                batch = collate(planned, fmt.scope, pad_id, "right")
                b, t = batch.input_ids.shape
                recorder.values = torch.full((b * t, m), float("nan"))
                sites.backbone(input_ids=batch.input_ids.to(device_in), attention_mask=batch.attention_mask.to(
                    device_in), position_ids=batch.position_ids.to(device_in), use_cache=False)
                values = recorder.values.reshape(b, t, m)
                recorder.values = None
                values[~batch.counted] = float("nan")
                defined = ~torch.isnan(values)
                total = kept.totals[batch.category]
                total[0] += torch.where(defined, values, 0.0).sum(dim=(0, 1), dtype=torch.float64)
                total[1] += defined.sum(dim=(0, 1))
                total[2] += (values > 0).sum(dim=(0, 1))
                top, where = torch.where(defined, values, float("-inf")).max(dim=1)  # [B, M]
                padded = torch.nn.functional.pad(values.permute(0, 2, 1), (window, window), value=float("nan"))
                windows = padded.gather(2, where.unsqueeze(-1) + torch.arange(span)).permute(1, 0, 2)  # [M, B, span]
                row_ids = torch.tensor([e.row_index for e in batch.examples], dtype=torch.long)
                kept.best[batch.category].add(top.T, row_ids.expand(m, b), where.T, windows)
                bar.advance(task, len(batch.examples))
    finally:
        for handle in handles:
            handle.remove()
        recorder.values = None
    return kept


def _events(kept: _TopK, i: int, examples: list, rows: list[InstructionRow], tokenizer, window: int,
            used: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Component ``i``'s kept top values as events with their token windows (and the rows they came from)."""
    found = []
    for k in range(kept.k):
        value = float(kept.value[i, k])
        if not np.isfinite(value):
            continue
        row_index, position = int(kept.row[i, k]), int(kept.position[i, k])
        example, row = examples[row_index], rows[row_index]
        start, stop = max(0, position - window), min(len(example), position + window + 1)
        offset = start - (position - window)
        values = kept.window[i, k, offset : offset + stop - start].tolist()
        found.append({"row": row.id, "position": position, "value": value, "start": start,
                      "tokens": [_token_text(tokenizer, tid) for tid in example.input_ids[start:stop]],
                      "values": [None if v != v else round(v, 4) for v in values]})
        used[row.id] = {"category": row.category, "source": row.source, "tokens": len(example)}
    return found


def record_examples(
    model: str | LoadedModel,
    selection,
    data: str | Path,
    components: Sequence[Component | str] | None = None,
    *,
    run=None,
    top_k: int = DEFAULT_TOP_K,
    window: int = DEFAULT_WINDOW,
    per_category: int = DEFAULT_PER_CATEGORY,
    rows_per_category: int | None = None,
    categories: Sequence[str] | None = None,
    batch_size: int = 8,
    dtype: str = "auto",
    device: str = "cpu",
    progress: bool = False,
) -> ExamplesResult:
    """Record, for each component, the ``top_k`` instructions of ``data`` where it fires most.

    ``selection`` (a directory or a loaded Selection) gives the scope, template and system prompt the counts were
    made with, and — when ``components`` is None — the components: the top ``per_category`` members of each
    category's set by frequency and by specificity margin (needs its source run, or ``run``).
    """
    from sparcom.artifacts.selection import Selection, load_selection

    started = time.perf_counter()
    _check_options(top_k, window, batch_size, rows_per_category)
    if not isinstance(selection, Selection):
        selection = load_selection(selection)
    extra: dict[str, dict[str, Any]] = {}
    if components is None:
        chosen, extra = default_components(selection, run, per_category)
    else:
        chosen = [c if isinstance(c, Component) else Component.from_key(c) for c in components]
    chosen = list(dict.fromkeys(chosen))
    if not chosen:
        raise SparcomError("no components to record: the selection's sets are empty")
    manifest = selection.meta.get("manifest") or {}
    fmt = FormatSettings(manifest.get("scope") or "instruction", manifest.get("template_policy") or "auto",
                         manifest.get("system_prompt"))
    data = Path(data)
    rows, _ = first_rows_per_category(read_rows(data, categories=categories, require_output=fmt.needs_response),
                                      rows_per_category)
    if isinstance(model, str):
        model = load_model(model, dtype=dtype, device=device)
    check_model_matches(selection, model)
    check_tokenizer(model.tokenizer)
    recorded = ComponentSet.from_ids(chosen, model_sites(model.model))
    template = resolve_template(model.tokenizer, manifest.get("template") or fmt.template)
    examples = [encode_row(row, i, model.tokenizer, template, fmt.system_prompt, fmt.needs_response)
                for i, row in enumerate(rows)]
    order = list(dict.fromkeys(r.category for r in rows))
    kept = _record(model, recorded, examples, order, fmt, batch_size, top_k, window, progress)
    overall = _TopK(recorded.size(), top_k, 2 * window + 1)
    for best in kept.best.values():
        overall.add(best.value, best.row, best.position, best.window)
    column = {c: i for i, c in enumerate(recorded.ids())}
    used: dict[str, dict[str, Any]] = {}
    events = [_events(overall, column[c], examples, rows, model.tokenizer, window, used) for c in chosen]
    for c in chosen:
        i = column[c]
        extra.setdefault(c.key, {})["events_by_category"] = {
            category: _events(best, i, examples, rows, model.tokenizer, window, used) for category, best in kept.best.items()}
        extra[c.key]["per_category"] = {category: {
            "mean": float(total[0, i] / int(total[1, i])) if int(total[1, i]) else None, "tokens": int(total[1, i]),
            "positive": int(total[2, i])} for category, total in kept.totals.items()}
    settings = {"top_k": top_k, "window": window, "scope": fmt.scope, "template": template,
                "system_prompt": fmt.system_prompt, "rows_per_category": rows_per_category,
                "batch_size": batch_size, "per_category": per_category if components is None else None,
                "scores": SCORE_DESCRIPTIONS if components is None else None, "values": VALUES}
    return ExamplesResult(chosen, events, used, settings, *_provenance(model, selection, data, rows, order), extra,
                          time.perf_counter() - started)


def _provenance(model: LoadedModel, selection, data: Path, rows: list[InstructionRow], order: list[str]
                ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The model, selection and data records of an examples output."""
    meta = selection.meta
    info = {**model.info, "architecture": type(model.model).__name__,
            "dtype": str(next(model.model.parameters()).dtype).replace("torch.", "")}
    selection_info = {"path": str(Path(selection.path).resolve()), "rule": meta.get("rule"),
                      "epsilon": meta.get("epsilon"), "source_run": meta.get("source_run"),
                      "categories": selection.categories, "manifest": meta.get("manifest") or {}}
    data_info = {"path": str(data), "sha256": file_sha256(data), "rows": len(rows),
                 "instructions": {c: sum(r.category == c for r in rows) for c in order}}
    return info, selection_info, data_info


def check_examples_out(out: str | Path, overwrite: bool = False) -> None:
    """Refuse an existing ``out`` unless ``overwrite``, and even then anything but an earlier examples output."""
    check_output_dir(out, overwrite, marker=EXAMPLES_FILE, kind="examples output")


def write_examples(result: ExamplesResult, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``examples.json`` into the directory ``out`` (built under a temporary name, then renamed)."""
    with staged_directory(out, overwrite, marker=EXAMPLES_FILE, kind="examples output") as staging:
        (staging / EXAMPLES_FILE).write_text(json.dumps(result.to_json(), ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    return Path(out)


def run_examples(model: str | LoadedModel, selection, data: str | Path, out: str | Path,
                 components: Sequence[Component | str] | None = None, *, overwrite: bool = False,
                 **options) -> ExamplesResult:
    """The planned ``sparcom examples``: check ``out`` first, run :func:`record_examples`, write ``out``."""
    check_examples_out(out, overwrite)
    with lock(out):  # a second pass into the same --out is refused at once
        result = record_examples(model, selection, data, components, **options)
        write_examples(result, out, overwrite=overwrite)
    return result


def load_examples(directory: str | Path) -> dict[str, Any]:
    """Read ``examples.json`` from a directory written by :func:`write_examples` (or the file itself)."""
    path = Path(directory)
    if path.is_dir():
        path = path / EXAMPLES_FILE
    if not path.is_file():
        raise SparcomError(f"{path}: not found; record examples with sparcom.examples.recording.record_examples")
    document = read_json(path, "record the examples again")
    if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("version") != VERSION:
        raise SparcomError(f"{path}: not a {FORMAT} version {VERSION} file; record the examples again")
    return document


__all__ = ["Component", "ExamplesResult", "default_components", "load_examples", "record_examples",
           "run_examples", "write_examples"]
