"""Build the FastAPI application from explicit services: one router per URL prefix."""

from __future__ import annotations

from fastapi import FastAPI

from banger import __version__
from banger.daemon.api.errors import install_error_handlers
from banger.daemon.api.images import image_router
from banger.daemon.api.kernels import kernel_router
from banger.daemon.api.meta import meta_router
from banger.daemon.api.network import network_router
from banger.daemon.api.ops import ops_router
from banger.daemon.api.pools import pool_router
from banger.daemon.api.sessions import session_router
from banger.daemon.api.snapshots import snapshot_router
from banger.daemon.api.vms import vm_router
from banger.daemon.config_watch import ConfigRefreshMiddleware
from banger.daemon.pools.service import Pools
from banger.daemon.services import Services
from banger.daemon.sessions_svc import SessionService
from banger.daemon.vms.snapshots import Snapshots


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="bangerd",
        version=__version__,
        description="banger's owner daemon API (Unix socket only).",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app, services.paths)
    stack = services.stack
    # Shared by the routes under a VM and the ones across VMs.
    sessions = SessionService(stack.vms)
    snapshots = Snapshots(stack.vms)
    snapshots.sweep()  # leftovers of a crash between writing and recording
    pools = Pools(snapshots)
    # lifecycle starts the pools' fillers once reconciliation is done, and closes them
    app.state.pools = pools
    app.include_router(meta_router(services))  # /v1
    app.include_router(ops_router(services))  # /v1/ops
    app.include_router(vm_router(stack, sessions, snapshots, pools))  # /v1/vms
    app.include_router(image_router(stack))  # /v1/images
    app.include_router(kernel_router(stack))  # /v1/kernels
    app.include_router(session_router(sessions))  # /v1/sessions
    app.include_router(snapshot_router(snapshots))  # /v1/snapshots
    app.include_router(network_router(stack, services.dns))  # /v1/network
    app.include_router(pool_router(pools))  # /v1/pools
    # config.toml re-read (when it changed) before every request
    app.add_middleware(ConfigRefreshMiddleware, watch=services.config_watch)
    return app
