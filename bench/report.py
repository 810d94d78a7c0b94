"""Results as JSON (everything, for tools) and a short markdown table (for people)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.machine import Machine
from bench.model import BenchResult, Measurement, Target, Unit


def format_value(value: float, unit: Unit) -> str:
    """A number for people: seconds below 1 s shown in ms, ratios as ``1.23×``."""
    if math.isinf(value) or math.isnan(value):
        return str(value)
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "ops/s":
        return f"{value:.2f} ops/s"
    return f"{value:.3g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cells(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    return [cells(header), "|" + "|".join("---" for _ in header) + "|", *map(cells, rows)]


def _measurement_row(m: Measurement) -> list[str]:
    s = m.summary
    if s.n == 1:
        return [m.case, "1", format_value(s.median, m.unit), "—"]
    return [m.case, str(s.n), format_value(s.median, m.unit), format_value(s.p95, m.unit)]


def _target_row(t: Target) -> list[str]:
    verdict = "met" if t.met else "**missed**"
    return [
        t.description,
        format_value(t.value, t.unit),
        f"{t.comparison} {format_value(t.limit, t.unit)}",
        verdict,
    ]


def render_section(result: BenchResult) -> list[str]:
    lines = [f"## {result.title}", ""]
    if result.skipped is not None:
        return [*lines, f"Not run: {result.skipped}", ""]
    if result.measurements:
        rows = [_measurement_row(m) for m in result.measurements]
        lines += [*_table(["case", "n", "median", "p95"], rows), ""]
    if result.ratios:
        rows = [[r.name, format_value(r.value, "x")] for r in result.ratios]
        lines += [*_table(["ratio", "value"], rows), ""]
    if result.targets:
        rows = [_target_row(t) for t in result.targets]
        lines += [*_table(["target", "measured", "goal", ""], rows), ""]
    for table in result.tables:
        lines += [f"{table.title}:", "", *_table(table.header, table.rows), ""]
    # one line per explanation: several targets often miss for the same reason
    reasons: dict[str, list[str]] = {}
    for t in result.missed:
        why = t.explanation or "no explanation recorded (a bug in the benchmark)"
        reasons.setdefault(why, []).append(f"*{t.description}*")
    lines += [f"- Missed {', '.join(names)}: {why}" for why, names in reasons.items()]
    lines += [f"- {note}" for note in result.notes]
    if result.missed or result.notes:
        lines.append("")
    lines += [f"_{result.seconds:.0f} s to run._", ""]
    return lines


def render_markdown(results: Sequence[BenchResult], machine: Machine, when: datetime) -> str:
    memory = f"{machine.memory_mib / 1024:.1f} GiB" if machine.memory_mib else "unknown memory"
    lines = [
        "# banger benchmarks: latest run",
        "",
        "Produced by `make bench` (`python -m bench.run`). Every comparison is a ratio "
        "measured within this one run; absolute times only describe this machine.",
        "",
        f"- When: {when.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {machine.cpu_model}, {machine.cores} cores; memory {memory}",
        f"- Kernel {machine.kernel}, Python {machine.python}; "
        f"load average {machine.load_average:.2f} at the start (other work on the machine "
        "inflates absolute times, not the ratios)",
        f"- Accelerator: **{machine.accelerator.upper()}** ({machine.accelerator_reason})",
        "",
    ]
    targets = [(r, t) for r in results for t in r.targets]
    if targets:
        rows = [[r.name, *_target_row(t)] for r, t in targets]
        lines += ["## Targets", ""]
        lines += [*_table(["benchmark", "target", "measured", "goal", ""], rows), ""]
    for result in results:
        lines += render_section(result)
    return "\n".join(lines).rstrip("\n") + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def result_json(result: BenchResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    data["measurements"] = [
        {**dataclasses.asdict(m), "summary": dataclasses.asdict(m.summary)}
        for m in result.measurements
    ]
    data["targets"] = [{**dataclasses.asdict(t), "met": t.met} for t in result.targets]
    return dict(_jsonable(data))


def render_json(results: Sequence[BenchResult], machine: Machine, when: datetime) -> str:
    document = {
        "when": when.isoformat(),
        "machine": dataclasses.asdict(machine),
        "results": [result_json(r) for r in results],
    }
    return json.dumps(document, indent=2) + "\n"


def write_results(
    directory: Path, results: Sequence[BenchResult], machine: Machine, when: datetime
) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` into ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "latest.json", directory / "latest.md"
    json_path.write_text(render_json(results, machine, when))
    md_path.write_text(render_markdown(results, machine, when))
    return json_path, md_path
