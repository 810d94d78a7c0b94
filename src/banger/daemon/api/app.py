"""Build the FastAPI application from explicit services."""

from __future__ import annotations

from fastapi import FastAPI

from banger import __version__
from banger.daemon.api.errors import install_error_handlers
from banger.daemon.api.exec import exec_router
from banger.daemon.api.files import files_router, vm_files_opener
from banger.daemon.api.meta import meta_router, ops_router
from banger.daemon.api.network import network_router
from banger.daemon.api.sessions import session_router
from banger.daemon.api.snapshots import snapshot_router
from banger.daemon.api.stats import stats_router
from banger.daemon.api.vm_control import vm_control_router
from banger.daemon.api.vms import image_router, kernel_router, vm_router
from banger.daemon.api.workspace import workspace_router
from banger.daemon.config_watch import ConfigRefreshMiddleware
from banger.daemon.services import Services


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="bangerd",
        version=__version__,
        description="banger's owner daemon API (Unix socket only).",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app, services.paths)
    app.include_router(meta_router(services))
    app.include_router(ops_router(services))
    stack = services.stack
    app.include_router(vm_router(stack))
    app.include_router(stats_router(stack))
    app.include_router(vm_control_router(stack))
    app.include_router(workspace_router(stack))
    app.include_router(image_router(stack))
    app.include_router(kernel_router(stack))
    app.include_router(session_router(stack))
    app.include_router(exec_router(stack))
    app.include_router(snapshot_router(stack))
    app.include_router(network_router(stack, services.dns))
    app.include_router(files_router(vm_files_opener(stack)))
    # config.toml re-read (when it changed) before every request
    app.add_middleware(ConfigRefreshMiddleware, watch=services.config_watch)
    return app
