"""Supervised fine-tuning of a base model on instruction rows: LoRA (default) or full, loss on the response only.

Training is deterministic for a seed on CPU with a fixed number of threads: the LoRA initialisation, the order
of examples (a seeded shuffle per epoch) and dropout all draw from the seed. The optimizer is AdamW with a
linear warm-up over the first :data:`WARMUP_FRACTION` of the steps and a linear decay to zero; gradients are
clipped to norm :data:`MAX_GRAD_NORM`. The loss of a step is the mean cross-entropy over all response tokens of
its micro-batches (``--grad-accum`` of them), so a step's weight does not depend on how it is split.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparcom.data.formatting import check_tokenizer, pad_token_id, resolve_template
from sparcom.errors import SparcomError
from sparcom.interrupts import interrupted
from sparcom.models.loading import LoadedModel, tokenizer_fingerprint
from sparcom.models.lora import ADAPTER_WEIGHTS
from sparcom.outputs import lock
from sparcom.progress import progress_bar
from sparcom.provenance import software_versions
from sparcom.tune.examples import (
    Batch,
    TrainExample,
    batch_loss_sum,
    collate,
    encode_examples,
    iterate_steps,
)
from sparcom.tune.output import ADAPTER_SUBDIR, atomic_folder, write_record
from sparcom.tune.rows import TrainingRows
from sparcom.tune.settings import TuneSettings
from sparcom.zoo.catalog import load_model

WARMUP_FRACTION = 0.05
MAX_GRAD_NORM = 1.0
RECORD_FORMAT = 1


@dataclass
class TuneResult:
    """What a run did; ``record`` is what was written to ``sparcom-tune.json``."""

    out: Path
    record: dict[str, Any]
    losses: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# Training


def _schedule(total_steps: int) -> Callable[[int], float]:
    warmup = max(1, round(WARMUP_FRACTION * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor



def base_reference(spec: str, info: dict[str, Any]) -> str:
    """How a record names the base: built-in names and hub ids as given, local paths made absolute."""
    if info.get("source") in ("builtin", "hub"):
        return spec
    return str(Path(spec).expanduser().resolve())


class _Progress:
    """A rich progress bar on stderr with the running loss and throughput (or nothing when quiet)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console

        self.bar = progress_bar("steps", "loss {task.fields[loss]}", "{task.fields[speed]} tok/s",
                                console=Console(stderr=True))
        self.task = self.bar.add_task("tune", total=total, loss="…", speed="…")
        self.bar.start()

    def update(self, loss: float, speed: float) -> None:
        if self.enabled:
            self.bar.update(self.task, advance=1, loss=f"{loss:.4f}", speed=f"{speed:.0f}")

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()


