"""Is a method better than the ticket it started from? Paired gains over seeds, with a t interval.

Each seed gives one ticket and one pooled ticket at each density, so the natural unit is the seed's paired
gain (pooled - ticket): its mean, sample std, a 95% confidence interval from Student's t with n - 1 degrees
of freedom, and how many seeds gained. The test set's own sampling error of one accuracy (binomial, in
points) says how far apart two single accuracies must be before the difference means anything.
"""

from __future__ import annotations

import math
import statistics
from typing import Mapping, Sequence

CONFIDENCE = 0.95
# Test-set sizes of the data sets the CIFAR scripts read (all four have 10,000 test images); ImageNet's val.
TEST_SIZES = {"cifar10": 10_000, "cifar100": 10_000, "fashionmnist": 10_000, "mnist": 10_000, "imagenet": 50_000}


def t_quantile(probability: float, dof: int) -> float:
    """Student's t quantile (scipy's, imported here so that reading results does not need scipy)."""
    from scipy.stats import t

    return float(t.ppf(probability, dof))


def paired_gain(gains: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean, sample std, the two-sided ``confidence`` t interval of the mean, and the count of positive gains.

    With one seed there is no interval (``ci_low``/``ci_high`` are None).
    """
    n = len(gains)
    mean = statistics.fmean(gains)
    std = statistics.stdev(gains) if n > 1 else 0.0
    if n > 1:
        half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        low = high = None
    return {"mean": mean, "std": std, "n": n, "ci_low": low, "ci_high": high, "confidence": confidence,
            "positive": sum(g > 0 for g in gains), "values": list(gains),
            "verdict": verdict(low, high)}


def verdict(low: float | None, high: float | None) -> str:
    """``better`` / ``worse`` when the interval excludes zero, else ``within noise``."""
    if low is None or high is None:
        return "one seed: no interval"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "within noise"


def sampling_error(accuracy_percent: float, test_size: int | None) -> float | None:
    """Binomial standard error of one test accuracy, in points: sqrt(p (1 - p) / n) * 100."""
    if not test_size:
        return None
    p = accuracy_percent / 100.0
    return 100.0 * math.sqrt(max(p * (1.0 - p), 0.0) / test_size)


def gain_over_densities(per_seed: Mapping[int, Sequence[float]], confidence: float = CONFIDENCE) -> dict:
    """Each seed's mean gain over the densities, then :func:`paired_gain` over the seeds.

    The densities of one seed are not independent (the same tickets enter several pools), so the seed's
    average is the unit: the interval is over seeds, never over seed × density cells.
    """
    means = [statistics.fmean(values) for _, values in sorted(per_seed.items()) if values]
    summary = paired_gain(means, confidence)
    summary["note"] = ("each seed's gains averaged over densities first; densities share tickets, so they are "
                       "not independent samples")
    return summary
