"""QEMU snapshot save/restore against real QEMU (the halting kernel of tests.qemu_support).

The proof that a restore runs the *saved* memory rather than a fresh boot: the
two VMs boot kernel files that differ in one marker. After the restore, the
new QEMU's RAM (``pmemsave``) holds the first VM's marker and not its own.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from banger.diskfull import disk_full_is_said
from banger.errors import Conflict
from banger.vmm.base import VMState
from banger.vmm.qemu import QemuDriver
from banger.vmm.qemu_snapshot import SnapshotError
from banger.vmm.qmp import QMPClient
from tests.qemu_support import halting_kernel, make_spec
from tests.support import async_wait_for, needs_root

#: Inside the protected-mode part of the halting kernel, which lands at 1 MiB + 0x400.
MARKER_OFFSET = 0x800


def marked_kernel(path: Path, marker: bytes) -> Path:
    halting_kernel(path)
    image = bytearray(path.read_bytes())
    image[MARKER_OFFSET : MARKER_OFFSET + len(marker)] = marker
    path.write_bytes(bytes(image))
    return path


async def low_memory(socket: Path, out: Path) -> bytes:
    async with await QMPClient.connect(socket) as qmp:
        await qmp.execute("pmemsave", {"val": 0, "size": 0x200000, "filename": str(out)})
    return out.read_bytes()


@pytest.mark.parametrize("agent", [False, True], ids=["plain", "agent-channel"])
async def test_restore_runs_the_saved_memory(short_tmp: Path, agent: bool) -> None:
    """Also with the guest agent's virtio-serial port on both sides (issue #18 item 1)."""
    driver = QemuDriver(control_timeout=30.0, quit_timeout=30.0)  # hang bounds, not speed
    a_dir, b_dir = short_tmp / "a", short_tmp / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    spec_a = dataclasses.replace(
        make_spec(a_dir),
        kernel=marked_kernel(a_dir / "k", b"MARKER-AAAA"),
        agent_socket=a_dir / "qga.sock" if agent else None,
    )
    state = short_tmp / "state"
    a = await driver.launch(spec_a)
    try:
        # The guest loads its kernel through fw_cfg once it runs: wait for the marker
        # (TCG on a loaded host can take far longer than a KVM guest would).
        async def loaded() -> bool:
            return b"MARKER-AAAA" in await low_memory(a.control_socket, a_dir / "m")

        await async_wait_for(loaded, 300, "the first VM loads its kernel")
        assert await driver.snapshot(a, state, resume=False) is True
        status = await driver.status(a)
        assert status.state is VMState.PAUSED and status.detail == "postmigrate"
        assert state.stat().st_size > 64 << 10 and state.stat().st_mode & 0o777 == 0o600
        with pytest.raises(FileExistsError):  # never overwrites a state file
            await driver.snapshot(a, state)
        await driver.resume(a)  # cont re-activates the disks after a completed save
        assert (await driver.status(a)).state is VMState.RUNNING
    finally:
        await driver.stop(a, graceful_timeout=0)

    spec_b = dataclasses.replace(
        make_spec(b_dir),
        vm_id="t2",
        kernel=marked_kernel(b_dir / "k", b"MARKER-BBBB"),
        agent_socket=b_dir / "qga.sock" if agent else None,
    )
    b = await driver.restore(spec_b, state)
    try:
        assert (await driver.status(b)).state is VMState.RUNNING
        memory = await low_memory(b.control_socket, b_dir / "m")
        assert b"MARKER-AAAA" in memory and b"MARKER-BBBB" not in memory
        assert "-incoming" in b.argv and b.argv[-3:] == ("-incoming", "defer", "-S")
        assert ("virtio-serial-device" in b.argv) is agent
    finally:
        await driver.stop(b, graceful_timeout=0)
    with pytest.raises(Conflict, match="not running"):
        await driver.snapshot(b, short_tmp / "again")


async def test_a_broken_state_file_fails_the_restore_and_leaves_no_qemu(short_tmp: Path) -> None:
    driver = QemuDriver(control_timeout=30.0, quit_timeout=30.0)  # hang bounds, not speed
    state = short_tmp / "state"
    state.write_bytes(os.urandom(4096))
    spec = make_spec(short_tmp)
    with pytest.raises(SnapshotError, match="loading the guest state failed"):
        await driver.restore(spec, state)
    left = subprocess.run(
        ["pgrep", "-f", f"process=banger-{spec.vm_id}"], capture_output=True, check=False
    )
    assert left.returncode == 1, left.stdout  # no QEMU left behind


@needs_root  # mounts a tmpfs
async def test_a_save_that_finds_no_space_says_so_and_the_guest_runs_on(short_tmp: Path) -> None:
    """QEMU reports ENOSPC on the state file through the MIGRATION event and query-migrate
    (issue #18 item 6); the guest runs on and a later save, with room, works."""
    driver = QemuDriver(control_timeout=30.0, quit_timeout=30.0)  # hang bounds, not speed
    full = short_tmp / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
    a = await driver.launch(make_spec(short_tmp))
    try:
        with pytest.raises(SnapshotError) as caught:
            await driver.snapshot(a, full / "state", resume=False)
        assert "No space left on device" in caught.value.message
        assert disk_full_is_said(caught.value)
        assert (await driver.status(a)).state is VMState.RUNNING  # save_state sent cont
        assert await driver.snapshot(a, short_tmp / "state") is True  # with room: works
        assert (await driver.status(a)).state is VMState.RUNNING
    finally:
        await driver.stop(a, graceful_timeout=0)
        subprocess.run(["umount", "-l", str(full)], check=False)
