"""Concurrency: 8 ``vm create`` + ``vm rm`` loops through the real CLI and daemon, bounded.

The daemon runs with ``BANGER_DEBUG_LOCKS=1``: every VM lock acquisition is
checked against rule 2 of docs/ARCHITECTURE.md ("Locks and their order": no
task asks for a VM lock while holding one); a violation fails the operation
and logs ``lock order violation``. Every command must return within
:data:`COMMAND_BOUND` seconds (no deadlock), no address may be leased twice,
and nothing may be left at the end.

Creates do not start (no guests boot), so leases are exercised separately:
8 threads over two SQLite connections to one store allocate and release
addresses as fast as they can, and no address may ever be held twice.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from banger.store import Store
from tests.e2e.harness import Banger, banger_env, seed_artifacts
from tests.e2e.leftovers import banger_leftovers, query
from tests.image_cache import cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.reliability.faults import DEBUG_LOCKS_ENV
from tests.reliability_counts import ReliabilityCounts
from tests.support import needs_root

LOOPS = 8
#: How long the loops keep going (each finishes the cycle it is in).
DURATION = 45.0
#: A command taking longer than this is a deadlock (creates take ~1-3 s here, more under load).
COMMAND_BOUND = 150.0


@dataclass
class Tally:
    cycles: int = 0
    slowest: float = 0.0
    failures: list[str] = field(default_factory=list)
    duplicate_ips: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _timed(b: Banger, tally: Tally, *args: str) -> bool:
    began = time.monotonic()
    try:
        result = b.banger(*args, check=False, timeout=COMMAND_BOUND)
    except subprocess.TimeoutExpired:
        with tally.lock:
            tally.failures.append(f"banger {' '.join(args)}: no answer in {COMMAND_BOUND}s")
        return False
    took = time.monotonic() - began
    with tally.lock:
        tally.slowest = max(tally.slowest, took)
        if result.returncode != 0:
            tally.failures.append(f"banger {' '.join(args)}: {result.stderr.strip()[-300:]}")
    return result.returncode == 0


def _loop(b: Banger, index: int, deadline: float, tally: Tally) -> None:
    n = 0
    # At least one cycle whatever the clock says (a loop started late on a loaded
    # machine still counts), then more until the deadline: the cycle count the
    # test checks never depends on speed.
    while n == 0 or time.monotonic() < deadline:
        name = f"cc{index}-{n}"
        n += 1
        created = _timed(b, tally, "vm", "create", "--name", name, "--init", "fast")
        # rm even after a failed create: whatever it left must go too
        removed = _timed(b, tally, "vm", "rm", "--force", name) if created else True
        if created and removed:
            with tally.lock:
                tally.cycles += 1


def _watch_ips(b: Banger, stop: threading.Event, tally: Tally) -> None:
    while not stop.wait(0.5):
        ips = [str(r[0]) for r in query(b, "SELECT ip FROM vms WHERE ip IS NOT NULL")]
        leased = [str(r[0]) for r in query(b, "SELECT ip FROM ip_leases")]
        for ip in {ip for ip in ips if ips.count(ip) > 1} | {
            ip for ip in leased if leased.count(ip) > 1
        }:
            with tally.lock:
                tally.duplicate_ips.append(ip)


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with banger_env(seed=False) as env:
        env.env[DEBUG_LOCKS_ENV] = "1"  # the auto-started daemon checks the lock order
        seed_artifacts(env, cached_debian_kernel(), cached_debian_image())
        yield env


@pytest.mark.root
@pytest.mark.slow
@needs_root
def test_eight_create_rm_loops_neither_deadlock_nor_leak(
    b: Banger, reliability_counts: ReliabilityCounts
) -> None:
    log = b.state_dir / "bangerd.log"
    assert "BANGER_DEBUG_LOCKS=1: every VM lock acquisition is checked" in log.read_text()
    tally = Tally()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_ips, args=(b, stop, tally), daemon=True)
    watcher.start()
    deadline = time.monotonic() + DURATION
    loops = [
        threading.Thread(target=_loop, args=(b, i, deadline, tally), daemon=True)
        for i in range(LOOPS)
    ]
    for t in loops:
        t.start()
    for t in loops:
        t.join(DURATION + 2 * COMMAND_BOUND + 30)
    stop.set()
    watcher.join(5)
    assert not any(t.is_alive() for t in loops), "a loop is stuck: deadlock"
    assert tally.failures == [], tally.failures[:5]
    assert tally.duplicate_ips == []
    assert tally.cycles >= LOOPS, f"only {tally.cycles} create+rm cycles in {DURATION}s"
    assert "lock order violation" not in log.read_text()
    assert json.loads(b.banger("vm", "list", "--json").stdout) == []
    reliability_counts.check_leaks(banger_leftovers(b, []))
    print(f"{tally.cycles} create+rm cycles, slowest command {tally.slowest:.1f}s")


def test_concurrent_lease_allocation_never_hands_out_one_address_twice(short_tmp: Path) -> None:
    db = short_tmp / "banger.db"
    subnet = IPv4Network("10.77.0.0/27")  # 29 usable: contention for the low addresses
    stores = [Store.open(db), Store.open(db)]
    try:
        vm_ids = []
        for i in range(LOOPS):
            vm = stores[0].create_vm(
                name=f"lease{i}", image_id=None, kernel_id=None, vmm="qemu",
                init_mode="fast", vcpus=1, memory_mib=256, work_disk_size=64 << 20,
            )  # fmt: skip
            vm_ids.append(vm.id)
        held: dict[IPv4Address, str] = {}
        problems: list[str] = []
        guard = threading.Lock()
        # A fixed amount of work per thread, not a 4 s window: a loaded machine
        # takes longer but does every round, so "enough overlap" never depends on speed.
        rounds = 25
        counts = [0] * LOOPS

        def work(i: int) -> None:
            store = stores[i % 2]
            while counts[i] < rounds:
                ip = store.allocate_ip(vm_ids[i], subnet)
                with guard:
                    if ip in held:
                        problems.append(f"{ip} given to {vm_ids[i]} while {held[ip]} holds it")
                    held[ip] = vm_ids[i]
                with guard:  # forget and release as one step: no false alarm in between
                    del held[ip]
                    store.release_ip(vm_ids[i])
                counts[i] += 1

        threads = [threading.Thread(target=work, args=(i,)) for i in range(LOOPS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)  # a hang bound only
        assert not any(t.is_alive() for t in threads), "an allocation loop hung"
        assert problems == []
        assert counts == [rounds] * LOOPS, counts
        assert stores[0].list_leases() == []
    finally:
        for store in stores:
            store.close()
