"""IP leases: one address per VM, handed out in one transaction.

``ip_leases.ip`` is the primary key and ``ip_leases.vm_id`` is UNIQUE, so even
a bug here cannot give two VMs one address or one VM two; ``BEGIN IMMEDIATE``
makes concurrent allocations (threads or processes) queue instead of racing.
"""

from __future__ import annotations

from collections.abc import Set
from ipaddress import IPv4Address, IPv4Network

from banger.errors import NotFound
from banger.store.base import Repo
from banger.store.db import from_iso
from banger.store.errors import SubnetFull
from banger.store.records import IPLease


def gateway_of(subnet: IPv4Network) -> IPv4Address:
    """The bridge's address: the subnet's first host."""
    return subnet.network_address + 1


def usable(ip: IPv4Address, subnet: IPv4Network, reserved: Set[IPv4Address]) -> bool:
    return (
        ip in subnet
        and ip not in (subnet.network_address, subnet.broadcast_address, gateway_of(subnet))
        and ip not in reserved
    )


class LeaseRepo(Repo):
    def allocate_ip(
        self,
        vm_id: str,
        subnet: IPv4Network,
        reserved: Set[IPv4Address] = frozenset(),
    ) -> IPv4Address:
        """The lowest free host address for ``vm_id`` (its current lease if still usable).

        Skips the network address, the gateway (first host), the broadcast address
        and ``reserved``. Also records the address on the VM row.
        """
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM vms WHERE id = ?", (vm_id,)).fetchone() is None:
                raise NotFound(f"no VM with id {vm_id!r}")
            current = conn.execute("SELECT ip FROM ip_leases WHERE vm_id = ?", (vm_id,)).fetchone()
            if current is not None:
                ip = IPv4Address(current[0])
                if usable(ip, subnet, reserved):
                    return ip
                # The subnet changed or the address became reserved: move the VM.
                conn.execute("DELETE FROM ip_leases WHERE vm_id = ?", (vm_id,))
            taken = {IPv4Address(row[0]) for row in conn.execute("SELECT ip FROM ip_leases")}
            for candidate in subnet.hosts():
                if candidate not in taken and usable(candidate, subnet, reserved):
                    conn.execute(
                        "INSERT INTO ip_leases (ip, vm_id, allocated_at) VALUES (?, ?, ?)",
                        (str(candidate), vm_id, self._db.now()),
                    )
                    conn.execute("UPDATE vms SET ip = ? WHERE id = ?", (str(candidate), vm_id))
                    return candidate
            in_subnet = sum(1 for ip in taken if ip in subnet)
            raise SubnetFull(
                f"no free address in {subnet}: {in_subnet} leased, {len(reserved)} reserved",
                hint="delete unused VMs, or set a larger network.subnet in config.toml",
            )

    def release_ip(self, vm_id: str) -> IPv4Address | None:
        """Drop the VM's lease; returns the address it had (None if it had none)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT ip FROM ip_leases WHERE vm_id = ?", (vm_id,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM ip_leases WHERE vm_id = ?", (vm_id,))
            conn.execute("UPDATE vms SET ip = NULL WHERE id = ?", (vm_id,))
            return IPv4Address(row[0])

    def get_lease(self, vm_id: str) -> IPLease | None:
        with self._db.reading() as conn:
            row = conn.execute("SELECT * FROM ip_leases WHERE vm_id = ?", (vm_id,)).fetchone()
        return None if row is None else _lease(row["ip"], row["vm_id"], row["allocated_at"])

    def list_leases(self) -> list[IPLease]:
        with self._db.reading() as conn:
            rows = conn.execute("SELECT ip, vm_id, allocated_at FROM ip_leases").fetchall()
        leases = [_lease(*row) for row in rows]
        return sorted(leases, key=lambda lease: lease.ip)


def _lease(ip: str, vm_id: str, allocated_at: str) -> IPLease:
    return IPLease(ip=IPv4Address(ip), vm_id=vm_id, allocated_at=from_iso(allocated_at))
