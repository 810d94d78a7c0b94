"""``banger kernel build`` end to end (issue #19 items 2 and 5): the owner builds a
microVM kernel from Debian's linux-source-6.1 with the real CLI, bangerd registers
it as needing no initramfs, QEMU's PVH choice is made for its ``vmlinux`` (and,
the note's type changed in a copy of the entry, falls back to its bzImage: no boot
needed for that), and a real guest boots with it through ``banger vm run --kernel
<built> -- CMD`` under QEMU microvm (PVH ``vmlinux``, no ``-initrd``): CMD's exit
status comes back, the command line has no initrd, SSH answers (the kernel applied
``ip=`` itself), ``uname -r`` is the built release, the work disk is mounted on
/root; then, under fast init and under systemd, ``/etc/hostname`` holds the VM's
name and the guest resolves its own ``<vm>.banger`` through banger's resolver
(``/sbin/banger-resolv`` wrote both from the kernel's hostname and
``/proc/net/pnp``: no initramfs did).

The compile takes minutes (about 6 on 2 quiet cores, far more on a busy machine).
The finished build is kept in the test cache (``/var/cache/banger-test/kernel-builds/
<key>``, the same key and layout as banger's own cache: source tarball, fragment,
toolchain, recipe), so a machine pays for it once: a cold run builds through the CLI
and stores the result there, a warm one seeds the owner's cache with it and then
checks that ``kernel build`` says it is cached. Nothing in the guest needs a network
beyond banger's bridge in the test's namespace.

A second test interrupts a build (SIGINT to its process group, as Ctrl-C on a
terminal does) of a stand-in source tree whose ``make tinyconfig`` hangs: the CLI
exits 130, the work tree is gone and no kernel is registered.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from banger.daemon.vms.vmm_choice import qemu_pvh_kernel
from banger.kernels.build import BUILD_META, build_inputs, builds_dir
from banger.kernels.store import read_kernel
from banger.kernels.vmlinux import has_pvh_note, kernel_capabilities
from tests.e2e.harness import Banger, js
from tests.kernel_cache import CACHE_ROOT
from tests.support import VENV_BIN, needs_root, wait_until

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

#: A cold build on a loaded 2-core machine: allow an hour and a half.
BUILD_TIMEOUT = 5400
VM = "kb"
VM_SYSTEMD = "kb-sd"


def owner_cache(b: Banger) -> Path:
    """The owner's banger cache (BANGER_HOME/cache), made as the owner would."""
    cache = b.home / "cache"
    cache.mkdir(mode=0o700, exist_ok=True)
    os.chown(cache, b.user.uid, b.user.gid)
    return cache


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid)


def test_build_register_and_boot_without_initramfs(b: Banger) -> None:
    key = build_inputs().key
    cached = builds_dir(CACHE_ROOT) / key
    mine = builds_dir(owner_cache(b))
    mine.mkdir(mode=0o700, exist_ok=True)
    os.chown(mine, b.user.uid, b.user.gid)
    builds_dir(CACHE_ROOT).mkdir(parents=True, exist_ok=True)
    with open(builds_dir(CACHE_ROOT) / ".test-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per machine; others wait, then reuse
        if (cached / BUILD_META).is_file():
            shutil.copytree(cached, mine / key)
            _chown_tree(mine / key, b.user.uid, b.user.gid)
        built = b.banger("kernel", "build", "--jobs", "2", "--json", timeout=BUILD_TIMEOUT)
        if not (cached / BUILD_META).is_file():
            partial = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=builds_dir(CACHE_ROOT)))
            shutil.copytree(mine / key, partial / key)
            (partial / key).rename(cached)
            partial.rmdir()
    name = json.loads(built.stdout)["name"]
    assert name.startswith("microvm-6.1."), name
    info = js(b, "kernel", "show", name)
    assert info["needs_initramfs"] is False and info["initrd"] is None
    assert info["pvh"] is True, info  # QEMU boots its vmlinux through the PVH entry
    assert info["source"].startswith("build:linux-source-6.1=")
    assert info["version"].endswith("-banger-microvm")
    shown = b.banger("kernel", "show", name).stdout
    assert "none needed (built in)" in shown
    assert_pvh_selection(Path(info["path"]))

    # The same inputs again: no compile, and the kernel registered already.
    again = b.banger("kernel", "build", timeout=600)
    assert "cached: built before with the same inputs" in again.stderr, again.stderr
    assert "compiling" not in again.stderr
    assert [k["name"] for k in js(b, "kernel", "list") if k["source"] == info["source"]] == [name]

    # The CLI's one-shot path: create, boot, run CMD over the exec API, its status back
    # (no --rm: the guest stays for the checks below).
    ran = b.banger("vm", "run", "--name", VM, "--kernel", name, "--init", "fast",
                   "--no-workspace", "--", "sh", "-c", "cat /proc/cmdline; exit 7",
                   timeout=900, check=False)  # fmt: skip
    assert ran.returncode == 7, ran.stderr
    (cmdline,) = ran.stdout.splitlines()
    assert "initrd" not in cmdline and f":{VM}:" in cmdline, cmdline  # ip='s hostname field
    detail = js(b, "vm", "show", VM)
    assert detail["kernel_name"] == name, detail
    argv = Path(f"/proc/{detail['pid']}/cmdline").read_bytes().split(b"\0")
    assert b"-initrd" not in argv, argv
    assert Path(argv[argv.index(b"-kernel") + 1].decode()).name == "vmlinux"

    def guest(*cmd: str, vm: str = VM) -> str:
        return b.banger("vm", "exec", vm, "--", *cmd, timeout=300).stdout.strip()

    assert guest("uname", "-r") == info["version"]
    assert guest("findmnt", "-n", "-o", "SOURCE", "/root") == "/dev/vdb"
    assert guest("hostname") == VM  # ip='s hostname field, applied by the kernel (IP_PNP)
    assert guest("cat", "/etc/hostname") == VM  # /sbin/banger-resolv, from the kernel's
    assert_resolves_through_banger(guest, VM, detail["ip"])
    b.banger("vm", "rm", "--force", VM, timeout=300)

    # systemd: banger-resolv.service writes it before sysinit.target.
    b.banger("vm", "create", VM_SYSTEMD, "--kernel", name, "--init", "systemd", "--start",
             timeout=900)  # fmt: skip
    detail = js(b, "vm", "show", VM_SYSTEMD)

    def guest_systemd(*cmd: str) -> str:
        return guest(*cmd, vm=VM_SYSTEMD)

    assert guest_systemd("uname", "-r") == info["version"]
    assert guest_systemd("cat", "/etc/hostname") == VM_SYSTEMD
    assert_resolves_through_banger(guest_systemd, VM_SYSTEMD, detail["ip"])
    shown = guest_systemd("systemctl", "show", "-p", "ConditionResult", "-p", "Result",
                          "banger-resolv.service")  # fmt: skip
    assert sorted(shown.splitlines()) == ["ConditionResult=yes", "Result=success"], shown
    b.banger("vm", "rm", "--force", VM_SYSTEMD, timeout=300)


