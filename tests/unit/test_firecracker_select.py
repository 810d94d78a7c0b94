"""Driver selection: a table over binaries present/absent and KVM usable/not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from banger.errors import ConfigError
from banger.hostinfo import KvmStatus, kvm_status
from banger.vmm.select import select_driver

KVM_OK = KvmStatus(True, "hardware virtualisation available through /dev/kvm")
KVM_PV = KvmStatus(False, "KVM here is nested paravirtual (kvm_pvm)")


@pytest.fixture
def fake_firecracker(tmp_path: Path) -> str:
    path = tmp_path / "firecracker"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_this_host_picks_qemu_with_a_reason() -> None:
    """Here: no Firecracker binary (and no KVM for ordinary guests) → QEMU."""
    assert shutil.which("firecracker") is None
    driver, reason = select_driver("auto", "firecracker", kvm_status())
    assert driver == "qemu"
    assert reason == "auto: Firecracker not usable: 'firecracker' is not found"


@pytest.mark.parametrize(
    ("vmm", "binary_present", "kvm", "expected"),
    [
        ("auto", True, KVM_OK, "firecracker"),
        ("auto", True, KVM_PV, "qemu"),
        ("auto", False, KVM_OK, "qemu"),
        ("auto", False, KVM_PV, "qemu"),
        ("firecracker", True, KVM_OK, "firecracker"),
        ("firecracker", True, KVM_PV, "error: KVM is not usable: KVM here is nested paravirtual"),
        ("firecracker", False, KVM_OK, "error: is not found"),
        ("qemu", True, KVM_OK, "qemu"),
        ("qemu", False, KVM_PV, "qemu"),
        ("kvmtool", True, KVM_OK, "error: must be 'auto'"),
    ],
)
def test_selection_table(
    fake_firecracker: str, vmm: str, binary_present: bool, kvm: KvmStatus, expected: str
) -> None:
    binary = fake_firecracker if binary_present else "/nonexistent/firecracker"
    if expected.startswith("error: "):
        with pytest.raises(ConfigError, match=expected.removeprefix("error: ")):
            select_driver(vmm, binary, kvm)
        return
    driver, reason = select_driver(vmm, binary, kvm)
    assert driver == expected
    if vmm == "auto" and driver == "qemu":
        assert "not found" in reason if not binary_present else "paravirtual" in reason
    if driver == "firecracker":
        assert fake_firecracker in reason


def test_missing_qemu_is_an_error_when_qemu_is_the_answer() -> None:
    with pytest.raises(ConfigError, match="QEMU is needed"):
        select_driver("auto", "/nonexistent/firecracker", KVM_OK, qemu_binary="/nonexistent/qemu")
