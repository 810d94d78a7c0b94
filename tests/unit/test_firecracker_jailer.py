"""Jailer mode: argv builder, jail layout, request validation (fuzzed), jail population."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banger.vmm.firecracker.jailer import (
    JailerPolicy,
    JailerRequestInvalid,
    JailRequest,
    JailSetupError,
    check_sources,
    jail_layout,
    jailer_argv,
    populate_jail,
    teardown_jail,
    teardown_layout,
    validate_jailer_request,
)

STATE = Path("/var/lib/banger")
POLICY = JailerPolicy(STATE, 1000, 1000, Path("/usr/bin/jailer"), Path("/usr/bin/firecracker"))


def good_args(state: Path = STATE) -> dict[str, Any]:
    vm = state / "vms" / "t_1"
    return {
        "vm_id": "t_1",
        "vcpus": 2,
        "memory_mib": 512,
        "kernel": str(state / "kernels" / "k1" / "vmlinux"),
        "initrd": str(state / "kernels" / "k1" / "initrd.img"),
        "root_disk": str(vm / "root.ext4"),
        "root_read_only": False,
        "work_disk": str(vm / "work.ext4"),
        "console_log": str(vm / "console.log"),
        "log": str(vm / "firecracker.log"),
        "metrics": str(vm / "firecracker.metrics"),
        "netns": None,
    }


def test_argv() -> None:
    request = validate_jailer_request(good_args(), POLICY)
    assert jailer_argv(request, POLICY) == [
        "/usr/bin/jailer",
        "--id", "t-1",
        "--exec-file", "/usr/bin/firecracker",
        "--uid", "1000",
        "--gid", "1000",
        "--chroot-base-dir", "/var/lib/banger/jail",
        "--cgroup-version", "2",
        "--parent-cgroup", "banger",
        "--cgroup", "cpu.max=200000 100000",
        "--cgroup", f"memory.max={(512 + 64) << 20}",
        "--daemonize",
        "--", "--api-sock", "/run/firecracker.socket",
    ]  # fmt: skip
    with_ns = validate_jailer_request({**good_args(), "netns": "banger-ns"}, POLICY)
    argv = jailer_argv(with_ns, POLICY)
    assert argv[argv.index("--netns") + 1] == "/var/run/netns/banger-ns"


def test_layout_and_teardown_paths() -> None:
    layout = jail_layout(validate_jailer_request(good_args(), POLICY), POLICY)
    assert layout.jail_dir == STATE / "jail" / "firecracker" / "t-1"
    assert layout.root == layout.jail_dir / "root"
    assert layout.socket == layout.root / "run" / "firecracker.socket"
    assert layout.pid_file == layout.root / "firecracker.pid"
    assert layout.cgroup == Path("/sys/fs/cgroup/banger/t-1")
    links = {name: must for _, name, must in layout.entries}
    assert links == {
        "vmlinux": False,
        "initrd.img": False,
        "root.img": True,
        "work.img": True,
        "console.log": True,
        "firecracker.log": True,
        "firecracker.metrics": True,
    }
    ro = jail_layout(
        validate_jailer_request({**good_args(), "root_read_only": True}, POLICY), POLICY
    )
    assert ("root.img", False) in {(n, m) for _, n, m in ro.entries}
    assert layout.path_in_jail(STATE / "vms" / "t_1" / "work.ext4") == "/work.img"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"vm_id": "../x"}, "vm_id: must be"),
        ({"vm_id": "a" * 65}, "vm_id: must be"),
        ({"vcpus": 0}, "vcpus: must be between 1 and 32"),
        ({"vcpus": True}, "vcpus: must be an integer"),
        ({"memory_mib": "512"}, "memory_mib: must be an integer"),
        ({"kernel": "/etc/shadow"}, "kernel: must be inside /var/lib/banger"),
        ({"kernel": "/var/lib/banger/../../etc/shadow"}, "kernel: must be an absolute, normalised"),
        ({"root_disk": "vms/t_1/root.ext4"}, "root_disk: must be an absolute"),
        ({"work_disk": "/var/lib/banger/jail/firecracker/x/root/a"}, "not inside the jail"),
        ({"console_log": "/var/lib/banger/vms/a\nb"}, "console_log: contains NUL or a newline"),
        ({"root_read_only": 1}, "root_read_only: must be a boolean"),
        ({"netns": "x y"}, "netns: must be a network namespace name"),
        ({"uid": 0}, "uid: unknown field"),
        ({"log": "/var/lib/banger/vms/t_1/console.log"}, "the same file is named twice"),
    ],
)
def test_validation_names_the_field(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(JailerRequestInvalid) as err:
        validate_jailer_request({**good_args(), **change}, POLICY)
    assert any(problem in p for p in err.value.problems), err.value.problems


def test_every_problem_is_reported_at_once() -> None:
    args = {**good_args(), "vcpus": 99, "kernel": "x"}
    del args["metrics"]
    with pytest.raises(JailerRequestInvalid) as err:
        validate_jailer_request(args, POLICY)
    assert len(err.value.problems) == 3
    assert all(p.startswith("start_jailer.args.") for p in err.value.problems)


# -- fuzzing: hostile requests never get through, and never crash the validator -----------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
hostile_paths = st.one_of(
    st.text(max_size=40),
    st.builds(lambda s: f"/var/lib/banger/{s}", st.text(max_size=30)),
    st.sampled_from(
        [
            "/var/lib/banger",
            "/var/lib/bangerx/a",
            "/var/lib/banger/a/../../etc",
            "//var/lib/banger/a",
            "/var/lib/banger/./a",
        ]
    ),
)


def _accepted_invariants(request: JailRequest) -> None:
    for path in request.files().values():
        text = str(path)
        assert text.startswith("/var/lib/banger/") and not text.startswith("/var/lib/banger/jail/")
        assert ".." not in path.parts and "\0" not in text and "\n" not in text
        assert os.path.normpath(text) == text
    assert 1 <= request.vcpus <= 32


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=14))
def test_random_dicts_are_refused_cleanly(args: Mapping[str, Any]) -> None:
    with pytest.raises(JailerRequestInvalid):
        validate_jailer_request(args, POLICY)


@settings(max_examples=500, deadline=None)
@given(
    field=st.sampled_from(
        ["kernel", "initrd", "root_disk", "work_disk", "console_log", "log", "metrics"]
    ),
    value=hostile_paths,
)
def test_hostile_paths_are_refused_or_stay_inside_the_state_dir(field: str, value: str) -> None:
    try:
        request = validate_jailer_request({**good_args(), field: value}, POLICY)
    except JailerRequestInvalid as exc:
        assert exc.problems and all(p.startswith("start_jailer.args") for p in exc.problems)
        return
    _accepted_invariants(request)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(good_args())), value=json_values)
def test_any_single_field_replaced_is_refused_or_well_typed(field: str, value: Any) -> None:
    try:
        request = validate_jailer_request({**good_args(), field: value}, POLICY)
    except JailerRequestInvalid:
        return
    _accepted_invariants(request)
    assert isinstance(request.root_read_only, bool)
    assert request.netns is None or isinstance(request.netns, str)


# -- jail population on a real filesystem (no jailer needed) -----------------------------


def _state_with_files(tmp: Path) -> tuple[JailerPolicy, JailRequest]:
    policy = JailerPolicy(
        tmp, os.getuid(), os.getgid(), Path("/usr/bin/jailer"), Path("/usr/bin/firecracker")
    )
    args = good_args(tmp)
    for key in ("kernel", "initrd", "root_disk", "work_disk", "console_log", "log", "metrics"):
        Path(args[key]).parent.mkdir(parents=True, exist_ok=True)
        Path(args[key]).write_bytes(key.encode())
    return policy, validate_jailer_request(args, policy)


def test_populate_links_writable_files_and_teardown_keeps_them(tmp_path: Path) -> None:
    policy, request = _state_with_files(tmp_path)
    check_sources(request, policy)
    layout = jail_layout(request, policy)
    populate_jail(layout)
    work = layout.root / "work.img"
    assert work.stat().st_ino == request.work_disk.stat().st_ino  # type: ignore[union-attr]
    work.write_bytes(b"written by the guest")
    assert request.work_disk.read_bytes() == b"written by the guest"  # type: ignore[union-attr]
    by_id = teardown_layout(request.vm_id, policy)
    assert (by_id.jail_dir, by_id.cgroup) == (layout.jail_dir, layout.cgroup)
    with pytest.raises(JailerRequestInvalid):
        teardown_layout("../../etc", policy)
    teardown_jail(by_id)
    assert not layout.jail_dir.exists()
    assert request.work_disk.read_bytes() == b"written by the guest"  # type: ignore[union-attr]


def test_symlinked_source_is_refused(tmp_path: Path) -> None:
    policy, request = _state_with_files(tmp_path)
    kernel = request.kernel
    kernel.unlink()
    kernel.symlink_to("/etc/hostname")
    with pytest.raises(JailSetupError, match=r"kernel: .* is a symlink"):
        check_sources(request, policy)
