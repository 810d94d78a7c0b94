"""The guest side of the agent on vsock (issue #18 item 1): ``/sbin/banger-agent-vsock``.

Firecracker gives the guest a vsock device and no virtio-serial port, so the
guest's ``qemu-ga`` must listen on vsock, on the port the host ``CONNECT``s to.
The script decides from sysfs; here it runs (under dash and busybox sh, as in
Debian and other images) against a made-up sysfs with a stand-in ``qemu-ga``
that records its argv. What this cannot show: a real Firecracker guest's vsock
(no Firecracker here) — the host side is tested against the stand-in.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from banger.guest.agent import VSOCK_PORT
from banger.images import finalize
from banger.images.finalize import (
    AGENT_VSOCK_PATH,
    AGENT_VSOCK_SERVICE,
    AGENT_VSOCK_UNIT,
    agent_vsock_text,
    fast_init_text,
    finalize_tree,
)
from tests.image_trees import usrmerged_tree

SHELLS = [sh for sh in ("/bin/sh", shutil.which("busybox")) if sh is not None]


def test_the_guest_listens_on_the_port_the_host_connects_to() -> None:
    match = re.search(r"^PORT=(\d+)$", agent_vsock_text(), re.M)
    assert match is not None and int(match.group(1)) == VSOCK_PORT
    assert re.search(r'-m vsock-listen -p "4294967295:\$PORT"', agent_vsock_text())


def sysfs(root: Path, *, vsock: bool, agent_port: bool, others: bool = True) -> Path:
    sys_dir = root / "sys"
    devices = sys_dir / "bus/virtio/devices"
    devices.mkdir(parents=True)
    ids = (["0x0002", "0x0001"] if others else []) + (["0x0013"] if vsock else [])
    for i, dev_id in enumerate(ids):
        (devices / f"virtio{i}").mkdir()
        (devices / f"virtio{i}/device").write_text(dev_id + "\n")
    ports = sys_dir / "class/virtio-ports"
    ports.mkdir(parents=True)
    (ports / "vport0p1").mkdir()
    (ports / "vport0p1/name").write_text("org.qemu.other\n")
    if agent_port:
        (ports / "vport1p1").mkdir()
        (ports / "vport1p1/name").write_text("org.qemu.guest_agent.0\n")
    return sys_dir


def run_script(tmp_path: Path, shell: str, sys_dir: Path, *, has_qemu_ga: bool = True) -> str:
    """The script's run; what the stand-in qemu-ga was started with ("" when it was not)."""
    script = tmp_path / "banger-agent-vsock"
    script.write_text(agent_vsock_text())
    record = tmp_path / "argv"
    fake = tmp_path / "qemu-ga"
    record.unlink(missing_ok=True)
    fake.unlink(missing_ok=True)
    if has_qemu_ga:
        fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
        fake.chmod(0o755)
    argv = [shell, "sh", str(script)] if shell.endswith("busybox") else [shell, str(script)]
    env = {"PATH": os.environ["PATH"], "BANGER_SYSFS": str(sys_dir), "BANGER_QEMU_GA": str(fake)}
    done = subprocess.run(argv, env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return record.read_text() if record.exists() else ""


@pytest.mark.parametrize("shell", SHELLS)
def test_a_vsock_device_without_an_agent_port_starts_qemu_ga_on_vsock(
    tmp_path: Path, shell: str
) -> None:
    argv = run_script(tmp_path, shell, sysfs(tmp_path, vsock=True, agent_port=False))
    assert argv.split("\n")[:-1] == [
        "-m", "vsock-listen", "-p", f"4294967295:{VSOCK_PORT}", "-t", "/run/qemu-ga",
    ]  # fmt: skip


@pytest.mark.parametrize("shell", SHELLS)
def test_qemu_guests_are_left_alone(tmp_path: Path, shell: str) -> None:
    """The virtio-serial port (QEMU) wins; no vsock device, or no qemu-ga: nothing runs."""
    assert run_script(tmp_path, shell, sysfs(tmp_path, vsock=True, agent_port=True)) == ""
    shutil.rmtree(tmp_path / "sys")
    assert run_script(tmp_path, shell, sysfs(tmp_path, vsock=False, agent_port=True)) == ""
    shutil.rmtree(tmp_path / "sys")
    assert run_script(tmp_path, shell, sysfs(tmp_path, vsock=False, agent_port=False)) == ""
    shutil.rmtree(tmp_path / "sys")
    empty = sysfs(tmp_path, vsock=True, agent_port=False)
    assert run_script(tmp_path, shell, empty, has_qemu_ga=False) == ""


def test_the_fast_init_starts_it_in_the_background() -> None:
    text = fast_init_text()
    assert f"\t{AGENT_VSOCK_PATH} &\n" in text
    # After the virtio-serial loop (which keeps starting QEMU's agent as before) and sshd's
    # loop last: the script must never hold PID 1 up.
    assert text.index("org.qemu.guest_agent.0 -t /run/qemu-ga &") < text.index(AGENT_VSOCK_PATH)
    assert text.index(AGENT_VSOCK_PATH) < text.index('log "starting sshd')


def test_the_unit_runs_it_under_systemd() -> None:
    assert f"ExecStart={AGENT_VSOCK_PATH}\n" in AGENT_VSOCK_SERVICE
    assert "WantedBy=multi-user.target\n" in AGENT_VSOCK_SERVICE
    assert "Restart=on-failure\n" in AGENT_VSOCK_SERVICE


@pytest.mark.root
def test_finalize_installs_and_enables_it(tmp_path: Path) -> None:
    tree = usrmerged_tree(tmp_path)
    finalize_tree(tree, home_out=tmp_path / "home")
    script = tree / AGENT_VSOCK_PATH.lstrip("/")
    assert script.read_text() == agent_vsock_text()
    assert script.stat().st_mode & 0o777 == 0o755
    unit = tree / "etc/systemd/system" / AGENT_VSOCK_UNIT
    assert unit.read_text() == AGENT_VSOCK_SERVICE
    wants = tree / "etc/systemd/system/multi-user.target.wants" / AGENT_VSOCK_UNIT
    assert os.readlink(wants) == f"/etc/systemd/system/{AGENT_VSOCK_UNIT}"
    assert finalize.FINALIZE_VERSION >= 1
