"""``sparcom tune``: fine-tune a base model on instruction rows, or merge a committed adapter into it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from sparcom.cli.app import app
from sparcom.cli.options import Device, Dtype, ModelArgument, Overwrite, Quiet, out_option, with_settings
from sparcom.errors import SparcomError
from sparcom.tune.settings import TuneSettings


def _command_line() -> str:
    """The command line the tune record keeps ('sparcom tune …', whatever ran it)."""
    args = sys.argv[1:]
    return "sparcom " + " ".join(shlex.quote(a) for a in (args if args[:1] == ["tune"] else ["tune", *args]))


@app.command("tune")
@with_settings(TuneSettings)
def tune_command(
    base: ModelArgument,
    out: out_option("Model folder to write"),
    data: Annotated[str | None, typer.Option(
        "--data", help="Training rows (JSON Lines, DESIGN §3), or 'sparcom-sft': other rows of HexaInst's sources.")
    ] = None,
    from_adapter: Annotated[Path | None, typer.Option(
        "--from-adapter", help="Skip training: merge this LoRA adapter folder into BASE and write the model.")] = None,
    settings: TuneSettings = None,
    dtype: Dtype = "auto",
    device: Device = "cpu",
    allow_hexainst: Annotated[bool, typer.Option(
        "--allow-hexainst", help="Train even on rows that repeat HexaInst rows.")] = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Fine-tune BASE on instruction rows (loss on the response tokens only) into a folder sparcom profile loads."""
    from sparcom import api

    if from_adapter is not None:
        if data is not None:
            raise SparcomError("--from-adapter merges an adapter that is already trained; drop --data")
        if not settings.merge:
            raise SparcomError("--from-adapter writes the merged model; drop --no-merge (the adapter folder "
                               "itself is the unmerged form)")
        record = api.merge_adapter(base, from_adapter, out, overwrite=overwrite, dtype=dtype, device=device,
                                   threads=settings.threads, command=_command_line())
        print(f"wrote {out} (merged adapter {record['materialised']['adapter_sha256'][:12]}… into {base})",
              file=sys.stderr)
        return
    if data is None:
        raise SparcomError("--data is required: a JSON Lines file of instruction rows or 'sparcom-sft' "
                           "(or pass --from-adapter DIR to merge a trained adapter)")
    result = api.tune(base, data, out, settings, overwrite=overwrite, dtype=dtype, device=device,
                      progress=not quiet, allow_hexainst=allow_hexainst, command=_command_line())
    res, adapter = result.record["results"], result.record.get("adapter")
    print(f"wrote {out}: {res['steps']} steps, loss {res['loss_first_10pct']:.4f} → {res['loss_last_10pct']:.4f} "
          f"(first/last 10% of steps), {res['tokens_per_second']:.0f} tok/s, {result.record['wall_seconds']:.0f} s"
          + (f"; adapter sha256 {adapter['sha256']}" if adapter else ""), file=sys.stderr)
