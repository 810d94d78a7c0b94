"""The footprint benchmark's split of a VMM's RSS: the guest-sized mapping, read from smaps."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from bench.footprint import guest_ram_rss_mib


def unused_size_mib() -> int:
    """A size in MiB that no mapping of this process has now. A fixed one is not enough:
    under the full suite this process's [heap] was once exactly 37 MiB and resident, and
    the sum over every 37 MiB mapping read 37 before the test's own region was touched."""
    sizes_kb = {
        int(line.split()[1])
        for line in Path("/proc/self/smaps").read_text().splitlines()
        if line.startswith("Size:")
    }
    return next(mib for mib in range(37, 400) if mib * 1024 not in sizes_kb)


def test_guest_ram_is_the_resident_part_of_the_exactly_guest_sized_mapping() -> None:
    size_mib = unused_size_mib()
    assert guest_ram_rss_mib(os.getpid(), size_mib) is None
    region = mmap.mmap(-1, size_mib << 20)
    try:
        assert guest_ram_rss_mib(os.getpid(), size_mib) == 0
        for offset in range(0, 5 << 20, mmap.PAGESIZE):  # touch 5 MiB of it
            region[offset] = 1
        assert guest_ram_rss_mib(os.getpid(), size_mib) == 5
    finally:
        region.close()
    assert guest_ram_rss_mib(os.getpid(), size_mib) is None
