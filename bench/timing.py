"""Clock helpers. Cases of one benchmark run interleaved, so machine noise hits all alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

#: A case does its own (untimed) setup and returns the seconds of the part that counts.
Case = Callable[[], float]


@dataclass
class Lap:
    seconds: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Lap]:
    """``with stopwatch() as lap: ...`` then ``lap.seconds`` (monotonic, high resolution)."""
    lap = Lap()
    start = time.perf_counter()
    try:
        yield lap
    finally:
        lap.seconds = time.perf_counter() - start


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    with stopwatch() as lap:
        fn()
    return lap.seconds


@dataclass(frozen=True)
class Runs:
    """Samples per case, and the first error of each case that failed (it then stops)."""

    samples: dict[str, list[float]]
    failures: dict[str, str]

    def ok(self, case: str) -> bool:
        return case not in self.failures and bool(self.samples.get(case))


def interleaved(cases: Mapping[str, Case], rounds: int, *, warmup: int = 0) -> Runs:
    """Run every case once per round, in turn, ``rounds`` times; warm-up rounds are dropped.

    Interleaving (A B C A B C …, not A A A B B B …) spreads slow phases of a
    noisy machine over every case, which keeps the ratios between them honest.
    A case that raises is recorded as failed and not run again; the others go on.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    samples: dict[str, list[float]] = {name: [] for name in cases}
    failures: dict[str, str] = {}
    for index in range(warmup + rounds):
        for name, case in cases.items():
            if name in failures:
                continue
            try:
                seconds = case()
            except Exception as exc:  # reported, not fatal: the other cases still count
                failures[name] = f"{type(exc).__name__}: {exc}"
                continue
            if index >= warmup:
                samples[name].append(seconds)
    return Runs(samples, failures)
