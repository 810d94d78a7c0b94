from __future__ import annotations

from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.vmm.bootargs import BootSpec, check_hostname, host_tsc_khz, kernel_cmdline
from banger.vmm.firecracker.bootargs import firecracker_cmdline

BASE = BootSpec(ip="172.30.0.2", gateway="172.30.0.1", prefix=24, hostname="box", dns="172.30.0.1")


def spec(**changes: object) -> BootSpec:
    fields = {**BASE.__dict__, **changes}
    return BootSpec(**fields)


def test_systemd_qemu_kvm_line() -> None:
    assert kernel_cmdline(BASE) == (
        "console=ttyS0 root=/dev/vda rw net.ifnames=0 panic=-1 pty.legacy_count=0 "
        "ip=172.30.0.2::172.30.0.1:255.255.255.0:box:eth0:off:172.30.0.1 "
        "banger.work=/dev/vdb systemd.hostname=box"
    )


#: The kernel's ip= fields in order (Documentation/admin-guide/nfs/nfsroot.rst); a
#: kernel with IP_PNP and no initramfs (``kernel build``'s) reads them itself.
KERNEL_IP_FIELDS = ("client", "server", "gw", "netmask", "hostname", "device", "autoconf", "dns0")


def test_ip_fields_where_the_kernel_reads_them() -> None:
    """dns0 is what the kernel lists in /proc/net/pnp, for /sbin/banger-resolv (issue #19)."""
    line = kernel_cmdline(spec(ip="10.1.2.3", gateway="10.1.0.1", prefix=16, dns="10.1.0.53"))
    (value,) = [t.removeprefix("ip=") for t in line.split() if t.startswith("ip=")]
    fields = dict(zip(KERNEL_IP_FIELDS, value.split(":"), strict=True))
    assert fields == {
        "client": "10.1.2.3",
        "server": "",
        "gw": "10.1.0.1",
        "netmask": "255.255.0.0",
        "hostname": "box",
        "device": "eth0",
        "autoconf": "off",
        "dns0": "10.1.0.53",
    }


def test_fast_init_under_tcg() -> None:
    line = kernel_cmdline(spec(init_mode="fast", tsc_khz=2599998))
    assert line.endswith(
        "systemd.hostname=box init=/sbin/banger-fast-init tsc_early_khz=2599998 tsc=reliable"
    )


def test_firecracker_gets_reboot_k() -> None:
    tokens = firecracker_cmdline(BASE).split()
    assert "reboot=k" in tokens
    assert "reboot=k" not in kernel_cmdline(BASE).split()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hostname": "a b"}, "hostname"),
        ({"hostname": "x init=/bin/sh"}, "hostname"),
        ({"hostname": "box:eth1"}, "hostname"),
        ({"hostname": "-box"}, "hostname"),
        ({"hostname": "box-"}, "hostname"),
        ({"hostname": "a" * 64}, "hostname"),
        ({"hostname": ""}, "hostname"),
        ({"hostname": "bóx"}, "hostname"),
        ({"hostname": "box\n"}, "hostname"),
        ({"ip": "172.30.0.2 init=/bin/sh"}, "ip"),
        ({"ip": "not-an-ip"}, "ip"),
        ({"ip": "172.30.0.1"}, "ip"),
        ({"ip": "172.30.0.255"}, "ip"),
        ({"ip": "fe80::1"}, "ip"),
        ({"gateway": "10.0.0.1"}, "gateway"),
        ({"dns": "1.1.1.1 quiet"}, "dns"),
        ({"prefix": 31}, "prefix"),
        ({"prefix": 0}, "prefix"),
        ({"prefix": True}, "prefix"),
        ({"init_mode": "sysv"}, "init_mode"),
        ({"tsc_khz": 5}, "tsc_khz"),
    ],
)
def test_refuses_bad_pieces_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        kernel_cmdline(spec(**changes))
    assert info.value.message.startswith(f"{field}:")


@pytest.mark.parametrize("arg", ["a b", "x\ninit=/bin/sh", "", "k=v w", "=v"])
def test_refuses_a_driver_token_the_guest_could_split(arg: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        kernel_cmdline(BASE, driver_args=[arg])
    assert info.value.message.startswith("driver_args:")


def test_every_token_is_key_value_or_flag() -> None:
    line = kernel_cmdline(spec(init_mode="fast", tsc_khz=1000), driver_args=["reboot=k"])
    keys = [t.split("=", 1)[0] for t in line.split()]
    assert len(keys) == len(set(keys)), "no key may appear twice"
    assert keys.count("init") == 1


def test_check_hostname_accepts_labels() -> None:
    assert check_hostname("Agent-7") == "Agent-7"
    assert check_hostname("a" * 63) == "a" * 63


def test_host_tsc_khz(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu MHz\t\t: 2599.998\n")
    assert host_tsc_khz(cpuinfo) == 2599998
    cpuinfo.write_text("processor\t: 0\n")
    assert host_tsc_khz(cpuinfo) is None
    assert host_tsc_khz(tmp_path / "missing") is None
    real = host_tsc_khz()
    assert real is None or real > 1000
