"""The helper's ``start_jailer``/``teardown_jail`` ops, run for real as root — with STAND-INS.

Neither Firecracker nor its jailer can run here (no Firecracker release, no
hardware KVM for ordinary guests). The real ``banger-helper`` is started with
``--jailer tests/jailer_standin.py`` and ``--firecracker`` = the Firecracker
API stand-in (``tests/firecracker_standin.py``). The jailer stand-in does what
the jailer does that banger depends on: the chroot directory, the exec-file
copy, daemonizing with a pid file, chroot + dropping to the owner's uid/gid,
then exec of "Firecracker" with the in-jail API socket. It does not create
cgroups or device nodes. So this proves the helper op (policy from its own
flags, validation, hard-linked jail, the jailer's argv, the pid file, the
returned socket, teardown) and the daemon-side request paths inside the jail;
it does not prove that the real jailer accepts the argv (that needs
``make smoke VMM=firecracker`` on a KVM host with Firecracker installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from banger.helper.jailer_ops import START_FIELDS
from banger.paths import Paths
from banger.vmm.base import Disk, LaunchSpec, stable_mac
from banger.vmm.firecracker import models
from banger.vmm.firecracker.api import FirecrackerClient
from banger.vmm.firecracker.driver import wait_for_socket
from banger.vmm.firecracker.jailer import NAMES, REQUEST_FIELDS, JailRequest
from banger.vmm.firecracker.plan import VMFiles, boot_requests
from tests.helper_launch import helper_command_line, running_helper
from tests.standins import standin_binary
from tests.support import User, needs_root, short_tmpdir, throwaway_user

pytestmark = [pytest.mark.root, needs_root]

JAILER_STANDIN = Path(__file__).resolve().parents[1] / "jailer_standin.py"


def test_the_op_table_fields_match_the_validator() -> None:
    assert set(START_FIELDS) == set(REQUEST_FIELDS)


def jailer_binary(d: Path) -> Path:
    path = d / "jailer"
    path.write_text(
        f"#!{sys.executable}\nimport runpy, sys\n"
        f"sys.argv[0] = {str(JAILER_STANDIN)!r}\n"
        f"runpy.run_path({str(JAILER_STANDIN)!r}, run_name='__main__')\n"
    )
    path.chmod(0o755)
    return path


def owner_file(user: User, path: Path, size: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    os.chown(path, user.uid, user.gid)
    path.chmod(0o600)
    return path


def owner_call(user: User, sock: Path, op: str, **args: Any) -> dict[str, Any]:
    """Call the helper as the owner (it serves no one else), in a subprocess."""
    code = (
        "import json, sys\n"
        "from banger.helper.client import HelperClient\n"
        "from banger.errors import BangerError\n"
        "args = json.loads(sys.argv[2])\n"
        "try:\n"
        "    print(json.dumps({'ok': HelperClient(__import__('pathlib').Path(sys.argv[1]),"
        " timeout=60).call(sys.argv[3], **args)}))\n"
        "except BangerError as exc:\n"
        "    print(json.dumps({'error': exc.message, 'hint': exc.hint}))\n"
    )
    out = subprocess.run(
        ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
         sys.executable, "-c", code, str(sock), json.dumps(args), op],
        capture_output=True, text=True, check=True, timeout=90,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def layout(state: Path) -> Paths:
    """The production layout beside ``state`` (socket in ``run/``, the owner's)."""
    return Paths(state.parent / "config", state, state.parent / "cache", state.parent / "run")


@contextlib.contextmanager
def helper(state: Path, user: User, *extra: str) -> Iterator[Path]:
    """The helper started the production way (:mod:`tests.helper_launch`); its socket."""
    paths = layout(state)
    with running_helper(paths, user.uid, extra=extra):
        yield paths.helper_socket


@contextlib.contextmanager
def jail_base() -> Iterator[Path]:
    """A fresh chroot base the way the helper requires it: root's, under /srv (not /tmp,
    which everyone can write), on the filesystem of the test's state dir."""
    base = Path("/srv") / f"bgj-{secrets.token_hex(4)}"
    base.mkdir(mode=0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def setup() -> Iterator[tuple[Path, User, Path]]:
    with short_tmpdir("bgj-") as tmp, throwaway_user("bgj") as user, jail_base() as base:
        tmp.chmod(0o711)
        state = tmp / "state"
        state.mkdir(mode=0o711)
        os.chown(state, user.uid, user.gid)
        run = layout(state).runtime_dir  # the owner's, as in production
        run.mkdir(mode=0o700)
        os.chown(run, user.uid, user.gid)
        bins = tmp / "bin"
        bins.mkdir()
        standin_binary(bins)
        jailer_binary(bins)
        (tmp / "jail-base").symlink_to(base)  # where the tests find it: see jailer_flags()
        yield state, user, bins


def jailer_flags(bins: Path) -> tuple[str, ...]:
    base = (bins.parent / "jail-base").readlink()
    return ("--jailer", str(bins / "jailer"), "--firecracker", str(bins / "firecracker"),
            "--jail-base", str(base))  # fmt: skip


def vm_files(state: Path, user: User) -> JailRequest:
    vm = state / "vms" / "v_1"
    kernel_dir = state / "kernels" / "k1"
    for d in (state / "vms", vm, state / "kernels", kernel_dir):
        d.mkdir(exist_ok=True)
        os.chown(d, user.uid, user.gid)
    return JailRequest(
        vm_id="v_1",
        vcpus=2,
        memory_mib=256,
        kernel=owner_file(user, kernel_dir / "vmlinux", 4096),
        initrd=owner_file(user, kernel_dir / "initrd.img", 1024),
        root_disk=owner_file(user, vm / "root.ext4", 8 << 20),
        root_read_only=False,
        work_disk=owner_file(user, vm / "work.ext4", 4 << 20),
        console_log=owner_file(user, vm / "console.log"),
        log=owner_file(user, vm / "firecracker.log"),
        metrics=owner_file(user, vm / "firecracker.metrics"),
    )


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_start_jailer_boots_the_standin_in_a_jail_as_the_owner(
    setup: tuple[Path, User, Path],
) -> None:
    state, user, bins = setup
    request = vm_files(state, user)
    flags = jailer_flags(bins)
    with helper(state, user, *flags) as sock:
        reply = owner_call(user, sock, "start_jailer", **request.to_args())
        assert "ok" in reply, reply
        result = reply["ok"]
        pid, socket_path = result["pid"], Path(result["socket"])
        jail_root = Path(flags[-1]) / "firecracker" / "v-1" / "root"
        assert Path(result["jail_root"]) == jail_root
        assert socket_path == jail_root / "run" / "firecracker.socket"
        try:
            status = proc_status(pid)
            assert status["Uid"].split()[0] == str(user.uid)  # dropped to the owner
            assert status["Gid"].split()[0] == str(user.gid)
            assert os.readlink(f"/proc/{pid}/root") == str(jail_root)  # chrooted
            # Every file is the VM's own inode, hard-linked (writes land in the VM dir).
            for role, name in NAMES.items():
                source = request.files().get(role)
                if source is not None:
                    assert (jail_root / name).stat().st_ino == source.stat().st_ino
            asyncio.run(_boot_inside_the_jail(request, socket_path))
            console = request.console_log.read_text()
            assert "[stand-in] Linux would boot /vmlinux" in console  # PUT /serial, in-jail path
            assert "root=/dev/vda rw" in console
            assert "PUT /drives/root: ok" in request.log.read_text()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        again = owner_call(user, sock, "teardown_jail", vm_id="v_1")
        assert again == {"ok": {"jail_dir": str(jail_root.parent), "removed": True}}
        assert not jail_root.parent.exists()
        assert request.work_disk is not None and request.work_disk.stat().st_size == 4 << 20
        assert "[stand-in]" in request.console_log.read_text()  # the VM's files stay


async def _boot_inside_the_jail(request: JailRequest, socket_path: Path) -> None:
    """What the daemon sends in jailer mode: the same requests with paths inside the jail."""
    vm_dir = request.console_log.parent
    spec = LaunchSpec(
        vm_id=request.vm_id, vcpus=request.vcpus, memory_mib=request.memory_mib,
        kernel=request.kernel, initrd=request.initrd, cmdline="console=ttyS0 panic=-1",
        root_disk=Disk(request.root_disk, "raw", "unsafe"), work_disk=request.work_disk,
        console_log=request.console_log, control_socket=Path("/unused.sock"),
        vmm_log=vm_dir / "vmm.log", mac=stable_mac(request.vm_id), tap_name="bt-v1",
        accelerator="kvm",
    )  # fmt: skip
    in_jail = {source: f"/{NAMES[role]}" for role, source in request.files().items()}
    files = VMFiles(request.log, request.metrics)
    await wait_for_socket(socket_path, 10.0)  # the stand-in binds it after its imports
    async with FirecrackerClient(socket_path, timeout=10) as api:
        for item in boot_requests(spec, files, path=lambda p: in_jail[p], console_via_api=True):
            await api.send(item)
        info = await api.send(models.describe_instance())
        assert info["state"] == "Running" and info["id"] == "v-1"


def test_jailer_ops_are_refused_by_a_helper_without_jailer_flags(
    setup: tuple[Path, User, Path],
) -> None:
    state, user, bins = setup
    request = vm_files(state, user)
    with helper(state, user) as sock:
        reply = owner_call(user, sock, "start_jailer", **request.to_args())
        assert "without --jailer/--firecracker" in reply["error"]
        assert "--jailer PATH --firecracker PATH" in reply["hint"]
        reply = owner_call(user, sock, "teardown_jail", vm_id="v_1")
        assert "without --jailer/--firecracker" in reply["error"]
    assert not (state / "jail").exists()
    assert not list((bins.parent / "jail-base").readlink().iterdir())


def test_a_request_outside_the_state_dir_is_refused_before_anything_runs(
    setup: tuple[Path, User, Path],
) -> None:
    state, user, bins = setup
    request = vm_files(state, user)
    args = {**request.to_args(), "kernel": "/etc/shadow", "vcpus": 0}
    flags = jailer_flags(bins)
    with helper(state, user, *flags) as sock:
        reply = owner_call(user, sock, "start_jailer", **args)
    assert "start_jailer.args.kernel: must be inside" in reply["error"]
    assert "start_jailer.args.vcpus" in reply["error"]
    assert not (state / "jail").exists()
    assert not list((bins.parent / "jail-base").readlink().iterdir())


# -- a hostile owner (issue #16): the jail base, teardown and sources -------------------


def start_foreground(state: Path, user: User, *extra: str) -> subprocess.CompletedProcess[str]:
    """The production argv with ``--foreground``: a refusal's exit status and stderr."""
    argv = helper_command_line(layout(state), user.uid, [*extra, "--foreground"])
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)


def test_the_helper_refuses_a_jail_base_the_owner_could_write(
    setup: tuple[Path, User, Path],
) -> None:
    state, user, bins = setup
    base = (bins.parent / "jail-base").readlink()
    bad = base / "bad"
    bad.mkdir()
    link = base / "link"
    link.symlink_to(bad)
    owners = base / "owners"
    owners.mkdir(mode=0o755)
    os.chown(owners, user.uid, user.gid)
    wide = base / "wide"
    wide.mkdir()
    wide.chmod(0o777)
    cases = {
        state / "jail": "must not overlap --allow-root",
        owners: "belongs to uid",
        owners / "jail": "belongs to uid",
        wide: "group- or other-writable",
        link: "not a plain directory",
        link / "jail": "not a plain directory",
        Path("/tmp") / f"bgj-{secrets.token_hex(4)}": "/tmp is group- or other-writable",
    }
    for path, reason in cases.items():
        flags = (*jailer_flags(bins)[:-1], str(path))
        out = start_foreground(state, user, *flags)
        assert out.returncode == 2, (path, out.stderr)
        first = out.stderr.splitlines()[0]
        assert first.startswith(f"banger-helper: error: --jail-base {path}: "), first
        assert reason in first, first
        assert not layout(state).helper_socket.exists()
    assert not (owners / "jail").exists() and not (bad / "jail").exists()
    assert not (state / "jail").exists()


def test_a_missing_jail_base_is_created_roots_alone(setup: tuple[Path, User, Path]) -> None:
    state, user, bins = setup
    base = (bins.parent / "jail-base").readlink() / "fresh"
    old = os.umask(0o077)  # as under systemd
    try:
        with helper(state, user, *jailer_flags(bins)[:-1], str(base)):
            st = base.stat()
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    finally:
        os.umask(old)


@pytest.fixture
def victim() -> Iterator[Path]:
    """What a swapped link would point at: a tree that must survive every teardown."""
    with short_tmpdir("bgv-") as victim:
        for d in ("etc", "v-1", "firecracker/etc", "firecracker/v-1/root"):
            (victim / d).mkdir(parents=True, exist_ok=True)
            (victim / d / "keep").write_text("keep")
        yield victim


def victim_intact(victim: Path) -> None:
    for d in ("etc", "v-1", "firecracker/etc", "firecracker/v-1/root"):
        assert (victim / d / "keep").read_text() == "keep", d


def test_teardown_never_follows_a_swapped_component(
    setup: tuple[Path, User, Path], victim: Path
) -> None:
    state, user, bins = setup
    base = (bins.parent / "jail-base").readlink()
    with helper(state, user, *jailer_flags(bins)) as sock:
        # <base>/firecracker swapped for a link to a tree with an "etc" in it.
        (base / "firecracker").symlink_to(victim)
        for vm_id in ("etc", "v_1"):
            reply = owner_call(user, sock, "teardown_jail", vm_id=vm_id)
            assert "not a plain directory" in reply["error"], reply
        victim_intact(victim)
        (base / "firecracker").unlink()
        # <base>/firecracker/<id> swapped for a link; and a directory that is not root's.
        (base / "firecracker").mkdir(mode=0o755)
        (base / "firecracker" / "etc").symlink_to(victim / "etc")
        reply = owner_call(user, sock, "teardown_jail", vm_id="etc")
        assert "not a plain directory" in reply["error"], reply
        (base / "firecracker" / "v-1").mkdir(mode=0o755)
        os.chown(base / "firecracker" / "v-1", user.uid, user.gid)
        reply = owner_call(user, sock, "teardown_jail", vm_id="v_1")
        assert "not a jail directory of the helper's" in reply["error"], reply
        victim_intact(victim)
        assert (base / "firecracker" / "v-1").is_dir()


def test_teardown_removes_what_the_owner_put_in_the_run_dir_and_nothing_it_points_at(
    setup: tuple[Path, User, Path], victim: Path
) -> None:
    state, user, bins = setup
    request = vm_files(state, user)
    with helper(state, user, *jailer_flags(bins)) as sock:
        reply = owner_call(user, sock, "start_jailer", **request.to_args())
        assert "ok" in reply, reply
        pid, root = reply["ok"]["pid"], Path(reply["ok"]["jail_root"])
        os.kill(pid, signal.SIGKILL)
        # What Firecracker (the owner) can leave in its run dir: links out, deep trees.
        run = root / "run"
        code = (
            "import os, sys; run, victim = sys.argv[1:]\n"
            "os.symlink(victim, run + '/out'); os.symlink(victim + '/etc', run + '/etc')\n"
            "d = run + '/deep'\n"
            "for i in range(200): d += '/d'\n"
            "os.makedirs(d); os.symlink(victim, d + '/x')\n"
        )
        subprocess.run(
            ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
             sys.executable, "-c", code, str(run), str(victim)],
            check=True, timeout=30,
        )  # fmt: skip
        reply = owner_call(user, sock, "teardown_jail", vm_id="v_1")
        assert reply == {"ok": {"jail_dir": str(root.parent), "removed": True}}, reply
        assert not root.parent.exists()
        victim_intact(victim)
        assert request.kernel.read_bytes() == bytes(4096)  # the VM's files stay


