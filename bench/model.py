"""What a benchmark reports: measurements, ratios, targets and notes (frozen, JSON-able)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.stats import Summary

Comparison = Literal["<=", ">="]
Unit = Literal["s", "ms", "MiB", "x", "ops/s", ""]


@dataclass(frozen=True)
class Measurement:
    """Timings (seconds) of one case, or a single non-time quantity (``unit`` says which)."""

    case: str
    samples: tuple[float, ...]
    unit: Unit = "s"

    @classmethod
    def of(cls, case: str, samples: Sequence[float], unit: Unit = "s") -> Measurement:
        if not samples:
            raise ValueError(f"measurement {case!r} has no samples")
        return cls(case, tuple(samples), unit)

    @property
    def summary(self) -> Summary:
        return Summary.of(self.samples)


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float


@dataclass(frozen=True)
class Target:
    """A goal from the issue, checked against a measured value of this run."""

    description: str
    value: float
    limit: float
    comparison: Comparison
    unit: Unit = ""
    #: why a missed target cannot be met here (required in the report when missed)
    explanation: str = ""

    @property
    def met(self) -> bool:
        if self.comparison == "<=":
            return self.value <= self.limit
        return self.value >= self.limit


@dataclass(frozen=True)
class Table:
    """A free-form breakdown (import times, pipeline stages) shown under the results."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class BenchResult:
    name: str
    title: str
    measurements: tuple[Measurement, ...] = ()
    ratios: tuple[Ratio, ...] = ()
    targets: tuple[Target, ...] = ()
    notes: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    #: set when the benchmark could not run here at all: the reason
    skipped: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def skip(cls, name: str, title: str, reason: str) -> BenchResult:
        return cls(name=name, title=title, skipped=reason)

    @property
    def missed(self) -> tuple[Target, ...]:
        return tuple(t for t in self.targets if not t.met)
