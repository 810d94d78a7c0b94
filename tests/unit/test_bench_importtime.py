"""Parsing ``python -X importtime`` output for the CLI latency benchmark."""

from __future__ import annotations

from bench.importtime import by_package, first_importers, parse_importtime, total_us

# post-order, as CPython prints it: children first, one level deeper
SAMPLE = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |   _io
import time:       300 |        300 |       pydantic_core.core_schema
import time:       200 |        500 |     pydantic_core
import time:       400 |        900 |   pydantic
import time:      1000 |       1900 | banger.api_models
import time:        50 |         50 |     rich.text
import time:        70 |        120 |   rich
import time:        30 |        150 | banger.cli.output
not an import line
"""


def test_parse_keeps_order_depth_and_times() -> None:
    entries = parse_importtime(SAMPLE)
    assert [e.name for e in entries][:3] == ["_io", "pydantic_core.core_schema", "pydantic_core"]
    core = entries[1]
    assert (core.self_us, core.cumulative_us, core.depth) == (300, 300, 3)
    assert entries[4].depth == 0 and entries[4].package == "banger"


def test_total_is_the_sum_of_self_times() -> None:
    assert total_us(parse_importtime(SAMPLE)) == 2150


def test_by_package_sums_self_time_largest_first() -> None:
    rows = by_package(parse_importtime(SAMPLE))
    assert rows[0] == ("banger", 1030, 2)
    assert ("pydantic_core", 500, 2) in rows
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


def test_first_importers_walk_up_to_the_nearest_banger_module() -> None:
    found = first_importers(parse_importtime(SAMPLE))
    assert found["pydantic_core"] == "banger.api_models"
    assert found["pydantic"] == "banger.api_models"
    assert found["rich"] == "banger.cli.output"
    assert "banger" not in found


def test_parse_ignores_noise() -> None:
    assert parse_importtime("hello\n[]\n") == []
