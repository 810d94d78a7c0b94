"""The ordered API requests that configure and boot one VM (pure; no I/O).

Order follows Firecracker's rules: logger and metrics first (they must precede
everything else, and metrics can be set only once), then machine, boot source,
drives (root first, so it is ``/dev/vda`` and the work disk ``/dev/vdb``), the
network interface, the vsock (the guest agent's channel), and finally
``InstanceStart``. A restore is the same logger/metrics prefix followed by
``snapshot/load`` on a fresh process.

Paths in request bodies are the paths *Firecracker* sees. Without the jailer
that is the host path; in jailer mode it is the path inside the jail, so every
builder takes a ``path`` function that maps a host path for the VMM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from banger.errors import InvalidArgument
from banger.vmm.base import Disk, LaunchSpec
from banger.vmm.firecracker import models
from banger.vmm.firecracker.bootargs import firecracker_boot_args
from banger.vmm.firecracker.models import ApiRequest, CacheType, LogLevel, RateLimiter

ROOT_DRIVE = "root"
WORK_DRIVE = "work"
#: The guest's only NIC; also the key for network overrides on restore.
IFACE_ID = "eth0"
LOG_NAME = "firecracker.log"
METRICS_NAME = "firecracker.metrics"

PathFor = Callable[[Path], str]


def host_path(path: Path) -> str:
    return str(path)


@dataclass(frozen=True)
class FirecrackerOptions:
    """Firecracker-only knobs the VM service may set; defaults suit a sandbox."""

    disk_rate_limiter: RateLimiter | None = None
    net_rx_rate_limiter: RateLimiter | None = None
    net_tx_rate_limiter: RateLimiter | None = None
    #: Needed for Diff snapshots; costs a little memory bandwidth.
    track_dirty_pages: bool = False
    log_level: LogLevel = "Info"


DEFAULT_OPTIONS = FirecrackerOptions()


@dataclass(frozen=True)
class VMFiles:
    """Firecracker's own log and metrics files, next to the console log in the VM directory."""

    log: Path
    metrics: Path

    @classmethod
    def for_spec(cls, spec: LaunchSpec) -> VMFiles:
        vm_dir = spec.console_log.parent
        return cls(vm_dir / LOG_NAME, vm_dir / METRICS_NAME)


@dataclass(frozen=True)
class SnapshotFiles:
    """A snapshot is two files: the VM state and the guest memory (disks are separate)."""

    state: Path
    memory: Path


_CACHE: dict[str, CacheType] = {"unsafe": "Unsafe", "writeback": "Writeback"}


def _cache_type(disk: Disk, field: str) -> CacheType:
    if disk.format != "raw":
        raise InvalidArgument(
            f"{field}: Firecracker needs a raw disk image, not {disk.format}",
            hint="use a raw root-disk strategy (dm snapshot, reflink or copy) for Firecracker",
        )
    return _CACHE[disk.cache]


def prefix_requests(
    files: VMFiles, options: FirecrackerOptions, path: PathFor = host_path
) -> list[ApiRequest]:
    """Logger and metrics: the calls that must come before any other."""
    return [
        models.logger(path(files.log), level=options.log_level),
        models.metrics(path(files.metrics)),
    ]


def boot_requests(
    spec: LaunchSpec,
    files: VMFiles,
    options: FirecrackerOptions = DEFAULT_OPTIONS,
    path: PathFor = host_path,
    *,
    console_via_api: bool = False,
) -> list[ApiRequest]:
    """Every request from a fresh process to a booting guest, in order.

    ``console_via_api``: send the serial console to ``spec.console_log`` with
    ``PUT /serial`` (jailer mode, where Firecracker's stdout is /dev/null).
    """
    spec.validate()
    requests = prefix_requests(files, options, path)
    if console_via_api:
        requests.append(models.serial(path(spec.console_log)))
    requests.append(
        models.machine_config(
            spec.vcpus, spec.memory_mib, track_dirty_pages=options.track_dirty_pages
        )
    )
    requests.append(
        models.boot_source(
            path(spec.kernel),
            boot_args=firecracker_boot_args(spec.cmdline),
            initrd_path=path(spec.initrd) if spec.initrd is not None else None,
        )
    )
    requests.append(
        models.drive(
            ROOT_DRIVE,
            path(spec.root_disk.path),
            is_root_device=True,
            is_read_only=spec.root_disk.read_only,
            cache_type=_cache_type(spec.root_disk, "root_disk"),
            rate_limiter=options.disk_rate_limiter,
        )
    )
    if spec.work_disk is not None:
        requests.append(
            models.drive(
                WORK_DRIVE,
                path(spec.work_disk),
                is_root_device=False,
                # The work disk is the one that persists: honour the guest's flushes.
                cache_type="Writeback",
                rate_limiter=options.disk_rate_limiter,
            )
        )
    if spec.tap_name is not None:
        requests.append(
            models.network_interface(
                IFACE_ID,
                spec.tap_name,
                spec.mac,
                rx_rate_limiter=options.net_rx_rate_limiter,
                tx_rate_limiter=options.net_tx_rate_limiter,
            )
        )
    if spec.agent_socket is not None:
        # The guest agent's channel: the guest's qemu-ga listens on vsock, the host
        # connects through this socket (banger.guest.agent.GuestAgent.connect_vsock).
        requests.append(models.vsock(path(spec.agent_socket)))
    requests.append(models.action("InstanceStart"))
    return requests


def restore_requests(
    spec: LaunchSpec,
    files: VMFiles,
    snapshot: SnapshotFiles,
    options: FirecrackerOptions = DEFAULT_OPTIONS,
    path: PathFor = host_path,
) -> list[ApiRequest]:
    """A fresh process loading ``snapshot`` and resuming it on this VM's own tap and disks.

    The snapshot names the tap of the VM it was taken from; the network override
    points its ``eth0`` at ``spec.tap_name`` instead. The load opens the disks at
    the paths the snapshot recorded (the source VM's files: the caller makes
    them exist, see :mod:`banger.daemon.vms.snapshot_restore`); the load does
    not resume, each drive is re-pointed at this VM's own file (``PATCH
    /drives``, the documented way between a load and the resume — see
    firecracker-microvm/firecracker#1974) and only then does the guest resume.
    So the guest never does I/O on the source's disks, which may still be in
    use by the source, and a later snapshot of this VM records its own files.
    """
    spec.validate()
    overrides = (
        [models.NetworkOverride(IFACE_ID, spec.tap_name)] if spec.tap_name is not None else []
    )
    drives = [models.drive_path_update(ROOT_DRIVE, path(spec.root_disk.path))]
    if spec.work_disk is not None:
        drives.append(models.drive_path_update(WORK_DRIVE, path(spec.work_disk)))
    return [
        *prefix_requests(files, options, path),
        models.snapshot_load(
            path(snapshot.state),
            path(snapshot.memory),
            resume_vm=False,
            track_dirty_pages=options.track_dirty_pages,
            network_overrides=overrides,
            vsock_uds_path=path(spec.agent_socket) if spec.agent_socket is not None else None,
        ),
        *drives,
        models.vm_state("Resumed"),
    ]


def snapshot_requests(snapshot: SnapshotFiles, path: PathFor = host_path) -> list[ApiRequest]:
    """Pause, write a full snapshot; the caller resumes (or not) afterwards."""
    return [
        models.vm_state("Paused"),
        models.snapshot_create(path(snapshot.state), path(snapshot.memory), snapshot_type="Full"),
    ]
