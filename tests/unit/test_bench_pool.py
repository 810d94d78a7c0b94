"""The pool benchmark's pure parts: the warm run's breakdown and the verdict on the 8x goal."""

from __future__ import annotations

from bench.guests import OpTrace
from bench.pool import (
    COLD,
    GOAL,
    KEPT_RUNNING,
    REFILL_DELAYED,
    WARM,
    ReadyCost,
    WarmRound,
    summarize,
    warm_breakdown,
)
from bench.report import render_section

#: the take's stages: 0.6 s, as long as the create operations below last
TAKE = (
    ("take", 0.05),
    ("identity", 0.2),
    ("file_sync", 0.3),
    ("running", 0.05),
)


def test_the_warm_breakdown_adds_up_to_the_wall_time_in_order() -> None:
    create = OpTrace("c", "vm.create", 10.4, 11.0, TAKE)
    delete = OpTrace("d", "vm.rm", 11.3, 11.8, (("stop", 0.2), ("delete", 0.3)))
    r = warm_breakdown(10.0, 12.0, create, delete)
    assert r.total == 2.0
    assert abs(sum(s for _, s in r.parts) - 2.0) < 1e-9
    assert [label for label, _ in r.parts] == [
        "CLI: start, request the take",
        "take: take",
        "take: identity",
        "take: file_sync",
        "take: running",
        "CLI: follow ends, `true` over the exec API, request the rm",
        "rm (stop, tap, files)",
        "CLI: follow the rm, exit",
    ]
    assert dict(r.parts)["rm (stop, tap, files)"] == 0.5


def _round(total: float) -> WarmRound:
    create = OpTrace("c", "vm.create", 0.3, 0.9, TAKE)
    delete = OpTrace("d", "vm.rm", 1.0, total - 0.1, (("stop", 0.1),))
    return warm_breakdown(0.0, total, create, delete)


def test_the_goal_is_met_at_eight_times_and_missed_below_with_the_warm_runs_largest_parts() -> None:
    costs = [ReadyCost("running", 300.0, 2.5), ReadyCost("running", 280.0, 1.5)]
    met = summarize([1.0, 1.2, 1.1], [9.0, 8.8, 9.5], [_round(1.1)], costs, [])
    (target,) = met.targets
    assert target.met and target.value == 9.0 / 1.1 and target.limit == GOAL
    missed = summarize([2.0], [10.0], [_round(2.0)], [], [])
    (target,) = missed.targets
    assert not target.met and target.value == 5.0
    assert "rm (stop, tap, files)" in target.explanation  # the largest part named
    text = "\n".join(render_section(missed))
    assert "**missed**" in text and "cold 10.00 s vs warm 2.00 s" in text
    assert [m.case for m in met.measurements][:2] == [WARM, COLD]
    assert {m.unit for m in met.measurements[2:]} == {"MiB", ""}
    assert KEPT_RUNNING in met.notes and "state of the ready guests measured: running" in met.notes
    assert REFILL_DELAYED in met.notes and "starts 2 s after it" in REFILL_DELAYED


def test_no_sample_of_either_case_gives_no_ratio_and_keeps_the_failure() -> None:
    result = summarize([], [9.0], [], [], ["warm FAILED: boom"])
    assert result.targets == () and result.notes == ("warm FAILED: boom",)
