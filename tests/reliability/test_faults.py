"""Fault injection against real processes and real guests, inside a test network namespace.

One seeded installation is shared by the module (helper as root, bangerd as a
throwaway owner, fast-init QEMU/TCG guests), with ``state/vms`` on a small
loop-mounted ext4 so a disk can be filled. A ``keeper`` VM runs throughout
with a file written on its work disk before the first fault; after every
fault bangerd (and the helper, when it was the victim) is restarted — or,
where the point is that bangerd copes alone, only the helper — and the
test asserts: the keeper's VMM is the same process (re-attached, not
restarted) and its file is intact, the failed operation is recorded with its
stage, and nothing leaked (VM records, taps, leases, nft entries, processes,
temp files, VM directories, half-published images/kernels).

bangerd is killed at a chosen stage with the test-only hook
``BANGER_TEST_STAGE_DELAY=<stage>:<seconds>``: the operation records the
stage, logs a marker and sleeps; the test waits for the marker and kills.
The helper is killed mid-op the same way, with its own test-only hook
``BANGER_TEST_HELPER_DELAY=<op>:<seconds>`` (the op does its work, logs a
marker in helper.log and sleeps before replying). Image-build disk-full is in
test_image_build_disk_full.py: a distro build needs the package mirror, so it
runs in the host namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from banger.daemon.owed_taps import SETTLE_INTERVAL
from tests.e2e.harness import Banger, banger_env, daemon_pid, seed_artifacts
from tests.e2e.leftovers import Kept, banger_leftovers
from tests.image_cache import cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.reliability.faults import (
    DAEMON_LOG,
    DEBUG_LOCKS_ENV,
    HELPER_DELAY_ENV,
    HELPER_LOG,
    STAGE_DELAY_ENV,
    cli_background,
    force_stop_daemon,
    free_bytes,
    kept_vm,
    kill9_daemon,
    kill9_helper,
    log_offset,
    ops_on,
    reconcile_report,
    restart_daemon,
    restart_helper,
    small_filesystem,
    start_daemon,
    stop_daemon,
    stop_helper,
    vm_json,
    wait_for_log,
)
from tests.reliability_counts import ReliabilityCounts
from tests.support import alive, needs_root, wait_until

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

#: The stages of ``vm create --start`` (docs/ARCHITECTURE.md, "The start pipeline").
STAGES = ["resolve", "root_disk", "prepare_work_disk", "network", "launch", "wait_ssh"]
MARKER = "written before the first fault"
SMALL_FS_MIB = 300
MIB = 1024 * 1024


@dataclass
class World:
    b: Banger
    keeper: Kept


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with banger_env(seed=False) as b:
        b.env[DEBUG_LOCKS_ENV] = "1"
        vms = b.state_dir / "vms"
        with small_filesystem(vms, SMALL_FS_MIB, b.user.uid, b.user.gid):
            try:
                seed_artifacts(b, cached_debian_kernel(), cached_debian_image())
                b.banger("vm", "create", "--name", "keeper", "--init", "fast", "--start")
                b.banger("vm", "ssh", "keeper", "--", "sh", "-c", f"echo '{MARKER}' > /root/marker")
                b.banger("vm", "ssh", "keeper", "--", "sync")
                yield World(b, kept_vm(b, "keeper"))
            finally:
                listing = b.banger("vm", "list", "--json", check=False, timeout=60).stdout
                names = [vm["name"] for vm in json.loads(listing or "[]")]
                if names:
                    b.banger("vm", "rm", "--force", *names, check=False, timeout=180)
                stop_daemon(b)  # nothing may hold files on the small filesystem


def assert_consistent(
    w: World, counts: ReliabilityCounts, *, same_vmm: bool = True, also: tuple[Kept, ...] = ()
) -> None:
    """Keeper re-attached with its file; nothing else held anywhere (but what ``also`` holds)."""
    b = w.b
    keeper = kept_vm(b, "keeper")
    if same_vmm:
        assert keeper.pid == w.keeper.pid, "the keeper's VMM was replaced, not re-attached"
    w.keeper = keeper
    marker = b.banger("vm", "ssh", "keeper", "--", "cat", "/root/marker").stdout
    assert marker == MARKER + "\n"
    counts.check_leaks(banger_leftovers(b, [keeper, *also]))
    assert "lock order violation" not in (b.state_dir / "bangerd.log").read_text()


def assert_interrupted(w: World, name: str, stage: str) -> None:
    ops = [op for op in ops_on(w.b, name) if op.kind == "vm.create"]
    assert len(ops) == 1, ops
    op = ops[0]
    assert op.state == "failed" and op.stage == stage, op
    assert op.error is not None and "interrupted" in op.error
    report = reconcile_report(w.b)
    assert any(f"interrupted at stage {stage}" in line for line in report["repaired"]), report
    names = json.loads(w.b.banger("vm", "list", "--json").stdout)
    assert name not in [vm["name"] for vm in names]


@contextmanager
def synced_file(b: Banger, name: str, mib: int) -> Iterator[Path]:
    """A ``mib`` MiB file in the owner's home, listed in ``[[file_sync]]`` while inside."""
    big = b.user.home / name
    config_dir = b.home / "config"
    config = config_dir / "config.toml"
    chunk = bytes(range(256)) * 4096  # 1 MiB of non-zero data (no holes to skip)
    try:
        with open(big, "wb") as f:
            for _ in range(mib):
                f.write(chunk)
        os.chown(big, b.user.uid, b.user.gid)
        big.chmod(0o600)
        config_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(config_dir, b.user.uid, b.user.gid)
        config.write_text(f'[[file_sync]]\nhost = "~/{name}"\nguest = "~/{name}"\n')
        os.chown(config, b.user.uid, b.user.gid)
        yield big
    finally:
        config.unlink(missing_ok=True)
        big.unlink(missing_ok=True)


