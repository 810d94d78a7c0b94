"""Which VMMs can make warm VMs (``vm fork``, pools): one rule, for both.

A warm VM is a restore of a snapshot under a new identity, taken on through
the guest agent (:mod:`.reident`). That needs two things of the machine a
snapshot is taken from:

- a VMM whose snapshots banger restores re-identified: QEMU (``set_link``
  holds the link down) and plain Firecracker (the tap held detached by the
  helper until the agent's work is done). Firecracker under the **jailer** is
  refused, as ``vm snapshot`` refuses it: the helper's ``start_jailer`` op
  cannot link a snapshot's state and memory into a new jail;
- the agent channel (QEMU's virtio-serial port, Firecracker's vsock): a VM
  booted before the channel existed has none until it is restarted.

Firecracker support is built to its API and tested against the stand-in
(``tests/firecracker_standin.py``) with a real ``qemu-ga`` in namespaces as
the guest; a real Firecracker guest (KVM, its vsock transport, a real memory
restore) is not exercised on the machines this suite runs on.
"""

from __future__ import annotations

from banger.errors import InvalidArgument

#: ``driver_kind`` values whose snapshots restore re-identified.
WARM_KINDS = ("qemu", "firecracker")


def check_forkable(vm_name: str, kind: str, agent_channel: bool | None) -> None:
    """A fork's source must run on a warm-capable VMM, with the agent channel."""
    if kind == "jailed":
        raise InvalidArgument(
            f"source: VM {vm_name} runs on Firecracker under the jailer; a fork starts with "
            "a snapshot, which the jailer does not support yet (the helper cannot link a "
            "snapshot's state and memory into a new jail)",
            hint="fork a VM created with firecracker.jailer = false, or with vmm = qemu",
        )
    if kind not in WARM_KINDS:
        raise InvalidArgument(
            f"source: VM {vm_name} runs on {kind}; a fork's children are restores, "
            "which only QEMU and Firecracker VMs have",
            hint="fork a VM created with vmm = qemu or vmm = firecracker",
        )
    if agent_channel is not True:
        raise InvalidArgument(
            f"source: VM {vm_name} runs on {kind} without the guest agent channel; a fork's "
            "children take new addresses through the guest agent",
            hint=f"restart it to get the channel: banger vm stop {vm_name} && "
            f"banger vm start {vm_name}",
        )


def check_pool_vmm(kind: str) -> None:
    """New VMs here (a pool's template and guests) must run on a warm-capable VMM."""
    if kind == "jailed":
        raise InvalidArgument(
            "vmm: new VMs here run on Firecracker under the jailer; a pool's guests are "
            "restores of a template snapshot, which the jailer does not support yet",
            hint="set firecracker.jailer = false (or vmm = qemu) in config.toml to use pools",
        )
    if kind not in WARM_KINDS:
        raise InvalidArgument(
            f"vmm: new VMs here run on {kind}; a pool's guests are restores re-identified "
            "through the guest agent, which only QEMU and Firecracker VMs have",
            hint="set vmm = qemu or vmm = firecracker in config.toml to use pools",
        )
