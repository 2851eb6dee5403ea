"""What decides a fine-tuning run (recorded in ``sparcom-tune.json``): :class:`TuneSettings`, declared once for
the API and the ``sparcom tune`` options (:mod:`sparcom.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from sparcom.data.formatting import TEMPLATES
from sparcom.errors import SparcomError
from sparcom.settings import check, comma_list, setting

METHODS = ("lora", "full")
#: Learning rates used when --lr is not given.
DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}


def _modules(value) -> tuple[str, ...]:
    return comma_list(value) or ()


@dataclass(frozen=True)
class TuneSettings:
    """Everything that decides the training run (recorded in ``sparcom-tune.json``)."""

    method: str = setting("lora", flag="--method", choices=METHODS, help="lora (peft) or full fine-tuning.")
    epochs: int = setting(1, flag="--epochs", low=1, help="Passes over the data.")
    max_steps: int | None = setting(None, flag="--max-steps", low=1,
                                    help="Stop after this many optimizer steps (overrides --epochs).")
    lr: float | None = setting(None, flag="--lr", low=0, open="low", help=(
        f"Peak learning rate (default: {DEFAULT_LR['lora']:g} for lora, {DEFAULT_LR['full']:g} for full)."))
    batch_size: int = setting(4, flag="--batch-size", low=1, help="Examples per micro-batch.")
    grad_accum: int = setting(1, flag="--grad-accum", low=1, help="Micro-batches per optimizer step.")
    lora_r: int = setting(8, flag="--lora-r", low=1, help="LoRA rank.")
    lora_alpha: int = setting(16, flag="--lora-alpha", help="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = setting(0.05, flag="--lora-dropout", low=0, high=1, open="high",
                                  help="Dropout on the LoRA input.")
    target_modules: tuple[str, ...] = setting(
        ("all-linear",), flag="--target-modules", cli_type=str, cli_default="all-linear", parse=_modules,
        help="Comma-separated module names to put LoRA on, or 'all-linear' (attention and MLP projections).")
    max_tokens: int | None = setting(256, flag="--max-tokens", low=4, help=(
        "Leave out examples longer than this many tokens (never cut)."))
    seed: int = setting(0, flag="--training-seed", help="Seed of the LoRA init, the example order and dropout.")
    template: str = setting("auto", flag="--template", choices=TEMPLATES,
                            help="Prompt format: auto, chat or raw (as for sparcom profile).")
    merge: bool = setting(True, flag="--merge/--no-merge", help=(
        "Write merged full weights, or the tokenizer + adapter over the base."))
    weight_decay: float = setting(0.0, keyword="weight_decay", low=0, help="AdamW weight decay.")
    threads: int | None = setting(None, flag="--threads", low=1, help=(
        "CPU threads (fix it for bitwise-reproducible runs)."))

    def check_together(self) -> None:
        if not self.target_modules or any(not t.strip() for t in self.target_modules):
            raise SparcomError("--target-modules must name at least one module (or 'all-linear')")
        if self.method == "full" and not self.merge:
            raise SparcomError("--no-merge keeps a LoRA adapter apart from the base; full fine-tuning has none "
                               "(drop --no-merge or use --method lora)")

    def check(self) -> TuneSettings:
        return check(self)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]


__all__ = ["DEFAULT_LR", "METHODS", "TuneSettings"]
