"""The initramfs /init: its functions run under the host's busybox sh, the guest's shell."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from banger.kernels.initramfs import init_script

CONTRACT = (
    "console=ttyS0 root=/dev/vda rw net.ifnames=0 panic=-1 "
    "ip=172.30.0.2::172.30.0.1:24:guest-1:eth0:off:172.30.0.1 "
    "banger.work=/dev/vdb systemd.hostname=guest-1 init=/sbin/banger-fast-init "
    "tsc_early_khz=2599998 tsc=reliable"
)
VARS = [
    "root",
    "rootfstype",
    "mountopts",
    "init",
    "ip_addr",
    "ip_gw",
    "ip_prefix",
    "ip_hostname",
    "ip_dev",
    "ip_dns",
]


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("init") / "init"
    path.write_bytes(init_script())
    return path


def sh(script: Path, body: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Source the init (defines functions; main only runs as PID 1) and run ``body``."""
    result = subprocess.run(
        ["busybox", "sh", "-c", f'. "$0"; {body}', str(script), *args],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"], **(env or {})},
    )
    return result.stdout


def parse(script: Path, cmdline: str) -> dict[str, str]:
    printer = "; ".join(f'echo "{v}=${v}"' for v in VARS)
    out = sh(script, f'parse_cmdline "$1"; {printer}', cmdline)
    return dict(line.split("=", 1) for line in out.splitlines())


def test_script_is_valid_posix_sh(script: Path) -> None:
    subprocess.run(["busybox", "sh", "-n", str(script)], check=True)
    assert init_script().startswith(b"#!/bin/busybox sh\n")


def test_sourcing_does_not_run_main(script: Path) -> None:
    assert sh(script, "echo sourced") == "sourced\n"


def test_contract_cmdline(script: Path) -> None:
    assert parse(script, CONTRACT) == {
        "root": "/dev/vda",
        "rootfstype": "ext4",
        "mountopts": "rw",
        "init": "/sbin/banger-fast-init",
        "ip_addr": "172.30.0.2",
        "ip_gw": "172.30.0.1",
        "ip_prefix": "24",
        "ip_hostname": "guest-1",
        "ip_dev": "eth0",
        "ip_dns": "172.30.0.1",
    }


def test_defaults_without_parameters(script: Path) -> None:
    got = parse(script, "console=ttyS0")
    assert got["root"] == "/dev/vda"
    assert got["init"] == "/sbin/init"
    assert got["mountopts"] == "rw"
    assert got["ip_addr"] == ""


def test_ro_rootflags_and_fstype(script: Path) -> None:
    got = parse(script, "root=/dev/vdc ro rootflags=noatime,data=ordered rootfstype=ext2")
    assert got["root"] == "/dev/vdc"
    assert got["rootfstype"] == "ext2"
    assert got["mountopts"] == "ro,noatime,data=ordered"


def test_dotted_netmask_and_missing_fields(script: Path) -> None:
    got = parse(script, "ip=10.1.2.3::10.1.0.1:255.255.240.0:::off")
    assert (got["ip_prefix"], got["ip_dev"], got["ip_hostname"], got["ip_dns"]) == (
        "20",
        "eth0",
        "",
        "",
    )


@pytest.mark.parametrize("value", ["off", "none", "dhcp"])
def test_ip_without_static_address_configures_nothing(script: Path, value: str) -> None:
    assert parse(script, f"ip={value}")["ip_addr"] == ""


def test_glob_characters_in_cmdline_do_not_expand(script: Path) -> None:
    # Both patterns match host files (/dev/vda, /sbin/init) if expanded.
    got = parse(script, "root=/dev/v* init=/sbin/in?t")
    assert (got["root"], got["init"]) == ("/dev/v*", "/sbin/in?t")


@pytest.mark.parametrize(
    ("mask", "prefix"),
    [("255.255.255.0", "24"), ("255.255.0.0", "16"), ("255.255.255.252", "30"), ("", "24")],
)
def test_to_prefix(script: Path, mask: str, prefix: str) -> None:
    assert sh(script, 'to_prefix "$1"', mask).strip() == prefix


def test_identity_written_and_resolv_symlink_replaced(script: Path, tmp_path: Path) -> None:
    newroot = tmp_path / "newroot"
    (newroot / "etc").mkdir(parents=True)
    (newroot / "etc/hostname").write_text("image-default\n")
    (newroot / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    sh(
        script,
        f'NEWROOT="{newroot}"; parse_cmdline "$1"; write_guest_identity',
        "ip=10.0.0.2::10.0.0.1:24:vm-a:eth0:off:10.0.0.1",
    )
    assert (newroot / "etc/hostname").read_text() == "vm-a\n"
    assert not (newroot / "etc/resolv.conf").is_symlink()
    assert (newroot / "etc/resolv.conf").read_text() == "nameserver 10.0.0.1\n"


def test_identity_untouched_without_ip(script: Path, tmp_path: Path) -> None:
    newroot = tmp_path / "newroot"
    (newroot / "etc").mkdir(parents=True)
    (newroot / "etc/hostname").write_text("image-default\n")
    sh(script, f'NEWROOT="{newroot}"; parse_cmdline "root=/dev/vda"; write_guest_identity')
    assert (newroot / "etc/hostname").read_text() == "image-default\n"
    assert not (newroot / "etc/resolv.conf").exists()


def test_init_symlinks_resolve_inside_the_new_root(script: Path, tmp_path: Path) -> None:
    newroot = tmp_path / "newroot"
    (newroot / "usr/lib/systemd").mkdir(parents=True)
    (newroot / "usr/lib/systemd/systemd").write_text("#!/bin/sh\n")
    (newroot / "lib").symlink_to("usr/lib")  # merged /usr: relative
    (newroot / "sbin").mkdir()
    (newroot / "sbin/init").symlink_to("/lib/systemd/systemd")  # absolute: must not leave newroot
    out = sh(script, f'NEWROOT="{newroot}"; resolve_in_root /sbin/init').strip()
    assert Path(out).resolve() == (newroot / "usr/lib/systemd/systemd").resolve()
    missing = sh(script, f'NEWROOT="{newroot}"; resolve_in_root /sbin/nope').strip()
    assert not Path(missing).exists()
