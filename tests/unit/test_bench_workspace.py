"""The workspace benchmark's generated repository: mixed sizes adding up to the target."""

from __future__ import annotations

import random

from bench.workspace import MIB, file_sizes


def test_file_sizes_are_mixed_and_add_up() -> None:
    sizes = file_sizes(200 * MIB, random.Random(19))
    assert 200 * MIB <= sum(sizes) < 208 * MIB
    small = sum(1 for s in sizes if s <= 16 * 1024)
    large = sum(1 for s in sizes if s >= 2 * MIB)
    assert small > len(sizes) * 0.7 and large >= 1
    assert file_sizes(200 * MIB, random.Random(19)) == sizes  # the same repository every run