def _create_until(
    b: Banger, name: str, marker: str, log: str = DAEMON_LOG
) -> subprocess.Popen[str]:
    """``vm create --start`` in the background, returned once ``marker`` is in ``log``."""
    offset = log_offset(b, log)
    cli = cli_background(b, "vm", "create", "--name", name, "--init", "fast", "--start")
    try:
        wait_for_log(b, offset, marker, log=log)
    except BaseException:
        cli.kill()
        cli.communicate()
        raise
    return cli


def _failed(cli: subprocess.Popen[str]) -> str:
    """Wait for the CLI, which must fail; its stderr."""
    try:
        _out, err = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    assert cli.returncode != 0, err
    assert "Traceback" not in err, err
    return err


def _failed_for_want_of_the_helper(b: Banger, name: str, err: str) -> None:
    assert "network" in err, err
    op = next(op for op in ops_on(b, name) if op.kind == "vm.create")
    assert op.state == "failed" and op.stage == "network", op
    assert "helper" in (op.error or "").lower(), op


@pytest.mark.parametrize("stage", STAGES)
def test_a_create_failing_or_crashing_at_each_stage_leaves_nothing(
    world: World, stage: str, reliability_counts: ReliabilityCounts
) -> None:
    b = world.b
    slug = stage.replace("_", "-")
    delay = {STAGE_DELAY_ENV: f"{stage}:300"}
    restart_daemon(b, **delay)

    # 1. A failure (the op cancelled by a forced shutdown): the undo stack alone cleans up,
    #    so the next start's reconciliation finds nothing of it to repair.
    undone = f"undo-{slug}"
    cli = _create_until(b, undone, f"before stage {stage}")
    force_stop_daemon(b)
    reliability_counts.fault()
    _failed(cli)
    start_daemon(b, **delay)
    reliability_counts.restart()
    op = next(op for op in ops_on(b, undone) if op.kind == "vm.create")
    assert op.state == "failed" and op.stage == stage, op
    assert "cancelled" in (op.error or ""), op
    report = reconcile_report(b)
    assert not [line for lines in report.values() if isinstance(lines, list)
                for line in lines if undone in line], report  # fmt: skip
    assert_consistent(world, reliability_counts)

    # 2. A crash (kill -9 at the same point): reconciliation repairs at the next start.
    crashed = f"crash-{slug}"
    cli = _create_until(b, crashed, f"before stage {stage}")
    kill9_daemon(b)
    reliability_counts.fault()
    _failed(cli)
    start_daemon(b)
    reliability_counts.restart()
    assert_interrupted(world, crashed, stage)
    if stage != "resolve":  # a VM record existed: it was rolled back
        report = reconcile_report(b)
        assert any(
            line.startswith(f"VM {crashed}: create interrupted at stage {stage}; rolled back")
            for line in report["repaired"]
        ), report
    assert_consistent(world, reliability_counts)


