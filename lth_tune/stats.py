"""Statistics over seeds: means with Student-t confidence intervals and the comparisons built on them.

Everything a study reports as a finding goes through here, so that the driver (TensorBoard HParams), the
analysis tables and the HTML report state the same numbers: a mean over seeds with its two-sided
``confidence`` interval, and a comparison that says "not distinguishable" whenever the interval of the
difference contains 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats

__all__ = ["Interval", "compare", "mean_ci", "paired_difference", "welch_difference", "winning_level"]

#: comparison outcomes
BETTER, WORSE, NOT_DISTINGUISHABLE, UNKNOWN = "better", "worse", "not distinguishable", "n/a"


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with its two-sided ``confidence`` Student-t interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def text(self, digits: int = 3) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        if self.n == 1 or not math.isfinite(self.half_width):
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval ``mean ± t_{(1+c)/2, n−1} · s/√n`` of the finite ``values``.

    One value gives an infinite interval (nothing is known about the spread); none gives NaN."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, -math.inf, math.inf, 1, confidence)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, confidence)


def paired_difference(a: dict, b: dict, confidence: float = 0.95) -> Interval:
    """Interval of the mean of ``a[s] − b[s]`` over the keys (seeds) present in both."""
    keys = sorted(set(a) & set(b), key=str)
    return mean_ci([a[k] - b[k] for k in keys], confidence)


def welch_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """Interval of mean(a) − mean(b) for independent samples (Welch's t, Welch–Satterthwaite degrees of
    freedom); ``n`` is min(len(a), len(b)). Fewer than two values on either side gives an infinite interval."""
    xa = [float(v) for v in a if v is not None and math.isfinite(float(v))]
    xb = [float(v) for v in b if v is not None and math.isfinite(float(v))]
    if not xa or not xb:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    diff = sum(xa) / len(xa) - sum(xb) / len(xb)
    if len(xa) < 2 or len(xb) < 2:
        return Interval(diff, -math.inf, math.inf, min(len(xa), len(xb)), confidence)
    va = _scipy_stats.tvar(xa) / len(xa)
    vb = _scipy_stats.tvar(xb) / len(xb)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, min(len(xa), len(xb)), confidence)
    dof = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    half = float(_scipy_stats.t.ppf((1 + confidence) / 2, dof)) * se
    return Interval(diff, diff - half, diff + half, min(len(xa), len(xb)), confidence)


def compare(diff: Interval) -> str:
    """``better`` if the interval of a difference lies above 0, ``worse`` below, else ``not distinguishable``."""
    if diff.n == 0 or math.isnan(diff.mean):
        return UNKNOWN
    if diff.low > 0:
        return BETTER
    if diff.high < 0:
        return WORSE
    return NOT_DISTINGUISHABLE


def winning_level(dense: dict, by_level: dict, epsilon: float,
                  confidence: float = 0.95) -> tuple[int | None, dict[int, Interval]]:
    """The winning-ticket rule (paper 000 §3.3): the sparsest level > 0 whose mean accuracy drop from the dense
    network, paired by seed (``dense[s] − by_level[level][s]``), is at most ``epsilon``; None when no pruned level
    is. Returns it with the drop's interval at every level."""
    drops = {int(level): paired_difference(dense, acc, confidence) for level, acc in by_level.items()}
    winning = [level for level, d in drops.items() if level > 0 and d.n and d.mean <= epsilon]
    return (max(winning) if winning else None), drops
