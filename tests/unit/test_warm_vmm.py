"""Which VMMs make warm VMs (fork's children, pools' guests): :mod:`banger.daemon.vms.warm_vmm`."""

from __future__ import annotations

import pytest

from banger.daemon.vms.warm_vmm import check_forkable, check_pool_vmm
from banger.errors import InvalidArgument


@pytest.mark.parametrize("kind", ["qemu", "firecracker"])
def test_qemu_and_plain_firecracker_with_the_agent_channel_can_be_forked(kind: str) -> None:
    check_forkable("src", kind, True)


@pytest.mark.parametrize("kind", ["qemu", "firecracker"])
def test_a_source_without_the_agent_channel_is_refused_with_a_restart_hint(kind: str) -> None:
    for channel in (False, None):
        with pytest.raises(InvalidArgument) as caught:
            check_forkable("src", kind, channel)
        assert caught.value.message.startswith(
            f"source: VM src runs on {kind} without the guest agent channel"
        )
        assert (
            caught.value.hint
            == "restart it to get the channel: banger vm stop src && banger vm start src"
        )


def test_a_jailed_firecracker_source_is_refused_naming_the_jailer() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_forkable("src", "jailed", True)
    assert caught.value.message.startswith("source: VM src runs on Firecracker under the jailer")
    assert "firecracker.jailer = false" in (caught.value.hint or "")


def test_an_unknown_vmm_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"^source: VM src runs on cloud-hypervisor;"):
        check_forkable("src", "cloud-hypervisor", True)


@pytest.mark.parametrize("kind", ["qemu", "firecracker"])
def test_pools_run_on_qemu_and_plain_firecracker(kind: str) -> None:
    check_pool_vmm(kind)


def test_pools_refuse_the_jailer_and_other_vmms() -> None:
    with pytest.raises(
        InvalidArgument, match=r"^vmm: new VMs here run on Firecracker under the jailer"
    ):
        check_pool_vmm("jailed")
    with pytest.raises(InvalidArgument, match=r"^vmm: new VMs here run on other;"):
        check_pool_vmm("other")