#: The stages of ``vm start`` on a stopped VM (the create-only ones are not run again).
START_STAGES = ["network", "launch", "wait_ssh"]


def test_a_start_crashing_at_each_stage_keeps_the_vm_and_its_work_disk(
    world: World, reliability_counts: ReliabilityCounts
) -> None:
    """kill -9 bangerd inside ``vm start`` of a stopped VM: never its data, never a leak."""
    b = world.b
    b.banger("vm", "create", "--name", "starter", "--init", "fast", "--start")
    b.banger("vm", "ssh", "starter", "--", "sh", "-c", "echo kept > /root/kept && sync")
    b.banger("vm", "stop", "starter")
    vm_id = str(vm_json(b, "starter")["id"])
    stopped = Kept(vm_id, tap="", pid=-1)
    for stage in START_STAGES:
        restart_daemon(b, **{STAGE_DELAY_ENV: f"{stage}:300"})
        offset = log_offset(b)
        cli = cli_background(b, "vm", "start", "starter")
        try:
            wait_for_log(b, offset, f"before stage {stage}")
        finally:
            kill9_daemon(b)
            reliability_counts.fault()
            cli.kill()
            cli.communicate()
        start_daemon(b)
        reliability_counts.restart()
        op = next(op for op in reversed(ops_on(b, "starter")) if op.kind == "vm.start")
        assert op.state == "failed" and op.stage == stage and "interrupted" in (op.error or "")
        shown = vm_json(b, "starter")
        # Before wait_ssh no VMM exists yet: the VM is stopped, with the reason. At
        # wait_ssh the VMM was already booting the guest, and outlives bangerd: it is
        # re-attached as running, as any VMM the previous daemon left alive.
        if stage == "wait_ssh":
            assert shown["state"] == "running", shown
            b.banger("vm", "stop", "starter")
        else:
            assert shown["state"] == "stopped", shown
            assert f"vm.start interrupted at stage {stage}" in str(shown["last_error"]), shown
        assert_consistent(world, reliability_counts, also=(stopped,))
    b.banger("vm", "start", "starter")
    assert b.banger("vm", "ssh", "starter", "--", "cat", "/root/kept").stdout == "kept\n"
    b.banger("vm", "rm", "--force", "starter")
    assert_consistent(world, reliability_counts)


def test_doctor_shows_what_reconciliation_repaired(world: World) -> None:
    result = world.b.banger("doctor", "--json", check=False, timeout=120)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    check = checks["reconciliation"]
    assert check["status"] in ("pass", "warn"), check
    assert "at the last start" in check["detail"], check


def test_helper_killed_while_a_create_waits_for_it(
    world: World, reliability_counts: ReliabilityCounts
) -> None:
    """The helper dies just before the network stage asks it for a tap: the create fails there."""
    b = world.b
    restart_daemon(b, **{STAGE_DELAY_ENV: "network:3"})
    cli = _create_until(b, "helperless", "before stage network")
    kill9_helper(b)
    reliability_counts.fault()
    err = _failed(cli)
    restart_helper(b)
    restart_daemon(b)
    reliability_counts.restart(2)
    _failed_for_want_of_the_helper(b, "helperless", err)
    assert_consistent(world, reliability_counts)


