"""``sparcom attribute``: estimate each neuron's effect of deactivation on the reference responses' NLL."""

from __future__ import annotations

from rich.table import Table

from sparcom.attribution.settings import AttributionSettings
from sparcom.cli.app import stdout_console
from sparcom.cli.model_pass import model_pass_command


def _attribute_api():
    from sparcom.api import attribute

    return attribute


attribute_command = model_pass_command(
    "attribute", AttributionSettings, "Attribution run directory to write the sums and manifest into", _attribute_api,
    lambda run: print_attribution_summary(run),
    """Per category and MLP neuron: the linear estimate (gradient × (replacement − activation)) of what deactivating
    the neuron does to the NLL of the category's reference responses; what 'identify --rule attribution' reads.

    Under torchrun (torchrun --nproc-per-node N -m sparcom attribute ...) the ranks share the batches; rank 0 writes.
    """)


def print_attribution_summary(run) -> None:
    """Per category: rows, scored tokens, mean NLL, and the largest estimated effect per scored token."""
    from sparcom.data.schema import category_label

    out = stdout_console()
    manifest = run.manifest
    out.print(f"[bold]{run.path}[/]  model {manifest['model'].get('name_or_path')}  replacement "
              f"{manifest['replacement']}  template {manifest['template']}  dtype {manifest['dtype']}")
    table = Table()
    for column in ("category", "rows", "scored tokens", "mean NLL", "largest effect / token"):
        table.add_column(column, justify="left" if column == "category" else "right")
    kind = manifest["kinds"][0]
    effects = run.effects(kind)
    for index, category in enumerate(effects.categories):
        tokens = int(effects.tokens[index])
        nll = float(run.value(f"nll/{category}")) / tokens if tokens else float("nan")
        table.add_row(category_label(category), str(int(run.sums[f"instructions/{category}"])), f"{tokens:,}",
                      f"{nll:.3f}", f"{effects.per_token[index].max():.4f}")
    out.print(table)
