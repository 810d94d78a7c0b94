"""The Firecracker driver: API request builders, client, supervision and jailer mode.

Modules: ``models`` (pure request builders), ``plan`` (the ordered requests for
a boot, restore or snapshot), ``api`` (the HTTP-over-Unix-socket client),
``driver`` (process supervision, the :class:`~banger.vmm.base.VMMDriver`),
``jailer`` (jailer argv, jail layout, validation of the helper op),
``bootargs`` and ``exitcodes``.
"""

from banger.vmm.firecracker.api import FirecrackerClient, FirecrackerError
from banger.vmm.firecracker.driver import FirecrackerDriver
from banger.vmm.firecracker.plan import FirecrackerOptions, SnapshotFiles

__all__ = [
    "FirecrackerClient",
    "FirecrackerDriver",
    "FirecrackerError",
    "FirecrackerOptions",
    "SnapshotFiles",
]