def test_helper_and_bangerd_killed_after_the_tap_was_made(
    world: World, reliability_counts: ReliabilityCounts
) -> None:
    """Both die holding a lease and a tap; the restarted pair removes them."""
    b = world.b
    restart_daemon(b, **{STAGE_DELAY_ENV: "launch:300"})
    cli = _create_until(b, "tapleft", "before stage launch")
    kill9_helper(b)
    kill9_daemon(b)
    reliability_counts.fault(2)
    _failed(cli)
    stray = [t for t in b.taps() if t != world.keeper.tap]
    assert len(stray) == 1, "the interrupted create should have left its tap"
    restart_helper(b)
    start_daemon(b)
    reliability_counts.restart(2)
    assert_interrupted(world, "tapleft", "launch")
    report = reconcile_report(b)
    assert f"tap {stray[0]}: deleted, no running VM owns it" in report["repaired"], report
    assert_consistent(world, reliability_counts)


def doctor_check(b: Banger, name: str) -> dict[str, str]:
    result = b.banger("doctor", "--json", check=False, timeout=120)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    check: dict[str, str] = checks[name]
    return check


def test_helper_killed_mid_op_after_it_made_the_tap(
    world: World, reliability_counts: ReliabilityCounts
) -> None:
    """kill -9 inside ``open_tap``: the tap exists on the host, the daemon never got its fd.

    Only the helper comes back, bangerd keeps running: it remembers the tap it
    asked for and deletes it once the new helper answers, and until then
    ``banger doctor`` lists it as stray.
    """
    b = world.b
    stop_helper(b)
    restart_helper(b, **{HELPER_DELAY_ENV: "open_tap:300"})
    cli = _create_until(b, "midtap", "open_tap done, sleeping", HELPER_LOG)
    stray = [t for t in b.taps() if t != world.keeper.tap]
    daemon = daemon_pid(b)
    offset = log_offset(b)
    kill9_helper(b)
    reliability_counts.fault()
    err = _failed(cli)
    assert len(stray) == 1, "the helper should have been holding a new tap"
    _failed_for_want_of_the_helper(b, "midtap", err)
    # The create's undo could not ask the dead helper to delete the tap: it stays
    # while no helper runs, and doctor says so.
    time.sleep(SETTLE_INTERVAL * 1.5)  # a lower bound: bangerd retried, and nobody answered
    assert stray[0] in b.taps()
    check = doctor_check(b, "stray taps")
    assert check["status"] == "warn" and check["detail"].startswith(stray[0]), check
    assert f"sudo ip link delete {stray[0]}" in check["fix"], check

    restart_helper(b)  # the helper only: the same bangerd, no reconciliation
    reliability_counts.restart()
    wait_until(lambda: stray[0] not in b.taps(), 60, f"tap {stray[0]} deleted")
    assert daemon_pid(b) == daemon
    wait_for_log(b, offset, f"tap {stray[0]}: deleted (its helper had not answered)")
    assert doctor_check(b, "stray taps")["status"] == "pass"
    assert_consistent(world, reliability_counts)


