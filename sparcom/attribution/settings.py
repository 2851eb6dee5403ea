"""What an attribution run scores and how it forms its batches: :class:`AttributionSettings`, declared once for the
API and the ``sparcom attribute`` options (:mod:`sparcom.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from sparcom.data.formatting import TEMPLATES, FormatSettings
from sparcom.data.schema import CATEGORIES
from sparcom.profile.sharing import Shard
from sparcom.settings import check, comma_list, setting

#: --replacement: what a deactivated neuron's activation becomes (``mean`` needs per-neuron mean activations).
REPLACEMENT_CHOICES = ("zero", "mean")
#: --group-by: sums per category only, or also one row per instruction (what cross-fitting selects on).
ATTRIBUTION_GROUP_BY = ("category", "instruction")


@dataclass(frozen=True)
class AttributionSettings:
    """Which rows are scored (their reference responses), with which replacement, in which batches."""

    template: str = setting("auto", flag="--template", choices=TEMPLATES, help="Prompt format: auto, chat or raw.")
    system_prompt: str | None = setting(None, flag="--system-prompt",
                                        help="System prompt to put before each instruction.")
    batch_size: int = setting(8, flag="--batch-size", low=1, help="Rows per forward + backward pass.")
    per_category: int | None = setting(None, flag="--per-category", low=1,
                                       help="Use only the first N rows of each category.")
    categories: tuple[str, ...] | None = setting(
        None, flag="--categories", cli_type=str | None, parse=comma_list,
        help=f"Comma-separated categories the data may contain (default: {', '.join(CATEGORIES)}).")
    max_scored_tokens: int | None = setting(None, flag="--max-scored-tokens", low=1,
                                            help="Score only the first N tokens of each reference response.")
    replacement: str = setting("zero", flag="--replacement", choices=REPLACEMENT_CHOICES, help=(
        "What a deactivated neuron's activation becomes: zero, or its mean activation (mean needs --means-run, "
        "or the means given through the API)."))
    #: The profile run whose exact activation sums give the ``mean`` replacement (the causal check's reference).
    means_run: str | None = setting(None, flag="--means-run", help=(
        "With --replacement mean: a profile run of this model (recorded with activation sums) whose pooled mean "
        "activations are the replacement, as the causal check's mean ablation uses them."))
    group_by: str = setting("category", flag="--group-by", choices=ATTRIBUTION_GROUP_BY, help=(
        "Also keep one row of sums per instruction (instruction), which cross-fitting selects on."))
    checkpoint_every: int = setting(20, flag="--checkpoint-every", low=1, help="Checkpoint the sums every N batches.")
    shard: str | None = setting(None, flag="--shard", help=(
        "K/N: attribute only shard K (0-based) of N of the batches; 'sparcom merge' of all N equals the whole run."))

    def check_together(self) -> None:
        FormatSettings("response", self.template, self.system_prompt)
        if self.shard is not None:
            Shard.parse(self.shard)

    def check(self) -> AttributionSettings:
        return check(self)


__all__ = ["ATTRIBUTION_GROUP_BY", "REPLACEMENT_CHOICES", "AttributionSettings"]
