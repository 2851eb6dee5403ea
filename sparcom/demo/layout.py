"""Where each output of the demo goes, and the two rules every model is identified with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The paper's rule and the recommended one (sparcom.analysis.selection), by their folder names.
RULE_TAGS = ("paper", "recommended")


def rules() -> dict[str, Any]:
    from sparcom.analysis.selection import PAPER_RULE, RECOMMENDED_RULE

    return {"paper": PAPER_RULE, "recommended": RECOMMENDED_RULE}


class Layout:
    """Where each output of the demo goes, under ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def run(self, name: str) -> Path:
        return self.out / "runs" / name

    def reference_run(self, name: str) -> Path:
        """The model's profile of the reference corpus (the generality claim's null)."""
        return self.out / "runs" / f"{name}-reference"

    @property
    def reference_data(self) -> Path:
        return self.out / "data" / "reference-xsum.jsonl"

    def identify(self, name: str, tag: str) -> Path:
        return self.out / "identify" / name / tag

    def compare(self, tag: str) -> Path:
        return self.out / "compare" / "gemma-3-270m" / tag

    def ablate(self, name: str, tag: str, target: str, removal: str) -> Path:
        suffix = f"-{removal}" if target == "experts" else ""
        return self.out / "ablate" / name / f"{tag}-{target}{suffix}"

    def examples(self, name: str) -> Path:
        return self.out / "examples" / name

    def report(self, name: str) -> Path:
        return self.out / "reports" / f"{name}.html"

    @property
    def index(self) -> Path:
        return self.out / "index.html"



__all__ = ["RULE_TAGS", "Layout", "rules"]
