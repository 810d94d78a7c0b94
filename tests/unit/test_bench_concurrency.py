"""The concurrency benchmark's summary: throughput, percentiles and scaling from batches."""

from __future__ import annotations

from bench.concurrency import Batch, named, summarize
from bench.guests import Timed


def _batch(kind: str, level: int, seconds: list[float], failed: int = 0) -> Batch:
    runs = [Timed(100.0, 100.0 + s, 0, "") for s in seconds]
    runs += [Timed(100.0, 101.0, 1, "boom") for _ in range(failed)]
    return Batch(kind, level, tuple(runs))


def test_scaling_is_throughput_relative_to_one_at_a_time() -> None:
    result = summarize(
        [_batch("vm create", 1, [2.0]), _batch("vm create", 4, [3.0, 4.0, 4.0, 4.0])]
    )
    rows = {row[1]: row for row in result.tables[0].rows}
    assert rows["1"][3] == "0.50" and rows["1"][6] == "1.00×"
    assert rows["4"][3] == "1.00" and rows["4"][6] == "2.00×"
    assert rows["4"][4] == "4.00 s" and rows["4"][5] == "4.00 s"


def test_failures_are_counted_and_quoted_not_timed() -> None:
    result = summarize([_batch("vm run", 1, [10.0]), _batch("vm run", 8, [20.0], failed=7)])
    rows = {row[1]: row for row in result.tables[0].rows}
    assert rows["8"][7] == "7 failed"
    assert any("boom" in note for note in result.notes)
    latency = next(m for m in result.measurements if m.case == "vm run ×8: latency")
    assert latency.samples == (20.0,)


def test_named_argv() -> None:
    argv = named(("vm", "create"), ["a", "b"], ("--", "true"))
    assert argv(1) == ("vm", "create", "--name", "b", "--", "true")
