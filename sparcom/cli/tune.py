"""``sparcom tune``: fine-tune a base model on instruction rows, or merge a committed adapter into it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from sparcom.cli.app import app
from sparcom.errors import SparcomError


@app.command("tune")
def tune_command(
    base: Annotated[str, typer.Argument(help="Base model: a built-in name, a model folder, a .gguf file or a hub id.")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write (refused if it exists, unless --overwrite).")],
    data: Annotated[str | None, typer.Option(
        "--data", help="Training rows (JSON Lines, DESIGN §3), or 'sparcom-sft': other rows of HexaInst's sources.")] = None,
    from_adapter: Annotated[Path | None, typer.Option(
        "--from-adapter", help="Skip training: merge this LoRA adapter folder into BASE and write the model.")] = None,
    method: Annotated[str, typer.Option(help="lora (peft) or full fine-tuning.")] = "lora",
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 1,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps (overrides --epochs).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: 2e-4 for lora, 2e-5 for full).")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per micro-batch.")] = 4,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha (scale = alpha / r).")] = 16,
    lora_dropout: Annotated[float, typer.Option(help="Dropout on the LoRA input.")] = 0.05,
    target_modules: Annotated[str, typer.Option(
        help="Comma-separated module names to put LoRA on, or 'all-linear' (attention and MLP projections).")] = "all-linear",
    max_tokens: Annotated[int, typer.Option(help="Leave out examples longer than this many tokens (never cut).")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the LoRA init, example order and dropout.")] = 0,
    template: Annotated[str, typer.Option(help="Prompt format: auto, chat or raw (as for sparcom profile).")] = "auto",
    merge: Annotated[bool, typer.Option(
        "--merge/--no-merge", help="Write merged full weights, or the tokenizer + adapter over the base.")] = True,
    threads: Annotated[int | None, typer.Option(help="CPU threads (fix it for bitwise-reproducible runs).")] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or mps.")] = "cpu",
    allow_hexainst: Annotated[bool, typer.Option(
        "--allow-hexainst", help="Train even on rows that repeat HexaInst rows.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Fine-tune BASE on instruction rows (loss on the response tokens only) into a folder sparcom profile loads."""
    args = sys.argv[1:]
    command = "sparcom " + " ".join(shlex.quote(a) for a in (args if args[:1] == ["tune"] else ["tune", *args]))
    if from_adapter is not None:
        if data is not None:
            raise SparcomError("--from-adapter merges an adapter that is already trained; drop --data")
        if not merge:
            raise SparcomError("--from-adapter writes the merged model; drop --no-merge (the adapter folder "
                               "itself is the unmerged form)")
        from sparcom.tune.lora import materialise_adapter

        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        record = materialise_adapter(base, from_adapter, out, overwrite=overwrite, dtype=dtype, device=device,
                                     command=command)
        print(f"wrote {out} (merged adapter {record['materialised']['adapter_sha256'][:12]}… into {base})",
              file=sys.stderr)
        return
    if data is None:
        raise SparcomError("--data is required: a JSON Lines file of instruction rows or 'sparcom-sft' "
                           "(or pass --from-adapter DIR to merge a trained adapter)")
    from sparcom.tune.trainer import TuneSettings, tune

    settings = TuneSettings(
        method=method, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules=tuple(t.strip() for t in target_modules.split(",")), max_tokens=max_tokens, seed=seed,
        template=template, merge=merge, threads=threads,
    )
    result = tune(base, data, out, settings, overwrite=overwrite, dtype=dtype, device=device,
                  progress=not quiet, allow_hexainst=allow_hexainst, command=command)
    res = result.record["results"]
    adapter = result.record.get("adapter")
    print(
        f"wrote {out}: {res['steps']} steps, loss {res['loss_first_10pct']:.4f} → {res['loss_last_10pct']:.4f} "
        f"(first/last 10% of steps), {res['tokens_per_second']:.0f} tok/s, {result.record['wall_seconds']:.0f} s"
        + (f"; adapter sha256 {adapter['sha256']}" if adapter else ""),
        file=sys.stderr,
    )
