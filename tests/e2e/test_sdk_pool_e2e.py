"""A pool of ready guests through the Python SDK, with a real QEMU/TCG guest (issue #18
item 4, issue #17's SDK).

A program run as the owner (as a user's script would be) makes a pool of one
with ``bg.pools.set``, waits with ``bg.pools.wait_ready`` (the filler boots the
template guest cold and keeps it as the ready one), takes it with
``bg.create(name, pool=...)`` and runs ``hostname`` in it: it answers as its new
name. ``bg.pools.remove`` then removes the pool (the refill's guest and the
template) and leaves the taken VM, which is deleted last; nothing is left. The
CLI's side of pools, refills and faults: tests/e2e/test_pool_e2e.py.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.harness import REPO, Banger
from tests.e2e.leftovers import assert_nothing_left
from tests.support import VENV_BIN, needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

#: A cold template boot under TCG on a loaded machine, a snapshot, a take and a removal.
PROGRAM_TIMEOUT = 2400

#: The owner's program: one JSON line of what it saw.
PROGRAM = """
import json, sys, time
from banger.sdk import Banger

name, pool = sys.argv[1:3]
seen = {}
with Banger() as bg:
    made = bg.pools.set(pool, size=1, init="fast")
    seen["set"] = [made.name, made.size, made.init, made.state]
    ready = bg.pools.wait_ready(pool, timeout=1800)
    seen["ready"] = [ready.state, len(ready.ready), ready.template]
    seen["listed"] = [p.name for p in bg.pools.list()]
    seen["vms_before"] = [v.name for v in bg.list()]
    started = time.monotonic()
    vm = bg.create(name, pool=pool)
    seen["take_s"] = time.monotonic() - started
    seen["vm"] = [vm.name, vm.info().state]
    r = vm.run(["hostname"], timeout=300)
    seen["hostname"] = [r.exit_code, r.stdout, r.stderr]
    seen["vms_after_take"] = [v.name for v in bg.list()]
    bg.pools.remove(pool)
    seen["pools_after_rm"] = [p.name for p in bg.pools.list()]
    seen["vm_after_rm"] = vm.run(["true"], timeout=300).exit_code
    vm.delete(force=True)
    seen["vms_after_delete"] = [v.name for v in bg.list()]
print(json.dumps(seen))
"""


def test_the_sdk_takes_a_pools_ready_guest(b: Banger) -> None:
    try:
        python = [str(VENV_BIN / "python"), "-c", PROGRAM, "x1", "sdkp"]
        run = subprocess.run(
            b.as_owner(["env", "-C", str(b.user.home), f"PYTHONPATH={REPO}", *python]),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=PROGRAM_TIMEOUT,
            check=False,
        )
        assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    finally:
        # A failed program may leave the pool: its guests are not in `vm list`, so the
        # harness's teardown would not remove them.
        if "sdkp" in b.banger("pool", "list", check=False).stdout:
            b.banger("pool", "rm", "sdkp", check=False, timeout=600)
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(seen, indent=1))  # the whole picture when an assert below fails

    assert seen["set"] == ["sdkp", 1, "fast", "filling"]
    state, ready, template = seen["ready"]
    assert (state, ready) == ("ready", 1) and template.startswith("pool.sdkp.")
    assert seen["listed"] == ["sdkp"]
    assert seen["vms_before"] == []  # a ready guest is the pool's, not in the owner's list
    assert seen["vm"] == ["x1", "running"]
    assert seen["hostname"] == [0, "x1\n", ""]
    assert seen["vms_after_take"] == ["x1"]
    assert seen["pools_after_rm"] == []
    assert seen["vm_after_rm"] == 0  # a taken VM is the owner's: pool removal leaves it
    assert seen["vms_after_delete"] == []
    print(f"SDK take from a ready pool: {seen['take_s']:.1f} s")
    assert_nothing_left(b)