def test_start_refuses_swapped_sources_and_links_nothing_outside(
    setup: tuple[Path, User, Path],
) -> None:
    state, user, bins = setup
    request = vm_files(state, user)
    secret = state.parent / "root-secret"
    secret.write_text("root's")
    secret.chmod(0o600)
    fifo = state.parent / "fifo"
    os.mkfifo(fifo)
    swaps: dict[str, Callable[[Path], None]] = {
        "kernel": lambda p: p.symlink_to(secret),  # a symlink
        "work_disk": lambda p: p.hardlink_to(secret),  # a hard link to root's file
        "console_log": lambda p: os.mkfifo(p),  # a FIFO: must not hang the helper
        "root_disk": lambda p: p.hardlink_to(fifo),
    }
    with helper(state, user, *jailer_flags(bins)) as sock:
        for role, swap in swaps.items():
            path = Path(str(request.to_args()[role]))
            saved = path.with_name(path.name + ".saved")
            path.rename(saved)
            swap(path)
            reply = owner_call(user, sock, "start_jailer", **request.to_args())
            assert f"start_jailer.args.{role}: " in reply.get("error", ""), (role, reply)
            path.unlink()
            saved.rename(path)
        # The vm directory itself swapped for a link to a root-only directory.
        vm_dir = request.root_disk.parent
        vm_dir.rename(vm_dir.with_name("moved"))
        vm_dir.symlink_to(state.parent / "bin")
        reply = owner_call(user, sock, "start_jailer", **request.to_args())
        assert "not a plain directory" in reply.get("error", ""), reply
    assert secret.stat().st_nlink == 1 and secret.read_text() == "root's"
    assert not list((bins.parent / "jail-base").readlink().iterdir())
