"""The statistics and timing helpers behind ``make bench`` (no timing assertions)."""

from __future__ import annotations

import math

import pytest
from bench.stats import Summary, median, percentile, ratio, throughput
from bench.timing import interleaved, stopwatch, timed
from hypothesis import given
from hypothesis import strategies as st

floats = st.floats(min_value=0, max_value=1e6, allow_nan=False)


def test_median_odd_and_even() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 21)]  # 1..20
    assert percentile(samples, 95) == 19.0
    assert percentile(samples, 100) == 20.0
    assert percentile(samples, 50) == 10.0
    assert percentile([5.0, 1.0, 9.0], 95) == 9.0  # few samples: the slowest


@pytest.mark.parametrize("pct", [0, -1, 101])
def test_percentile_refuses_out_of_range(pct: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], pct)


def test_empty_samples_are_refused() -> None:
    with pytest.raises(ValueError):
        median([])
    with pytest.raises(ValueError):
        percentile([], 95)


@given(st.lists(floats, min_size=1, max_size=50))
def test_summary_is_ordered_and_measured(samples: list[float]) -> None:
    s = Summary.of(samples)
    assert s.minimum <= s.median <= s.maximum
    assert s.minimum <= s.p95 <= s.maximum
    assert s.p95 in samples  # nearest rank: a value that was measured
    assert s.n == len(samples)


def test_ratio_and_throughput_never_raise() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert math.isinf(ratio(1.0, 0.0))
    assert ratio(0.0, 0.0) == 1.0
    assert throughput(8, 2.0) == 4.0
    assert math.isinf(throughput(1, 0.0))


def test_interleaved_alternates_cases_and_drops_warmup() -> None:
    order: list[str] = []

    def case(name: str, value: float) -> float:
        order.append(name)
        return value

    runs = interleaved({"a": lambda: case("a", 1.0), "b": lambda: case("b", 2.0)}, 2, warmup=1)
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert runs.samples == {"a": [1.0, 1.0], "b": [2.0, 2.0]}
    assert runs.failures == {}


def test_interleaved_records_a_failing_case_and_keeps_going() -> None:
    calls = {"bad": 0}

    def bad() -> float:
        calls["bad"] += 1
        raise RuntimeError("disk full")

    runs = interleaved({"good": lambda: 0.5, "bad": bad}, 3)
    assert runs.samples["good"] == [0.5, 0.5, 0.5]
    assert runs.failures == {"bad": "RuntimeError: disk full"}
    assert calls["bad"] == 1  # not retried
    assert runs.ok("good") and not runs.ok("bad")


def test_interleaved_needs_a_round() -> None:
    with pytest.raises(ValueError, match="rounds"):
        interleaved({"a": lambda: 0.0}, 0)


def test_stopwatch_and_timed_measure_something() -> None:
    with stopwatch() as lap:
        sum(range(1000))
    assert lap.seconds >= 0
    assert timed(lambda: None) >= 0
