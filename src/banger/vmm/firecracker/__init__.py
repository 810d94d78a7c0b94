"""The Firecracker driver: API request builders, client, supervision and jailer mode.

Modules: ``models`` (pure request builders), ``plan`` (the ordered requests for
a boot, restore or snapshot), ``api`` (the HTTP-over-Unix-socket client),
``driver`` (process supervision, the :class:`~banger.vmm.base.VMMDriver`),
``jailer`` (jailer argv, jail layout, validation of the helper op),
``jailer_flags`` (the owner's ``firecracker.jailer`` config as the helper's
start flags), ``bootargs`` and ``exitcodes``.

The names below load on first use (PEP 562): the root helper imports
``banger.vmm.firecracker.jailer`` and must not pull in httpx with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from banger.vmm.firecracker.api import FirecrackerClient, FirecrackerError
    from banger.vmm.firecracker.driver import FirecrackerDriver
    from banger.vmm.firecracker.plan import FirecrackerOptions, SnapshotFiles

_LAZY = {
    "FirecrackerClient": "api",
    "FirecrackerError": "api",
    "FirecrackerDriver": "driver",
    "FirecrackerOptions": "plan",
    "SnapshotFiles": "plan",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "FirecrackerClient",
    "FirecrackerDriver",
    "FirecrackerError",
    "FirecrackerOptions",
    "SnapshotFiles",
]
