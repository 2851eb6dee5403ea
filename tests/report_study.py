"""A complete tiny study for the report tests, built through the public API: two profiled tiny models, identify,
compare, a causal check and an examples pass (a few seconds on one thread)."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny import tiny_model, tiny_tokenizer, write_dataset

from sparcom import ProfileSettings, ablate, compare, identify, profile, record_examples, wrap_model
from sparcom.examples.recording import write_examples


def build_study(root: Path, moe: bool = False) -> dict[str, Path]:
    """Write every output of a small study under ``root``; returns the folders by name."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = write_dataset(root / "rows.jsonl")
        if moe:
            from causal_tiny import tiny_moe

            base, tuned = tiny_moe("qwen2_moe", seed=1), tiny_moe("qwen2_moe", seed=2)
        else:
            base, tuned = tiny_model("llama", seed=1), tiny_model("llama", seed=2)
        loaded = wrap_model(base, tiny_tokenizer(), "tiny-base")
        settings = ProfileSettings(batch_size=4, bootstrap=0 if moe else 20)
        run = profile(loaded, data, root / "run-base", settings, progress=False)
        run_tuned = profile(wrap_model(tuned, tiny_tokenizer(), "tiny-tuned"), data, root / "run-tuned", settings,
                            progress=False)
        identify(run, out=root / "identify-base", plots=False)
        compare(run, run_tuned, out=root / "compare", plots=False)
        paths = {"data": data, "run": root / "run-base", "run_tuned": root / "run-tuned",
                 "identify": root / "identify-base", "compare": root / "compare"}
        if not moe:
            ablate(loaded, root / "identify-base", data, out=root / "ablate", seeds=3, batch_size=4, plots=False,
                   progress=False)
            result = record_examples(loaded, root / "identify-base", data, top_k=3, per_category=2, window=4)
            write_examples(result, root / "examples")
            paths.update(ablate=root / "ablate", examples=root / "examples")
        return paths
    finally:
        torch.set_num_threads(previous)
