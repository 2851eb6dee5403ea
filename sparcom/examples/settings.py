"""What the examples pass records: :class:`ExamplesSettings`, declared once for the API and the ``sparcom
examples`` options (:mod:`sparcom.settings`), and the folder it writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sparcom.outputs import check_output_dir
from sparcom.settings import check, setting

FORMAT = "sparcom-examples"
VERSION = 1
EXAMPLES_FILE = "examples.json"
DEFAULT_TOP_K = 5
DEFAULT_WINDOW = 12
#: Components per category and ranking chosen by default (from the selection's source run).
DEFAULT_PER_CATEGORY = 6


@dataclass(frozen=True)
class ExamplesSettings:
    """Which components are recorded (by default) and how much of each instruction is kept."""

    top_k: int = setting(DEFAULT_TOP_K, flag="--top-k", low=1, help="Instructions kept per component.")
    window: int = setting(DEFAULT_WINDOW, flag="--window", low=0, help="Tokens of context on each side.")
    components_per_category: int = setting(
        DEFAULT_PER_CATEGORY, flag="--components-per-category", low=1, aliases=("per_category",),
        help="Components recorded per category and ranking when none are listed (the top members of each "
             "category's set).")
    rows_per_category: int | None = setting(None, flag="--rows-per-category", low=1,
                                            help="Scan only the first N rows of each category.")
    batch_size: int = setting(8, flag="--batch-size", low=1, help="Rows per forward pass.")
    categories: tuple[str, ...] | None = setting(None, keyword="categories",
                                                 help="Categories of the data to scan (default: every one).")

    def check(self) -> ExamplesSettings:
        return check(self)


def check_examples_out(out: str | Path, overwrite: bool = False) -> None:
    """Refuse an existing ``out`` unless ``overwrite``, and even then anything but an earlier examples output."""
    check_output_dir(out, overwrite, marker=EXAMPLES_FILE, kind="examples output")


__all__ = ["EXAMPLES_FILE", "FORMAT", "VERSION", "ExamplesSettings", "check_examples_out"]
