"""A real but harmless operation, for diagnostics (``POST /v1/ops/selftest``).

It touches the same machinery a VM start does — the store, the runtime
directory, staged progress events, failure bookkeeping — without touching any
VM. ``banger doctor`` and the tests use it; ``fail_at`` makes it fail at a
chosen stage so the failure path can be checked end to end.
"""

from __future__ import annotations

import asyncio
import os
import stat

from banger.api_models import SelftestRequest
from banger.daemon.ops import OpHandle
from banger.daemon.services import Services
from banger.errors import BangerError, InvalidArgument

STAGES = ("read_store", "check_runtime_dir", "emit_events", "finish")


def check_request(request: SelftestRequest) -> None:
    if request.fail_at is not None and request.fail_at not in STAGES:
        raise InvalidArgument(
            f"fail_at: unknown selftest stage {request.fail_at!r}",
            hint="one of: " + ", ".join(STAGES),
        )


async def run_selftest(services: Services, request: SelftestRequest, op: OpHandle) -> None:
    delay = request.delay_ms / 1000
    for name in STAGES:
        await op.stage(name)
        if request.fail_at == name:
            raise BangerError(
                f"selftest failed at stage {name} as requested",
                hint="this failure was asked for with fail_at; omit it for a passing selftest",
            )
        if name == "read_store":
            count = len(await services.ops.list(include_finished=True, limit=1000))
            await op.event("info", f"store answers: {count} operation(s) recorded")
        elif name == "check_runtime_dir":
            st = services.paths.runtime_dir.stat()
            mode = stat.S_IMODE(st.st_mode)
            if st.st_uid != os.getuid() or mode & 0o077:
                await op.event(
                    "warning",
                    f"runtime dir {services.paths.runtime_dir} is mode {mode:o} uid {st.st_uid}",
                    {"mode": f"{mode:o}", "uid": st.st_uid},
                )
            else:
                await op.event("info", "runtime dir is private to the owner")
        elif name == "emit_events":
            await op.event("info", "event stream works", {"pid": os.getpid()})
        await asyncio.sleep(delay)
