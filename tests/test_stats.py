"""The one statistics module against direct implementations of its formulas on small arrays (the p-values, Holm
and the t tail have their loop oracles in test_causal_statistics.py and test_causal_power.py; Wilson in
test_analysis_validity.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_analysis_specificity import direct_quantile

from sparcom import stats
from sparcom.errors import SparcomError


def test_percentile_interval_matches_the_sorted_values():
    rng = np.random.default_rng(3)
    samples = rng.normal(size=(37, 4))
    samples[::5, 1] = np.nan  # NaN replicates are left out of their column
    samples[:, 3] = np.inf  # no finite replicate: NaN bounds
    low, high = stats.percentile_interval(samples, 0.9)
    for j in range(3):
        finite = [float(v) for v in samples[:, j] if math.isfinite(v)]
        assert low[j] == pytest.approx(direct_quantile(finite, 0.05))
        assert high[j] == pytest.approx(direct_quantile(finite, 0.95))
    assert math.isnan(low[3]) and math.isnan(high[3])
    one_d = stats.percentile_interval(np.arange(101.0), 0.9)
    assert tuple(float(v) for v in one_d) == (5.0, 95.0)
    with pytest.raises(SparcomError, match="confidence level"):
        stats.percentile_interval(samples, 1.0)


def test_significant_has_slack_only_at_the_rational_boundary():
    assert stats.significant(0.05) and stats.significant(6 * (1 / 120))  # 0.05000000000000001
    assert not stats.significant(0.0501) and not stats.significant(float("nan")) and not stats.significant(None)
    assert stats.significant(0.01, alpha=0.01) and not stats.significant(0.011, alpha=0.01)


def test_min_holm_p_and_the_one_level():
    assert stats.min_holm_p(119, 6) == pytest.approx(6 / 120)
    assert stats.min_holm_p(3, 6) == 1.0
    assert math.isnan(stats.min_holm_p(0, 6)) and math.isnan(stats.min_holm_p(20, 0))
    assert (stats.ALPHA, stats.LEVEL) == (0.05, 0.95)


def test_no_second_copy_of_the_level_or_the_formulas():
    """α, the level and the formulas live in sparcom/stats.py only (the review found 3 constants and 5 literals)."""
    from pathlib import Path

    package = Path(stats.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "stats.py":
            continue
        text = path.read_text(encoding="utf-8")
        for definition in ("def empirical_p", "def holm(", "def wilson_interval", "def percentile_interval",
                           "def t_tail_p", "ALPHA = ", "SIGNIFICANCE_LEVEL", "<= 0.05", "level\", 0.05"):
            assert definition not in text, (path, definition)
