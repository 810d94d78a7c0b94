"""``POST /v1/network/cleanup``: remove banger's bridge and NAT.

The work is :mod:`banger.daemon.netcleanup`.
"""

from __future__ import annotations

from fastapi import APIRouter

from banger.daemon.dns_svc import DNSService
from banger.daemon.netcleanup import NetworkCleanup, cleanup_network
from banger.daemon.vms.stack import VMStack


def network_router(stack: VMStack, dns: DNSService | None) -> APIRouter:
    router = APIRouter(prefix="/v1/network", tags=["network"])

    @router.post("/cleanup")
    async def cleanup() -> NetworkCleanup:
        """Remove the bridge, its taps and NAT entries (the nft table once empty).

        409 naming the VMs while any VM is not stopped or an operation works on
        one; idempotent (nothing left: all fields false or empty).
        """
        return await cleanup_network(stack, dns)

    return router
