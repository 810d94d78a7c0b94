"""Remove banger's bridge and NAT once no VM needs them (``banger system cleanup-network``).

An explicit command, not a side effect of stopping the last VM: the bridge
costs nothing while idle, and tearing it down on every last stop would make
the next start recreate it, re-bind the VM resolver and re-link
systemd-resolved each time, with a stop racing a start to be ordered. One
explicit place also makes the one thing that must never happen — the bridge
removed under a VM — easy to rule out:

- refused (409, one line naming the VMs) while any VM is in a state that has
  or is getting a tap (everything but stopped and failed) or an operation holds
  a VM's lock (a start between its bridge ensure and its tap is still
  "stopped");
- the check and the teardown run under :attr:`HostNetwork.lock`, which every
  ensure takes: a start that begins meanwhile waits, then makes the bridge again.

The VM resolver is closed first: its sockets are bound to the gateway address,
which goes with the bridge, and systemd-resolved's per-link settings go with
the link; the next ensure binds and links them again. ``ip_forward`` stays on
(the helper never turns it off: other software may rely on it). Only the
configured bridge is touched: another owner's banger may run its own bridge
on this host. A second run finds nothing to remove and succeeds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from banger.daemon.dns_svc import DNSService
from banger.daemon.vms.stack import VMStack
from banger.errors import Conflict
from banger.store import VMRecord, VMState

#: VM states with no tap and no VMM: the only ones the network may be removed under.
_IDLE = (VMState.STOPPED, VMState.FAILED)
#: VMs named in the refusal before "and N more" (it stays one readable line).
_NAMED = 5


@dataclass(frozen=True)
class NetworkCleanup:
    """``POST /v1/network/cleanup``: what was removed (all empty/false: nothing to do)."""

    bridge: str
    bridge_deleted: bool
    #: ``bt-…`` taps still on the bridge (left by a crash), deleted with it.
    taps_deleted: list[str] = field(default_factory=list)
    #: Subnets whose masquerade/forward rules were removed from nft table ``ip banger``.
    nat_removed: list[str] = field(default_factory=list)
    #: The table itself went (no other bridge had entries in it).
    nat_table_deleted: bool = False
    #: The VM resolver (bound to the bridge address) was serving and was stopped.
    dns_stopped: bool = False
    #: Anything at all was removed or stopped (false: a repeated run, nothing to do).
    changed: bool = False

    @classmethod
    def from_helper(cls, bridge: str, reply: dict[str, Any], dns_stopped: bool) -> NetworkCleanup:
        def names(key: str) -> list[str]:
            value = reply.get(key)
            return [str(v) for v in value] if isinstance(value, list) else []

        bridge_deleted = reply.get("bridge_deleted") is True
        table_deleted = reply.get("nat_table_deleted") is True
        taps, subnets = names("taps_deleted"), names("nat_removed")
        return cls(
            bridge=bridge,
            bridge_deleted=bridge_deleted,
            taps_deleted=taps,
            nat_removed=subnets,
            nat_table_deleted=table_deleted,
            dns_stopped=dns_stopped,
            changed=bridge_deleted or table_deleted or dns_stopped or bool(taps or subnets),
        )


def network_users(vms: list[VMRecord], busy: set[str]) -> list[str]:
    """``name (state)`` for every VM that has or may be getting a tap on the bridge."""
    users = []
    for vm in sorted(vms, key=lambda v: v.name):
        if vm.state not in _IDLE:
            users.append(f"{vm.name} ({vm.state.value})")
        elif vm.id in busy:
            users.append(f"{vm.name} (an operation is running on it)")
    return users


def refusal(bridge: str, users: list[str]) -> Conflict:
    shown = ", ".join(users[:_NAMED])
    if len(users) > _NAMED:
        shown += f" and {len(users) - _NAMED} more"
    return Conflict(
        f"bridge {bridge} is still needed by {len(users)} VM(s): {shown}",
        hint="stop them first (banger vm stop NAME), then run banger system cleanup-network again",
    )


async def cleanup_network(stack: VMStack, dns: DNSService | None) -> NetworkCleanup:
    hostnet = stack.hostnet
    async with hostnet.lock:
        # Busy VMs before and after the store read: a start that passed its ensure
        # before we took the lock holds its VM lock until it is recorded running.
        busy = set(stack.vms.locks.held())
        records = await asyncio.to_thread(stack.vms.store.list_vms)
        users = network_users(records, busy | set(stack.vms.locks.held()))
        if users:
            raise refusal(hostnet.bridge, users)
        dns_stopped = await dns.close() if dns is not None else False
        reply = await hostnet.teardown()
    return NetworkCleanup.from_helper(hostnet.bridge, reply, dns_stopped)
