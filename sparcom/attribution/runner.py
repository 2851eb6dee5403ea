"""The attribution run: encode rows with their reference responses, batch them, one forward + backward per batch,
sum the estimates per category (and per instruction), save the run.

The batch plan is fixed by the data and the settings (per category, longest first), so a resumed run, a shard
(``--shard K/N``) and the ranks of a torchrun job compute the very batches one process would; each row's estimates
are rounded once into int64 fixed point (:mod:`sparcom.artifacts.attribution`), and integer sums do not depend on
their order, so all of them end with the bytes of one uninterrupted pass. The ranks share the plan round by round
(:mod:`sparcom.profile.sharing`), the sums are added over the ranks at each checkpoint and at the end, and rank 0
writes. A run that fails before its first checkpoint removes the folder it created.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparcom.artifacts import attribution as artifact
from sparcom.attribution.estimate import Replacement, attributed_sites, batch_effects
from sparcom.attribution.settings import AttributionSettings
from sparcom.causal.nll import ScoredExample, encode_scored
from sparcom.causal.scoring import ScoringPlan
from sparcom.data.batching import length_batches
from sparcom.data.formatting import check_tokenizer, pad_token_id, resolve_template
from sparcom.data.schema import InstructionRow, first_rows_per_category, read_rows
from sparcom.distributed import Ranks
from sparcom.errors import SparcomError
from sparcom.kinds import GROUP_TOKENS_KEY, count_key, group_key, instructions_key, tokens_key
from sparcom.models.loading import LoadedModel, tokenizer_fingerprint
from sparcom.models.sites import model_sites
from sparcom.outputs import prepare_output_dir
from sparcom.profile.sharing import Shard, batch_cost, round_bounds, round_share
from sparcom.progress import progress_bar
from sparcom.provenance import file_sha256, software_versions

GROUP_NLL_KEY = "groups/nll"
#: Manifest fields that do not change what the sums are (left out of the settings digest a checkpoint resumes under).
VOLATILE = ("complete", "wall_time_seconds", "world_size", "effects_sha256", "software")


@dataclass(frozen=True)
class AttributionPlan:
    """The rows, their scored examples, the whole run's batches (indices into the examples) and this run's share."""

    rows: list[InstructionRow]
    categories: list[str]
    examples: list[ScoredExample]
    batches: list[list[int]]
    mine: list[int]  # plan indices this run (shard) computes
    shard: Shard | None


def settings_digest(manifest: dict[str, Any]) -> str:
    kept = {k: v for k, v in manifest.items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


class Attributor:
    """Sums, for one loaded model, every attributed component's linear deactivation estimate per category."""

    def __init__(self, loaded: LoadedModel, settings: AttributionSettings,
                 means: Mapping[tuple[str, int], np.ndarray] | None = None) -> None:
        self.settings = settings.check()
        self.loaded, self.model, self.tokenizer = loaded, loaded.model, loaded.tokenizer
        check_tokenizer(self.tokenizer)
        self.template = resolve_template(self.tokenizer, settings.template)
        if settings.replacement == "mean" and not means:
            raise SparcomError("--replacement mean needs each neuron's mean activation; pass means={(kind, layer): "
                               "values} to sparcom.attribute")
        if settings.replacement == "zero" and means:
            raise SparcomError("means were given but --replacement is zero; pass replacement='mean' to use them")
        self.replacement = Replacement.mean(means) if settings.replacement == "mean" else Replacement()
        self.sites = model_sites(self.model)
        # Experts are removed, not replaced: with the mean replacement only the neurons are attributed (expert
        # neurons when their means were given).
        if self.replacement.name == "zero":
            kinds = ("neuron", "shared_neuron", "expert", "expert_neuron")
        else:
            kinds = ("neuron", "shared_neuron", *(["expert_neuron"] if any(k == "expert_neuron" for k, _ in means)
                                                  else []))
        self.targets = attributed_sites(self.sites, tuple(k for k in kinds if self.sites.sites_of(k)))
        self.replacement.check(self.targets)

    def plan(self, data: Path) -> AttributionPlan:
        s = self.settings
        rows = read_rows(data, categories=s.categories, require_output=True)
        rows, categories = first_rows_per_category(rows, s.per_category)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        examples = encode_scored(rows, self.tokenizer, self.template, s.system_prompt, limit, s.max_scored_tokens)
        batches: list[list[int]] = []
        for category in categories:
            members = [i for i, e in enumerate(examples) if e.category == category]
            batches += [[members[i] for i in batch]
                        for batch in length_batches([len(examples[i]) for i in members], s.batch_size)]
        shard = Shard.parse(s.shard) if s.shard is not None else None
        mine = shard.batches([[examples[i] for i in b] for b in batches]) if shard else list(range(len(batches)))
        return AttributionPlan(rows, categories, examples, batches, mine, shard)

    def manifest(self, data: Path, plan: AttributionPlan) -> dict[str, Any]:
        s = self.settings
        done = {i for index in plan.mine for i in plan.batches[index]}
        attributed = [row for i, row in enumerate(plan.rows) if i in done]
        return {
            "artifact": artifact.ARTIFACT, "format_version": artifact.FORMAT_VERSION, "complete": False,
            "model": {**self.loaded.info, **self.sites.description(self.model)},
            "tokenizer_hash": tokenizer_fingerprint(self.tokenizer),
            "dataset": {"path": str(data), "sha256": file_sha256(data)},
            "categories": list(plan.categories),
            "instruction_ids": {c: [r.id for r in attributed if r.category == c] for c in plan.categories},
            "scope": "response", "template_policy": s.template, "template": self.template,
            "system_prompt": s.system_prompt,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "replacement": self.replacement.name, "scale_bits": artifact.SCALE_BITS,
            **({"means_run": str(Path(s.means_run).resolve())} if s.means_run else {}),
            "kinds": sorted({kind for kind, _ in self.targets}), "max_scored_tokens": s.max_scored_tokens,
            "group_by": s.group_by,
            "groups": ({"labels": [r.id for r in plan.rows], "categories": [r.category for r in plan.rows],
                        "sources": [r.source for r in plan.rows]} if s.group_by == "instruction" else None),
            "batching_plan": {"batch_size": s.batch_size, "batches": len(plan.batches)},
            "shard": None if plan.shard is None else {
                "index": plan.shard.index, "count": plan.shard.count,
                "whole_rows_sha256": hashlib.sha256("\n".join(r.id for r in plan.rows).encode()).hexdigest()},
            "estimate": "Σ_t ∂NLL/∂A_t · (r − A_t) over every position, NLL summed over the scored response tokens",
            "software": software_versions(),
        }

    def zeros(self, plan: AttributionPlan) -> dict[str, torch.Tensor]:
        """Every sum of the run, zero (so each key exists even for a category without rows in this shard)."""
        sums: dict[str, torch.Tensor] = {}
        for category in plan.categories:
            for key in (tokens_key(category), instructions_key(category), artifact.nll_key(category)):
                sums[key] = torch.zeros((), dtype=torch.int64)
            for kind, layer in self.targets:
                sums[count_key(kind, category, layer)] = torch.zeros(self.sites.shape(kind, layer), dtype=torch.int64)
        if self.settings.group_by == "instruction":
            rows = len(plan.rows)
            sums[GROUP_TOKENS_KEY] = torch.zeros(rows, dtype=torch.int64)
            sums[GROUP_NLL_KEY] = torch.zeros(rows, dtype=torch.int64)
            for kind, layer in self.targets:
                sums[group_key(kind, layer)] = torch.zeros(rows, *self.sites.shape(kind, layer), dtype=torch.int64)
        return sums

    def add_batch(self, sums: dict[str, torch.Tensor], plan: AttributionPlan, scoring: ScoringPlan,
                  index: int) -> None:
        """One forward + backward; each row's estimates rounded once to fixed point and added to its sums."""
        batch = scoring.batches[index]
        found = batch_effects(self.model, self.targets, batch, self.replacement)
        rows = list(batch.rows)
        category = plan.examples[rows[0]].category
        tokens = torch.as_tensor(scoring.counts[rows], dtype=torch.int64)
        nll = torch.from_numpy(artifact.to_fixed(found.nll.numpy()))
        sums[tokens_key(category)] += tokens.sum()
        sums[instructions_key(category)] += len(rows)
        sums[artifact.nll_key(category)] += nll.sum()
        grouped = self.settings.group_by == "instruction"
        at = torch.as_tensor(rows, dtype=torch.int64)
        if grouped:
            sums[GROUP_TOKENS_KEY].index_add_(0, at, tokens)
            sums[GROUP_NLL_KEY].index_add_(0, at, nll)
        for (kind, layer), values in found.effects.items():
            fixed = torch.from_numpy(artifact.to_fixed(values.numpy()))  # [B, I] ([B, E, I] for expert neurons)
            sums[count_key(kind, category, layer)] += fixed.sum(0)
            if grouped:
                sums[group_key(kind, layer)].index_add_(0, at, fixed)

    def run(self, data: str | Path, out: str | Path, ranks: Ranks, resume: bool = False, overwrite: bool = False,
            progress: bool = True) -> artifact.AttributionRun:
        """Attribute the rows of ``data`` into ``out`` (rank 0 writes; every rank returns the run)."""
        started = time.perf_counter()
        data, out = Path(data), Path(out)
        with ranks.step("reading the data"):
            plan = self.plan(data)
            manifest = self.manifest(data, plan)
            digest = settings_digest(manifest)
        ranks.same(digest, "settings, data or model files", "comparing the ranks' settings")
        with ranks.step("opening the run directory"):
            opened = self._open(out, resume, overwrite, manifest, digest) if ranks.is_main else None
        opened = ranks.broadcast(opened, "opening the run directory")
        if opened == "finished":
            return artifact.load_attribution(out)
        start, elapsed, created = opened
        sums = self.zeros(plan)
        if ranks.is_main and start:
            saved, _ = artifact.load_sums(out / artifact.CHECKPOINT_FILE)
            sums = {key: torch.from_numpy(value) for key, value in saved.items()}
        scoring = ScoringPlan.build(plan.examples, plan.batches, pad_token_id(self.tokenizer))
        mine = plan.mine
        costs = [batch_cost([plan.examples[i] for i in plan.batches[b]]) for b in mine]
        rounds = round_bounds(len(mine), start, self.settings.checkpoint_every * ranks.world_size)
        try:
            with progress_bar("batches", enabled=progress and ranks.is_main) as bar:
                task = bar.add_task("attributing", total=len(mine), completed=start)
                for begin, end in rounds:
                    error = None
                    try:
                        for position in round_share(costs, begin, end, ranks.rank, ranks.world_size):
                            self.add_batch(sums, plan, scoring, mine[position])
                            bar.update(task, advance=1)
                    except Exception as exc:
                        error = exc
                    ranks.agree(error, f"attributing batches {begin + 1}-{end} of {len(mine)}")
                    total = ranks.sum_counts(sums, "summing the attribution")
                    if end < len(mine) and ranks.is_main:
                        artifact.write_sums_atomic(out / artifact.CHECKPOINT_FILE, total, progress={
                            "settings_digest": digest, "batches_done": end,
                            "elapsed_seconds": elapsed + time.perf_counter() - started})
                        created = False
        except BaseException:
            if ranks.is_main and created and ranks.world_size == 1:
                shutil.rmtree(out, ignore_errors=True)
            raise
        return self._finish(out, manifest, ranks.sum_counts(sums, "summing the attribution"),
                            elapsed + time.perf_counter() - started, ranks)

    def _open(self, out: Path, resume: bool, overwrite: bool, manifest: dict[str, Any], digest: str):
        """(first batch, elapsed seconds, whether this run created ``out``), or "finished" to return the run."""
        do_resume = prepare_output_dir(out, resume, overwrite)
        if do_resume:
            checkpoint = out / artifact.CHECKPOINT_FILE
            if checkpoint.is_file():
                _, progress = artifact.load_sums(checkpoint)
                if not progress or progress.get("settings_digest") != digest:
                    raise SparcomError(f"{out}: the checkpoint was made with other settings, model or data; resume "
                                       "with the same arguments or use --overwrite")
                return progress["batches_done"], progress["elapsed_seconds"], False
            if artifact.is_attribution_run(out) and (out / artifact.EFFECTS_FILE).is_file():
                previous = artifact.load_attribution(out)
                if settings_digest(previous.manifest) != digest:
                    raise SparcomError(f"{out}: holds a finished attribution run with other settings; use "
                                       "--overwrite or another --out")
                return "finished"
        created = not out.exists() or overwrite
        if out.exists() and overwrite:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        return 0, 0.0, created

    def _finish(self, out: Path, manifest: dict[str, Any], sums: dict[str, torch.Tensor], wall: float,
                ranks: Ranks) -> artifact.AttributionRun:
        manifest.update(complete=True, wall_time_seconds=round(wall, 3), world_size=ranks.world_size,
                        scored_tokens={c: int(sums[tokens_key(c)]) for c in manifest["categories"]})
        with ranks.step("writing the run"):
            if ranks.is_main:
                artifact.write_attribution(out, sums, manifest)
                (out / artifact.CHECKPOINT_FILE).unlink(missing_ok=True)
        return artifact.AttributionRun(out, {k: v.numpy() for k, v in sums.items()}, manifest)

