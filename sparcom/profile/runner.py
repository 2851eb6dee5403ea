"""The counting forward: encode rows, batch them, run the decoder stack with counting hooks, save the run.

Only the decoder stack runs (no LM head): the counts need the MLP activations, nothing after them. Counters
live on each layer's device and are updated inside the hooks, so memory does not grow with the dataset.
In Mixture-of-Experts models each layer is dense (``neuron`` counts) or MoE (``expert`` and ``expert_neuron``
counts from inside the routed experts module, plus ``shared_neuron`` for a shared expert).
Progress is checkpointed atomically every few batches; a resumed run replays the same batch plan from where
the checkpoint stopped and ends with exactly the counts of an uninterrupted run. An interrupt (Ctrl-C, SIGTERM)
stops the run after the current batch with a fresh checkpoint; a second one stops it at once (the last checkpoint
stays). A run folder is written by one process at a time (:func:`sparcom.outputs.lock`); a run that fails before
its first checkpoint removes the folder it created. Non-finite activations (NaN, inf) are refused with the layer
they first appear in, since a NaN compares as "not active" and would be counted silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparcom.artifacts import run as artifacts
from sparcom.data.batching import Batch, collate, plan_batches
from sparcom.data.formatting import FormatSettings, check_tokenizer, encode_row, pad_token_id, resolve_template
from sparcom.data.schema import InstructionRow, first_rows_per_category, read_rows
from sparcom.distributed import Ranks, join
from sparcom.errors import SparcomError
from sparcom.interrupts import Interrupted, deferred, interrupted
from sparcom.kinds import (
    GROUP_TOKENS_KEY,
    KIND_TABLE,
    bootstrap_key,
    count_key,
    group_key,
    instructions_key,
    is_sum_key,
    tokens_key,
)
from sparcom.models.loading import LoadedModel, parameter_fingerprint, tokenizer_fingerprint
from sparcom.models.sites import get_path, model_sites
from sparcom.outputs import lock, prepare_output_dir, write_problem
from sparcom.profile.counters import CountStore
from sparcom.profile.hooks import (
    NON_FINITE_ADVICE,
    BatchGroups,
    CountedBatch,
    CountedRows,
    CurrentBatch,
    ExpertCounter,
    make_count_hook,
    sum_counters,
)
from sparcom.profile.settings import ProfileSettings
from sparcom.profile.sharing import Shard, batch_cost, round_bounds, round_share
from sparcom.progress import progress_bar
from sparcom.provenance import MEASUREMENT, file_sha256, get_field, software_versions


def replicate_weights(row_id: str, replicates: int, seed: int) -> torch.Tensor:
    """Poisson(1) bootstrap weights of one instruction, fixed by its id and the seed (so runs merge)."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return torch.poisson(torch.ones(replicates), generator=generator)


@dataclass(frozen=True)
class GroupPlan:
    """The groups below the category of a run: one per instruction, or one per (category, source) half."""

    by: str
    labels: tuple[str, ...]
    categories: tuple[str, ...]
    sources: tuple[str, ...]
    of_row: tuple[int, ...]  # each selected row's group index

    @classmethod
    def of(cls, rows: Sequence[InstructionRow], by: str, keep: set[int] | None = None) -> GroupPlan | None:
        """Groups in first-seen row order; None for ``category`` (no counts below the category).

        With ``keep`` (a shard's row indices) only those rows have a group (the others get −1).
        """
        if by == "category":
            return None
        index: dict[str, int] = {}
        labels, categories, sources, of_row = [], [], [], []
        for position, row in enumerate(rows):
            if keep is not None and position not in keep:
                of_row.append(-1)
                continue
            label = row.id if by == "instruction" else f"{row.category}/{row.source}"
            if label not in index:
                index[label] = len(labels)
                labels.append(label)
                categories.append(row.category)
                sources.append(row.source)
            of_row.append(index[label])
        return cls(by, tuple(labels), tuple(categories), tuple(sources), tuple(of_row))

    def manifest(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "categories": list(self.categories), "sources": list(self.sources)}

    def batch(self, batch: Batch) -> BatchGroups:
        """Each counted row's slot among the batch's groups, and the slots' group indices."""
        return BatchGroups.of(batch.counted, [self.of_row[e.row_index] for e in batch.examples], len(self.labels))


