"""``/sbin/banger-resolv``: resolv.conf and /etc/hostname for a guest booted without
banger's initramfs (issue #19, the microVM kernel's DNS and hostname gaps).

A kernel with IP_PNP applies ``ip=`` itself: it sets the hostname from its host
field and lists its dns0 field in ``/proc/net/pnp``; the script turns those into
the same ``/etc/hostname`` and ``/etc/resolv.conf`` the initramfs writes for a
distro kernel. Here it runs under dash and busybox sh (the shells of Debian and
other images) against made-up ``pnp`` files in the kernel's format
(net/ipv4/ipconfig.c ``pnp_seq_show``) and a made-up
``/proc/sys/kernel/hostname``; its output is compared byte for byte with what the
initramfs's own function writes for the same ``ip=``. What this cannot show: a
real kernel's ``/proc/net/pnp`` and a real systemd running the unit —
tests/e2e/test_kernel_build_e2e.py boots both init modes for that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from banger.images.finalize import (
    RESOLV_CONF,
    RESOLV_PATH,
    RESOLV_SERVICE,
    RESOLV_UNIT,
    fast_init_text,
    finalize_tree,
    resolv_text,
)
from banger.kernels.initramfs import init_script
from tests.image_trees import usrmerged_tree

SHELLS = [sh for sh in ("/bin/sh", shutil.which("busybox")) if sh is not None]
#: What a kernel with IP_PNP lists for banger's ip= (static: "#MANUAL", then dns0).
PNP = "#MANUAL\nnameserver 172.30.0.1\n"


#: What the kernel's hostname reads when nothing set it (an ip= without a host field).
UNSET = "(none)"


def script_env(tmp_path: Path, **files: Path) -> tuple[list[str], dict[str, str]]:
    """Every file the script reads or writes redirected under ``tmp_path`` (never the
    host's /etc: these tests run as root), ``files`` overriding the defaults."""
    paths = {
        "BANGER_PNP": tmp_path / "pnp",
        "BANGER_RESOLV": tmp_path / "resolv.conf",
        "BANGER_KMSG": tmp_path / "kmsg",
        "BANGER_KERNEL_HOSTNAME": tmp_path / "kernel-hostname",
        "BANGER_HOSTNAME_FILE": tmp_path / "hostname",
    }
    paths.update({f"BANGER_{name.upper()}": path for name, path in files.items()})
    return [str(tmp_path / "banger-resolv")], {
        "PATH": os.environ["PATH"],
        **{k: str(v) for k, v in paths.items()},
    }


def run(
    tmp_path: Path,
    shell: str,
    pnp: str | None,
    *,
    resolv: Path | None = None,
    kernel_host: str | None = UNSET,
    status: int = 0,
) -> str:
    """The script's run against ``pnp`` and the kernel's hostname ``kernel_host``
    (None: no such file); what it logged ("" if nothing). Its stderr must be empty
    when it exits 0."""
    script = tmp_path / "banger-resolv"
    script.write_text(resolv_text())
    pnp_file = tmp_path / "pnp"
    pnp_file.unlink(missing_ok=True)
    if pnp is not None:
        pnp_file.write_text(pnp)
    kernel_hostname = tmp_path / "kernel-hostname"
    kernel_hostname.unlink(missing_ok=True)
    if kernel_host is not None:
        kernel_hostname.write_text(kernel_host + "\n")  # as /proc/sys/kernel/hostname reads
    kmsg = tmp_path / "kmsg"
    kmsg.unlink(missing_ok=True)
    args, env = script_env(tmp_path, **({"resolv": resolv} if resolv else {}))
    argv = [shell, "sh", *args] if shell.endswith("busybox") else [shell, *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == status, done.stderr
    if status == 0:
        assert done.stderr == ""
    return kmsg.read_text() if kmsg.exists() else ""


def initramfs_identity(tmp_path: Path, ip: str) -> tuple[bytes, bytes]:
    """What banger's initramfs writes into the root disk's hostname and resolv.conf
    for ``ip=``."""
    init = tmp_path / "init"
    init.write_bytes(init_script())
    newroot = tmp_path / "newroot"
    (newroot / "etc").mkdir(parents=True)
    body = f'. "$0"; NEWROOT="{newroot}"; parse_cmdline "$1"; write_guest_identity'
    subprocess.run(["busybox", "sh", "-c", body, str(init), f"ip={ip}"], check=True, timeout=30)
    return (newroot / "etc/hostname").read_bytes(), (newroot / "etc/resolv.conf").read_bytes()


@pytest.mark.parametrize("shell", SHELLS)
def test_writes_what_the_initramfs_writes(tmp_path: Path, shell: str) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(RESOLV_CONF)  # as finalize left it
    hostname = tmp_path / "hostname"
    hostname.write_text("")  # as finalize left it
    logged = run(tmp_path, shell, PNP, kernel_host="vm-a")
    ip = "172.30.0.2::172.30.0.1:255.255.255.0:vm-a:eth0:off:172.30.0.1"
    host_bytes, resolv_bytes = initramfs_identity(tmp_path, ip)
    assert resolv.read_bytes() == resolv_bytes == b"nameserver 172.30.0.1\n"
    assert hostname.read_bytes() == host_bytes == b"vm-a\n"
    assert logged == (
        f"banger-resolv: hostname vm-a (the kernel's ip=) written to {hostname}\n"
        f"banger-resolv: nameserver 172.30.0.1 (the kernel's ip=) written to {resolv}\n"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_the_hostname_is_written_only_when_it_differs(tmp_path: Path, shell: str) -> None:
    hostname = tmp_path / "hostname"
    hostname.write_text("vm-a\n")
    os.utime(hostname, ns=(1, 1))
    (tmp_path / "resolv.conf").write_text("nameserver 172.30.0.1\n")
    assert run(tmp_path, shell, PNP, kernel_host="vm-a") == ""
    assert hostname.stat().st_mtime_ns == 1
    # Renamed, or stale bytes around the same name: the file becomes the one line.
    for before in ("old-name\n", "vm-a", "vm-a\nvm-a\n", "vm-a \n", "\n"):
        hostname.write_text(before)
        assert "hostname vm-a" in run(tmp_path, shell, PNP, kernel_host="vm-a"), before
        assert hostname.read_text() == "vm-a\n", before


@pytest.mark.parametrize("shell", SHELLS)
def test_the_hostname_is_written_without_a_dns_server(tmp_path: Path, shell: str) -> None:
    """ip= with a host field but no dns0: the hostname still; resolv.conf left alone."""
    run(tmp_path, shell, "#MANUAL\n", kernel_host="vm-b")
    assert (tmp_path / "hostname").read_text() == "vm-b\n"
    assert not (tmp_path / "resolv.conf").exists()


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("pnp", "kernel_host"),
    [(PNP, UNSET), (PNP, ""), (PNP, None), (None, "vm-a")],
    ids=["never-set", "empty", "unreadable", "no-ip-pnp"],
)
def test_the_hostname_file_is_left_alone_without_a_name_from_ip(
    tmp_path: Path, shell: str, pnp: str | None, kernel_host: str | None
) -> None:
    """No host field in ip= (the kernel's "(none)"), or the Debian kernel (no
    /proc/net/pnp: its initramfs wrote /etc/hostname, and a pool's take may have
    renamed the guest since)."""
    hostname = tmp_path / "hostname"
    hostname.write_text("kept\n")
    os.utime(hostname, ns=(1, 1))
    logged = run(tmp_path, shell, pnp, kernel_host=kernel_host)
    assert "banger-resolv: hostname" not in logged
    assert hostname.read_text() == "kept\n" and hostname.stat().st_mtime_ns == 1


@pytest.mark.parametrize("shell", SHELLS)
def test_a_failed_hostname_write_says_so_and_resolv_conf_is_still_written(
    tmp_path: Path, shell: str
) -> None:
    (tmp_path / "hostname").mkdir()  # not writable as a file, even by root
    run(tmp_path, shell, PNP, kernel_host="vm-a", status=1)
    assert (tmp_path / "resolv.conf").read_text() == "nameserver 172.30.0.1\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_symlink_becomes_a_plain_file(tmp_path: Path, shell: str) -> None:
    stub = tmp_path / "stub-resolv.conf"
    stub.write_text("nameserver 127.0.0.53\n")
    resolv = tmp_path / "resolv.conf"
    resolv.symlink_to(stub)
    run(tmp_path, shell, PNP)
    assert not resolv.is_symlink()
    assert resolv.read_text() == "nameserver 172.30.0.1\n"
    assert stub.read_text() == "nameserver 127.0.0.53\n"  # the link's target left alone


@pytest.mark.parametrize("shell", SHELLS)
def test_every_server_and_nothing_else_of_the_kernel_list(tmp_path: Path, shell: str) -> None:
    pnp = (
        "#PROTO: DHCP\ndomain example.test\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n"
        "nameserver 10.0.0.3;reboot\nnameserver\nbootserver 10.0.0.9\n"
    )
    run(tmp_path, shell, pnp)
    assert (tmp_path / "resolv.conf").read_text() == "nameserver 10.0.0.1\nnameserver 10.0.0.2\n"


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "pnp",
    [None, "#MANUAL\n", "#MANUAL\nbootserver 172.30.0.1\n", ""],
    ids=["no-ip-pnp", "no-dns0", "bootserver-only", "empty"],
)
def test_left_alone_without_a_server_from_the_kernel(
    tmp_path: Path, shell: str, pnp: str | None
) -> None:
    """The Debian kernel (no /proc/net/pnp: its initramfs wrote resolv.conf) or no dns0."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 172.30.0.1\n")
    before = resolv.stat()
    assert run(tmp_path, shell, pnp) == ""
    assert resolv.read_text() == "nameserver 172.30.0.1\n"
    assert resolv.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("shell", SHELLS)
def test_an_unchanged_file_is_not_written_again(tmp_path: Path, shell: str) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 172.30.0.1\n")
    os.utime(resolv, ns=(1, 1))
    assert run(tmp_path, shell, PNP) == ""
    assert resolv.stat().st_mtime_ns == 1
    # Another server (the VM's bridge changed): written.
    assert run(tmp_path, shell, "#MANUAL\nnameserver 172.31.0.1\n") != ""
    assert resolv.read_text() == "nameserver 172.31.0.1\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_failed_write_says_so(tmp_path: Path, shell: str) -> None:
    script = tmp_path / "banger-resolv"
    script.write_text(resolv_text())
    (tmp_path / "pnp").write_text(PNP)
    args, env = script_env(tmp_path, resolv=tmp_path / "no-such-dir/resolv.conf")
    argv = [shell, "sh", *args] if shell.endswith("busybox") else [shell, *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert f"banger-resolv: cannot write {tmp_path}/no-such-dir/resolv.conf" in done.stderr


def test_the_fast_init_runs_it_before_anything_resolves() -> None:
    text = fast_init_text()
    # In a subshell of PID 1, not as a program of its own (no exec of another shell).
    line = f"[ -r {RESOLV_PATH} ] && (. {RESOLV_PATH})\n"
    assert line in text
    # After /proc (its input) and the root's remount rw (its output); before the
    # agent and sshd, and in the foreground.
    assert text.index("mount -o remount,rw /") < text.index(line)
    assert text.index("mount -t proc proc /proc\n") < text.index(line)
    assert text.index(line) < text.index("qemu-ga") < text.index('log "starting sshd')


def test_the_unit_runs_it_early_under_systemd() -> None:
    lines = RESOLV_SERVICE.splitlines()
    for expected in (
        f"ExecStart={RESOLV_PATH}",
        "Type=oneshot",
        "DefaultDependencies=no",
        "ConditionPathExists=/proc/net/pnp",
        "After=systemd-remount-fs.service",
        "Before=sysinit.target nss-lookup.target network-pre.target",
        "WantedBy=sysinit.target",
    ):
        assert expected in lines


@pytest.mark.root
def test_finalize_installs_and_enables_it(tmp_path: Path) -> None:
    tree = usrmerged_tree(tmp_path)
    finalize_tree(tree, home_out=tmp_path / "home")
    script = tree / RESOLV_PATH.lstrip("/")
    assert script.read_text() == resolv_text()
    assert script.stat().st_mode & 0o777 == 0o755
    unit = tree / "etc/systemd/system" / RESOLV_UNIT
    assert unit.read_text() == RESOLV_SERVICE
    wants = tree / "etc/systemd/system/sysinit.target.wants" / RESOLV_UNIT
    assert os.readlink(wants) == f"/etc/systemd/system/{RESOLV_UNIT}"
    assert (tree / "etc/resolv.conf").read_text() == RESOLV_CONF
