"""Pure builders for Firecracker API requests.

Each builder returns an :class:`ApiRequest` ``(method, path, body)`` and sends
nothing: the client (:mod:`banger.vmm.firecracker.api`) does the I/O, and the
contract tests check every request against Firecracker's OpenAPI file
(``firecracker-api.yaml``) without a Firecracker binary.

Bodies carry only the fields banger sets. Optional fields are left out rather
than sent as ``null``: Firecracker's serde models reject ``null`` for most of
them, and an omitted field means "Firecracker's default".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from banger.errors import InvalidArgument

Method = Literal["GET", "PUT", "PATCH"]
CacheType = Literal["Unsafe", "Writeback"]
IoEngine = Literal["Sync", "Async"]
LogLevel = Literal["Error", "Warning", "Info", "Debug", "Trace", "Off"]
Action = Literal["InstanceStart", "SendCtrlAltDel", "FlushMetrics"]
VmStateName = Literal["Paused", "Resumed"]
SnapshotType = Literal["Full", "Diff"]
HugePages = Literal["None", "Transparent", "2M"]

#: Firecracker's resource ids (drive_id, iface_id): letters, digits and '_' only.
_RESOURCE_ID = re.compile(r"[A-Za-z0-9_]+")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
#: A tap is opened by name inside Firecracker: a Linux interface name (IFNAMSIZ - 1).
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


class ApiRequest(NamedTuple):
    method: Method
    path: str
    body: dict[str, Any] | None


@dataclass(frozen=True)
class TokenBucket:
    """``size`` tokens refilled every ``refill_time_ms``; ``one_time_burst`` extra at start."""

    size: int
    refill_time_ms: int
    one_time_burst: int | None = None

    def to_json(self, field: str) -> dict[str, Any]:
        for name, value in (
            ("size", self.size),
            ("refill_time_ms", self.refill_time_ms),
            ("one_time_burst", self.one_time_burst),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise InvalidArgument(f"{field}.{name}: must be a non-negative integer: {value!r}")
        body: dict[str, Any] = {"size": self.size, "refill_time": self.refill_time_ms}
        if self.one_time_burst is not None:
            body["one_time_burst"] = self.one_time_burst
        return body


@dataclass(frozen=True)
class RateLimiter:
    """Independent limits on bytes (``bandwidth``) and requests (``ops``); either optional."""

    bandwidth: TokenBucket | None = None
    ops: TokenBucket | None = None

    def to_json(self, field: str) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.bandwidth is not None:
            body["bandwidth"] = self.bandwidth.to_json(f"{field}.bandwidth")
        if self.ops is not None:
            body["ops"] = self.ops.to_json(f"{field}.ops")
        return body


def check_resource_id(field: str, value: str) -> str:
    """Firecracker ids go into the URL path too: refuse anything but ``[A-Za-z0-9_]+``."""
    if not isinstance(value, str) or not _RESOURCE_ID.fullmatch(value):
        raise InvalidArgument(
            f"{field}: not a Firecracker resource id: {value!r}",
            hint="use letters, digits and '_' only",
        )
    return value


def _check_int(field: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{field}: must be an integer between {low} and {high}: {value!r}")
    return value


def _check_path(field: str, value: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise InvalidArgument(f"{field}: must be an absolute path: {value!r}")
    return value


# -- pre-boot configuration ---------------------------------------------------------


def machine_config(
    vcpu_count: int,
    mem_size_mib: int,
    *,
    smt: bool = False,
    track_dirty_pages: bool = False,
    huge_pages: HugePages | None = None,
) -> ApiRequest:
    _check_int("vcpu_count", vcpu_count, 1, 32)
    _check_int("mem_size_mib", mem_size_mib, 1, 1 << 30)
    if smt and vcpu_count != 1 and vcpu_count % 2:
        raise InvalidArgument(f"vcpu_count: must be 1 or even with SMT on, got {vcpu_count}")
    body: dict[str, Any] = {
        "vcpu_count": vcpu_count,
        "mem_size_mib": mem_size_mib,
        "smt": smt,
        "track_dirty_pages": track_dirty_pages,
    }
    if huge_pages is not None:
        body["huge_pages"] = huge_pages
    return ApiRequest("PUT", "/machine-config", body)


def boot_source(
    kernel_image_path: str, *, boot_args: str | None = None, initrd_path: str | None = None
) -> ApiRequest:
    body: dict[str, Any] = {
        "kernel_image_path": _check_path("kernel_image_path", kernel_image_path)
    }
    if boot_args is not None:
        if "\n" in boot_args or "\0" in boot_args:
            raise InvalidArgument("boot_args: contains a newline or NUL")
        body["boot_args"] = boot_args
    if initrd_path is not None:
        body["initrd_path"] = _check_path("initrd_path", initrd_path)
    return ApiRequest("PUT", "/boot-source", body)


def drive(
    drive_id: str,
    path_on_host: str,
    *,
    is_root_device: bool,
    is_read_only: bool = False,
    cache_type: CacheType = "Unsafe",
    io_engine: IoEngine | None = None,
    rate_limiter: RateLimiter | None = None,
) -> ApiRequest:
    check_resource_id("drive_id", drive_id)
    body: dict[str, Any] = {
        "drive_id": drive_id,
        "path_on_host": _check_path("path_on_host", path_on_host),
        "is_root_device": is_root_device,
        "is_read_only": is_read_only,
        "cache_type": cache_type,
    }
    if io_engine is not None:
        body["io_engine"] = io_engine
    if rate_limiter is not None:
        body["rate_limiter"] = rate_limiter.to_json("rate_limiter")
    return ApiRequest("PUT", f"/drives/{drive_id}", body)


def drive_path_update(drive_id: str, path_on_host: str) -> ApiRequest:
    """``PATCH /drives/{id}``: the drive's backing file is now ``path_on_host`` (post-boot;
    between a snapshot load and the resume, it re-points a restored VM's disks)."""
    check_resource_id("drive_id", drive_id)
    body = {"drive_id": drive_id, "path_on_host": _check_path("path_on_host", path_on_host)}
    return ApiRequest("PATCH", f"/drives/{drive_id}", body)