def test_a_full_disk_during_work_disk_provisioning_fails_cleanly(
    world: World, reliability_counts: ReliabilityCounts
) -> None:
    """A ``[[file_sync]]`` larger than the free space: a clear error, nothing left."""
    b = world.b
    vms = b.state_dir / "vms"
    size = (SMALL_FS_MIB + 100) * MIB
    with synced_file(b, "big.bin", size // MIB):
        restart_daemon(b)
        free_before = free_bytes(vms)
        assert free_before < size
        result = b.banger("vm", "create", "--name", "full", "--init", "fast", check=False)
        reliability_counts.fault()
        assert result.returncode != 0, result.stdout
        assert "prepare_work_disk" in result.stderr, result.stderr
        assert "space" in result.stderr.lower(), result.stderr
        op = next(op for op in ops_on(b, "full") if op.kind == "vm.create")
        assert op.state == "failed" and op.stage == "prepare_work_disk", op
        assert free_bytes(vms) >= free_before - 8 * MIB, "the failed create's disk space was kept"
    restart_daemon(b)
    reliability_counts.restart()
    assert_consistent(world, reliability_counts)


def test_bangerd_killed_mid_provisioning_leaves_its_scratch_files_to_reconciliation(
    world: World, reliability_counts: ReliabilityCounts
) -> None:
    """kill -9 while debugfs writes a synced file: the scratch files are under state/tmp."""
    b = world.b
    tmp = b.state_dir / "tmp"
    with synced_file(b, "mid.bin", 120):  # 120 MiB: debugfs takes a moment to write it
        restart_daemon(b)
        cli = cli_background(b, "vm", "create", "--name", "midprov", "--init", "fast")
        try:

            def staged() -> bool:
                assert cli.poll() is None, "the create ended before provisioning was caught"
                return bool(list(tmp.glob("banger-provision-*")))

            wait_until(staged, 120, "provisioning staged under state/tmp")
            kill9_daemon(b)
            reliability_counts.fault()
            scratch = sorted(p.name for p in tmp.iterdir())  # what the crash left
        finally:
            if cli.poll() is None:
                cli.kill()
            cli.communicate(timeout=60)  # reaps it and closes its pipes
    assert [n for n in scratch if n.startswith("banger-provision-")], scratch
    assert not list(Path("/tmp").glob("banger-provision-*")), "provisioning staged in /tmp"
    start_daemon(b)
    reliability_counts.restart()
    assert_interrupted(world, "midprov", "prepare_work_disk")
    repaired = reconcile_report(b)["repaired"]
    for name in scratch:
        line = f"tmp/{name}: removed (temporary file of an interrupted build)"
        assert line in repaired, (name, repaired)
    assert_consistent(world, reliability_counts)


def test_stop_vms_on_shutdown_stops_the_guest_cleanly(
    world: World, reliability_counts: ReliabilityCounts
) -> None:
    b = world.b
    config_dir = b.home / "config"
    config = config_dir / "config.toml"
    config_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(config_dir, b.user.uid, b.user.gid)
    config.write_text("[daemon]\nstop_vms_on_shutdown = true\n")
    os.chown(config, b.user.uid, b.user.gid)
    try:
        restart_daemon(b)  # reads the setting
        assert kept_vm(b, "keeper").pid == world.keeper.pid
        offset = log_offset(b)
        stop_daemon(b)
        assert not alive(world.keeper.pid), "the guest kept running"
        line = wait_for_log(b, offset, "VM keeper stopped for the daemon's shutdown", timeout=60)
        assert "(the guest powered off)" in line, line  # not QMP quit, not SIGKILL
    finally:
        config.unlink(missing_ok=True)
    start_daemon(b)
    shown = vm_json(b, "keeper")
    assert shown["state"] == "stopped" and shown["last_error"] is None, shown
    assert world.keeper.tap not in b.taps()
    b.banger("vm", "start", "keeper")
    assert_consistent(world, reliability_counts, same_vmm=False)


def test_a_killed_vmm_is_noticed_and_the_vm_starts_again(
    world: World, reliability_counts: ReliabilityCounts
) -> None:
    b = world.b
    victim = kept_vm(b, "keeper")
    os.kill(victim.pid, signal.SIGKILL)
    reliability_counts.fault()
    with suppress(AssertionError):  # the assert below shows what it says instead
        wait_until(lambda: vm_json(b, "keeper")["state"] == "stopped", 120, "keeper stopped")
    shown = vm_json(b, "keeper")
    assert shown["state"] == "stopped", shown
    assert "exited while the VM was running" in str(shown["last_error"]), shown
    assert victim.tap not in b.taps()
    stopped = Kept(victim.vm_id, tap="", pid=-1)
    reliability_counts.check_leaks(banger_leftovers(b, [stopped]))
    b.banger("vm", "start", "keeper")
    reliability_counts.restart()
    assert_consistent(world, reliability_counts, same_vmm=False)
