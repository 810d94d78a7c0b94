"""Contract tests: every request the Firecracker driver can emit conforms to the OpenAPI file.

The validator (:class:`tests.firecracker_standin.SpecValidator`) resolves the
spec's ``$ref``s into ``definitions`` and validates with ``jsonschema`` (draft 4,
the dialect of Swagger 2.0). The spec leaves ``additionalProperties`` unset, so
the validator closes every object schema: Firecracker itself rejects unknown
fields, and a misspelt field must fail here too (see the negative tests).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import jsonschema
import pytest

from banger.vmm.base import Disk, LaunchSpec, stable_mac
from banger.vmm.bootargs import BootSpec
from banger.vmm.firecracker import models
from banger.vmm.firecracker.bootargs import firecracker_cmdline
from banger.vmm.firecracker.jailer import JailerPolicy, JailRequest, jail_layout
from banger.vmm.firecracker.models import ApiRequest, RateLimiter, TokenBucket
from banger.vmm.firecracker.plan import (
    FirecrackerOptions,
    SnapshotFiles,
    VMFiles,
    boot_requests,
    host_path,
    restore_requests,
    snapshot_requests,
)
from tests.firecracker_standin import SpecValidator

VM = Path("/var/lib/banger/vms/t1")
LIMITER = RateLimiter(
    bandwidth=TokenBucket(size=50 << 20, refill_time_ms=1000, one_time_burst=100 << 20),
    ops=TokenBucket(size=1000, refill_time_ms=1000),
)


@pytest.fixture(scope="module")
def spec() -> SpecValidator:
    return SpecValidator()


def launch_spec(
    *, initrd: bool, read_only: bool, tap: bool, work: bool, agent: bool = False
) -> LaunchSpec:
    return LaunchSpec(
        vm_id="t1",
        vcpus=2,
        memory_mib=512,
        kernel=Path("/var/lib/banger/kernels/k1/vmlinux"),
        initrd=Path("/var/lib/banger/kernels/k1/initrd.img") if initrd else None,
        cmdline=firecracker_cmdline(BootSpec("172.30.0.2", "172.30.0.1", 24, "t1", "172.30.0.1")),
        root_disk=Disk(VM / "root.ext4", "raw", "unsafe", read_only),
        work_disk=VM / "work.ext4" if work else None,
        console_log=VM / "console.log",
        control_socket=Path("/run/banger/vm-t1.fc"),
        vmm_log=VM / "vmm.log",
        mac=stable_mac("t1"),
        tap_name="bt-t1" if tap else None,
        accelerator="kvm",
        agent_socket=Path("/run/banger/vm-t1.vsock") if agent else None,
    )


def jail_path_for(spec: LaunchSpec) -> tuple[object, object]:
    policy = JailerPolicy(
        Path("/var/lib/banger"), 1000, 1000, Path("/usr/bin/jailer"), Path("/usr/bin/firecracker")
    )
    files = VMFiles.for_spec(spec)
    request = JailRequest(
        vm_id=spec.vm_id,
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        kernel=spec.kernel,
        initrd=spec.initrd,
        root_disk=spec.root_disk.path,
        root_read_only=spec.root_disk.read_only,
        work_disk=spec.work_disk,
        console_log=spec.console_log,
        log=files.log,
        metrics=files.metrics,
    )
    return jail_layout(request, policy).path_in_jail, True


OPTIONS = [
    FirecrackerOptions(),
    FirecrackerOptions(
        disk_rate_limiter=LIMITER,
        net_rx_rate_limiter=LIMITER,
        net_tx_rate_limiter=RateLimiter(ops=TokenBucket(100, 10)),
        track_dirty_pages=True,
        log_level="Debug",
    ),
]


def every_request() -> list[tuple[str, ApiRequest]]:
    """All requests the driver emits, over a matrix of VM configurations."""
    out: list[tuple[str, ApiRequest]] = []
    for initrd, read_only, tap, work, jailed, options in itertools.product(
        (False, True), (False, True), (False, True), (False, True), (False, True), OPTIONS
    ):
        spec = launch_spec(initrd=initrd, read_only=read_only, tap=tap, work=work)
        files = VMFiles.for_spec(spec)
        path, via_api = jail_path_for(spec) if jailed else (host_path, False)
        name = f"initrd={initrd},ro={read_only},tap={tap},work={work},jail={jailed}"
        for r in boot_requests(spec, files, options, path, console_via_api=via_api):  # type: ignore[arg-type]
            out.append((name, r))
        snap = SnapshotFiles(VM / "snap.state", VM / "snap.mem")
        for r in restore_requests(spec, files, snap, options):
            out.append((name + ",restore", r))
    # The guest agent's vsock (the plain driver's requests; the jailed one differs only in
    # uds_path, /run/agent.vsock inside the jail).
    agent = launch_spec(initrd=True, read_only=False, tap=True, work=True, agent=True)
    snap = SnapshotFiles(VM / "snap.state", VM / "snap.mem")
    for r in boot_requests(agent, VMFiles.for_spec(agent)):
        out.append(("agent", r))
    for r in restore_requests(agent, VMFiles.for_spec(agent), snap):
        out.append(("agent,restore", r))
    for r in snapshot_requests(snap):
        out.append(("snapshot", r))
    for r in (
        models.vm_state("Paused"),
        models.vm_state("Resumed"),
        models.action("SendCtrlAltDel"),
        models.action("FlushMetrics"),
        models.describe_instance(),
        models.version(),
        models.machine_config(4, 1024, smt=True, huge_pages="2M"),
        models.drive("scratch_1", "/x/y.img", is_root_device=False, io_engine="Async"),
    ):
        out.append(("control", r))
    # Identical requests from different configurations are checked once.
    unique: dict[str, tuple[str, ApiRequest]] = {}
    for case, r in out:
        unique.setdefault(json.dumps([r.method, r.path, r.body], sort_keys=True), (case, r))
    return list(unique.values())


REQUESTS = every_request()


def test_matrix_covers_every_builder() -> None:
    paths = {(r.method, r.path) for _, r in REQUESTS}
    for expected in [
        ("PUT", "/logger"),
        ("PUT", "/metrics"),
        ("PUT", "/serial"),
        ("PUT", "/machine-config"),
        ("PUT", "/boot-source"),
        ("PUT", "/drives/root"),
        ("PUT", "/drives/work"),
        ("PUT", "/network-interfaces/eth0"),
        ("PUT", "/vsock"),
        ("PUT", "/actions"),
        ("PATCH", "/vm"),
        ("PUT", "/snapshot/create"),
        ("PUT", "/snapshot/load"),
        ("GET", "/"),
        ("GET", "/version"),
    ]:
        assert expected in paths
    bodies = [r.body for _, r in REQUESTS if r.body]
    assert any("rate_limiter" in b for b in bodies)
    assert any("initrd_path" in b for b in bodies)
    assert any(b.get("is_read_only") is True for b in bodies)
    assert any("network_overrides" in b for b in bodies)
    assert any("vsock_override" in b for b in bodies)


def test_the_agent_vsock_comes_before_instance_start() -> None:
    s = launch_spec(initrd=True, read_only=False, tap=True, work=True, agent=True)
    reqs = boot_requests(s, VMFiles.for_spec(s))
    assert reqs[-2] == ApiRequest(
        "PUT", "/vsock", {"guest_cid": 3, "uds_path": "/run/banger/vm-t1.vsock"}
    )
    assert reqs[-1].path == "/actions"
    assert not any(
        r.path == "/vsock"
        for r in boot_requests(dataclasses.replace(s, agent_socket=None), VMFiles.for_spec(s))
    )
    (load,) = [
        r
        for r in restore_requests(s, VMFiles.for_spec(s), SnapshotFiles(VM / "s", VM / "m"))
        if r.path == "/snapshot/load"
    ]
    assert load.body is not None
    assert load.body["vsock_override"] == {"uds_path": "/run/banger/vm-t1.vsock"}


@pytest.mark.parametrize(
    ("case", "request_"), REQUESTS, ids=[f"{c}:{r.method} {r.path}" for c, r in REQUESTS]
)
def test_request_conforms_to_openapi(spec: SpecValidator, case: str, request_: ApiRequest) -> None:
    assert spec.find(request_.method, request_.path) is not None, f"{case}: no such operation"
    assert spec.errors(request_.method, request_.path, request_.body) == [], case


def test_boot_sequence_order_and_ids() -> None:
    s = launch_spec(initrd=True, read_only=False, tap=True, work=True)
    reqs = boot_requests(s, VMFiles.for_spec(s))
    assert [r.path for r in reqs] == [
        "/logger",
        "/metrics",
        "/machine-config",
        "/boot-source",
        "/drives/root",
        "/drives/work",
        "/network-interfaces/eth0",
        "/actions",
    ]
    for r in reqs:
        if r.path.startswith(("/drives/", "/network-interfaces/")):
            assert r.body is not None
            assert r.path.rsplit("/", 1)[1] == r.body.get("drive_id", r.body.get("iface_id"))
    assert reqs[-1].body == {"action_type": "InstanceStart"}
    net = reqs[6].body
    assert net == {"iface_id": "eth0", "host_dev_name": "bt-t1", "guest_mac": stable_mac("t1")}


def test_jailed_requests_use_paths_inside_the_jail() -> None:
    s = launch_spec(initrd=True, read_only=False, tap=True, work=True)
    path, _ = jail_path_for(s)
    reqs = boot_requests(s, VMFiles.for_spec(s), path=path, console_via_api=True)  # type: ignore[arg-type]
    bodies = {r.path: r.body for r in reqs}
    assert bodies["/boot-source"] is not None
    assert bodies["/boot-source"]["kernel_image_path"] == "/vmlinux"
    assert bodies["/boot-source"]["initrd_path"] == "/initrd.img"
    assert bodies["/drives/root"]["path_on_host"] == "/root.img"  # type: ignore[index]
    assert bodies["/drives/work"]["path_on_host"] == "/work.img"  # type: ignore[index]
    assert bodies["/serial"] == {"serial_out_path": "/console.log"}
    assert bodies["/logger"]["log_path"] == "/firecracker.log"  # type: ignore[index]


# -- negative: the validator must catch a wrong field ----------------------------------

GOOD_DRIVE = models.drive("root", "/x/root.img", is_root_device=True)


@pytest.mark.parametrize(
    ("label", "method", "path", "body"),
    [
        ("misspelt field", "PUT", "/drives/root", {**GOOD_DRIVE.body, "is_readonly": True}),  # type: ignore[dict-item]
        ("wrong type", "PUT", "/machine-config", {"vcpu_count": "2", "mem_size_mib": 128}),
        ("out of range", "PUT", "/machine-config", {"vcpu_count": 33, "mem_size_mib": 128}),
        ("missing required", "PUT", "/boot-source", {"boot_args": "console=ttyS0"}),
        ("bad enum", "PUT", "/drives/root", {**GOOD_DRIVE.body, "cache_type": "unsafe"}),  # type: ignore[dict-item]
        ("nested misspelling", "PUT", "/snapshot/load",
         {"snapshot_path": "/s", "mem_backend": {"backend_type": "File", "backend_pth": "/m"}}),
        ("unknown action", "PUT", "/actions", {"action_type": "Reboot"}),
        ("no such path", "PUT", "/drive/root", GOOD_DRIVE.body),
        ("wrong method", "POST", "/actions", {"action_type": "InstanceStart"}),
        ("body on a GET", "GET", "/", {"x": 1}),
        ("missing body", "PUT", "/vm", None),
    ],
)  # fmt: skip
def test_validator_rejects(
    spec: SpecValidator, label: str, method: str, path: str, body: object
) -> None:
    assert spec.errors(method, path, body), label


def test_open_spec_alone_would_accept_a_misspelling(spec: SpecValidator) -> None:
    """Why the validator closes the schemas: the raw spec does not set additionalProperties."""
    import yaml

    raw = yaml.safe_load(spec.spec_path.read_text())
    schema = {"$ref": "#/definitions/Drive", "definitions": raw["definitions"]}
    body = {**GOOD_DRIVE.body, "is_readonly": True}  # type: ignore[dict-item]
    assert not list(jsonschema.Draft4Validator(schema).iter_errors(body))
    assert spec.errors("PUT", "/drives/root", body)


def test_builders_refuse_bad_ids_and_values() -> None:
    from banger.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="drive_id"):
        models.drive("root/../x", "/a", is_root_device=True)
    with pytest.raises(InvalidArgument, match="iface_id"):
        models.network_interface("eth-0", "bt-1")
    with pytest.raises(InvalidArgument, match="host_dev_name"):
        models.network_interface("eth0", "a-very-long-interface-name")
    with pytest.raises(InvalidArgument, match="vcpu_count"):
        models.machine_config(0, 128)
    with pytest.raises(InvalidArgument, match="vcpu_count"):
        models.machine_config(3, 128, smt=True)
    with pytest.raises(InvalidArgument, match="kernel_image_path"):
        models.boot_source("relative/vmlinux")
    with pytest.raises(InvalidArgument, match=r"rate_limiter\.ops\.size"):
        models.drive(
            "root", "/a", is_root_device=True, rate_limiter=RateLimiter(ops=TokenBucket(-1, 1))
        )
    qcow = dataclasses.replace(
        launch_spec(initrd=False, read_only=False, tap=False, work=False),
        root_disk=Disk(VM / "root.qcow2", "qcow2"),
    )
    with pytest.raises(InvalidArgument, match="raw"):
        boot_requests(qcow, VMFiles.for_spec(qcow))
