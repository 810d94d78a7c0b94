"""Smoke test for a KVM host with Firecracker installed: NOT run on banger's own machines.

``make smoke VMM=firecracker`` sets ``BANGER_SMOKE_VMM=firecracker`` and runs
this module as root. It boots real guests under the real Firecracker through
the real CLI, daemon and helper (the e2e harness: a network namespace, an
unprivileged owner), with ``vmm = "firecracker"`` in the owner's config:
``vm run`` of a command, then pause/resume (a paused guest answers nothing on
port 22), stop and delete. Skipped unless the host has a Firecracker binary on
PATH and KVM usable for ordinary guests (``banger doctor`` says which is
missing), and unless the owner may open ``/dev/net/tun`` (Firecracker opens
its tap by name; jailer mode is not covered by this module yet).

On the development machines of this repository Firecracker cannot run, so its
paths are exercised with stand-ins instead (tests/integration/test_firecracker_driver.py,
test_vm_firecracker_standin.py, test_jailer_op.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator

import pytest

from banger.hostinfo import kvm_status
from tests.e2e.harness import Banger, banger_env, seed_artifacts, ssh_banner
from tests.image_cache import cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.support import needs_root

WANTED = os.environ.get("BANGER_SMOKE_VMM") == "firecracker"
pytestmark = [
    pytest.mark.root,
    pytest.mark.guest,
    pytest.mark.slow,
    needs_root,
    pytest.mark.skipif(not WANTED, reason="run with `make smoke VMM=firecracker`"),
]


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    if shutil.which("firecracker") is None:
        pytest.fail("BANGER_SMOKE_VMM=firecracker but no firecracker on PATH", pytrace=False)
    kvm = kvm_status()
    if not kvm.usable_for_ordinary_guests:
        pytest.fail(f"BANGER_SMOKE_VMM=firecracker but KVM: {kvm.reason}", pytrace=False)
    with banger_env(seed=False) as env:
        config = env.home / "config"
        config.mkdir(exist_ok=True)
        (config / "config.toml").write_text('vmm = "firecracker"\n')
        for path in (config, config / "config.toml"):
            os.chown(path, env.user.uid, env.user.gid)
        seed_artifacts(env, cached_debian_kernel(), cached_debian_image())
        yield env


def test_a_command_runs_in_a_firecracker_guest(b: Banger) -> None:
    shown = json.loads(b.banger("kernel", "show", "debian-test", "--json").stdout)
    assert {c["vmm"]: c["ok"] for c in shown["capabilities"]}["firecracker"]
    result = b.banger("vm", "run", "--init", "fast", "--rm", "--", "uname", "-r")
    assert result.stdout.strip().startswith("6."), result.stdout


def test_firecracker_lifecycle_with_pause(b: Banger) -> None:
    b.banger("vm", "create", "--name", "fc", "--init", "fast", "--start")
    shown = json.loads(b.banger("vm", "show", "fc", "--json").stdout)
    assert shown["vmm"] == "firecracker" and shown["accelerator"] == "kvm"
    assert shown["root_strategy"] in ("reflink", "dm-snapshot", "copy")
    assert ssh_banner(b, shown["ip"], timeout=60)[0] == 0  # a hang bound
    b.banger("vm", "pause", "fc")
    assert ssh_banner(b, shown["ip"], timeout=3)[0] == 3  # paused: never answers
    b.banger("vm", "resume", "fc")
    assert b.banger("vm", "ssh", "fc", "--", "echo", "ok").stdout.strip() == "ok"
    b.banger("vm", "restart", "fc")
    assert json.loads(b.banger("vm", "show", "fc", "--json").stdout)["vmm"] == "firecracker"
    b.banger("vm", "stop", "fc")
    b.banger("vm", "rm", "fc")
