"""Parse ``python -X importtime`` output into a breakdown of where start-up goes (pure)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


@dataclass(frozen=True)
class ImportEntry:
    name: str
    #: microseconds spent in the module's own body
    self_us: int
    #: microseconds including everything it imported first
    cumulative_us: int
    #: nesting level (two spaces per level in the output)
    depth: int

    @property
    def package(self) -> str:
        return self.name.split(".")[0]


def parse_importtime(stderr: str) -> list[ImportEntry]:
    """Entries in output order; other lines (the header, program output) are ignored."""
    entries = []
    for line in stderr.split("\n"):
        match = _LINE.match(line)
        if match:
            self_us, cumulative_us, indent, name = match.groups()
            entries.append(ImportEntry(name, int(self_us), int(cumulative_us), len(indent) // 2))
    return entries


def total_us(entries: Iterable[ImportEntry]) -> int:
    """All import time: the self times add up to it (cumulative ones overlap)."""
    return sum(e.self_us for e in entries)


def by_package(entries: Iterable[ImportEntry]) -> list[tuple[str, int, int]]:
    """``(package, self µs summed over its modules, module count)``, largest first."""
    times: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for e in entries:
        times[e.package] += e.self_us
        counts[e.package] += 1
    return sorted(((p, t, counts[p]) for p, t in times.items()), key=lambda r: -r[1])


def first_importers(entries: list[ImportEntry], prefix: str = "banger") -> dict[str, str]:
    """For each package outside ``prefix``, the ``prefix`` module that first pulled it in.

    Output order is post-order (children before their importer, one level
    deeper), so an entry's importer is the next entry at a smaller depth.
    """
    found: dict[str, str] = {}
    for index, e in enumerate(entries):
        if e.name.startswith(prefix) or e.package in found:
            continue
        depth = e.depth
        for later in entries[index + 1 :]:
            if later.depth < depth:
                depth = later.depth
                if later.name.startswith(prefix):
                    found[e.package] = later.name
                    break
    return found
