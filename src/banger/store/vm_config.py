"""A VM row's ``config`` column: what the daemon learnt about the VM, typed.

The column is a JSON object whose keys were added one feature at a time, so a
row written by an older banger lacks the later ones. :meth:`VMConfig.from_json`
reads every shape banger has written: an absent key is None (the readers say
what None means: e.g. no ``pvh_boot`` is a bzImage boot, no ``agent_channel`` a
VM launched without the guest agent channel). Unknown keys, and known keys whose
value has a type banger never wrote, are kept verbatim in :attr:`VMConfig.extra`
and written back by :meth:`VMConfig.to_json`: a row is never silently trimmed,
and a newer banger's keys survive an older one touching the row. The stored
shape is unchanged, so no migration is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Launched:
    """What the running VMM was started with (``vm set`` changes the next start)."""

    vcpus: int
    memory_mib: int

    def to_json(self) -> dict[str, int]:
        return {"vcpus": self.vcpus, "memory_mib": self.memory_mib}

    @classmethod
    def from_json(cls, data: object) -> Launched | None:
        if not isinstance(data, dict) or set(data) != {"vcpus", "memory_mib"}:
            return None
        vcpus, memory = data["vcpus"], data["memory_mib"]
        if not (_is_int(vcpus) and _is_int(memory)):
            return None
        return cls(vcpus, memory)


@dataclass(frozen=True)
class CarriedDrivePaths:
    """The disk paths a restored Firecracker process still records, for as long
    as that process (``pid`` + ``start_time``) runs."""

    pid: int
    start_time: int
    paths: Mapping[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_time": self.start_time, "paths": dict(self.paths)}

    @classmethod
    def from_json(cls, data: object) -> CarriedDrivePaths | None:
        if not isinstance(data, dict) or set(data) != {"pid", "start_time", "paths"}:
            return None
        pid, start, paths = data["pid"], data["start_time"], data["paths"]
        if not (_is_int(pid) and _is_int(start) and isinstance(paths, dict)):
            return None
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in paths.items()):
            return None
        return cls(pid, start, dict(paths))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _obj(value: object) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, dict) else None


def _phases(value: object) -> tuple[dict[str, Any], ...] | None:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return None
    return tuple(dict(item) for item in value)


@dataclass(frozen=True)
class VMConfig:
    """The ``config`` column of a VM row. Every field None means "not recorded"."""

    #: Why the VM runs on its driver (``vm create``'s choice, or the restore's).
    vmm_reason: str | None = None
    #: The snapshot id a restored VM came from.
    restored_from: str | None = None
    #: The root disk file or device, and its format (``raw``/``qcow2``) at launch.
    root_disk: str | None = None
    root_format: str | None = None
    #: The running VMM (:meth:`banger.vmm.base.VMMProcess.to_json`).
    vmm_process: dict[str, Any] | None = field(default=None, hash=False)
    #: ``kvm`` or ``tcg``, and the kernel command line, of the last launch.
    accelerator: str | None = None
    cmdline: str | None = None
    #: QEMU booted the PVH ``vmlinux`` (True) or the bzImage (False or None).
    pvh_boot: bool | None = None
    #: The VM was launched with a guest agent channel (None: older, without).
    agent_channel: bool | None = None
    #: The guest agent answered during the last boot's wait (None: not asked).
    agent_seen: bool | None = None
    launched: Launched | None = None
    #: The last boot's phases (:func:`banger.guest.boot_timeline.phases_from_json`).
    boot_timeline: tuple[dict[str, Any], ...] | None = field(default=None, hash=False)
    firecracker_drive_paths: CarriedDrivePaths | None = field(default=None, hash=False)
    #: Keys this banger does not know, or known ones with a value it never wrote.
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Launched | CarriedDrivePaths):
                value = value.to_json()
            elif isinstance(value, tuple):
                value = [dict(item) for item in value]
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> VMConfig:
        data = dict(data or {})
        parsers = {
            "vmm_reason": _str,
            "restored_from": _str,
            "root_disk": _str,
            "root_format": _str,
            "vmm_process": _obj,
            "accelerator": _str,
            "cmdline": _str,
            "pvh_boot": _bool,
            "agent_channel": _bool,
            "agent_seen": _bool,
            "launched": Launched.from_json,
            "boot_timeline": _phases,
            "firecracker_drive_paths": CarriedDrivePaths.from_json,
        }
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            parse = parsers.get(key)
            parsed = parse(value) if parse is not None and value is not None else None
            if parsed is None:
                extra[key] = value
            else:
                known[key] = parsed
        return cls(**known, extra=extra)
