"""The footprint benchmark's split of a VMM's RSS: the guest-sized mapping, read from smaps."""

from __future__ import annotations

import mmap
import os

from bench.footprint import guest_ram_rss_mib


def test_guest_ram_is_the_resident_part_of_the_exactly_guest_sized_mapping() -> None:
    size_mib = 37  # no other mapping of this process has this size
    region = mmap.mmap(-1, size_mib << 20)
    try:
        assert guest_ram_rss_mib(os.getpid(), size_mib) == 0
        for offset in range(0, 5 << 20, mmap.PAGESIZE):  # touch 5 MiB of it
            region[offset] = 1
        assert guest_ram_rss_mib(os.getpid(), size_mib) == 5
    finally:
        region.close()
    assert guest_ram_rss_mib(os.getpid(), size_mib) is None
