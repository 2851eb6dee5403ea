"""``sparcom report`` and ``sparcom examples``: one self-contained HTML page per study, and the token-level pass
behind its neuron and expert cards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparcom.cli.app import app, stdout_console
from sparcom.cli.options import (
    Data,
    Device,
    Dtype,
    ModelArgument,
    Overwrite,
    Quiet,
    Selection,
    comma_values,
    out_option,
    with_settings,
)
from sparcom.examples.settings import ExamplesSettings
from sparcom.report.settings import ReportSettings


@app.command("report")
@with_settings(ReportSettings)
def report_command(
    studies: Annotated[list[Path], typer.Argument(help="Output folders (identify, compare, ablate, examples, profile "
                                                       "runs) or folders that hold them.", show_default=False)],
    out: out_option("The HTML file to write (self-contained, opens offline)"),
    settings: ReportSettings,
    overwrite: Overwrite = False,
) -> None:
    """Gather a study's outputs into one self-contained HTML page with neuron and expert cards."""
    from sparcom.api import report

    path = report(studies, out, settings, overwrite=overwrite)
    stdout_console().print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


@app.command("examples")
@with_settings(ExamplesSettings)
def examples_command(
    model: ModelArgument,
    selection: Selection,
    data: Data,
    out: out_option("Output folder for examples.json"),
    component: Annotated[list[str] | None, typer.Option(
        "--component", help="kind/layer/index or expert_neuron/layer/expert/index (repeat or comma-separate); "
                            "default: the top members of each category's set.")] = None,
    run: Annotated[Path | None, typer.Option("--run", help="The selection's profile run (default: its "
                                                            "recorded source run).")] = None,
    settings: ExamplesSettings = None,
    dtype: Dtype = "auto",
    device: Device = "cpu",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Record where each selected component fires most (top instructions and tokens) for the report's cards."""
    from sparcom.api import record_examples

    result = record_examples(model, selection, data, comma_values(component), settings, run=run, out=out,
                             overwrite=overwrite, dtype=dtype, device=device, progress=not quiet)
    stdout_console().print(f"wrote {out}: {len(result.components)} components, top {settings.top_k} instructions "
                           "each")
