"""Firecracker's boot_args from banger's command line, and exit-code reasons."""

from __future__ import annotations

import pytest

from banger.errors import InvalidArgument
from banger.vmm.bootargs import BootSpec
from banger.vmm.firecracker.bootargs import firecracker_boot_args, firecracker_cmdline
from banger.vmm.firecracker.exitcodes import exit_reason


def test_contract_cmdline_adapted_for_firecracker() -> None:
    line = firecracker_cmdline(
        BootSpec("172.30.0.2", "172.30.0.1", 24, "box", "172.30.0.1", "fast")
    )
    args = firecracker_boot_args(line).split()
    # Firecracker appends root=/dev/vda rw itself; banger must not say it too.
    assert not any(t.startswith("root=") for t in args) and "rw" not in args
    assert {"console=ttyS0", "reboot=k", "i8042.noaux", "i8042.nomux"} <= set(args)
    assert "nomodule" not in args  # the initramfs loads virtio modules
    assert [t for t in args if t.startswith("panic=")] == ["panic=-1"]
    contract = [t for t in line.split() if not t.startswith("root=") and t != "rw"]
    assert [t for t in args if t in contract] == contract  # order kept
    assert "ip=172.30.0.2::172.30.0.1:255.255.255.0:box:eth0:off:172.30.0.1" in args
    assert "init=/sbin/banger-fast-init" in args


def test_minimal_line_gets_the_essentials() -> None:
    assert firecracker_boot_args("quiet") == (
        "console=ttyS0 reboot=k i8042.noaux i8042.nomux panic=1 quiet"
    )
    with pytest.raises(InvalidArgument):
        firecracker_boot_args("a\nb")


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exited cleanly"),
        (1, "generic error"),
        (148, "seccomp"),
        (152, "bad configuration"),
        (153, "command-line arguments"),
        (156, "SIGHUP"),
        (-9, "killed by SIGKILL"),
        (-6, "SIGABRT: a Firecracker panic"),
        (77, "exited with status 77"),
        (None, "not our child"),
    ],
)
def test_exit_reasons(code: int | None, text: str) -> None:
    assert text in exit_reason(code)
