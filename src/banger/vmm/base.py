"""The VMM driver contract shared by the QEMU and Firecracker drivers.

A driver turns a :class:`LaunchSpec` into a running VMM process and controls
it afterwards through its control socket (QMP for QEMU, the HTTP API for
Firecracker). What it returns, :class:`VMMProcess`, is plain data that the VM
service stores: after a daemon restart a driver re-attaches to the VMM from
that record alone (pid + start time + socket), never from in-memory state.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

from banger.errors import BangerError, InvalidArgument
from banger.guest.agent import AgentEndpoint
from banger.limits import MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, MIN_VCPUS
from banger.vmm.bootargs import BootSpec

Accelerator = Literal["kvm", "tcg"]
DiskFormat = Literal["raw", "qcow2"]
#: ``unsafe`` ignores guest flushes (fast; for disposable disks), ``writeback`` honours them.
CacheMode = Literal["unsafe", "writeback"]

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_VM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: Linux interface names: at most 15 bytes, no '/', ':' or whitespace.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


class VMMError(BangerError):
    """The VMM failed to start, or refused or failed a control command."""

    http_status = 500


@dataclass(frozen=True)
class Disk:
    path: Path
    format: DiskFormat = "raw"
    cache: CacheMode = "writeback"
    read_only: bool = False


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a VMM needs to boot one guest.

    Fields are chosen to suit both drivers: QEMU takes the tap as an open file
    descriptor (``tap_fd``, passed by the root helper), Firecracker by name
    (``tap_name`` → ``host_dev_name``); Firecracker needs an uncompressed
    ``vmlinux`` and raw disks, QEMU also takes bzImage and qcow2.

    The daemon's spec says what the guest needs to know at boot in ``boot`` and
    leaves ``cmdline`` empty; the driver's :meth:`VMMDriver.adapt_spec` turns
    ``boot`` into its own command line. A spec that is launched has ``cmdline``
    and no ``boot``.
    """

    vm_id: str
    vcpus: int
    memory_mib: int
    kernel: Path
    initrd: Path | None
    cmdline: str
    root_disk: Disk
    #: The VM's work disk (raw ext4), always the second block device (/dev/vdb).
    work_disk: Path | None
    #: Serial console output goes here (appended).
    console_log: Path
    #: The VMM's control socket (QMP or Firecracker API); must fit ``sun_path``.
    control_socket: Path
    #: The VMM's own stdout/stderr.
    vmm_log: Path
    mac: str
    tap_fd: int | None = None
    tap_name: str | None = None
    accelerator: Accelerator = "tcg"
    #: QEMU only: the uncompressed ELF of the same kernel, with a PVH entry note
    #: (:func:`banger.kernels.vmlinux.qemu_pvh_image`). When set QEMU boots it
    #: instead of ``kernel`` (a bzImage), and the guest skips decompressing
    #: itself, which costs seconds under emulation. A restore must use what the
    #: snapshot was booted with: QEMU's boot option ROM differs between the two.
    pvh_kernel: Path | None = None
    #: The host end of the guest agent channel (:mod:`banger.guest.agent`), None for
    #: none: QEMU listens there for a virtio-serial port, Firecracker for its hybrid
    #: vsock. A restore must have it exactly when the snapshot's VM had it (the
    #: device set is part of the saved state).
    agent_socket: Path | None = None
    #: The daemon's driver-neutral boot facts, before adaptation (None after it, and
    #: for a restore that boots the command line its snapshot saved).
    boot: BootSpec | None = None

    def validate(self) -> None:
        """Raise :class:`InvalidArgument` naming the first bad field."""
        if self.boot is not None:
            raise InvalidArgument(
                "boot: the spec still needs its driver's adapt_spec (no command line yet)"
            )
        if not _VM_ID.fullmatch(self.vm_id):
            raise InvalidArgument(f"vm_id: not a valid VM id: {self.vm_id!r}")
        if not MIN_VCPUS <= self.vcpus <= MAX_VCPUS:
            raise InvalidArgument(
                f"vcpus: must be between {MIN_VCPUS} and {MAX_VCPUS}, got {self.vcpus}"
            )
        if not MIN_MEMORY_MIB <= self.memory_mib <= MAX_MEMORY_MIB:
            raise InvalidArgument(
                f"memory_mib: must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB},"
                f" got {self.memory_mib}"
            )
        if not _MAC.fullmatch(self.mac):
            raise InvalidArgument(f"mac: not a lower-case MAC address: {self.mac!r}")
        if int(self.mac[:2], 16) & 1:
            raise InvalidArgument(f"mac: {self.mac} is a multicast address")
        if self.tap_name is not None and not _IFNAME.fullmatch(self.tap_name):
            raise InvalidArgument(f"tap_name: not an interface name: {self.tap_name!r}")
        if self.tap_fd is not None and self.tap_fd < 0:
            raise InvalidArgument(f"tap_fd: not a file descriptor: {self.tap_fd}")
        if self.accelerator not in ("kvm", "tcg"):
            raise InvalidArgument(f"accelerator: must be 'kvm' or 'tcg': {self.accelerator!r}")
        if "\n" in self.cmdline or "\0" in self.cmdline:
            raise InvalidArgument("cmdline: contains a newline or NUL")
        paths = {
            "kernel": self.kernel,
            "pvh_kernel": self.pvh_kernel,
            "initrd": self.initrd,
            "root_disk": self.root_disk.path,
            "work_disk": self.work_disk,
            "console_log": self.console_log,
            "control_socket": self.control_socket,
            "vmm_log": self.vmm_log,
            "agent_socket": self.agent_socket,
        }
        for name, path in paths.items():
            if path is None:
                continue
            # QEMU's option parser splits on ',' (doubled commas escape it): refuse rather
            # than escape, and insist on absolute paths so nothing depends on a cwd.
            if not path.is_absolute() or "," in str(path) or "\n" in str(path):
                raise InvalidArgument(
                    f"{name}: must be an absolute path without commas or newlines: {path}"
                )


