"""Rendering of benchmark results (markdown for people, JSON for tools)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bench.machine import Machine, cpu_model_from
from bench.model import BenchResult, Measurement, Ratio, Target
from bench.report import format_value, render_json, render_markdown, write_results
from bench.run import BENCHMARKS, run_one, select

MACHINE = Machine(
    cpu_model="Test CPU @ 2.0GHz",
    cores=2,
    memory_mib=4096,
    kernel="6.1.0-test",
    accelerator="tcg",
    accelerator_reason="no KVM",
    python="3.11.2",
    load_average=1.5,
)
WHEN = datetime(2025, 1, 2, 3, 4, tzinfo=UTC)


def result() -> BenchResult:
    return BenchResult(
        name="demo",
        title="9. Demo",
        measurements=(
            Measurement.of("fast", [0.010, 0.012, 0.011]),
            Measurement.of("slow", [2.5]),
        ),
        ratios=(Ratio("slow / fast", 227.0),),
        targets=(
            Target("fast ≤ 50 ms", 0.011, 0.05, "<=", "s"),
            Target("ratio ≥ 300×", 227.0, 300.0, ">=", "x", explanation="disk-bound here"),
        ),
        notes=("a note",),
        seconds=3.0,
    )


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.0123, "s", "12.3 ms"),
        (2.5, "s", "2.50 s"),
        (1.234, "x", "1.23×"),
        (12.0, "MiB", "12.0 MiB"),
        (math.inf, "x", "inf"),
    ],
)
def test_format_value(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text  # type: ignore[arg-type]


def test_targets_know_whether_they_are_met() -> None:
    assert Target("t", 1.0, 1.0, "<=").met
    assert not Target("t", 1.1, 1.0, "<=").met
    assert Target("t", 10.0, 10.0, ">=").met
    assert not Target("t", 9.0, 10.0, ">=").met


def test_markdown_has_machine_tables_and_explains_misses() -> None:
    md = render_markdown([result()], MACHINE, WHEN)
    assert "Test CPU @ 2.0GHz, 2 cores; memory 4.0 GiB" in md
    assert "Accelerator: **TCG** (no KVM)" in md
    assert "| fast | 3 | 11.0 ms | 12.0 ms |" in md
    assert "| slow | 1 | 2.50 s | — |" in md
    assert "| demo | fast ≤ 50 ms | 11.0 ms | <= 50.0 ms | met |" in md
    assert "| ratio ≥ 300× | 227.00× | >= 300.00× | **missed** |" in md
    assert "- Missed *ratio ≥ 300×*: disk-bound here" in md
    assert "- a note" in md
    assert "load average 1.50" in md


def test_targets_missed_for_one_reason_share_a_line() -> None:
    same = BenchResult(
        "x",
        "X",
        targets=(
            Target("a", 2.0, 1.0, "<=", explanation="slow disk"),
            Target("b", 3.0, 1.0, "<=", explanation="slow disk"),
        ),
    )
    md = render_markdown([same], MACHINE, WHEN)
    assert "- Missed *a*, *b*: slow disk" in md
    assert md.count("slow disk") == 1


def test_markdown_shows_a_skipped_benchmark_with_its_reason() -> None:
    skipped = BenchResult.skip("vm", "1. VMs", "needs /dev/kvm")
    md = render_markdown([skipped], MACHINE, WHEN)
    assert "## 1. VMs\n\nNot run: needs /dev/kvm" in md


def test_missed_target_without_explanation_is_flagged() -> None:
    bare = BenchResult("x", "X", targets=(Target("t", 2.0, 1.0, "<="),))
    assert "no explanation recorded" in render_markdown([bare], MACHINE, WHEN)


def test_json_round_trips_with_summaries_and_verdicts() -> None:
    inf = BenchResult("i", "I", ratios=(Ratio("r", math.inf),))
    data = json.loads(render_json([result(), inf], MACHINE, WHEN))
    assert data["machine"]["accelerator"] == "tcg"
    demo = data["results"][0]
    assert demo["measurements"][0]["summary"]["median"] == pytest.approx(0.011)
    assert [t["met"] for t in demo["targets"]] == [True, False]
    assert data["results"][1]["ratios"][0]["value"] == "inf"  # valid JSON, not Infinity


def test_write_results_writes_both_files(tmp_path: Path) -> None:
    json_path, md_path = write_results(tmp_path / "out", [result()], MACHINE, WHEN)
    assert json.loads(json_path.read_text())["results"][0]["name"] == "demo"
    assert md_path.read_text().startswith("# banger benchmarks")


def test_cpu_model_from_cpuinfo() -> None:
    assert cpu_model_from("processor\t: 0\nmodel name\t: Xeon X\n") == "Xeon X"
    assert cpu_model_from("processor : 0\n") == "unknown"


def test_select_keeps_run_order_and_refuses_unknown_names() -> None:
    assert select(["clone", "provisioning"]) == ["provisioning", "clone"]
    assert select([])[0] == "provisioning"
    with pytest.raises(SystemExit, match="unknown benchmark 'nope'"):
        select(["nope"])


def test_measurement_needs_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        Measurement.of("empty", [])


def test_a_benchmark_not_written_yet_is_reported_not_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(BENCHMARKS, "ghost", "bench.no_such_benchmark_module")
    result = run_one("ghost", quick=True, scratch_root=tmp_path)
    assert result.skipped == "not written yet"
    assert list(tmp_path.iterdir()) == []  # no scratch directory left behind
