"""What a profile run counts and how it forms its batches: :class:`ProfileSettings`, declared once for the API
and the ``sparcom profile`` options (:mod:`sparcom.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from sparcom.data.formatting import SCOPES, TEMPLATES, FormatSettings
from sparcom.data.schema import CATEGORIES
from sparcom.profile.sharing import Shard
from sparcom.settings import check, comma_list, setting

#: --expert-neurons: capture the activations the experts compute (verified, recomputing where that is impossible),
#: always recompute them from the expert weights, or count routed experts only.
EXPERT_NEURON_MODES = ("auto", "recompute", "off")
#: --group-by: counts per category only, or also per source half of each category, or per instruction.
GROUP_BY = ("category", "source", "instruction")


@dataclass(frozen=True)
class ProfileSettings:
    """Everything that decides which tokens are counted and how batches are formed."""

    scope: str = setting("instruction", flag="--scope", choices=SCOPES,
                         help="Counted tokens: instruction (the user text: instruction and input), prompt, response, all, "
                              "or instruction-only (the instruction's own text without the input).")
    template: str = setting("auto", flag="--template", choices=TEMPLATES,
                            help="Prompt format: auto, chat or raw.")
    system_prompt: str | None = setting(None, flag="--system-prompt",
                                        help="System prompt to put before each instruction.")
    batch_size: int = setting(8, flag="--batch-size", low=1, help="Instructions per batch (length-bucketed).")
    token_budget: int | None = setting(None, flag="--token-budget", low=1, help="Max padded tokens per batch.")
    padding_side: str | None = setting(None, flag="--padding-side", choices=("left", "right"),
                                       help="left or right (default: the tokenizer's).")
    per_category: int | None = setting(None, flag="--per-category", low=1,
                                       help="Use only the first N rows of each category.")
    categories: tuple[str, ...] | None = setting(
        None, flag="--categories", cli_type=str | None, parse=comma_list,
        help=f"Comma-separated categories the data may contain (default: {', '.join(CATEGORIES)}).")
    checkpoint_every: int = setting(20, flag="--checkpoint-every", low=1, help="Checkpoint counts every N batches.")
    bootstrap: int = setting(0, flag="--bootstrap", low=0,
                             help="Poisson bootstrap replicates for confidence intervals (0: off).")
    bootstrap_seed: int = setting(0, flag="--bootstrap-seed", help="Seed of the Poisson bootstrap weights.")
    expert_neurons: str = setting(
        "auto", flag="--expert-neurons", choices=EXPERT_NEURON_MODES,
        help="MoE expert neurons: auto (captured, verified), recompute (from the weights) or off (experts only).")
    group_by: str = setting(
        "category", flag="--group-by", choices=GROUP_BY,
        help="Also keep counts below the category: per source half (source) or per instruction (instruction).")
    #: ``K/N``: count only shard K (0-based) of N of the whole run's batches (:mod:`sparcom.profile.sharing`).
    shard: str | None = setting(
        None, flag="--shard",
        help="K/N: count only shard K (0-based) of N, a token-balanced share of the batches; 'sparcom merge' of "
             "all N shards equals the whole run.")

    def check_together(self) -> None:
        FormatSettings(self.scope, self.template, self.system_prompt)
        if self.shard is not None:
            Shard.parse(self.shard)

    def check(self) -> ProfileSettings:
        return check(self)

    @property
    def format(self) -> FormatSettings:
        """How rows become tokens and which tokens are counted."""
        return FormatSettings(self.scope, self.template, self.system_prompt)


__all__ = ["EXPERT_NEURON_MODES", "GROUP_BY", "ProfileSettings"]