#: Beyond the measurement (:data:`sparcom.provenance.MEASUREMENT`), what fixes a run's batch plan and counts.
RUN_PLAN_FIELDS: tuple[str, ...] = ("dataset", "categories", "instruction_ids", "batching_plan", "bootstrap",
                                    "moe_counting", "groups")


def settings_digest(manifest: dict[str, Any]) -> str:
    """Identity of everything that fixes the batch plan and the counts (a checkpoint resumes only under it)."""
    subset = {dotted: get_field(manifest, dotted) for dotted in MEASUREMENT}
    subset.update({name: manifest.get(name) for name in RUN_PLAN_FIELDS})
    return hashlib.sha256(json.dumps(subset, sort_keys=True).encode()).hexdigest()


class Profiler:
    """Counts, for one loaded model, active MLP neurons per category on the counted tokens."""

    def __init__(self, loaded: LoadedModel, settings: ProfileSettings) -> None:
        settings.check()
        self.loaded = loaded
        self.settings = settings
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        check_tokenizer(self.tokenizer)
        self.template = resolve_template(self.tokenizer, settings.template)
        self.sites = model_sites(self.model)
        self.expert_counters: list[ExpertCounter] = []
        self.store = CountStore()
        self.board = CurrentBatch()
        self.groups: GroupPlan | None = None

    def encode(self, rows: Sequence[InstructionRow]):
        with_response = FormatSettings(self.settings.scope).needs_response
        examples = [encode_row(row, i, self.tokenizer, self.template, self.settings.system_prompt, with_response)
                    for i, row in enumerate(rows)]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for example, row in zip(examples, rows, strict=True):
            if limit and len(example) > limit:
                raise SparcomError(f"row {row.id!r}: {len(example)} tokens (formatted, scope {self.settings.scope}) "
                                   f"exceed the model's limit of {limit} positions; shorten the row or remove it "
                                   "from the dataset (sparcom never cuts a row)")
        return examples

    def _hooks(self, categories: Sequence[str]) -> list:
        """Create every counter (so each key exists even for a category with no tokens there) and attach hooks."""
        handles = []
        replicates = self.settings.bootstrap
        kinds = [k for k in KIND_TABLE.values() if k.name != "expert_neuron" or self.settings.expert_neurons != "off"]
        if self.groups is not None:
            self.store.zeros(GROUP_TOKENS_KEY, (len(self.groups.labels),))
            for kind, layers in self.sites.shapes(tuple(k.name for k in kinds)).items():
                for layer, shape in layers.items():
                    self.store.zeros(group_key(kind, layer), (len(self.groups.labels), *shape),
                                     self.sites.site(kind, layer).device, dtype=torch.int32)
        for kind in [k.name for k in kinds if not k.routed]:  # activation sites: one counting hook each
            for layer, site in self.sites.sites_of(kind).items():
                for category in categories:
                    self.store.zeros(count_key(kind, category, layer), (site.width,), site.device)
                    sum_counters(self.store, kind, category, layer, (site.width,), site.device)
                hook = make_count_hook(self.store, self.board, kind, layer, site.width, replicates)
                handles.append(site.module.register_forward_hook(hook))
        self.expert_counters = []
        routed = [k.name for k in kinds if k.routed]
        for site in self.sites.moe.values():
            for category in categories:
                for kind in routed:
                    shape = self.sites.shape(kind, site.layer)
                    key = count_key(kind, category, site.layer)
                    self.store.zeros(key, shape, site.device)
                    if replicates:
                        self.store.zeros(bootstrap_key(key), (replicates, *shape), site.device)
                    if kind == "expert_neuron":
                        sum_counters(self.store, kind, category, site.layer, shape, site.device)
            counter = ExpertCounter(self.store, self.board, site, replicates, self.settings.expert_neurons)
            self.expert_counters.append(counter)
            handles.extend(counter.attach())
        return handles

    def _counted(self, batch: Batch, per_example: torch.Tensor | None) -> CountedBatch:
        """The counted rows of the batch and, with bootstrap, each row's replicate weights [R, n]."""
        rows = CountedRows.of(batch.category, batch.counted)
        if per_example is not None:
            example_of_token = torch.arange(len(batch.examples)).repeat_interleave(batch.counted.shape[1])
            rows.replicate_weights = per_example[example_of_token[rows.rows]].T.contiguous()  # [R, n]
        below = self.groups.batch(batch) if self.groups is not None else None
        # Every counted row of a batch belongs to a group: the category's counts are the sum of the groups'.
        return CountedBatch([rows], tokens=batch.counted.numel(), below=below,
                            summed_group=0 if below is not None else None)

    def _count_batch(self, batch: Batch, rows: Sequence[InstructionRow]) -> None:
        per_example = None
        if self.settings.bootstrap:  # Poisson weights of each instruction [B, R], fixed by its id
            per_example = torch.stack([replicate_weights(rows[e.row_index].id, self.settings.bootstrap,
                                                         self.settings.bootstrap_seed) for e in batch.examples])
        counted = self._counted(batch, per_example)
        device = self.model.get_input_embeddings().weight.device
        self.board.current = counted
        try:
            with torch.inference_mode():
                output = self.sites.backbone(
                    input_ids=batch.input_ids.to(device),
                    attention_mask=batch.attention_mask.to(device),
                    position_ids=batch.position_ids.to(device),
                    use_cache=False,
                )
        finally:
            self.board.current = None
        self._check_finite(output, batch, rows)
        category = batch.category
        self.store.add(tokens_key(category), int(batch.counted.sum()))
        self.store.add(instructions_key(category), len(batch.examples))
        if counted.below is not None:
            below = counted.below
            per_slot = torch.zeros(below.groups.numel(), dtype=torch.int64).index_add_(
                0, below.slots[below.slots >= 0], torch.ones(int((below.slots >= 0).sum()), dtype=torch.int64))
            self.store[GROUP_TOKENS_KEY].index_add_(0, below.groups, per_slot)
        if per_example is not None:
            weights = counted.groups[0].replicate_weights
            self.store.add(bootstrap_key(tokens_key(category)), weights.sum(1).round().to(torch.int64))
            self.store.add(bootstrap_key(instructions_key(category)), per_example.sum(0).round().to(torch.int64))

    def _check_finite(self, output, batch: Batch, rows: Sequence[InstructionRow]) -> None:
        """Refuse a batch whose real tokens end with non-finite hidden states (one [B, T] reduction per batch).

        A NaN or inf anywhere in the decoder stack reaches the last hidden state of its token (every later
        projection mixes it in), so this one check covers every MLP; when it fires, :meth:`_locate_non_finite`
        re-runs the batch to name the layer.
        """
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        sums = hidden.sum(-1, dtype=torch.float32)  # [B, T]: NaN and inf survive the sum
        real = batch.attention_mask.to(sums.device).bool()
        if bool(torch.isfinite(sums).logical_or_(~real).all()):
            return
        raise SparcomError(self._locate_non_finite(batch, rows))

    def _locate_non_finite(self, batch: Batch, rows: Sequence[InstructionRow]) -> str:
        """Where non-finite values first appear in a batch: the first layer whose MLP activations (or, before
        those, whose output) hold NaN/inf on a real token; the message of the refusal."""
        real = batch.attention_mask.reshape(-1).bool()
        found: dict[tuple[int, int], tuple[str, int, str]] = {}  # (layer, 0 MLP / 1 layer output) → what, row, value

        def watch(layer: int, order: int, what: str):
            def hook(module, args, output) -> None:
                tensor = output[0] if isinstance(output, tuple) else output
                if not isinstance(tensor, torch.Tensor) or (layer, order) in found:
                    return
                flat = tensor.reshape(real.numel(), -1)[real.to(tensor.device)]
                bad = ~torch.isfinite(flat)
                if bool(bad.any()):
                    position = int(real.nonzero()[int(bad.any(-1).nonzero()[0])])
                    value = "NaN" if bool(torch.isnan(flat[bad]).any()) else "inf"
                    found[(layer, order)] = (what, position // batch.input_ids.shape[1], value)
            return hook

        handles = [site.module.register_forward_hook(watch(site.layer, 0, "MLP activations"))
                   for sites in (self.sites.dense, self.sites.shared) for site in sites.values()]
        handles += [site.experts.register_forward_hook(watch(site.layer, 0, "routed experts' output"))
                    for site in self.sites.moe.values()]
        layers = get_path(self.sites.backbone, self.sites.family.layers)
        handles += [layer.register_forward_hook(watch(index, 1, "decoder layer's output")) for index, layer in enumerate(layers)]
        device = self.model.get_input_embeddings().weight.device
        try:
            with torch.inference_mode():
                self.sites.backbone(input_ids=batch.input_ids.to(device),
                                    attention_mask=batch.attention_mask.to(device),
                                    position_ids=batch.position_ids.to(device), use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        if not found:
            return f"non-finite values (NaN/inf) in the model's last hidden states; {NON_FINITE_ADVICE}"
        (layer, _), (what, example, value) = min(found.items())
        row = rows[batch.examples[example].row_index]
        return f"layer {layer}: non-finite values ({value}) in the {what} of row {row.id!r}; {NON_FINITE_ADVICE}"

    def run(
        self,
        data: str | Path,
        out: str | Path,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        on_batch_end: Callable[[int], None] | None = None,
        ranks: Ranks | None = None,
    ) -> artifacts.ProfileRun:
        """Profile the dataset at ``data`` into the run directory ``out`` (one process at a time per folder).

        Under torchrun (``ranks``: the joined job; by default the job this process is part of) each rank counts its
        share of every round of batches, the counts are summed over the ranks at each checkpoint and at the end,
        and rank 0 writes the run (holding its lock); every rank returns it.
        """
        ranks = ranks or join(str(next(self.model.parameters()).device))
        with contextlib.ExitStack() as held:
            with ranks.step("locking the run directory"):
                if ranks.is_main:
                    held.enter_context(lock(out))
            return self._run(Path(data), Path(out), resume, overwrite, progress, on_batch_end, ranks)

    def _run(self, data: Path, out: Path, resume: bool, overwrite: bool, progress: bool,
             on_batch_end: Callable[[int], None] | None, ranks: Ranks) -> artifacts.ProfileRun:
        started = time.perf_counter()
        settings = self.settings
        with ranks.step("reading the data"):
            rows, categories, plan, manifest = self._plan(data)
            manifest.update(world_size=ranks.world_size, distributed=ranks.describe())
            digest = settings_digest(manifest)
        ranks.same(digest, "settings, data or model files", "comparing the ranks' settings")
        padding_side = manifest["batching_plan"]["padding_side"]
        pad_id = pad_token_id(self.tokenizer)
        for category in categories:
            for key in (tokens_key(category), instructions_key(category)):
                self.store.zeros(key, ())
                if settings.bootstrap:
                    self.store.zeros(bootstrap_key(key), (settings.bootstrap,))
        handles = self._hooks(categories)  # before a checkpoint loads: counters keep their devices and dtypes
        try:
            return self._count_all(out, rows, categories, plan, manifest, digest, resume, overwrite, started,
                                   pad_id, padding_side, progress, on_batch_end, ranks)
        finally:
            for handle in handles:
                handle.remove()

    def _count_all(self, out: Path, rows, categories, plan, manifest, digest, resume: bool, overwrite: bool,
                   started: float, pad_id: int, padding_side: str, progress: bool, on_batch_end, ranks: Ranks,
                   ) -> artifacts.ProfileRun:
        settings = self.settings
        with ranks.step("opening the run directory"):
            opened = self._open(out, resume, overwrite, manifest, digest, len(plan)) if ranks.is_main else None
        opened = ranks.broadcast(opened if ranks.is_main else None, "opening the run directory")
        if isinstance(opened, artifacts.ProfileRun):  # resuming a finished run returns it unchanged
            return opened
        start_batch, elapsed_before, real, padded = opened
        self._saved = start_batch  # the batches the checkpoint on disk holds, for the message if the run stops
        if not ranks.is_main:  # rank 0 alone holds the checkpoint's counts and totals (they are sums)
            real = padded = 0
        try:
            costs = [batch_cost(batch) for batch in plan]
            rounds = round_bounds(len(plan), start_batch, settings.checkpoint_every * ranks.world_size)
            shares = [round_share(costs, begin, end, ranks.rank, ranks.world_size) for begin, end in rounds]
            already = sum(len(b) for b in plan[:start_batch]) if ranks.world_size == 1 else 0
            mine = sum(len(plan[i]) for share in shares for i in share)
            label = "profiling" if ranks.world_size == 1 else f"profiling (rank 0 of {ranks.world_size})"
            bar = progress_bar("instructions", "{task.fields[tps]}", enabled=progress and ranks.is_main)
            # One process stops after the batch it is counting when interrupted (a checkpoint first); under
            # torchrun an interrupt is not agreed between ranks: the launcher stops the job, checkpoints stay.
            stopping = deferred() if ranks.world_size == 1 else contextlib.nullcontext(None)
            with stopping as stop, bar:
                task = bar.add_task(label, total=already + mine, completed=already, tps="")
                window_start, window_tokens = time.perf_counter(), 0
                for (begin, end), share in zip(rounds, shares, strict=True):
                    error = None
                    try:
                        for index in share:
                            batch = collate(plan[index], settings.scope, pad_id, padding_side)
                            self._count_batch(batch, rows)
                            real += batch.real_tokens
                            padded += batch.padded_tokens
                            window_tokens += batch.real_tokens
                            rate = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                            bar.update(task, advance=len(batch.examples), tps=f"{rate:,.0f} tok/s")
                            if stop and index + 1 < len(plan):  # one process: its share is every batch, in order
                                self._checkpoint(ranks, out, digest, index + 1,
                                                 elapsed_before + time.perf_counter() - started, real, padded)
                                raise Interrupted(stop.signal_name)
                            if on_batch_end is not None:
                                on_batch_end(index + 1)
                    except Exception as exc:  # agreed below: every rank stops with the failing rank's message
                        error = exc
                    ranks.agree(error, f"counting batches {begin + 1}-{end} of {len(plan)}")
                    if end < len(plan):
                        self._checkpoint(ranks, out, digest, end, elapsed_before + time.perf_counter() - started,
                                         real, padded)
            return self._finish(out, manifest, categories, elapsed_before + time.perf_counter() - started, real,
                                padded, ranks)
        except BaseException as exc:
            if ranks.world_size > 1:  # the ranks agreed on one message (sparcom.distributed); leave it as it is
                raise
            raise self._stopped(exc, out, len(plan), self._created) from None

    def _stopped(self, exc: BaseException, out: Path, batches: int, created: bool) -> BaseException:
        """``exc`` as what to raise: one line saying what stopped the run and what ``out`` keeps."""
        kept = self._kept(out, batches, created)
        if isinstance(exc, KeyboardInterrupt):
            return interrupted(exc, kept)
        if isinstance(exc, SparcomError):
            return SparcomError(f"{exc}; {kept}")
        problem = write_problem(exc)
        if problem is not None:
            return SparcomError(f"cannot write {out}: {problem}; {kept}")
        return exc

    def _finish(self, out: Path, manifest: dict[str, Any], categories: list[str], wall: float, real: int, padded: int,
                ranks: Ranks) -> artifacts.ProfileRun:
        """Sum the counts over the ranks; rank 0 writes the counts and the finished manifest, then drops the
        checkpoint."""
        settings = self.settings
        tensors = ranks.sum_counts(self.store.state_dict(), "summing the counts")
        real, padded = ranks.sum_ints([real, padded], "summing the counts")
        self._padding = {"real_tokens": real, "padded_tokens": padded,
                         "waste": round(1 - real / padded, 6) if padded else 0.0}
        manifest.update(
            counted_tokens={c: int(tensors[tokens_key(c)]) for c in categories},
            instructions={c: int(tensors[instructions_key(c)]) for c in categories},
            padding=self._padding,
            wall_time_seconds=round(wall, 3),
            tokens_per_second=round(self._padding["real_tokens"] / wall, 1) if wall else None,
            complete=True,
        )
        if self.expert_counters and settings.expert_neurons != "off":
            per_rank = ranks.gather({str(c.layer): c.source for c in self.expert_counters}, "summing the counts")
            manifest["expert_neuron_sources"] = {layer: _joint_source([r[layer] for r in per_rank])
                                                 for layer in per_rank[0]}
        with ranks.step("writing the run"):
            if ranks.is_main:
                artifacts.write_run(out, tensors, manifest)  # the counts, then the manifest with their sha256
                (out / artifacts.CHECKPOINT_FILE).unlink(missing_ok=True)
        counts, sums = artifacts.split_sums({key: value.numpy() for key, value in tensors.items()})
        return artifacts.ProfileRun(out, counts, manifest, sums)

    def _kept(self, out: Path, batches: int, created: bool) -> str:
        """What a run that stopped early leaves in ``out``, and how to go on (removing a folder it made in vain)."""
        if _finished(out):
            return f"{out} holds the finished run"
        if (out / artifacts.CHECKPOINT_FILE).is_file():
            return (f"{out} keeps a checkpoint after batch {self._saved} of {batches}: continue with the same "
                    "command and --resume")
        if created:
            shutil.rmtree(out, ignore_errors=True)
            return f"nothing was kept ({out} is removed; no checkpoint had been written)"
        return f"{out} keeps no checkpoint yet: --resume starts from the first batch"

    def check_rows(self, data: Path) -> None:
        """Read and encode the rows this run would count: what :func:`sparcom.api.profile` checks on the model's
        skeleton (:func:`sparcom.models.loading.preview_model`) before the weights load, e.g. a row that is longer
        than the model's positions."""
        self._rows(data)

    def _rows(self, data: Path) -> tuple[list[InstructionRow], list[str], list]:
        """The rows this run counts, their categories and their encodings (a row too long is refused here)."""
        settings = self.settings
        rows = read_rows(data, categories=settings.categories,
                         require_output=FormatSettings(settings.scope).needs_response)
        rows, categories = first_rows_per_category(rows, settings.per_category)
        return rows, categories, self.encode(rows)

    def _plan(self, data: Path) -> tuple[list[InstructionRow], list[str], list[list], dict[str, Any]]:
        """The rows (all of them: batches index into them), categories, this run's batches and its manifest.

        A shard keeps the batches of the whole run's plan that :class:`Shard` gives it — the same batches a whole
        run forms, so the shards' counts add up to the whole run's exactly.
        """
        settings = self.settings
        rows, categories, examples = self._rows(data)
        plan = plan_batches(examples, categories, settings.batch_size, settings.token_budget)
        padding_side = settings.padding_side or getattr(self.tokenizer, "padding_side", "right") or "right"
        shard_record = None
        if settings.shard is None:
            self.groups = GroupPlan.of(rows, settings.group_by)
            counted = rows
        else:
            shard = Shard.parse(settings.shard)
            whole_batches = len(plan)
            plan = [plan[i] for i in shard.batches(plan)]
            keep = {example.row_index for batch in plan for example in batch}
            counted = [row for i, row in enumerate(rows) if i in keep]
            self.groups = GroupPlan.of(rows, settings.group_by, keep)
            whole = GroupPlan.of(rows, settings.group_by)
            position = {label: i for i, label in enumerate(whole.labels)} if whole is not None else {}
            shard_record = {
                "index": shard.index, "count": shard.count, "whole_batches": whole_batches,
                "whole_rows_sha256": hashlib.sha256("\n".join(r.id for r in rows).encode()).hexdigest(),
                # where each of this shard's groups sits in the whole run, so merged shards keep the whole's order
                "group_positions": None if whole is None else [position[label] for label in self.groups.labels],
            }
        manifest = self._manifest(data, counted, categories, padding_side, plan)
        manifest["shard"] = shard_record
        return rows, categories, plan, manifest

    def _open(self, out: Path, resume: bool, overwrite: bool, manifest: dict[str, Any], digest: str, batches: int):
        """Rank 0: prepare ``out``; (start batch, elapsed, real, padded tokens), or the finished run to return."""
        do_resume = prepare_output_dir(out, resume, overwrite)
        state = None
        if do_resume:
            state = self._load_checkpoint(out, digest)
            if state is None and _finished(out):
                previous = artifacts.load_run(out)
                if settings_digest(previous.manifest) != digest:
                    raise SparcomError(f"{out}: holds a finished run with other settings; use --overwrite or another --out")
                return previous
        self._created = created = not (do_resume and out.exists())
        self._saved = state[0] if state is not None else 0
        if created and out.exists():
            shutil.rmtree(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            for stale in (artifacts.PROGRESS_FILE, artifacts.CHECKPOINT_FILE + ".tmp", artifacts.COUNTS_FILE + ".tmp",
                          artifacts.SUMS_FILE + ".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    (out / stale).unlink()  # left by an older sparcom or a killed write
            artifacts.write_json_atomic(out / artifacts.MANIFEST_FILE, {**manifest, "complete": False})
        except BaseException as exc:
            raise self._stopped(exc, out, batches, created) from None
        return state if state is not None else (0, 0.0, 0, 0)

    def _checkpoint(self, ranks: Ranks, out: Path, digest: str, batches_done: int, elapsed: float, real: int,
                    padded: int) -> None:
        """Sum the counts over the ranks; rank 0 writes them as the checkpoint of the first ``batches_done``."""
        tensors = ranks.sum_counts(self.store.state_dict(), "summing a checkpoint")
        real, padded = ranks.sum_ints([real, padded], "summing a checkpoint")
        with ranks.step("writing a checkpoint"):
            if ranks.is_main:
                self._save_checkpoint(out, digest, batches_done, elapsed, real, padded, tensors)
        self._saved = batches_done

    def _manifest(self, data: Path, rows, categories, padding_side, plan) -> dict[str, Any]:
        s = self.settings
        model_info = {**self.loaded.info, **self.sites.description(self.model)}
        moe = {"moe_counting": {"expert_neurons": s.expert_neurons != "off",
                                "expert_neuron_method": s.expert_neurons}} if self.sites.moe else {}
        return {
            **moe,
            "format_version": artifacts.FORMAT_VERSION,
            "complete": False,
            "model": model_info,
            "tokenizer_hash": tokenizer_fingerprint(self.tokenizer),
            "dataset": {"path": str(data), "sha256": file_sha256(data), "rows_used": len(rows)},
            "categories": categories,
            "instruction_ids": {c: [r.id for r in rows if r.category == c] for c in categories},
            "instructions": {c: sum(r.category == c for r in rows) for c in categories},
            "scope": s.scope,
            "template_policy": s.template,
            "template": self.template,
            "system_prompt": s.system_prompt,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "device": str(next(self.model.parameters()).device),
            "device_map": self.loaded.info.get("device_map"),
            "layer_devices": sorted({str(site.device) for site in self.sites.dense.values()}),
            "batching_plan": {"batch_size": s.batch_size, "token_budget": s.token_budget,
                              "padding_side": padding_side, "per_category": s.per_category, "batches": len(plan)},
            "bootstrap": {"replicates": s.bootstrap, "seed": s.bootstrap_seed},
            "group_by": s.group_by,
            "groups": self.groups.manifest() if self.groups is not None else None,
            "software": software_versions(),
        }

    def _save_checkpoint(self, out: Path, digest: str, batches_done: int, elapsed: float, real: int, padded: int,
                         tensors: dict[str, torch.Tensor]):
        """The counters and the progress record in one atomically replaced file (they can never disagree)."""
        artifacts.write_counts_atomic(out / artifacts.CHECKPOINT_FILE, tensors, progress={
            "settings_digest": digest, "batches_done": batches_done, "elapsed_seconds": elapsed,
            "real_tokens": real, "padded_tokens": padded})

    def _load_checkpoint(self, out: Path, digest: str):
        path = out / artifacts.CHECKPOINT_FILE
        if not path.is_file():
            return None
        checkpoint, progress = artifacts.load_checkpoint(path)
        if progress.get("settings_digest") != digest:
            raise SparcomError(f"{out}: the checkpoint was made with other settings, model or data; "
                               "resume with the same arguments or use --overwrite")
        if not any(map(is_sum_key, checkpoint)) and any(map(is_sum_key, self.store.keys())):
            raise SparcomError(f"{out}: the checkpoint was written by an older sparcom without activation sums, so a "
                               "resumed run would miss the sums of its first batches; start again with --overwrite")
        self.store.load_state_dict({key: torch.from_numpy(value) for key, value in checkpoint.items()})
        return (progress["batches_done"], progress["elapsed_seconds"], progress["real_tokens"],
                progress["padded_tokens"])


def _finished(out: Path) -> bool:
    """Whether ``out`` holds a finished run (its manifest says complete)."""
    try:
        return bool(json.loads((out / artifacts.MANIFEST_FILE).read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def _joint_source(sources: list[str | None]) -> str | None:
    """How a layer's expert neurons were counted over all ranks (ranks that counted nothing say nothing)."""
    distinct = list(dict.fromkeys(s for s in sources if s is not None))
    counted = [s for s in distinct if s != "nothing counted yet"]
    if not distinct:
        return None
    return " | ".join(counted) if counted else distinct[0]


def wrap_model(model: torch.nn.Module, tokenizer, name: str = "in-memory") -> LoadedModel:
    """Wrap an already loaded model and tokenizer (e.g. in tests or notebooks) for :func:`profile`."""
    info = {"name_or_path": name, "source": "object", "resolved_path": None, "gguf_file": None,
            "revision": None, "fingerprint": parameter_fingerprint(model)}
    return LoadedModel(model.eval(), tokenizer, info)


__all__ = ["ProfileSettings", "Profiler", "wrap_model"]
