"""banger's SQLite store: VMs, images, kernels, IP leases, operations, sessions.

``Store.open(paths.db)`` creates and migrates the database (WAL, foreign keys
on); repository methods return frozen records from :mod:`banger.store.records`.
"""

from banger.store.base import new_id
from banger.store.errors import StoreError, SubnetFull
from banger.store.migrations import MIGRATIONS, Migration, latest_version, migrate
from banger.store.records import (
    ImageRecord,
    IPLease,
    KernelRecord,
    OperationRecord,
    OpEvent,
    OpState,
    SessionRecord,
    SessionState,
    VMRecord,
    VMState,
)
from banger.store.repo_artifacts import ImageChanges, KernelChanges
from banger.store.repo_pools import PoolChanges, PoolRecord
from banger.store.repo_snapshots import AddressTaken, SnapshotRecord
from banger.store.repo_vms import VMChanges
from banger.store.store import Store
from banger.store.vm_config import CarriedDrivePaths, Launched, VMConfig

__all__ = [
    "MIGRATIONS",
    "AddressTaken",
    "CarriedDrivePaths",
    "IPLease",
    "ImageChanges",
    "ImageRecord",
    "KernelChanges",
    "KernelRecord",
    "Launched",
    "Migration",
    "OpEvent",
    "OpState",
    "OperationRecord",
    "PoolChanges",
    "PoolRecord",
    "SessionRecord",
    "SessionState",
    "SnapshotRecord",
    "Store",
    "StoreError",
    "SubnetFull",
    "VMChanges",
    "VMConfig",
    "VMRecord",
    "VMState",
    "latest_version",
    "migrate",
    "new_id",
]
