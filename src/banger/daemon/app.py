"""Build the FastAPI application from explicit services."""

from __future__ import annotations

from fastapi import FastAPI

from banger import __version__
from banger.daemon.errors_http import install_error_handlers
from banger.daemon.routes import meta_router, ops_router, vms_router
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
    if services.stack is not None:
        from banger.daemon.routes_stats import stats_router
        from banger.daemon.routes_vms import image_router, kernel_router, vm_router
        from banger.daemon.routes_workspace import workspace_router

        app.include_router(vm_router(services.stack))
        app.include_router(stats_router(services.stack))
        from banger.daemon.routes_vm_control import vm_control_router

        app.include_router(vm_control_router(services.stack))
        app.include_router(workspace_router(services.stack))
        app.include_router(image_router(services.stack))
        app.include_router(kernel_router(services.stack))
        from banger.daemon.routes_sessions import session_router

        app.include_router(session_router(services.stack))
        from banger.daemon.routes_exec import exec_router

        app.include_router(exec_router(services.stack))
        from banger.daemon.routes_snapshots import snapshot_router

        app.include_router(snapshot_router(services.stack))
        from banger.daemon.routes_network import network_router

        app.include_router(network_router(services.stack, services.dns))
        from banger.daemon.routes_files import files_router, vm_files_opener

        app.include_router(files_router(vm_files_opener(services.stack)))
    else:
        app.include_router(vms_router(services))
    if services.config_watch is not None:
        from banger.daemon.config_watch import ConfigRefreshMiddleware

        # config.toml re-read (when it changed) before every request
        app.add_middleware(ConfigRefreshMiddleware, watch=services.config_watch)
    return app
