"""``/v1/pools``: list, show, set and remove pools of ready guests
(:mod:`banger.daemon.pools.service`).

Setting answers at once with the pool (its filler works in the background:
``state`` and ``ready`` say how far); removing is an operation (202), since it
deletes running guests. A guest is taken with ``POST /v1/vms`` and ``pool``.
"""

from __future__ import annotations

from fastapi import APIRouter

from banger.api_models import Operation, PoolInfo, PoolSetRequest
from banger.daemon.pools.service import Pools


def pool_router(pools: Pools) -> APIRouter:
    router = APIRouter(prefix="/v1/pools", tags=["pools"])

    @router.get("")
    async def list_pools() -> list[PoolInfo]:
        return await pools.listing()

    @router.get("/{name}")
    async def show_pool(name: str) -> PoolInfo:
        return await pools.show(name)

    @router.put("/{name}")
    async def set_pool(name: str, request: PoolSetRequest) -> PoolInfo:
        """Create the pool or change it (absent fields keep their value); the guests are
        made, replaced or removed in the background."""
        return await pools.set(name, request)

    @router.delete("/{name}", status_code=202)
    async def remove_pool(name: str) -> Operation:
        """Delete the pool's ready guests, its template and the pool."""
        return await pools.remove(name)

    return router
