"""The Firecracker driver's lifecycle against a STAND-IN for Firecracker.

Firecracker cannot run here (no Firecracker binary, and no hardware KVM able to
run ordinary guests), so these tests spawn ``tests/firecracker_standin.py`` in
its place: a real separate process, started by the driver exactly as it starts
Firecracker, serving HTTP on the API socket, validating every request against
``firecracker-api.yaml`` and enforcing Firecracker's phase rules. What this
proves: the driver's process supervision (stale socket, spawn, socket wait,
early-exit reporting, Ctrl-Alt-Del then SIGKILL), its request order and its
error handling. What it cannot prove: that a real Firecracker boots the guest;
that needs a KVM host (``make smoke VMM=firecracker``).
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from banger.errors import Conflict
from banger.procinfo import is_same_process
from banger.vmm.base import VMMError, VMMProcess, VMMStatus, VMState
from banger.vmm.firecracker import models
from banger.vmm.firecracker.api import FirecrackerClient, FirecrackerError
from banger.vmm.firecracker.driver import FirecrackerDriver
from banger.vmm.firecracker.plan import SnapshotFiles
from tests.firecracker_world import standin_spec as make_spec
from tests.standins import standin_binary


async def test_launch_pause_resume_and_graceful_stop(short_tmp: Path) -> None:
    driver = FirecrackerDriver(standin_binary(short_tmp), control_timeout=30)
    spec = make_spec(short_tmp)
    proc = await driver.launch(spec)
    try:
        assert is_same_process(proc.pid, proc.start_time)
        assert (await driver.status(proc)).state is VMState.RUNNING
        console = spec.console_log.read_text()
        assert "[stand-in] Command line:" in console
        line = console.split("Command line: ", 1)[1].splitlines()[0]
        assert line.split().count("root=/dev/vda") == 1  # appended by Firecracker only
        assert {"console=ttyS0", "reboot=k", "panic=-1", "rw"} <= set(line.split())
        log = (short_tmp / "firecracker.log").read_text()
        assert "PUT /actions: ok" in log and "PUT /network-interfaces/eth0: ok" in log
        metrics = (short_tmp / "firecracker.metrics").read_text().splitlines()
        assert json.loads(metrics[0])["standin"] == "InstanceStart"

        await driver.pause(proc)
        assert await driver.status(proc) == VMMStatus(VMState.PAUSED, "Paused")
        await driver.resume(proc)
        assert (await driver.status(proc)).state is VMState.RUNNING
    except BaseException:
        await driver.stop(proc, 0)
        raise
    result = await driver.stop(proc, graceful_timeout=60)  # a hang bound: the method is the claim
    assert result.method == "graceful"
    assert not is_same_process(proc.pid, proc.start_time)
    assert "Ctrl-Alt-Del" in spec.console_log.read_text()
    assert (await driver.status(proc)).state is VMState.EXITED
    with pytest.raises(Conflict, match="not running"):
        await driver.pause(proc)
    assert (await driver.stop(proc, 1)).method == "already-exited"


async def test_stop_resumes_a_paused_guest_first(short_tmp: Path) -> None:
    # Generous bounds: on a loaded 2-core machine the stand-in (a Python process)
    # once took over 5 s to answer; the assertion is about the method, not speed.
    driver = FirecrackerDriver(standin_binary(short_tmp), control_timeout=30)
    proc = await driver.launch(make_spec(short_tmp))
    await driver.pause(proc)
    assert (await driver.stop(proc, graceful_timeout=30)).method == "graceful"


async def test_guest_ignoring_ctrl_alt_del_is_killed(short_tmp: Path) -> None:
    binary = standin_binary(short_tmp, env={"BANGER_STANDIN_IGNORE_CTRL_ALT_DEL": "1"})
    driver = FirecrackerDriver(binary)
    proc = await driver.launch(make_spec(short_tmp))
    result = await driver.stop(proc, graceful_timeout=0.5)
    assert result.method == "killed"
    assert result.seconds >= 0.5  # the grace period is the behaviour: a lower bound
    assert not is_same_process(proc.pid, proc.start_time)


async def test_a_daemon_restart_reattaches_from_the_record(short_tmp: Path) -> None:
    proc = await FirecrackerDriver(standin_binary(short_tmp)).launch(make_spec(short_tmp))
    again = FirecrackerDriver("firecracker")  # a fresh driver: no in-memory state
    record = VMMProcess.from_json(json.loads(json.dumps(proc.to_json())))
    assert (await again.status(record)).state is VMState.RUNNING
    assert (await again.stop(record, 60)).method == "graceful"  # 60 s: a hang bound


async def test_stale_socket_is_removed_but_other_files_are_not(short_tmp: Path) -> None:
    driver = FirecrackerDriver(standin_binary(short_tmp))
    spec = make_spec(short_tmp)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(spec.control_socket))
    stale.close()  # the file stays, like after a crashed Firecracker
    proc = await driver.launch(spec)
    await driver.stop(proc, 5)
    spec.control_socket.unlink(missing_ok=True)
    spec.control_socket.write_text("not a socket")
    with pytest.raises(VMMError, match="not a socket"):
        await driver.launch(spec)
    assert spec.control_socket.read_text() == "not a socket"


async def test_early_exit_is_reported_with_its_reason(short_tmp: Path) -> None:
    driver = FirecrackerDriver(standin_binary(short_tmp, extra=("--no-such-flag",)))
    with pytest.raises(VMMError, match=r"refused its command-line arguments \[exit 153\]") as err:
        await driver.launch(make_spec(short_tmp))
    assert "no-such-flag" in err.value.message
    assert err.value.hint is not None and "vmm.log" in err.value.hint


async def test_refused_configuration_names_endpoint_and_kills_the_process(
    short_tmp: Path,
) -> None:
    driver = FirecrackerDriver(standin_binary(short_tmp))
    spec = make_spec(short_tmp, kernel=short_tmp / "missing-vmlinux")
    with pytest.raises(FirecrackerError, match=r"PUT /boot-source.*kernel_image_path") as err:
        await driver.launch(spec)
    assert err.value.endpoint == "PUT /boot-source"
    assert err.value.status == 400
    assert err.value.fault_message and "missing-vmlinux" in err.value.fault_message
    # The half-configured process is gone, so its socket no longer answers.
    with pytest.raises(FirecrackerError):
        async with FirecrackerClient(spec.control_socket, timeout=1) as api:
            await api.send(models.describe_instance())


async def test_phase_rules_are_enforced_by_the_stand_in(short_tmp: Path) -> None:
    driver = FirecrackerDriver(standin_binary(short_tmp))
    spec = make_spec(short_tmp)
    proc = await driver.launch(spec)
    try:
        async with FirecrackerClient(spec.control_socket) as api:
            with pytest.raises(FirecrackerError, match="after starting") as err:
                await api.send(models.boot_source(str(spec.kernel)))
            assert err.value.endpoint == "PUT /boot-source"
            with pytest.raises(FirecrackerError, match="after starting"):
                await api.send(models.action("InstanceStart"))
            with pytest.raises(FirecrackerError, match="not paused"):
                await api.send(models.snapshot_create("/tmp/x", "/tmp/y"))
            await api.send(models.action("FlushMetrics"))
    finally:
        await driver.stop(proc, 5)


async def test_post_boot_calls_before_boot_are_refused(short_tmp: Path) -> None:
    spec = make_spec(short_tmp)
    process = await asyncio.create_subprocess_exec(
        standin_binary(short_tmp),
        "--api-sock",
        str(spec.control_socket),
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        from banger.vmm.firecracker.driver import wait_for_socket

        await wait_for_socket(spec.control_socket, 10)
        async with FirecrackerClient(spec.control_socket) as api:
            with pytest.raises(FirecrackerError, match="before starting"):
                await api.send(models.vm_state("Paused"))
            with pytest.raises(FirecrackerError, match="before starting"):
                await api.send(models.action("SendCtrlAltDel"))
            await api.send(models.machine_config(1, 128))
            with pytest.raises(FirecrackerError, match="must be configured before"):
                await api.send(models.logger(str(short_tmp / "late.log")))
            info = await api.send(models.describe_instance())
            assert info["state"] == "Not started"
    finally:
        process.kill()
        await process.wait()


async def test_snapshot_then_restore_on_another_tap(short_tmp: Path) -> None:
    driver = FirecrackerDriver(standin_binary(short_tmp))
    spec = make_spec(short_tmp)
    snap = SnapshotFiles(short_tmp / "snap.state", short_tmp / "snap.mem")
    proc = await driver.launch(spec)
    try:
        await driver.snapshot(proc, snap)
        assert (await driver.status(proc)).state is VMState.RUNNING  # resumed afterwards
    finally:
        await driver.stop(proc, 5)
    assert snap.memory.stat().st_size == spec.memory_mib << 20
    restored_spec = make_spec(short_tmp, tap_name="bt-t2")
    restored = await driver.restore(restored_spec, snap)
    try:
        assert (await driver.status(restored)).state is VMState.RUNNING
        log = (short_tmp / "firecracker.log").read_text()
        assert '"host_dev_name": "bt-t2"' in log
    finally:
        await driver.stop(restored, 5)


async def test_failed_restore_ends_the_process(short_tmp: Path) -> None:
    driver = FirecrackerDriver(standin_binary(short_tmp))
    snap = SnapshotFiles(short_tmp / "none.state", short_tmp / "none.mem")
    with pytest.raises(FirecrackerError, match="PUT /snapshot/load"):
        await driver.restore(make_spec(short_tmp), snap)


async def test_tap_descriptor_and_software_emulation_are_refused(short_tmp: Path) -> None:
    from banger.errors import InvalidArgument

    driver = FirecrackerDriver(standin_binary(short_tmp))
    with pytest.raises(InvalidArgument, match="tap_fd"):
        await driver.launch(make_spec(short_tmp, tap_fd=5))
    with pytest.raises(InvalidArgument, match="KVM"):
        await driver.launch(make_spec(short_tmp, accelerator="tcg"))
    with pytest.raises(VMMError, match="not found"):
        await FirecrackerDriver("no-such-firecracker-binary").launch(make_spec(short_tmp))


async def test_the_agent_vsock_is_configured_before_boot_and_overridden_on_restore(
    short_tmp: Path,
) -> None:
    """The stand-in checks PUT /vsock against Firecracker's API and its pre-boot rule.

    Connecting through the socket (CONNECT/OK, bridged to a real qemu-ga) is
    tests/integration/test_agent_vsock_firecracker_standin.py's.
    """
    driver = FirecrackerDriver(standin_binary(short_tmp))
    spec = make_spec(short_tmp, agent_socket=short_tmp / "v1.vsock")
    snap = SnapshotFiles(short_tmp / "snap.state", short_tmp / "snap.mem")
    proc = await driver.launch(spec)
    try:
        log = (short_tmp / "firecracker.log").read_text()
        assert "PUT /vsock: ok" in log
        assert log.index("PUT /vsock: ok") < log.index("PUT /actions: ok")
        await driver.snapshot(proc, snap)
    finally:
        await driver.stop(proc, 5)
    restored = await driver.restore(make_spec(short_tmp, agent_socket=short_tmp / "v2.vsock"), snap)
    try:
        assert (await driver.status(restored)).state is VMState.RUNNING
        log = (short_tmp / "firecracker.log").read_text()
        assert f'"uds_path": "{short_tmp / "v2.vsock"}"' in log.split("vsock: ")[-1]
    finally:
        await driver.stop(restored, 5)