def train(
    model,
    examples: Sequence[TrainExample],
    pad_id: int,
    settings: TuneSettings,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place (on whatever device it sits) on ``examples``; returns the loss curve and throughput."""
    n_batches = math.ceil(len(examples) / settings.batch_size)
    steps_per_epoch = math.ceil(n_batches / settings.grad_accum)
    total_steps = settings.max_steps if settings.max_steps is not None else steps_per_epoch * settings.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total_steps))
    torch.manual_seed(settings.seed)  # dropout draws from here
    model.train()
    losses: list[float] = []
    tokens = loss_tokens = 0
    started = time.perf_counter()
    bar = _Progress(total_steps, progress)
    try:
        for _step, _epoch, micro in iterate_steps([len(e) for e in examples], settings.batch_size, settings.grad_accum,
                                                  settings.seed, total_steps):
            batches: list[Batch] = [collate([examples[i] for i in indices], pad_id) for indices in micro]
            denominator = sum(b.loss_tokens for b in batches)
            step_loss = 0.0
            for batch in batches:
                loss = batch_loss_sum(model, batch) / denominator
                loss.backward()
                step_loss += float(loss.detach())
                tokens += batch.tokens
                loss_tokens += batch.loss_tokens
            if not math.isfinite(step_loss):
                raise SparcomError(f"training diverged at step {len(losses) + 1} (loss {step_loss}); lower --lr")
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            bar.update(step_loss, tokens / max(time.perf_counter() - started, 1e-9))
    finally:
        bar.close()
    model.eval()
    seconds = time.perf_counter() - started
    window = max(1, len(losses) // 10)
    return {
        "steps": len(losses),
        "steps_per_epoch": steps_per_epoch,
        "epochs_run": round(len(losses) / steps_per_epoch, 3),
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "train_seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_first_10pct": sum(losses[:window]) / window,
        "loss_last_10pct": sum(losses[-window:]) / window,
        "losses": [round(x, 6) for x in losses],
    }


def _command_line() -> str:
    import shlex

    return " ".join(shlex.quote(part) for part in ["sparcom", *sys.argv[1:]]) if sys.argv else "sparcom tune"


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class TuneJob:
    """Where and how a run trains (nothing here changes what it learns): the output folder and the runtime."""

    out: Path
    overwrite: bool = False
    dtype: str = "auto"
    device: str = "cpu"
    progress: bool = True
    command: str | None = None  # the command line recorded (default: this process's)
    log: Callable[[str], None] = _to_stderr


def fine_tune(base: str | LoadedModel, rows: TrainingRows, settings: TuneSettings, job: TuneJob) -> TuneResult:
    """Fine-tune ``base`` on ``rows`` and write a model folder to ``job.out`` (atomically); the settings, rows and
    ``out`` were checked by :func:`sparcom.api.tune`.

    ``base``: anything :func:`~sparcom.models.loading.load_model` accepts, or an already loaded model. With
    ``settings.merge`` (default) ``out`` holds the full tuned weights and tokenizer (plus ``adapter/`` for LoRA);
    without, the tokenizer and the adapter, whose record names the base. Either way ``sparcom-tune.json`` records
    base, data, command, seed, settings and results.
    """
    previous_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        with lock(job.out):  # a second tune into the same --out is refused at once, not after training
            return _tune(base, rows, settings, job)
    except KeyboardInterrupt as exc:
        kept = f"{job.out} is unchanged" if job.out.exists() else f"nothing was written to {job.out}"
        raise interrupted(exc, f"{kept}; tune keeps no checkpoints, so the same command trains again from step 1"
                          ) from None
    finally:
        torch.set_num_threads(previous_threads)


def _load_base(base: str | LoadedModel, settings: TuneSettings, job: TuneJob) -> tuple[LoadedModel, str]:
    """The loaded base and how the record names it; a --no-merge base must be loadable again by name."""
    if isinstance(base, LoadedModel):
        loaded, spec = base, str(base.info.get("name_or_path", "model"))
    else:
        loaded, spec = load_model(base, dtype=job.dtype, device=job.device), base
    if loaded.info.get("gguf_file"):
        from sparcom.tune.lora import strip_gguf_marks

        strip_gguf_marks(loaded.model)
    if settings.method == "lora" and not settings.merge and loaded.info.get("source") not in ("builtin", "folder", "hub"):
        raise SparcomError("--no-merge needs a base that can be loaded again by name or folder; "
                           f"{spec!r} is {loaded.info.get('source')!r}: use --merge")
    return loaded, base_reference(spec, loaded.info)


def _encode(loaded: LoadedModel, rows: TrainingRows, settings: TuneSettings, job: TuneJob
            ) -> tuple[list[TrainExample], int, str]:
    """The training examples (rows longer than --max-tokens left out, never cut), how many were left out, and
    the template used."""
    tokenizer = loaded.tokenizer
    check_tokenizer(tokenizer)
    template = resolve_template(tokenizer, settings.template)
    examples, dropped = encode_examples(rows.rows, tokenizer, template, settings.max_tokens)
    if not examples:
        raise SparcomError(f"every training row is longer than --max-tokens {settings.max_tokens}; raise it")
    if dropped:
        job.log(f"sparcom: {len(dropped)} of {len(rows.rows)} rows are longer than --max-tokens "
                f"{settings.max_tokens} and are left out (never cut)")
    return examples, len(dropped), template


def _trainable(model, settings: TuneSettings):
    """The model with what trains switched on: all weights (full) or LoRA adapters; and the LoRA targets."""
    for param in model.parameters():
        param.requires_grad_(settings.method == "full")
    if settings.method != "lora":
        return model, []
    from sparcom.tune.lora import lora_model, target_names

    model = lora_model(model, settings.lora_r, settings.lora_alpha, settings.lora_dropout, settings.target_modules,
                       settings.seed)
    return model, target_names(model)


def _tune(base: str | LoadedModel, rows: TrainingRows, settings: TuneSettings, job: TuneJob) -> TuneResult:
    started = time.perf_counter()
    loaded, ref = _load_base(base, settings, job)
    examples, dropped, template = _encode(loaded, rows, settings, job)
    model, targets = _trainable(loaded.model, settings)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())
    torch.manual_seed(settings.seed)
    results = train(model, examples, pad_token_id(loaded.tokenizer), settings, progress=job.progress)
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "tool": "sparcom tune",
        "command": job.command or _command_line(),
        "method": settings.method,
        "merged": settings.merge,
        "seed": settings.seed,
        "base": {"spec": ref, "source": loaded.info.get("source"), "fingerprint": loaded.info.get("fingerprint"),
                 "architecture": type(loaded.model).__name__,
                 "model_type": getattr(loaded.model.config, "model_type", None)},
        "tokenizer_fingerprint": tokenizer_fingerprint(loaded.tokenizer),
        "template": template,
        "data": {**rows.info, "rows_used": len(examples), "rows_dropped": dropped,
                 "tokens_per_example_max": max(len(e) for e in examples),
                 "response_tokens": sum(e.response_tokens for e in examples)},
        "settings": {**asdict(settings), "target_modules": list(settings.target_modules),
                     "learning_rate": settings.learning_rate, "warmup_fraction": WARMUP_FRACTION,
                     "max_grad_norm": MAX_GRAD_NORM, "optimizer": "AdamW", "schedule": "linear warm-up, linear decay",
                     "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "device": job.device,
                     "threads": torch.get_num_threads()},
        "parameters": {"trainable": trainable, "total": total_params, "lora_targets": targets},
        "results": results,
        "versions": software_versions("peft"),
    }
    _write(model, loaded, ref, record, settings, job, started)
    return TuneResult(job.out, record, results["losses"])


def _write(model, loaded: LoadedModel, ref: str, record: dict[str, Any], settings: TuneSettings, job: TuneJob,
           started: float) -> None:
    """The model folder (merged weights, or tokenizer + adapter), its adapter and records, renamed into place."""
    from sparcom.tune.lora import save_adapter, save_model_folder

    with atomic_folder(job.out, job.overwrite) as work:
        if settings.method == "lora":
            adapter_dir = work / ADAPTER_SUBDIR if settings.merge else work
            adapter_dir.mkdir(exist_ok=True)
            # unmerged: loadable by plain transformers + peft too, so point at the base's folder where there is one
            sha = save_adapter(model, adapter_dir, ref if settings.merge else loaded.info.get("resolved_path") or ref)
            record["adapter"] = {"file": ADAPTER_WEIGHTS, "sha256": sha,
                                 "bytes": (adapter_dir / ADAPTER_WEIGHTS).stat().st_size}
            if settings.merge:
                write_record(adapter_dir, record)
                model = model.merge_and_unload()
        if settings.merge:
            save_model_folder(model, loaded.tokenizer, work)
        else:
            loaded.tokenizer.save_pretrained(str(work))
        record["wall_seconds"] = round(time.perf_counter() - started, 2)
        write_record(work, record)
        if settings.method == "lora" and settings.merge:
            write_record(work / ADAPTER_SUBDIR, record)