@dataclass(frozen=True)
class VMMCapabilities:
    pause: bool
    snapshot: bool
    qcow2: bool
    #: Takes its tap as an inherited file descriptor (else by interface name).
    tap_by_fd: bool
    #: Ends the guest gracefully from the host (ACPI power button, Ctrl-Alt-Del).
    graceful_stop: bool
    accelerators: tuple[Accelerator, ...] = ("kvm",)


@dataclass(frozen=True)
class VMMProcess:
    """A running VMM as stored in the database: enough to re-attach after a restart."""

    driver: str
    vm_id: str
    pid: int
    #: Clock ticks since boot (``/proc/<pid>/stat`` field 22): tells a recycled pid apart.
    start_time: int
    control_socket: Path
    argv: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "driver": self.driver,
            "vm_id": self.vm_id,
            "pid": self.pid,
            "start_time": self.start_time,
            "control_socket": str(self.control_socket),
            "argv": list(self.argv),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VMMProcess:
        return cls(
            driver=str(data["driver"]),
            vm_id=str(data["vm_id"]),
            pid=int(data["pid"]),
            start_time=int(data["start_time"]),
            control_socket=Path(data["control_socket"]),
            argv=tuple(str(a) for a in data.get("argv", ())),
        )


class VMState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    #: The VMM process is gone.
    EXITED = "exited"
    #: The process lives but its control socket does not answer.
    UNRESPONSIVE = "unresponsive"
    #: Alive and answering, in a state banger does not act on (e.g. guest-panicked).
    OTHER = "other"


@dataclass(frozen=True)
class VMMStatus:
    state: VMState
    #: The VMM's own word for it (QMP ``status``, Firecracker ``state``), when known.
    detail: str = ""


@dataclass(frozen=True)
class StopResult:
    #: How the VMM ended: it was already gone, the guest shut down when asked, the VMM
    #: was told to quit, or it was killed.
    method: Literal["already-exited", "graceful", "quit", "killed"]
    seconds: float


@dataclass(frozen=True)
class DriverFiles:
    """What the daemon offers beside a driver-neutral :class:`LaunchSpec`.

    Each driver takes from it what it boots with (:meth:`VMMDriver.adapt_spec`);
    the daemon never asks which driver it is talking to.
    """

    #: The kernel entry's name, for errors.
    kernel_name: str
    #: The entry's uncompressed ELF ``vmlinux``, None when it has none.
    vmlinux: Path | None
    #: Why ``vmlinux`` is None ("" when it is not): a driver that needs one says it.
    no_vmlinux: str
    #: Where a VMM that serves an HTTP API (Firecracker) listens; QEMU's QMP socket
    #: is the spec's ``control_socket``.
    api_socket: Path


class VMMDriver(Protocol):
    """What the VM service needs from a VMM. All methods are safe to call after a restart."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> VMMCapabilities: ...

    def adapt_spec(self, spec: LaunchSpec, files: DriverFiles) -> LaunchSpec:
        """The daemon's driver-neutral ``spec`` as this driver launches it.

        The neutral spec carries the tap both ways (``tap_fd`` and ``tap_name``),
        the bzImage as ``kernel`` with the PVH ``vmlinux`` QEMU may prefer, the
        QMP socket, the agent socket and the guest's boot facts (``boot``, which the
        driver turns into its ``cmdline``); a driver keeps what it uses and takes the
        rest from ``files``. Raises :class:`InvalidArgument` when it cannot boot it.
        """
        ...

    def agent_endpoint(self, path: Path) -> AgentEndpoint:
        """How the host reaches the guest agent of a VM launched with ``agent_socket=path``
        (the daemon's agent uses go through this, never through the driver's name)."""
        ...

    async def launch(self, spec: LaunchSpec) -> VMMProcess:
        """Start the VMM; return once its control socket answers. Raises :class:`VMMError`."""
        ...

    async def stop(self, proc: VMMProcess, graceful_timeout: float) -> StopResult:
        """Ask the guest to shut down, wait up to ``graceful_timeout``, then force it."""
        ...

    async def wait(self, proc: VMMProcess, timeout: float | None) -> bool:
        """Wait for the VMM to exit (True) or the timeout (False); reaps our own child."""
        ...

    async def status(self, proc: VMMProcess) -> VMMStatus: ...

    async def pause(self, proc: VMMProcess) -> None: ...

    async def resume(self, proc: VMMProcess) -> None: ...


def stable_mac(vm_id: str) -> str:
    """A MAC address derived from the VM id: same id, same MAC, across restarts.

    ``02`` as the first octet marks it locally administered and unicast; the
    other 40 bits come from a hash of the id, so collisions between VMs on one
    bridge are negligible.
    """
    digest = hashlib.sha256(b"banger-mac:" + vm_id.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))
