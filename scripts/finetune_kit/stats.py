"""Paired significance for comparing two models on the same test set (see evaluation.md).

Every example is scored for model A (the baseline) and model B (the candidate), so the
two score lists are *paired*. Paired tests use that: an example both models get right
(or both get wrong) carries no information about which is better, only the discordant
ones do. An unpaired test throws that away and needs far more examples to see the same
difference (the facts-file example: n=200, 0.695 vs 0.745, discordant 4 vs 14 gives
McNemar exact p=0.031 but an unpaired two-proportion z-test p=0.26).

- :func:`paired_bootstrap_ci`: percentile bootstrap CI of mean(B - A), resampling
  examples (pairs stay together).
- :func:`mcnemar_exact`: exact McNemar test for binary scores = two-sided exact binomial
  test of the discordant pairs against p=0.5 (``scipy.stats.binomtest``; a pure-Python
  exact computation is used when scipy is not installed, with identical results).
- :func:`wilcoxon_signed_rank`: p-value for continuous paired scores.
- :func:`unpaired_z_test`: the two-proportion z-test, only to show what an unpaired
  analysis would say.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _paired(a: Sequence[float | None], b: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """Drop pairs where either score is missing; return float arrays."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths (got {len(a)} and {len(b)})")
    keep = [(x, y) for x, y in zip(a, b) if x is not None and y is not None
            and not (isinstance(x, float) and math.isnan(x)) and not (isinstance(y, float) and math.isnan(y))]
    if not keep:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(keep, dtype=float)
    return arr[:, 0], arr[:, 1]


def is_binary(values: Sequence[float | None]) -> bool:
    vals = {float(v) for v in values if v is not None}
    return bool(vals) and vals <= {0.0, 1.0}


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10000, seed: int = 0,
                        confidence: float = 0.95, chunk: int = 2000) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(b - a), resampling example indices with replacement.

    Deterministic for a given ``seed``. With n == 0 returns (nan, nan); when all pairs
    are identical the interval is (diff, diff).
    """
    x, y = _paired(a, b)
    d = y - x
    n = len(d)
    if n == 0:
        return (float("nan"), float("nan"))
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot, dtype=float)
    done = 0
    while done < n_boot:  # chunked so memory stays flat for large n
        k = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(k, n))
        means[done:done + k] = d[idx].mean(axis=1)
        done += k
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def _binom_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided binomial p-value for k successes of n at p=0.5 (symmetric case)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2.0 * tail / 2.0 ** n)


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> dict:
    """Exact McNemar test on paired binary scores.

    Returns ``{"a_only": n10, "b_only": n01, "discordant": n, "p_value": p}`` where
    ``a_only`` counts examples only A got right and ``b_only`` those only B got right.
    """
    x, y = _paired(a, b)
    if len(x) and not (set(np.unique(x)) <= {0.0, 1.0} and set(np.unique(y)) <= {0.0, 1.0}):
        raise ValueError("McNemar needs binary (0/1) scores")
    a_only = int(np.sum((x == 1) & (y == 0)))
    b_only = int(np.sum((x == 0) & (y == 1)))
    n = a_only + b_only
    if n == 0:
        p = 1.0
    else:
        try:
            from scipy.stats import binomtest
        except ImportError:  # core install without the eval extra: same exact computation
            p = _binom_two_sided_half(b_only, n)
        else:
            p = float(binomtest(b_only, n, 0.5, alternative="two-sided").pvalue)
    return {"a_only": a_only, "b_only": b_only, "discordant": n, "p_value": p}


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value for paired continuous scores (None without scipy)."""
    x, y = _paired(a, b)
    d = y - x
    if len(d) == 0:
        return None
    if np.all(d == 0):
        return 1.0
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        return None
    return float(wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)


def unpaired_z_test(p1: float, p2: float, n1: int, n2: int) -> float:
    """Two-sided pooled two-proportion z-test (what an unpaired comparison would report)."""
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = (p2 - p1) / se
    return math.erfc(abs(z) / math.sqrt(2))


def compare(a: Sequence[float | None], b: Sequence[float | None], *, binary: bool | None = None,
            n_boot: int = 10000, seed: int = 0) -> dict:
    """The per-metric comparison row: a, b, diff (B - A), ci95, p_value, test, n.

    Missing scores (None) drop that pair. ``binary`` defaults to "all scores are 0/1".
    """
    x, y = _paired(a, b)
    n = len(x)
    if binary is None:
        binary = is_binary(list(x) + list(y))
    if n == 0:
        return {"a": None, "b": None, "diff": None, "ci95": [None, None], "p_value": None,
                "test": None, "n": 0}
    lo, hi = paired_bootstrap_ci(x, y, n_boot=n_boot, seed=seed)
    row = {"a": float(x.mean()), "b": float(y.mean()), "diff": float((y - x).mean()),
           "ci95": [lo, hi], "n": n}
    if binary:
        mc = mcnemar_exact(x, y)
        row.update(p_value=mc["p_value"], test="mcnemar_exact", a_only=mc["a_only"], b_only=mc["b_only"])
    else:
        row.update(p_value=wilcoxon_signed_rank(x, y), test="wilcoxon_signed_rank")
    return row


# z for a two-sided 5% test plus z for 80% power: the usual planning constant (1.96 + 0.84)
_Z_ALPHA_POWER = 1.959964 + 0.841621


def min_detectable_diff(a: Sequence[float | None], b: Sequence[float | None] | None = None) -> float | None:
    """The smallest difference of means that n paired examples can detect (two-sided 5 %, 80 % power).

    ``(z_0.975 + z_0.8) * sd(B - A) / sqrt(n)``. The spread of the paired differences comes from the
    observed scores when they vary; when they do not (all pairs equal, or a single side), the
    worst case for 0..1 scores is used (sd 0.5), which is what a plan before measuring assumes.
    With ``b`` omitted, it is the detectable difference of a later comparison against ``a``
    (same n, worst-case spread).
    """
    if b is None:
        n = sum(1 for v in a if v is not None and not (isinstance(v, float) and math.isnan(v)))
        sd = 0.5
    else:
        x, y = _paired(a, b)
        n = len(x)
        sd = float(np.std(y - x, ddof=1)) if n > 1 else 0.0
        if sd == 0.0:
            sd = 0.5
    if n == 0:
        return None
    return _Z_ALPHA_POWER * sd / math.sqrt(n)


def mean_ci(values: Sequence[float | None], *, n_boot: int = 10000, seed: int = 0) -> dict:
    """One model's mean score with a percentile-bootstrap 95 % CI (baseline-only evaluation)."""
    x, _ = _paired(values, values)
    n = len(x)
    if n == 0:
        return {"a": None, "ci95": [None, None], "n": 0}
    lo, hi = paired_bootstrap_ci(np.zeros(n), x, n_boot=n_boot, seed=seed)
    return {"a": float(x.mean()), "ci95": [lo, hi], "n": n}
