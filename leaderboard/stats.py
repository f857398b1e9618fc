"""Paired bootstrap over the same evaluated items: is method A really better than B on a task?

Two methods of one suite are scored on the same documents for each seed, so their per-item
outcomes pair up by (seed, doc_index). Resampling the paired differences (not each method's
scores separately) removes the variance the two share (hard items are hard for both), which is
why a paired test separates methods that overlapping per-method intervals cannot.

The resampled mean of n differences depends only on how many times each distinct difference value
is drawn, so instead of an (resamples x n) index matrix we draw those counts from a multinomial:
the same distribution as resampling items with replacement, in O(resamples x distinct values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
SEED = 0
CONFIDENCE = 0.95

Item = tuple[int, int]  # (seed, doc_index)


@dataclass(frozen=True)
class PairedBootstrap:
    """Mean difference A - B over paired items, its percentile interval and a two-sided p."""

    n_items: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    resamples: int

    @property
    def significant(self) -> bool:
        """Significant at the interval's level when the interval excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0


def pair_items(a: Mapping[Item, bool | None], b: Mapping[Item, bool | None]) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes of the items both methods were scored on (unscored items are left out)."""
    common = sorted(k for k in a.keys() & b.keys() if a[k] is not None and b[k] is not None)
    return (np.array([float(a[k]) for k in common], dtype=float),
            np.array([float(b[k]) for k in common], dtype=float))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
                     confidence: float = CONFIDENCE) -> PairedBootstrap:
    """Bootstrap the mean of the paired differences a - b (items resampled with replacement)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes must be two vectors of one length, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        raise ValueError("no paired items: the two methods share no scored (seed, document)")
    values, counts = np.unique(a - b, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=resamples)
    means = draws @ values / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    p_value = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return PairedBootstrap(
        n_items=n, mean_a=float(a.mean()), mean_b=float(b.mean()), difference=float((a - b).mean()),
        ci_low=float(low), ci_high=float(high), p_value=p_value, resamples=resamples,
    )
