"""Summaries of timing samples: medians, percentiles and ratios (pure, no clock)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def median(samples: Sequence[float]) -> float:
    """The middle sample (mean of the two middle ones for an even count)."""
    if not samples:
        raise ValueError("median of no samples")
    ordered = sorted(samples)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample with ``pct`` % of samples at or below it.

    Nearest rank (not interpolation) so the value is always a time that was
    actually measured; with few samples p95 is simply the slowest one.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    ordered = sorted(samples)
    rank = math.ceil(pct / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p95: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        return cls(
            n=len(samples),
            median=median(samples),
            p95=percentile(samples, 95),
            minimum=min(samples),
            maximum=max(samples),
        )


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; infinity when the denominator is zero (never raises)."""
    if denominator == 0:
        return math.inf if numerator else 1.0
    return numerator / denominator


def throughput(count: int, seconds: float) -> float:
    """Operations per second for ``count`` operations that took ``seconds`` in all."""
    if seconds <= 0:
        return math.inf
    return count / seconds
