"""Typed, frozen rows: what the store hands out. JSON columns become dicts, except a
VM's ``config``, which is the typed :class:`~banger.store.vm_config.VMConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Any

from banger.store.vm_config import VMConfig


class VMState(StrEnum):
    CREATING = "creating"
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"
    DELETING = "deleting"
    #: vCPUs stopped by ``banger vm pause`` (schema v3); the VMM process lives on.
    PAUSED = "paused"


class OpState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (OpState.SUCCEEDED, OpState.FAILED)


class SessionState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"
    #: not written since schema v4 (which turned every such row into ``lost``)
    FAILED = "failed"
    #: ended with no exit status known: its VM stopped or rebooted under it
    LOST = "lost"

    @property
    def finished(self) -> bool:
        return self in (SessionState.EXITED, SessionState.FAILED, SessionState.LOST)


@dataclass(frozen=True)
class VMRecord:
    id: str
    name: str
    state: VMState
    image_id: str | None
    kernel_id: str | None
    vmm: str
    init_mode: str
    vcpus: int
    memory_mib: int
    work_disk_size: int  # bytes
    root_strategy: str | None
    ip: IPv4Address | None
    mac: str | None
    tap: str | None
    pid: int | None
    pid_start_time: int | None  # /proc/<pid>/stat starttime, guards against pid reuse
    created_at: datetime
    updated_at: datetime
    last_error: str | None
    config: VMConfig = field(hash=False)
    labels: dict[str, str] = field(hash=False)
    #: The pool whose ready guest this VM is (None: a VM of the owner's own).
    pool: str | None = None


@dataclass(frozen=True)
class ImageRecord:
    id: str
    name: str
    source: str
    digest: str | None
    size: int  # bytes
    created_at: datetime
    meta: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class KernelRecord:
    id: str
    name: str
    source: str
    version: str | None
    sha256: str | None
    created_at: datetime
    meta: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class IPLease:
    ip: IPv4Address
    vm_id: str
    allocated_at: datetime


@dataclass(frozen=True)
class OperationRecord:
    id: str
    kind: str
    target: str | None
    stage: str | None
    state: OpState
    error: str | None
    hint: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class OpEvent:
    op_id: str
    seq: int
    at: datetime
    kind: str
    stage: str | None
    message: str
    data: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class SessionRecord:
    id: str
    vm_id: str
    name: str
    command: tuple[str, ...]
    state: SessionState
    exit_status: int | None
    started_at: datetime
    ended_at: datetime | None
