"""The command runner (issue #17 item 8): the real guest program under this machine's python3,
started by the daemon side over a real sshd on loopback (the "guest" is this machine)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from banger.daemon.guestconn import GuestConns
from banger.daemon.runner import QuickResult, RunnerLost
from banger.errors import Conflict
from banger.guest import runner_guest as proto
from banger.guest.ssh import SSHTimeout, connect_when_ready, wait_for_ssh
from banger.store import VMState
from tests.sshd import Sshd, needs_sshd, sshd_fixture, vm_record  # noqa: F401 (provides the sshd fixture)
from tests.support import alive, async_wait_until, needs_root

pytestmark = [pytest.mark.root, needs_root, needs_sshd]


async def conns_for(sshd: Sshd) -> GuestConns:
    await wait_for_ssh(sshd.target, 30)
    t = sshd.target
    return GuestConns(t.known_hosts, t.client_key, port=t.port)


async def test_run_quick_runs_argv_through_the_runner(sshd: Sshd) -> None:
    conns = await conns_for(sshd)
    vm = vm_record()
    try:
        r = await conns.runners.run_quick(
            vm, ["sh", "-c", 'echo "$1|$X|$PWD|$PPID"; echo e >&2; exit 3', "_", "a b"],
            timeout=30, env={"X": "é"}, cwd="/tmp",
        )  # fmt: skip
        out, ppid = r.stdout.decode().rsplit("|", 1)
        assert (r.exit_code, out, r.stderr) == (3, "a b|é|/tmp", b"e\n")
        runner = conns.runners.active(vm.id)
        assert runner is not None
        # the command's parent is the runner (python3), not an sshd session
        comm = Path(f"/proc/{int(ppid)}/comm").read_text().strip()
        assert comm.startswith("python"), comm
        # one runner for the VM: the next call reuses it
        assert (await conns.runners.run_quick(vm, ["true"], timeout=30)).exit_code == 0
        assert conns.runners.active(vm.id) is runner
        # a VM not running is refused even while its runner lives
        with pytest.raises(Conflict, match="not running"):
            await conns.runners.run_quick(vm_record(VMState.STOPPED), ["true"], timeout=30)
        # not found and a bad cwd say so, as the shell would
        r = await conns.runners.run_quick(vm, ["no-such-program-x"], timeout=30)
        assert r.exit_code == 127 and b"no-such-program-x" in r.stderr
        r = await conns.runners.run_quick(vm, ["true"], timeout=30, cwd="/no/such/dir")
        assert r.exit_code == 1 and b"/no/such/dir" in r.stderr
        # killed by a signal: -N as ExecResult has it
        r = await conns.runners.run_quick(vm, ["sh", "-c", "kill -TERM $$"], timeout=30)
        assert r == QuickResult(-15, b"", b"")
    finally:
        await conns.close()


async def test_run_quick_timeout_kills_the_command(sshd: Sshd) -> None:
    conns = await conns_for(sshd)
    vm = vm_record()
    try:
        with pytest.raises(SSHTimeout, match="did not finish within 1s"):
            await conns.runners.run_quick(vm, ["sh", "-c", "echo $$ > /tmp/rq.pid; sleep 300"],
                                          timeout=1)  # fmt: skip
        pid = int(Path("/tmp/rq.pid").read_text())
        await async_wait_until(lambda: not alive(pid), 15, "the sleep's shell killed")
    finally:
        await conns.close()


async def test_a_dead_channel_fails_running_execs_and_kills_their_processes(sshd: Sshd) -> None:
    conns = await conns_for(sshd)
    vm = vm_record()
    try:
        runner = await conns.runners.channel(vm)
        assert runner is not None
        rx = await runner.open(["sh", "-c", "echo $$; sleep 300"], mark="m" * 32)
        pid = int((await rx.read(proto.STDOUT)).decode())
        assert alive(pid)
        runner.conn.abort()  # the connection dies (a killed sshd, a dead guest network)
        await asyncio.wait_for(rx.wait(), 15)
        assert rx.lost
        # the runner saw its channel close and killed what it started
        await async_wait_until(lambda: not alive(pid), 15, "the command killed by the runner")
        with pytest.raises(RunnerLost):
            await runner.open(["true"], mark="n" * 32)
        # the next call starts a new runner on a new connection
        assert (await conns.runners.run_quick(vm, ["echo", "again"], timeout=30)).stdout == (
            b"again\n"
        )
        assert conns.runners.active(vm.id) not in (None, runner)
    finally:
        await conns.close()


async def test_a_runner_that_dies_is_named_as_such_not_as_a_lost_connection(sshd: Sshd) -> None:
    conns = await conns_for(sshd)
    vm = vm_record()
    try:
        # the command's parent is the runner: it dies, the SSH connection does not
        with pytest.raises(RunnerLost, match=r"command runner in VM \S+ ended \((killed|exit)"):
            await conns.runners.run_quick(
                vm, ["sh", "-c", "kill -KILL $PPID; sleep 30"], timeout=30
            )
        # the connection was fine all along: the next call starts a new runner on it
        assert (await conns.runners.run_quick(vm, ["echo", "again"], timeout=30)).stdout == (
            b"again\n"
        )
    finally:
        await conns.close()


async def test_without_python3_the_runner_is_refused_once_and_sshd_runs_it(
    sshd: Sshd, short_tmp: Path
) -> None:
    # A guest without python3: sshd's sessions get a PATH with none (SetEnv is not
    # enough: sshd sets PATH itself), so the runner's start fails with "not found".
    bin_dir = short_tmp / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "echo", "true", "cat"):
        for where in ("/usr/bin", "/bin"):
            if Path(where, tool).exists():
                (bin_dir / tool).symlink_to(Path(where, tool))
                break
    sshd.stop()
    sshd.set_env(PATH=str(bin_dir))
    sshd.start()
    conns = await conns_for(sshd)
    vm = vm_record()
    try:
        r = await conns.runners.run_quick(vm, ["sh", "-c", "echo $PATH"], timeout=30)
        assert r.stdout.decode().strip().endswith(str(bin_dir))  # (root's rc may prepend)
        assert conns.runners.active(vm.id) is None
        assert await conns.runners.channel(vm) is None  # remembered for the connection
    finally:
        await conns.close()


async def test_the_runner_starts_when_the_boots_connection_is_adopted(sshd: Sshd) -> None:
    conns = await conns_for(sshd)
    vm = vm_record()
    try:
        conns.adopt(vm, await connect_when_ready(sshd.target, 30))
        await async_wait_until(lambda: conns.runners.active(vm.id) is not None, 15, "a runner")
        runner = conns.runners.active(vm.id)
        assert (await conns.runners.run_quick(vm, ["true"], timeout=30)).exit_code == 0
        assert conns.runners.active(vm.id) is runner  # the first exec used it
        await conns.drop(vm.id)
        assert conns.runners.active(vm.id) is None and runner is not None and not runner.alive
    finally:
        await conns.close()


async def test_an_exec_while_the_boots_runner_starts_takes_an_sshd_session(
    sshd: Sshd, short_tmp: Path
) -> None:
    # The runner's python3 waits for a flag file here, as python3's start-up under
    # emulation makes the runner started after a boot take about a second: an exec in
    # that window gets an sshd session instead of waiting for it.
    bin_dir, flag = short_tmp / "bin", short_tmp / "go"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(
        f'#!/bin/sh\nwhile [ ! -e {flag} ]; do sleep 0.05; done\nexec /usr/bin/python3 "$@"\n'
    )
    (bin_dir / "python3").chmod(0o755)
    sshd.stop()
    sshd.set_env(PATH=f"{bin_dir}:/usr/bin:/bin")
    sshd.start()
    conns = await conns_for(sshd)
    vm = vm_record()
    try:
        conns.adopt(vm, await connect_when_ready(sshd.target, 30))
        # Bounded below the runner's 30 s start timeout: waiting for it fails here.
        first = await asyncio.wait_for(
            conns.runners.run_quick(vm, ["sh", "-c", "cat /proc/$PPID/comm"], timeout=20), 20
        )
        assert first.exit_code == 0 and first.stdout.strip() != b"python3", first
        assert conns.runners.active(vm.id) is None  # still starting
        flag.touch()
        await async_wait_until(lambda: conns.runners.active(vm.id) is not None, 30, "a runner")
        runner = conns.runners.active(vm.id)
        second = await conns.runners.run_quick(vm, ["sh", "-c", "cat /proc/$PPID/comm"], timeout=30)
        assert second.stdout.strip() == b"python3"  # through the runner now
        assert conns.runners.active(vm.id) is runner
    finally:
        flag.touch()
        await conns.close()