def network_interface(
    iface_id: str,
    host_dev_name: str,
    guest_mac: str | None = None,
    *,
    rx_rate_limiter: RateLimiter | None = None,
    tx_rate_limiter: RateLimiter | None = None,
) -> ApiRequest:
    check_resource_id("iface_id", iface_id)
    if not isinstance(host_dev_name, str) or not _IFNAME.fullmatch(host_dev_name):
        raise InvalidArgument(f"host_dev_name: not an interface name: {host_dev_name!r}")
    body: dict[str, Any] = {"iface_id": iface_id, "host_dev_name": host_dev_name}
    if guest_mac is not None:
        if not _MAC.fullmatch(guest_mac):
            raise InvalidArgument(f"guest_mac: not a lower-case MAC address: {guest_mac!r}")
        body["guest_mac"] = guest_mac
    if rx_rate_limiter is not None:
        body["rx_rate_limiter"] = rx_rate_limiter.to_json("rx_rate_limiter")
    if tx_rate_limiter is not None:
        body["tx_rate_limiter"] = tx_rate_limiter.to_json("tx_rate_limiter")
    return ApiRequest("PUT", f"/network-interfaces/{iface_id}", body)


def logger(
    log_path: str,
    *,
    level: LogLevel = "Info",
    show_level: bool = True,
    show_log_origin: bool = False,
) -> ApiRequest:
    body = {
        "log_path": _check_path("log_path", log_path),
        "level": level,
        "show_level": show_level,
        "show_log_origin": show_log_origin,
    }
    return ApiRequest("PUT", "/logger", body)


def metrics(metrics_path: str, *, properties: Mapping[str, str] | None = None) -> ApiRequest:
    body: dict[str, Any] = {"metrics_path": _check_path("metrics_path", metrics_path)}
    if properties:
        body["properties"] = {str(k): str(v) for k, v in properties.items()}
    return ApiRequest("PUT", "/metrics", body)


