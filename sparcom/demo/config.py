"""The demo's settings: which models, how many rows, which rules, how large a causal check."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from sparcom.causal.settings import CONTROL_NAMES, DEFAULT_CONTROL, DEFAULT_INTERVENTION, INTERVENTION_NAMES
from sparcom.demo.steps import step_records
from sparcom.errors import SparcomError

#: The committed LoRA adapter that turns Gemma-3-270M base into the demo's tuned model (see its RECIPE.md).
DEMO_ADAPTER = Path(__file__).resolve().parents[2] / "demo" / "adapters" / "gemma-3-270m-sparcom-sft"

#: Roles of the demo's models and their built-in defaults.
INSTRUCT, BASE, TUNED, MOE = "instruct", "base", "tuned", "moe"
DEFAULT_MODELS = {INSTRUCT: "smollm2-135m-instruct", BASE: "gemma-3-270m", MOE: "smollm2-135m-moe"}
#: Short names used for the output folders.
MODEL_NAMES = {INSTRUCT: "smollm2-135m-instruct", BASE: "gemma-3-270m-base", TUNED: "gemma-3-270m-tuned",
               MOE: "smollm2-135m-moe"}
#: The causal checks: (model role, selection rule tag, target, expert removal); in this order. ``make demo`` checks
#: the paper-rule neurons of the three dense models the claims table judges (SmolLM2, Gemma base and tuned), each
#: stopped once no further random draw can change a decision (``stop_when_decided``). Run to the end, SmolLM2's
#: check alone took 579 s on an idle 2-core CPU (127 conditions at 4 rows a category) and the MoE's experts would
#: take about 37 minutes more; ``make demo-full`` runs every check to the end.
QUICK_CAUSAL = ((INSTRUCT, "paper", "neurons", "renormalize"), (BASE, "paper", "neurons", "renormalize"),
                (TUNED, "paper", "neurons", "renormalize"))
FULL_CAUSAL = ((INSTRUCT, "paper", "neurons", "renormalize"), (INSTRUCT, "recommended", "neurons", "renormalize"),
               (BASE, "paper", "neurons", "renormalize"), (TUNED, "paper", "neurons", "renormalize"),
               (MOE, "paper", "experts", "renormalize"), (MOE, "paper", "experts", "next-best"))


def fast_cpu_dtype() -> str:
    """bfloat16 when this CPU multiplies it natively (oneDNN's bfloat16 path), else float32."""
    import torch

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bfloat16" if native else "float32"


def _adapter_identity(path: str | None) -> str | None:
    """An adapter by its weights' bytes (the same adapter in another clone is the same), else by its path."""
    import hashlib

    weights = Path(path) / "adapter_model.safetensors" if path else None
    if weights is None or not weights.is_file():
        return path
    return hashlib.sha256(weights.read_bytes()).hexdigest()


#: Demo settings that change no step's numbers: a folder made with other values is reused as it is.
REUSE_FREE: frozenset[str] = frozenset({"out", "workers", "plots"})
#: Demo settings that only some kinds of step read (the step names' middle part), the reports included; every other
#: setting changes them all.
STEP_SETTINGS: dict[str, tuple[str, ...]] = {
    **{k: ("ablate", "report") for k in ("seeds", "ablate_per_category", "intervention", "control",
                                         "more_interventions", "more_controls", "max_scored_tokens",
                                         "stop_when_decided", "causal_folds", "causal")},
    "examples_per_category": ("examples", "report")}


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; the defaults are meant to finish in about 20 minutes on an idle 2-core CPU."""

    out: Path = Path("results/demo")
    data: Path = Path("data/hexainst.jsonl")
    #: Rows of each category profiled (None: all 200).
    per_category: int | None = 24
    batch_size: int = 8
    #: Every profile, causal check and examples pass runs in this dtype; every number in SUMMARY.md says so.
    #: ``fast``: bfloat16 where the CPU computes it natively (AVX-512 BF16 / AMX), else float32 (emulated
    #: bfloat16 is many times slower than float32 there); resolved once, before any step (:meth:`resolved`).
    dtype: str = "fast"
    epsilon: float = 0.01
    #: Reference passages (XSum, not instructions) each model profiles raw: the generality claim's null.
    reference_rows: int = 100
    #: Validity: held-out decoding folds, random sets per fold, resampled instructions for the bootstrap stability.
    folds: int = 5
    random_sets: int = 100
    resamples: int = 100
    #: Causal check: random sets per category, scored rows per category, scored response tokens per row. 20 random
    #: sets let the pooled test decide (its smallest p is 1/21 ≤ 0.05; per-category Holm needs 119). At 4 rows a
    #: category (2 AI-written, 2 human-written) its power at R = 20 is 0.99 for the strong non-specific set, 0.98 for
    #: a specific set with δ = 0.25 and 0.47 for a set with twice the random damage (0.75 at 6 rows, 0.90 at 8),
    #: false positives ≤ 0.007 (benchmarks/verdict_calibration.py, 300 simulated data sets each); 6 rows made
    #: ``make demo`` 22.5 minutes, over its 20-minute budget.
    seeds: int = 20
    ablate_per_category: int = 4
    #: How the causal check deactivates a set and matches its random sets: the check's defaults (mean ablation, random
    #: sets from whole frequency bins; docs/causal.md "Which intervention by default", "Which control by default").
    intervention: str = DEFAULT_INTERVENTION
    control: str = DEFAULT_CONTROL
    #: Other interventions and controls measured beside them in the same checks (``make demo-full``: all of them).
    #: The claims table reads ``intervention`` × ``control`` only; the reports show every combination.
    more_interventions: tuple[str, ...] = ()
    more_controls: tuple[str, ...] = ()
    max_scored_tokens: int | None = 16
    #: Draw the random sets one round at a time and stop once no further round can change a decision: the
    #: decisions are those of all ``seeds`` (docs/causal.md, "Stopping when decided"); ``make demo-full`` runs all.
    stop_when_decided: bool = True
    #: Cross-fitting folds of the causal check (None: score held-out rows the profile did not see).
    causal_folds: int | None = None
    causal: tuple[tuple[str, str, str, str], ...] = QUICK_CAUSAL
    #: Rows per category scanned for the report's neuron cards.
    examples_per_category: int = 12
    adapter: Path = DEMO_ADAPTER
    #: Worker processes running independent steps side by side, each with cores / workers torch threads
    #: (:mod:`sparcom.demo.lanes`); 1 runs every step in this process, in order. The workers are spawned, so a
    #: Python script that calls ``run_demo`` with more than one needs the ``if __name__ == "__main__":`` guard.
    workers: int = 2
    #: Figures (PNG) in every output folder; off, the reports and SUMMARY.md show tables only (much faster).
    plots: bool = True
    #: Model per role (a built-in name or a local folder); ``tuned`` absent: base + ``adapter``; ``moe`` None: skip.
    models: dict[str, str | None] = field(default_factory=lambda: dict(DEFAULT_MODELS))

    @classmethod
    def full(cls, **changes) -> DemoConfig:
        """All 1,200 instructions; causal checks on every model by cross-fitting (5 folds, 20 scored rows a
        category) under every intervention and control; hours on 2 CPU cores, minutes on a GPU."""
        others = {"more_interventions": tuple(i for i in INTERVENTION_NAMES if i != DEFAULT_INTERVENTION),
                  "more_controls": tuple(c for c in CONTROL_NAMES if c != DEFAULT_CONTROL)}
        return replace(cls(), **{"per_category": None, "ablate_per_category": 20, "causal_folds": 5,
                                 "causal": FULL_CAUSAL, "examples_per_category": 40, "max_scored_tokens": 32,
                                 "stop_when_decided": False,
                                 **others, **changes})

    @property
    def interventions(self) -> tuple[str, ...]:
        """The causal checks' interventions, the claims' first."""
        return (self.intervention, *(i for i in self.more_interventions if i != self.intervention))

    @property
    def controls(self) -> tuple[str, ...]:
        """The causal checks' controls, the claims' first."""
        return (self.control, *(c for c in self.more_controls if c != self.control))

    def resolved(self) -> DemoConfig:
        """This configuration with ``dtype`` ``fast`` replaced by the dtype it stands for on this machine."""
        return self if self.dtype != "fast" else replace(self, dtype=fast_cpu_dtype())

    def model(self, role: str) -> str | None:
        return self.models.get(role)

    def check(self) -> None:
        """Refuse settings that would fail late, after minutes of work, before any step runs."""
        from sparcom.models.lora import is_adapter_folder
        from sparcom.outputs import check_parent

        for name in ("per_category", "ablate_per_category", "examples_per_category", "seeds", "batch_size",
                     "workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SparcomError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.model(TUNED) is None and not is_adapter_folder(self.adapter):
            raise SparcomError(f"{self.adapter}: not a LoRA adapter folder (needs adapter_config.json and "
                               "adapter_model.safetensors); pass the adapter 'sparcom tune' wrote, or omit --adapter")
        if self.data.exists() and not self.data.is_file():
            raise SparcomError(f"{self.data}: --data must be a JSON Lines file (it is built there when missing)")
        if self.out.exists() and not self.out.is_dir():
            raise SparcomError(f"{self.out}: exists and is a file; --out must be a directory")
        for name in self.interventions:
            if name not in INTERVENTION_NAMES:
                raise SparcomError(f"demo intervention {name!r} is unknown; use {', '.join(INTERVENTION_NAMES)}")
        for name in self.controls:
            if name not in CONTROL_NAMES:
                raise SparcomError(f"demo control {name!r} is unknown; use {', '.join(CONTROL_NAMES)}")
        for role, _, _, _ in self.causal:
            if role not in MODEL_NAMES:
                raise SparcomError(f"demo causal check: unknown model role {role!r}; use one of {', '.join(MODEL_NAMES)}")
        check_parent(self.out)

    def to_json(self) -> dict:
        from dataclasses import asdict

        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def check_reuse(self, earlier: dict) -> None:
        """Refuse to reuse a folder's finished steps when ``earlier`` (its ``config.json``) was made with settings
        that change their results (a changed default after an upgrade too): one line with what changed and which
        step records to delete; once they are deleted, those steps run again. ``out``, ``workers`` and ``plots``
        change no step's numbers."""
        now = json.loads(json.dumps(self.resolved().to_json()))  # tuples as lists, as the file has them
        changed = sorted(k for k in now.keys() | earlier.keys() if k not in REUSE_FREE and now.get(k) != earlier.get(k))
        if "adapter" in changed and _adapter_identity(now["adapter"]) == _adapter_identity(earlier.get("adapter")):
            changed.remove("adapter")  # the same adapter's weights at another path (another clone)
        if not changed:
            return
        said = ", ".join(f"{k}: {earlier.get(k)!r} → {now.get(k)!r}" for k in changed[:4])
        said += f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        kinds = sorted({kind for k in changed for kind in STEP_SETTINGS.get(k, ("*",))})
        if not any(step_records(self.out, kind) for kind in kinds):
            return  # the records those settings affect are gone: their steps run again
        way_out = (f"delete {self.out}" if "*" in kinds else
                   "delete " + " and ".join(f"{self.out / 'steps'}/*-{kind}-*.json" for kind in kinds)
                   + " (those steps run again)")
        raise SparcomError(f"{self.out}: its finished steps were made with other settings ({said}); {way_out}, or "
                           "pass another --out")


__all__ = [
    "BASE",
    "DEFAULT_MODELS",
    "DEMO_ADAPTER",
    "FULL_CAUSAL",
    "INSTRUCT",
    "MODEL_NAMES",
    "MOE",
    "QUICK_CAUSAL",
    "TUNED",
    "DemoConfig",
    "fast_cpu_dtype",
]
