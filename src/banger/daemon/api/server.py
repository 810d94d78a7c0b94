"""Serve the app on an already-bound socket, with banger's shutdown policy.

uvicorn's own signal capture re-raises the signal after shutting down (the
process would die "killed by SIGTERM"); a daemon stopped on purpose should
exit 0 after cleaning up. So we install our handlers on the loop instead:

- first SIGTERM/SIGINT: drain — stop accepting connections, refuse new
  operations, give running ones ``grace`` seconds, then cancel them;
- second signal: force — cancel everything now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from banger.daemon.api.peer import owner_only
from banger.daemon.ops import Operations

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are ours (see serve())


class ShutdownState:
    def __init__(self) -> None:
        self.signals = 0
        self.forced = False


async def serve(
    app: FastAPI, sock: socket.socket, ops: Operations, *, grace: float, debug: bool = False
) -> ShutdownState:
    config = uvicorn.Config(
        app,
        http=owner_only(os.getuid()),  # SO_PEERCRED behind the socket's 0600
        log_config=None,
        lifespan="off",
        access_log=debug,
        timeout_graceful_shutdown=int(grace) + 2,
    )
    server = _Server(config)
    state = ShutdownState()
    loop = asyncio.get_running_loop()
    background: set[asyncio.Task[None]] = set()

    def spawn(coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        background.add(task)
        task.add_done_callback(background.discard)

    def on_signal(sig: signal.Signals) -> None:
        state.signals += 1
        if state.signals == 1:
            log.info("received %s: draining (grace %.1fs; send again to force)", sig.name, grace)
            server.should_exit = True
            spawn(ops.drain(grace))
        else:
            log.warning("received %s again: forcing shutdown", sig.name)
            state.forced = True
            server.force_exit = True
            spawn(ops.cancel_all())
            spawn(ops.close_streams())

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await server.serve(sockets=[sock])
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
        # The server stops as soon as its connections close; the drain may still be
        # giving operations their grace period, so let it finish first.
        if background:
            await asyncio.wait(background, timeout=grace + 5)
        await ops.cancel_all()
        await ops.close_streams()
    return state
