"""A QEMU guest of an image with the vsock agent starter runs one agent (issue #18 item 1).

Image finalize installs ``/sbin/banger-agent-vsock`` (enabled as
``banger-agent-vsock.service``, started by the fast init) so that a Firecracker
guest, which has a vsock device and no virtio-serial port, runs ``qemu-ga`` on
vsock. On QEMU the guest has the virtio-serial agent port and no vsock device:
the starter must do nothing there (exit 0, no second agent), under both inits.
What this cannot show here: a guest with a vsock device (no Firecracker, no
``/dev/vhost-vsock`` on this host).
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.harness import Banger
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]


def agents(b: Banger, name: str) -> list[str]:
    """The guest's qemu-ga command lines."""
    script = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"
    out = b.banger("vm", "ssh", name, "--", "sh", "-c", script).stdout
    return [line.strip() for line in out.splitlines() if "qemu-ga" in line.split(" ")[0]]


@pytest.mark.parametrize("init", ["fast", "systemd"])
def test_the_vsock_starter_leaves_a_qemu_guest_s_agent_alone(b: Banger, init: str) -> None:
    name = f"vq{init[0]}"
    b.banger("vm", "create", "--name", name, "--init", init, "--start")
    try:
        assert json.loads(b.banger("vm", "show", name, "--json").stdout)["agent"] == "available"
        found = agents(b, name)
        # One agent, on the port (Debian's unit runs qemu-ga with its default, virtio-serial).
        assert len(found) == 1 and "vsock" not in found[0], found
        if init == "systemd":
            show = b.banger(
                "vm", "ssh", name, "--", "systemctl", "show", "banger-agent-vsock.service",
                "-p", "Result", "-p", "ExecMainStatus", "-p", "ActiveState",
            ).stdout  # fmt: skip
            assert "Result=success" in show and "ExecMainStatus=0" in show, show
    finally:
        b.banger("vm", "rm", "--force", name)
