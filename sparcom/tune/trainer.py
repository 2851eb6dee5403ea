"""Supervised fine-tuning of a base model on instruction rows: LoRA (default) or full, loss on the response only.

Training is deterministic for a seed on CPU with a fixed number of threads: the LoRA initialisation, the order
of examples (a seeded shuffle per epoch) and dropout all draw from the seed. The optimizer is AdamW with a
linear warm-up over the first :data:`WARMUP_FRACTION` of the steps and a linear decay to zero; gradients are
clipped to norm :data:`MAX_GRAD_NORM`. The loss of a step is the mean cross-entropy over all response tokens of
its micro-batches (``--grad-accum`` of them), so a step's weight does not depend on how it is split.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparcom.data.formatting import check_tokenizer, pad_token_id, resolve_template
from sparcom.data.schema import InstructionRow, read_rows
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
from sparcom.tune.output import ADAPTER_SUBDIR, atomic_folder, check_out, write_record
from sparcom.zoo.catalog import load_model

METHODS = ("lora", "full")
TEMPLATES = ("auto", "chat", "raw")
#: Learning rates used when --lr is not given.
DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}
WARMUP_FRACTION = 0.05
MAX_GRAD_NORM = 1.0
RECORD_FORMAT = 1


@dataclass(frozen=True)
class TuneSettings:
    """Everything that decides the training run (recorded in ``sparcom-tune.json``)."""

    method: str = "lora"
    epochs: int = 1
    max_steps: int | None = None
    lr: float | None = None
    batch_size: int = 4
    grad_accum: int = 1
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("all-linear",)
    max_tokens: int | None = 256
    seed: int = 0
    template: str = "auto"
    merge: bool = True
    weight_decay: float = 0.0
    threads: int | None = None

    def check(self) -> None:
        if self.method not in METHODS:
            raise SparcomError(f"--method must be lora or full, got {self.method!r}")
        if self.template not in TEMPLATES:
            raise SparcomError(f"--template must be auto, chat or raw, got {self.template!r}")
        for name, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size),
                            ("--grad-accum", self.grad_accum), ("--lora-r", self.lora_r)):
            if value < 1:
                raise SparcomError(f"{name} must be at least 1, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise SparcomError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise SparcomError(f"--lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise SparcomError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.max_tokens is not None and self.max_tokens < 4:
            raise SparcomError(f"--max-tokens must be at least 4, got {self.max_tokens}")
        if self.threads is not None and self.threads < 1:
            raise SparcomError(f"--threads must be at least 1, got {self.threads}")
        if not self.target_modules or any(not t.strip() for t in self.target_modules):
            raise SparcomError("--target-modules must name at least one module (or 'all-linear')")
        if self.method == "full" and not self.merge:
            raise SparcomError("--no-merge keeps a LoRA adapter apart from the base; full fine-tuning has none "
                               "(drop --no-merge or use --method lora)")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


@dataclass
class TuneResult:
    """What a run did; ``record`` is what was written to ``sparcom-tune.json``."""

    out: Path
    record: dict[str, Any]
    losses: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# Data


def load_training_rows(data: str | Path) -> tuple[list[InstructionRow], dict[str, Any]]:
    """Rows from a JSON Lines file, or the built-in ``sparcom-sft`` set; with what the record says about them."""
    from sparcom.data import tuning_data

    path = Path(data)
    if path.is_file():
        rows = read_rows(path, require_output=True)
        return rows, {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "rows": len(rows)}
    if str(data) == tuning_data.NAME:
        rows = tuning_data.build_tuning_rows()
        return rows, {
            "path": tuning_data.NAME,
            "sha256": hashlib.sha256(tuning_data.rows_bytes(rows)).hexdigest(),
            "rows": len(rows),
            "recipe": {"salt": tuning_data.SELECTION_SALT, "per_category": tuning_data.DEFAULT_PER_CATEGORY,
                       "max_prompt_chars": tuning_data.MAX_PROMPT_CHARS,
                       "max_output_chars": tuning_data.MAX_OUTPUT_CHARS, "sources": tuning_data.summary(rows)},
        }
    raise SparcomError(f"--data {data}: file not found; pass a JSON Lines file of instruction rows "
                       f"or '{tuning_data.NAME}' for the built-in tuning set")


def check_not_hexainst(rows: Sequence[InstructionRow]) -> None:
    """Refuse training rows that repeat HexaInst rows (the set the tuned model is profiled on)."""
    from sparcom.data import human, tuning_data

    # Without the source packages only the AI half can be compared; ids and origins still catch a copied file.
    footprint = tuning_data.hexainst_footprint(include_human=not human.missing_packages())
    clash = tuning_data.overlapping_rows(rows, footprint)
    if clash:
        raise SparcomError(
            f"{len(clash)} training row(s) repeat HexaInst rows (first: {clash[0]}); tuning on the profiling set "
            f"would confound the base → tuned comparison; remove them or pass --allow-hexainst"
        )


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


def tune(
    base: str | LoadedModel,
    data: str | Path | Sequence[InstructionRow],
    out: str | Path,
    settings: TuneSettings | None = None,
    overwrite: bool = False,
    dtype: str = "auto",
    device: str = "cpu",
    progress: bool = True,
    allow_hexainst: bool = False,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> TuneResult:
    """Fine-tune ``base`` on ``data`` and write a model folder to ``out`` (atomically).

    ``base``: anything :func:`~sparcom.models.loading.load_model` accepts, or an already loaded model.
    ``data``: a JSON Lines file, ``"sparcom-sft"``, or rows. With ``settings.merge`` (default) ``out`` holds the
    full tuned weights and tokenizer (plus ``adapter/`` for LoRA); without, the tokenizer and the adapter, whose
    record names the base. Either way ``sparcom-tune.json`` records base, data, command, seed, settings and
    results.
    """
    settings = settings or TuneSettings()
    settings.check()
    log = log or (lambda message: print(message, file=sys.stderr))
    out = Path(out)
    check_out(out, overwrite)  # before any expensive work
    previous_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        with lock(out):  # a second tune into the same --out is refused at once, not after training
            return _tune(base, data, out, settings, overwrite, dtype, device, progress, allow_hexainst, command, log)
    except KeyboardInterrupt as exc:
        kept = f"{out} is unchanged" if out.exists() else f"nothing was written to {out}"
        raise interrupted(exc, f"{kept}; tune keeps no checkpoints, so the same command trains again from step 1"
                          ) from None
    finally:
        torch.set_num_threads(previous_threads)


def _tune(base, data, out: Path, settings: TuneSettings, overwrite, dtype, device, progress, allow_hexainst,
          command, log) -> TuneResult:
    started = time.perf_counter()

    if isinstance(data, (str, Path)):
        rows, data_info = load_training_rows(data)
    else:
        from sparcom.data.tuning_data import rows_bytes

        rows = list(data)
        if not rows:
            raise SparcomError("no training rows given")
        data_info = {"path": None, "sha256": hashlib.sha256(rows_bytes(rows)).hexdigest(), "rows": len(rows)}
    if not allow_hexainst:
        check_not_hexainst(rows)

    if isinstance(base, LoadedModel):
        loaded, spec = base, str(base.info.get("name_or_path", "model"))
    else:
        loaded, spec = load_model(base, dtype=dtype, device=device), base
    if loaded.info.get("gguf_file"):
        from sparcom.tune.lora import strip_gguf_marks

        strip_gguf_marks(loaded.model)
    if settings.method == "lora" and not settings.merge and loaded.info.get("source") not in ("builtin", "folder", "hub"):
        raise SparcomError("--no-merge needs a base that can be loaded again by name or folder; "
                           f"{spec!r} is {loaded.info.get('source')!r}: use --merge")
    tokenizer, model = loaded.tokenizer, loaded.model
    check_tokenizer(tokenizer)
    template = resolve_template(tokenizer, settings.template)
    examples, dropped = encode_examples(rows, tokenizer, template, settings.max_tokens)
    if not examples:
        raise SparcomError(f"every training row is longer than --max-tokens {settings.max_tokens}; raise it")
    if dropped:
        log(f"sparcom: {len(dropped)} of {len(rows)} rows are longer than --max-tokens {settings.max_tokens} "
            "and are left out (never cut)")
    pad_id = pad_token_id(tokenizer)

    for param in model.parameters():
        param.requires_grad_(settings.method == "full")
    targets: list[str] = []
    if settings.method == "lora":
        from sparcom.tune.lora import lora_model, target_names

        model = lora_model(model, settings.lora_r, settings.lora_alpha, settings.lora_dropout,
                           settings.target_modules, settings.seed)
        targets = target_names(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())
    torch.manual_seed(settings.seed)
    results = train(model, examples, pad_id, settings, progress=progress)

    ref = base_reference(spec, loaded.info)
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "tool": "sparcom tune",
        "command": command or _command_line(),
        "method": settings.method,
        "merged": settings.merge,
        "seed": settings.seed,
        "base": {"spec": ref, "source": loaded.info.get("source"), "fingerprint": loaded.info.get("fingerprint"),
                 "architecture": type(loaded.model).__name__,
                 "model_type": getattr(loaded.model.config, "model_type", None)},
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "template": template,
        "data": {**data_info, "rows_used": len(examples), "rows_dropped": len(dropped),
                 "tokens_per_example_max": max(len(e) for e in examples),
                 "response_tokens": sum(e.response_tokens for e in examples)},
        "settings": {**asdict(settings), "target_modules": list(settings.target_modules),
                     "learning_rate": settings.learning_rate, "warmup_fraction": WARMUP_FRACTION,
                     "max_grad_norm": MAX_GRAD_NORM, "optimizer": "AdamW", "schedule": "linear warm-up, linear decay",
                     "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "device": device,
                     "threads": torch.get_num_threads()},
        "parameters": {"trainable": trainable, "total": total_params, "lora_targets": targets},
        "results": results,
        "versions": software_versions("peft"),
    }

    with atomic_folder(out, overwrite) as work:
        from sparcom.tune.lora import save_adapter, save_model_folder

        if settings.method == "lora":
            adapter_dir = work / ADAPTER_SUBDIR if settings.merge else work
            adapter_dir.mkdir(exist_ok=True)
            if settings.merge:
                sha = save_adapter(model, adapter_dir, ref)
            else:  # loadable by plain transformers + peft too: point at the base's folder where there is one
                sha = save_adapter(model, adapter_dir, loaded.info.get("resolved_path") or ref)
            record["adapter"] = {"file": ADAPTER_WEIGHTS, "sha256": sha,
                                 "bytes": (adapter_dir / ADAPTER_WEIGHTS).stat().st_size}
            if settings.merge:
                write_record(adapter_dir, record)
                model = model.merge_and_unload()
        if settings.merge:
            save_model_folder(model, tokenizer, work)
        else:
            tokenizer.save_pretrained(str(work))
        record["wall_seconds"] = round(time.perf_counter() - started, 2)
        write_record(work, record)
        if settings.method == "lora" and settings.merge:
            write_record(work / ADAPTER_SUBDIR, record)
    return TuneResult(out, record, results["losses"])
