"""``sparcom demo``: the whole method on real weights, on a laptop-sized machine, resumable step by step.

Steps: build HexaInst → the built-in models (SmolLM2-135M-Instruct, Gemma-3-270M, the MoE built from SmolLM2) →
the tuned Gemma from the committed adapter → profile each model per instruction → identify with the paper's rule and
the recommended rule, with held-out validity → compare base → tuned → causal checks → token-level examples →
one HTML report per model and ``index.html`` → ``SUMMARY.md``. Each finished step leaves a record in ``steps/``; a
second run skips it.
"""

from sparcom.demo.config import DEMO_ADAPTER, DemoConfig
from sparcom.demo.run import materialise_tuned, run_demo

__all__ = ["DEMO_ADAPTER", "DemoConfig", "materialise_tuned", "run_demo"]
