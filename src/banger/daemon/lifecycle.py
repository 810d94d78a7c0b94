"""The daemon's life from pid-file lock to clean exit (called by ``main``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from banger import __version__
from banger.config import Config
from banger.daemon.api.app import create_app
from banger.daemon.api.listener import bind_unix_socket
from banger.daemon.api.server import serve
from banger.daemon.config_watch import ConfigWatch
from banger.daemon.ops import Operations
from banger.daemon.pidfile import PidFile
from banger.daemon.services import Services
from banger.paths import Paths
from banger.store import Store

if TYPE_CHECKING:
    from banger.daemon.reconcile.startup import Startup

log = logging.getLogger("banger.daemon")
#: Marks the log lines that say what a starting bangerd is doing: the CLI that
#: started it shows them at a terminal while it waits (banger.autostart).
STARTUP = "startup:"


def pidfile_path(paths: Paths) -> Path:
    return paths.daemon_pidfile


class HoldsConfig(Protocol):
    config: Config


def follow_config(watch: ConfigWatch, services: Services) -> None:
    """Push every config ``watch`` applies into ``services`` and each collaborator holding one."""
    stack = services.stack
    holders: tuple[HoldsConfig, ...] = (
        stack.kernels,
        stack.images,
        stack.hostnet,
        stack.vms,
        stack.vms.pipeline,
        services.dns,
    )

    def push(config: Config) -> None:
        # Services is a frozen record of collaborators; its config is the one
        # field that legitimately changes while the daemon runs.
        object.__setattr__(services, "config", config)
        for holder in holders:
            holder.config = config

    watch.listeners.append(push)


def build_services(paths: Paths, watch: ConfigWatch, store: Store, ops: Operations) -> Services:
    """Every collaborator of one daemon, built and wired (nothing started, nothing served).

    The daemon's one composition root; the suite builds an in-process daemon with it too.
    """
    from banger.daemon.dns_svc import DNSService
    from banger.daemon.vms.stack import build_stack

    config = watch.current
    stack = build_stack(paths, config, store, ops)
    services = Services(
        paths=paths,
        config=config,
        store=store,
        ops=ops,
        started_at=datetime.now(UTC),
        stack=stack,
        dns=DNSService.for_daemon(config, paths.helper_socket, store),
        guest_conns=stack.guest_conns,
        config_watch=watch,
    )
    follow_config(watch, services)  # reloads reach every service
    return services


def run_daemon(paths: Paths, socket_path: Path, *, grace: float, debug: bool) -> int:
    """Serve until a signal; 0 after a graceful stop, 1 after a forced one."""
    watch = ConfigWatch.load(paths.config_file)  # invalid at start: a refusal
    pidfile = PidFile.acquire(pidfile_path(paths), socket_path=socket_path)
    try:
        sock = bind_unix_socket(socket_path)
        try:
            log.info(
                "bangerd %s starting: pid %d uid %d socket %s",
                __version__,
                os.getpid(),
                os.getuid(),
                socket_path,
            )
            store = Store.open(paths.db)
            try:
                ops = Operations(store)
                from banger.daemon import stage_delay
                from banger.daemon.reconcile import startup as reconcile

                stage_delay.configure_from_env()  # test-only hook, read once, here
                # Before serving: interrupted ops failed, temp/half-published files gone.
                log.info("%s reconciling interrupted operations and leftover files", STARTUP)
                startup = reconcile.before_serving(paths, store, ops)
                log.info("%s finding the host's VM support (KVM or emulation)", STARTUP)
                # Scratch files (provisioning stages, debugfs scripts, the generated
                # .gitconfig) go under state/tmp, not /tmp: what a crash leaves there
                # the next start's reconciliation removes, as it just did.
                paths.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                tempfile.tempdir = str(paths.tmp_dir)

                services = build_services(paths, watch, store, ops)
                forced = asyncio.run(_serve(services, sock, startup, grace=grace, debug=debug))
            finally:
                store.close()
        finally:
            sock.close()
            socket_path.unlink(missing_ok=True)
    finally:
        pidfile.release()
    if forced:
        log.warning("bangerd stopped (forced)")
        return 1
    log.info("bangerd stopped")
    return 0


async def _serve(
    services: Services, sock: socket.socket, startup: Startup, *, grace: float, debug: bool
) -> bool:
    from banger.daemon.background import Background
    from banger.daemon.reconcile import startup as reconcile
    from banger.daemon.vms.shutdown import stop_all
    from banger.daemon.vms.watch import VMMWatch

    app = create_app(services)
    # Store vs host (VMMs, taps, leases, interrupted creates), re-attach; state/reconcile.json.
    log.info("%s reconciling VMs with their processes, taps and addresses", STARTUP)
    await reconcile.after_stack(services.stack, startup)
    watch = VMMWatch.start(services.stack.vms)
    from banger.daemon.api.sessions import reconcile_sessions_at_start

    log.info("%s reconciling sessions with their guests", STARTUP)
    changed = await reconcile_sessions_at_start(services.stack)
    if changed:
        log.info("reconciled %d session(s) with their guests", changed)
    background = Background.start(services)
    pools = app.state.pools
    pools.start()  # every pool back to its size (its guests may have stopped with bangerd)
    watch.on_stopped.append(pools.guest_stopped)  # and again when a ready guest dies
    loop = asyncio.get_running_loop()
    # SIGHUP: re-read config.toml now (as `banger config reload` does)
    loop.add_signal_handler(signal.SIGHUP, services.config_watch.reload)
    log.info("bangerd ready")
    try:
        state = await serve(app, sock, services.ops, grace=grace, debug=debug)
        await watch.close()
        if services.config.daemon.stop_vms_on_shutdown:
            if state.forced:
                log.warning("forced shutdown: VMs left running (re-attached at the next start)")
            else:
                await stop_all(services.stack.vms)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await pools.close()
        await watch.close()
        await background.close()
        await services.guest_conns.close()
    return state.forced
