"""The QEMU driver against real QEMU.

The guest is the halting kernel of ``tests.qemu_support``: a valid bzImage
header whose real-mode entry point is ``cli; hlt``. QEMU loads and starts it
like any kernel, and it then sits halted (using no CPU), which is enough to
exercise launch, QMP, pause/resume, stop and liveness without a real guest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from banger.errors import Conflict
from banger.guest.agent import AgentUnavailable, GuestAgent
from banger.procinfo import is_same_process
from banger.vmm.base import Disk, VMMError, VMMProcess, VMState
from banger.vmm.qemu import QemuDriver
from banger.vmm.qmp import QMPClient, QMPError
from tests.qemu_support import make_spec, open_tap_in_netns
from tests.support import needs_root, netns


@pytest.fixture
def driver() -> QemuDriver:
    # Hang bounds, not speed: a loaded machine may take seconds to answer QMP
    # or to exit after quit, and a short bound would turn that into "unresponsive".
    return QemuDriver(control_timeout=60.0, quit_timeout=60.0)


@pytest.fixture
async def vm(short_tmp: Path, driver: QemuDriver) -> AsyncIterator[VMMProcess]:
    proc = await driver.launch(make_spec(short_tmp))
    try:
        yield proc
    finally:
        if is_same_process(proc.pid, proc.start_time):
            os.kill(proc.pid, signal.SIGKILL)
        await driver.wait(proc, 10)


async def test_launch_status_and_liveness(vm: VMMProcess, driver: QemuDriver) -> None:
    assert vm.driver == "qemu" and vm.vm_id == "t1"
    assert is_same_process(vm.pid, vm.start_time)
    assert not is_same_process(vm.pid, vm.start_time + 1)
    assert (await driver.status(vm)).state is VMState.RUNNING
    assert os.getsid(vm.pid) == vm.pid, "QEMU runs in its own session"
    assert Path(f"/proc/{vm.pid}/cmdline").read_bytes().split(b"\0")[:-1] == [
        a.encode() for a in vm.argv
    ]
    assert vm.control_socket.stat().st_mode & 0o777 == 0o600


async def test_pause_resume(vm: VMMProcess, driver: QemuDriver) -> None:
    await driver.pause(vm)
    status = await driver.status(vm)
    assert (status.state, status.detail) == (VMState.PAUSED, "paused")
    await driver.resume(vm)
    assert (await driver.status(vm)).state is VMState.RUNNING


async def test_reattach_from_stored_record(vm: VMMProcess) -> None:
    stored = json.loads(json.dumps(vm.to_json()))
    fresh = QemuDriver()  # as after a daemon restart: nothing in memory
    again = VMMProcess.from_json(stored)
    assert (await fresh.status(again)).state is VMState.RUNNING
    result = await fresh.stop(again, graceful_timeout=0)
    assert result.method == "quit"
    assert (await fresh.status(again)).state is VMState.EXITED


async def test_stop_without_guest_cooperation_falls_back_to_quit(
    vm: VMMProcess, driver: QemuDriver
) -> None:
    # The halting guest has no ACPI: the power button is pressed but nobody answers.
    result = await driver.stop(vm, graceful_timeout=0.5)
    assert result.method == "quit"  # the fallback, not a kill: judged by the method, no upper bound
    assert result.seconds >= 0.5  # a lower bound, the wait being the behaviour: the button's grace
    assert not is_same_process(vm.pid, vm.start_time)
    assert (await driver.status(vm)).state is VMState.EXITED
    assert (await driver.stop(vm, graceful_timeout=1)).method == "already-exited"
    with pytest.raises(Conflict):
        await driver.pause(vm)


async def test_stop_an_unresponsive_vmm_kills_it(vm: VMMProcess) -> None:
    # The control timeout is the behaviour here: a stopped QEMU never answers, so
    # however short the bound, "unresponsive" is the only possible verdict.
    driver = QemuDriver(control_timeout=2.0, quit_timeout=5.0)
    os.kill(vm.pid, signal.SIGSTOP)  # a hung QEMU: QMP never answers
    status = await driver.status(vm)
    assert status.state is VMState.UNRESPONSIVE
    result = await driver.stop(vm, graceful_timeout=0.2)
    assert result.method == "killed"
    assert not is_same_process(vm.pid, vm.start_time)


async def test_qmp_errors_and_events(vm: VMMProcess) -> None:
    async with await QMPClient.connect(vm.control_socket) as qmp:
        assert qmp.greeting["version"]["qemu"]["major"] >= 7
        with pytest.raises(QMPError) as info:
            await qmp.execute("no-such-command")
        assert info.value.error_class == "CommandNotFound"
        await qmp.execute("stop")
        assert (await qmp.wait_event("STOP", timeout=60)) is not None  # a hang bound
        await qmp.execute("system_powerdown")
        event = await qmp.wait_event("POWERDOWN", timeout=60)
        assert event is not None and event["event"] == "POWERDOWN"
        assert await qmp.wait_event("NEVER", timeout=0.1) is None


async def test_the_agent_channel_is_there_without_an_agent(
    short_tmp: Path, driver: QemuDriver
) -> None:
    """QEMU listens on the agent socket; with no agent in the guest a sync times out clearly."""
    spec = make_spec(short_tmp, agent_socket=short_tmp / "qga.sock")
    proc = await driver.launch(spec)
    try:
        with pytest.raises(AgentUnavailable, match="no answer within"):
            await GuestAgent.connect(short_tmp / "qga.sock", timeout=1)
        # One client at a time: the first is gone, a second connects (and times out too).
        with pytest.raises(AgentUnavailable, match="no answer within"):
            await GuestAgent.connect(short_tmp / "qga.sock", timeout=1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await driver.wait(proc, 10)


async def test_qmp_connect_to_nothing(short_tmp: Path) -> None:
    with pytest.raises(QMPError, match="cannot connect"):
        await QMPClient.connect(short_tmp / "none.sock", timeout=1)


async def test_early_exit_carries_qemu_stderr(short_tmp: Path, driver: QemuDriver) -> None:
    spec = make_spec(short_tmp, root_disk=Disk(short_tmp / "missing.ext4", "raw"))
    with pytest.raises(VMMError) as info:
        await driver.launch(spec)
    message = info.value.message
    assert "failed to start (exit status 1)" in message
    assert "missing.ext4" in message and "No such file" in message
    assert info.value.hint == f"see {spec.vmm_log}"


async def test_missing_binary(short_tmp: Path) -> None:
    with pytest.raises(VMMError, match="QEMU not found"):
        await QemuDriver(binary="qemu-system-nonexistent").launch(make_spec(short_tmp))


# --- tap descriptor passing -------------------------------------------------------------


def tap_exists(ns: str | None, name: str) -> bool:
    where = ["-n", ns] if ns else []
    out = subprocess.run(
        ["ip", *where, "-j", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    return any(link["ifname"] == name for link in json.loads(out))


@pytest.mark.root
@needs_root
async def test_tap_fd_is_passed_to_qemu(short_tmp: Path, driver: QemuDriver) -> None:
    with netns() as ns:
        tap_fd = open_tap_in_netns(ns.name, "bgtap0")
        try:
            spec = make_spec(short_tmp, tap_fd=tap_fd, tap_name="bgtap0")
            proc = await driver.launch(spec)
        finally:
            os.close(tap_fd)  # QEMU holds the only remaining reference now
        try:
            assert tap_exists(ns.name, "bgtap0")
            assert not tap_exists(None, "bgtap0"), "the tap lives in the namespace only"
            async with await QMPClient.connect(proc.control_socket) as qmp:
                info = await qmp.execute("human-monitor-command", {"command-line": "info network"})
            assert "n0: index=0,type=tap,fd=3" in info
            assert f"macaddr={spec.mac}" in info
        finally:
            result = await driver.stop(proc, graceful_timeout=0)
        assert result.method == "quit"
        # A non-persistent tap disappears with its last descriptor: QEMU really had it.
        assert not tap_exists(ns.name, "bgtap0")
