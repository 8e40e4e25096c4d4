"""Paired statistics agree with scipy/statsmodels reference computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportions_ztest

from finetune_kit import stats


def _pairs(both, a_only, b_only, neither):
    a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
    b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
    return a, b


def test_facts_file_example_paired_vs_unpaired():
    # facts-2026.md: n=200, base 0.695 vs fine-tuned 0.745, discordant 4 vs 14:
    # McNemar exact p=0.031, paired bootstrap 95% CI [0.01, 0.09], unpaired z-test p=0.26
    a, b = _pairs(135, 4, 14, 47)
    row = stats.compare(a, b, n_boot=10000, seed=0)
    assert row["n"] == 200
    assert row["a"] == pytest.approx(0.695) and row["b"] == pytest.approx(0.745)
    assert row["diff"] == pytest.approx(0.05)
    assert (row["a_only"], row["b_only"]) == (4, 14)
    assert row["test"] == "mcnemar_exact"
    assert round(row["p_value"], 3) == 0.031
    ref = sm_mcnemar(np.array([[135, 4], [14, 47]]), exact=True)
    assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    lo, hi = row["ci95"]
    assert (round(lo, 2), round(hi, 2)) == (0.01, 0.09)
    z = stats.unpaired_z_test(0.695, 0.745, 200, 200)
    assert 0.26 <= z < 0.27
    _, ref_z = proportions_ztest([149, 139], [200, 200])
    assert z == pytest.approx(ref_z, rel=1e-9)
    assert z > 8 * row["p_value"]  # the point of the example: pairing makes the test far more sensitive


@pytest.mark.parametrize("table", [(50, 0, 0, 50), (10, 3, 9, 8), (0, 1, 0, 0), (30, 17, 5, 2),
                                   (100, 40, 61, 3), (5, 0, 7, 1)])
def test_mcnemar_matches_statsmodels_and_scipy(table):
    both, a_only, b_only, neither = table
    a, b = _pairs(*table)
    got = stats.mcnemar_exact(a, b)
    ref = sm_mcnemar(np.array([[both, a_only], [b_only, neither]]), exact=True).pvalue
    assert got["p_value"] == pytest.approx(ref, rel=1e-10, abs=1e-15)
    n = a_only + b_only
    if n:
        assert got["p_value"] == pytest.approx(sps.binomtest(b_only, n, 0.5).pvalue, rel=1e-12)
        # the scipy-free fallback gives the same exact value
        assert stats._binom_two_sided_half(b_only, n) == pytest.approx(got["p_value"], rel=1e-12)
    else:
        assert got["p_value"] == 1.0


def test_bootstrap_ci_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(7)
    a = rng.uniform(0, 1, 150)
    b = np.clip(a + rng.normal(0.04, 0.15, 150), 0, 1)
    lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=20000, seed=1)
    ref = sps.bootstrap((a, b), lambda x, y, axis=-1: np.mean(y - x, axis=axis), paired=True,
                        vectorized=True, n_resamples=20000, method="percentile", confidence_level=0.95,
                        random_state=np.random.default_rng(2)).confidence_interval
    # different random streams: agreement within Monte-Carlo error
    assert lo == pytest.approx(ref.low, abs=0.004)
    assert hi == pytest.approx(ref.high, abs=0.004)
    assert lo < np.mean(b - a) < hi


def test_bootstrap_is_seeded_and_handles_degenerate_input():
    a = [0, 1, 1, 0, 1] * 10
    b = [1, 1, 0, 1, 1] * 10
    assert stats.paired_bootstrap_ci(a, b, seed=3) == stats.paired_bootstrap_ci(a, b, seed=3)
    assert stats.paired_bootstrap_ci(a, b, seed=3) != stats.paired_bootstrap_ci(a, b, seed=4)
    assert stats.paired_bootstrap_ci(a, a) == (0.0, 0.0)
    row = stats.compare([1, 0, 1], [1, 0, 1])
    assert row["diff"] == 0 and row["p_value"] == 1.0 and row["ci95"] == [0.0, 0.0]
    assert stats.compare([], [])["n"] == 0


def test_missing_scores_drop_the_pair():
    row = stats.compare([1, None, 0, 1], [1, 1, None, 0], binary=True)
    assert row["n"] == 2 and row["a"] == 1.0 and row["b"] == 0.5
    with pytest.raises(ValueError):
        stats.compare([1, 0], [1])
    with pytest.raises(ValueError):
        stats.mcnemar_exact([0.5, 1], [1, 1])


def test_continuous_metric_uses_wilcoxon():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.8, 60)
    b = a + rng.normal(0.05, 0.05, 60)
    row = stats.compare(a, b, binary=False)
    assert row["test"] == "wilcoxon_signed_rank"
    assert row["p_value"] == pytest.approx(sps.wilcoxon(a, b).pvalue, rel=1e-12)
    assert row["diff"] == pytest.approx(float(np.mean(b - a)))
    assert row["ci95"][0] > 0