def assert_pvh_selection(entry_dir: Path) -> None:
    """QEMU's choice for the microVM kernel, as the start pipeline makes it (no boot
    needed): its vmlinux carries the PVH note (CONFIG_PVH), so QEMU boots the vmlinux;
    the same entry with the note's type changed (what a kernel built without
    CONFIG_PVH looks like) falls back to its bzImage, as the Debian kernel's copy
    without the note does in tests/integration/test_qemu_guest.py (booted there)."""
    entry = read_kernel(entry_dir)
    assert qemu_pvh_kernel(entry) == entry_dir / "vmlinux"
    scratch = Path(tempfile.mkdtemp(prefix="kb-pvh-", dir="/tmp"))
    try:
        copy = scratch / entry_dir.name
        shutil.copytree(entry_dir, copy)
        data = bytearray((copy / "vmlinux").read_bytes())
        # Xen's PHYS32_ENTRY note: namesz 4, any descsz, type 18, "Xen".
        found = [m.start() for m in re.finditer(rb"\x04\0\0\0.{4}\x12\0\0\0Xen\0", data, re.S)]
        assert len(found) == 1, found
        data[found[0] + 8] = 0x7F  # a Xen note type nothing reads
        (copy / "vmlinux").write_bytes(data)
        assert not has_pvh_note(copy / "vmlinux")
        assert qemu_pvh_kernel(read_kernel(copy)) is None  # -kernel vmlinuz
        assert kernel_capabilities(copy)["qemu"] == (
            True,
            "bzImage (no vmlinux with a PVH entry note)",
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def assert_resolves_through_banger(guest: Callable[..., str], vm: str, ip: str) -> None:
    """No initramfs wrote resolv.conf: /sbin/banger-resolv did, from the kernel's
    /proc/net/pnp (ip='s dns0), with the bytes the initramfs writes; banger's resolver
    on the bridge answers the VM's own name (nothing else: no uplink in the namespace)."""
    cmdline = guest("cat", "/proc/cmdline").split()
    (ip_arg,) = [t.removeprefix("ip=") for t in cmdline if t.startswith("ip=")]
    dns = ip_arg.split(":")[7]
    assert f"nameserver {dns}" in guest("cat", "/proc/net/pnp").splitlines()
    assert guest("cat", "/etc/resolv.conf") == f"nameserver {dns}"
    assert guest("stat", "-c", "%F", "/etc/resolv.conf") == "regular file"
    assert guest("getent", "hosts", f"{vm}.banger").split()[0] == ip


def _standin_source(directory: Path) -> Path:
    """A tarball that unpacks to something shaped like a Linux tree whose
    ``make tinyconfig`` hangs, so a build can be interrupted mid-way, cheaply."""
    tree = directory / "linux-standin"
    (tree / "arch" / "x86").mkdir(parents=True)
    (tree / "Makefile").write_text("tinyconfig:\n\tsleep 600\n")
    tarball = directory / "linux-standin.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(tree, arcname="linux-standin")
    tarball.chmod(0o644)
    directory.chmod(0o755)
    return tarball


def test_ctrl_c_stops_the_build_and_registers_nothing(b: Banger) -> None:
    source = _standin_source(Path(tempfile.mkdtemp(prefix="kb-src-", dir="/tmp")))
    before = js(b, "kernel", "list")
    mine = builds_dir(owner_cache(b))
    try:
        child = subprocess.Popen(
            b.as_owner([str(VENV_BIN / "banger"), "kernel", "build", "--source", str(source)]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            # Interrupt once make is running (the unpacked tree exists), as Ctrl-C would.
            wait_until(lambda: (mine / "work" / "linux" / "Makefile").is_file(), 300,
                       "the build's work tree")  # fmt: skip
            os.killpg(child.pid, signal.SIGINT)
            _out, err = child.communicate(timeout=120)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            for pipe in (child.stdout, child.stderr):  # closed even when communicate never ran
                if pipe is not None:
                    pipe.close()
        assert child.returncode == 130, err
        assert "aborted" in err
        assert not (mine / "work").exists()
        assert not list(mine.glob("*.partial"))
        assert [d.name for d in mine.iterdir() if not d.name.startswith(".")] == [
            d.name for d in mine.iterdir() if (d / BUILD_META).is_file()
        ]  # only finished builds
        assert js(b, "kernel", "list") == before
    finally:
        shutil.rmtree(source.parent, ignore_errors=True)
