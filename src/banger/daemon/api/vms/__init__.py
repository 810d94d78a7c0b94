"""``/v1/vms``: the one router for everything under a VM, built from one module per concern.

- :mod:`.lifecycle`: list, create, show, SSH details, start, stop, restart, delete;
- :mod:`.control`: pause and resume;
- :mod:`.stats`: host and guest statistics;
- :mod:`.settings`: ``vm set`` (CPUs, memory, work disk size);
- :mod:`.workspace`: copy a repository in, export it back as a branch;
- :mod:`.sessions`: the VM's detached sessions;
- :mod:`.snapshots`: take a snapshot (the snapshots are ``/v1/snapshots``);
- :mod:`.fork`: fork a running VM into N re-identified children;
- :mod:`.exec`: run a command in the guest (a WebSocket);
- :mod:`.files`: read, write and list guest files (over SFTP).

Each module builds a prefix-less router of its routes (with its OpenAPI tag);
:func:`vm_router` puts them all under :data:`PREFIX`.
"""

from __future__ import annotations

from fastapi import APIRouter

from banger.daemon.api.vms.control import control_routes
from banger.daemon.api.vms.exec import exec_router
from banger.daemon.api.vms.files import files_router, vm_files_opener
from banger.daemon.api.vms.fork import fork_routes
from banger.daemon.api.vms.lifecycle import lifecycle_routes
from banger.daemon.api.vms.sessions import session_routes
from banger.daemon.api.vms.settings import settings_routes
from banger.daemon.api.vms.snapshots import snapshot_routes
from banger.daemon.api.vms.stats import stats_routes
from banger.daemon.api.vms.workspace import workspace_routes
from banger.daemon.pools.service import Pools
from banger.daemon.sessions_svc import SessionService
from banger.daemon.vms.snapshots import Snapshots
from banger.daemon.vms.stack import VMStack

PREFIX = "/v1/vms"


def vm_router(
    stack: VMStack, sessions: SessionService, snapshots: Snapshots, pools: Pools
) -> APIRouter:
    """Every ``/v1/vms`` route. The prefix goes on each group as it is included: a
    group's collection routes (``GET``/``POST /v1/vms``) have an empty path, which
    FastAPI accepts only with a prefix given at inclusion."""
    router = APIRouter()
    groups = (
        lifecycle_routes(stack, pools),
        stats_routes(stack),
        settings_routes(stack),
        control_routes(stack),
        workspace_routes(stack),
        session_routes(stack, sessions),
        snapshot_routes(snapshots),
        fork_routes(snapshots),
        exec_router(stack),
        files_router(vm_files_opener(stack)),
    )
    for group in groups:
        router.include_router(group, prefix=PREFIX)
    return router