#: The guest's vsock context id: each Firecracker VM has its own vsock device, so
#: every guest can use the same (3 is the first one not reserved).
GUEST_CID = 3


def vsock(uds_path: str, guest_cid: int = GUEST_CID) -> ApiRequest:
    """The vsock device; Firecracker listens on ``uds_path`` for host-initiated connections."""
    if guest_cid < 3:
        raise InvalidArgument(f"guest_cid: must be 3 or more, got {guest_cid}")
    return ApiRequest(
        "PUT", "/vsock", {"guest_cid": guest_cid, "uds_path": _check_path("uds_path", uds_path)}
    )


def serial(serial_out_path: str) -> ApiRequest:
    """Send the guest's serial console to a file instead of Firecracker's stdout."""
    return ApiRequest(
        "PUT", "/serial", {"serial_out_path": _check_path("serial_out_path", serial_out_path)}
    )


# -- actions, state, snapshots ------------------------------------------------------


def action(action_type: Action) -> ApiRequest:
    if action_type not in ("InstanceStart", "SendCtrlAltDel", "FlushMetrics"):
        raise InvalidArgument(f"action_type: unknown Firecracker action {action_type!r}")
    return ApiRequest("PUT", "/actions", {"action_type": action_type})


def vm_state(state: VmStateName) -> ApiRequest:
    if state not in ("Paused", "Resumed"):
        raise InvalidArgument(f"state: must be 'Paused' or 'Resumed', got {state!r}")
    return ApiRequest("PATCH", "/vm", {"state": state})


def describe_instance() -> ApiRequest:
    return ApiRequest("GET", "/", None)


def version() -> ApiRequest:
    return ApiRequest("GET", "/version", None)


def snapshot_create(
    snapshot_path: str, mem_file_path: str, *, snapshot_type: SnapshotType = "Full"
) -> ApiRequest:
    if snapshot_type not in ("Full", "Diff"):
        raise InvalidArgument(f"snapshot_type: must be 'Full' or 'Diff', got {snapshot_type!r}")
    body = {
        "snapshot_path": _check_path("snapshot_path", snapshot_path),
        "mem_file_path": _check_path("mem_file_path", mem_file_path),
        "snapshot_type": snapshot_type,
    }
    return ApiRequest("PUT", "/snapshot/create", body)


@dataclass(frozen=True)
class NetworkOverride:
    """Restore interface ``iface_id`` onto a different tap (the new VM's own)."""

    iface_id: str
    host_dev_name: str


def snapshot_load(
    snapshot_path: str,
    mem_file_path: str,
    *,
    resume_vm: bool = True,
    track_dirty_pages: bool = False,
    network_overrides: Sequence[NetworkOverride] = (),
    vsock_uds_path: str | None = None,
) -> ApiRequest:
    # mem_backend rather than the deprecated mem_file_path (they cannot be combined).
    body: dict[str, Any] = {
        "snapshot_path": _check_path("snapshot_path", snapshot_path),
        "mem_backend": {
            "backend_type": "File",
            "backend_path": _check_path("mem_backend.backend_path", mem_file_path),
        },
        "resume_vm": resume_vm,
        "track_dirty_pages": track_dirty_pages,
    }
    if network_overrides:
        overrides = []
        for i, o in enumerate(network_overrides):
            check_resource_id(f"network_overrides[{i}].iface_id", o.iface_id)
            if not _IFNAME.fullmatch(o.host_dev_name):
                raise InvalidArgument(
                    f"network_overrides[{i}].host_dev_name: not an interface name: "
                    f"{o.host_dev_name!r}"
                )
            overrides.append({"iface_id": o.iface_id, "host_dev_name": o.host_dev_name})
        body["network_overrides"] = overrides
    if vsock_uds_path is not None:
        # The restored VM listens on its own socket, not the snapshot source's.
        body["vsock_override"] = {
            "uds_path": _check_path("vsock_override.uds_path", vsock_uds_path)
        }
    return ApiRequest("PUT", "/snapshot/load", body)
