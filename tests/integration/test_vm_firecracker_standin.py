"""A VM with ``vmm = "firecracker"`` through the real VMService — against a STAND-IN.

Firecracker cannot run here (no Firecracker binary; no hardware KVM for
ordinary guests), so the "firecracker" binary is ``tests/firecracker_standin.py``:
a separate process serving Firecracker's API on the socket, validating every
request against ``firecracker-api.yaml`` and its phase rules. It boots no
guest, so the pipeline's two guest-facing steps are replaced in
:class:`tests.firecracker_world.StandInPipeline`, and only those: ``wait_ssh`` checks what the
stand-in recorded (kernel = the entry's extracted ``vmlinux``, the boot
arguments, the root/work drives and the tap by name) instead of logging in,
and ``guest_poweroff`` (SSH) is not attempted; the stop then goes through
the driver (Ctrl-Alt-Del). Everything else is real: the store, the
operations, the kernel import (vmlinux extraction), the image, the raw root
disk strategy, the work disk, the root helper in a network namespace
creating the persistent tap, the Firecracker driver's process supervision.

Also: the driver choice is recorded on the VM with its reason and survives a
config change and a daemon restart (a new VMService over the same store).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.api_models import VMCreateRequest
from banger.procinfo import is_same_process
from banger.store import VMState
from tests.firecracker_world import finish, make_service, taps, world
from tests.standins import standin_binary
from tests.support import async_wait_until, needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]


async def test_firecracker_vm_create_start_stop_rm_with_the_standin() -> None:
    async with world() as w:
        await finish(w.ops, await w.vms.create(
            VMCreateRequest(name="fc1", image="deb", kernel="deb", init="fast", start=True)
        ))  # fmt: skip
        vm = w.store.get_vm_by_name("fc1")
        detail = w.vms.detail(vm)
        assert vm.state == VMState.RUNNING and detail.vmm == "firecracker"
        assert detail.vmm_reason == "test: the Firecracker stand-in"
        assert detail.accelerator == "kvm"
        assert vm.root_strategy in ("reflink", "copy")  # Firecracker has no qcow2
        assert vm.config.root_format == "raw"
        assert w.pipeline.checked == 1
        assert vm.pid is not None and vm.pid_start_time is not None
        argv = Path(f"/proc/{vm.pid}/cmdline").read_bytes().split(b"\0")
        assert str(w.paths.vm_firecracker_socket(vm.id)).encode() in argv
        assert vm.tap in taps(w.ns)  # the persistent tap Firecracker opens by name

        await finish(w.ops, await w.vms.stop("fc1", timeout=0.2))
        vm = w.store.get_vm(vm.id)
        assert vm.state == VMState.STOPPED and vm.pid is None
        assert taps(w.ns) == []
        assert "Restarting system (Ctrl-Alt-Del)" in w.paths.vm_console_log(vm.id).read_text()

        # The config now says QEMU: this VM keeps the driver it was created with.
        w.choice.append(("qemu", "configured: vmm = 'qemu'"))
        await finish(w.ops, await w.vms.start("fc1"))
        vm = w.store.get_vm(vm.id)
        assert vm.vmm == "firecracker" and (w.vms.detail(vm).vmm_reason or "").startswith("test:")
        assert w.pipeline.checked == 2
        pid, start = vm.pid, vm.pid_start_time
        assert pid is not None and start is not None

        # A daemon restart: a new service over the same store re-adopts the running VM.
        fc = standin_binary(w.paths.config_dir)
        again, _pipeline, ops = make_service(w.paths, w.store, fc, w.choice)
        await again.reattach()
        vm = w.store.get_vm(vm.id)
        assert vm.state == VMState.RUNNING and vm.vmm == "firecracker" and vm.pid == pid
        await finish(ops, await again.delete("fc1"))
        await async_wait_until(
            lambda: not is_same_process(pid, start), 30, "the VMM process is gone"
        )
        assert w.store.list_vms() == [] and taps(w.ns) == []
        assert not w.paths.vm_dir(vm.id).exists()
