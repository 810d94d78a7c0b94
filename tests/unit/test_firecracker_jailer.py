"""Jailer mode: argv builder, jail layout, request validation (fuzzed), jail population."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from banger.vmm.firecracker.jailer import (
    JailerPolicy,
    JailerRequestInvalid,
    JailLayout,
    JailRequest,
    JailSetupError,
    close_all,
    jail_layout,
    jailer_argv,
    make_run_dir,
    open_jail_root,
    open_sources,
    populate_jail,
    read_pid_file,
    teardown_jail,
    teardown_layout,
    validate_jailer_request,
)
from tests.support import Branches

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
        "--chroot-base-dir", "/srv/jailer",
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
    assert layout.jail_dir == Path("/srv/jailer/firecracker/t-1")
    assert (layout.base, layout.exec_name, layout.jail_id) == (
        Path("/srv/jailer"),
        "firecracker",
        "t-1",
    )
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


def test_hostile_paths_are_refused_or_stay_inside_the_state_dir() -> None:
    branches = Branches()

    @settings(max_examples=500)
    @example("kernel", "/var/lib/banger/kernels/k2/vmlinux")  # accepted
    @example("log", "/var/lib/banger/a/../../etc")  # refused
    @given(
        field=st.sampled_from(
            ["kernel", "initrd", "root_disk", "work_disk", "console_log", "log", "metrics"]
        ),
        value=hostile_paths,
    )
    def refused_or_inside_the_state_dir(field: str, value: str) -> None:
        try:
            request = validate_jailer_request({**good_args(), field: value}, POLICY)
        except JailerRequestInvalid as exc:
            branches.took("refused")
            assert exc.problems and all(p.startswith("start_jailer.args") for p in exc.problems)
            return
        branches.took("accepted")
        _accepted_invariants(request)

    refused_or_inside_the_state_dir()
    branches.require("accepted", "refused")


def test_any_single_field_replaced_is_refused_or_well_typed() -> None:
    branches = Branches()

    @settings(max_examples=300)
    @example("vcpus", 4)  # accepted
    @example("root_read_only", True)  # accepted
    @example("vcpus", "4")  # refused: a string
    @given(field=st.sampled_from(sorted(good_args())), value=json_values)
    def refused_or_well_typed(field: str, value: Any) -> None:
        try:
            request = validate_jailer_request({**good_args(), field: value}, POLICY)
        except JailerRequestInvalid:
            branches.took("refused")
            return
        branches.took("accepted")
        _accepted_invariants(request)
        assert isinstance(request.root_read_only, bool)
        assert request.netns is None or isinstance(request.netns, str)

    refused_or_well_typed()
    branches.require("accepted", "refused")


# -- jail population on a real filesystem (no jailer needed) -----------------------------


def _state_with_files(tmp: Path) -> tuple[JailerPolicy, JailRequest]:
    """A state dir with the VM's files and a jail base of this test's own user (0755)."""
    base = tmp / "base"
    base.mkdir(mode=0o755)
    state = tmp / "state"
    policy = JailerPolicy(
        state, os.getuid(), os.getgid(), Path("/usr/bin/jailer"), Path("/usr/bin/firecracker"), base
    )
    args = good_args(state)
    for key in ("kernel", "initrd", "root_disk", "work_disk", "console_log", "log", "metrics"):
        Path(args[key]).parent.mkdir(parents=True, exist_ok=True)
        Path(args[key]).write_bytes(key.encode())
    return policy, validate_jailer_request(args, policy)


def _populate(policy: JailerPolicy, request: JailRequest) -> JailLayout:
    layout = jail_layout(request, policy)
    sources = open_sources(request, policy)
    try:
        root_fd = open_jail_root(layout, create=True)
        assert root_fd is not None
        try:
            populate_jail(root_fd, layout, sources)
            make_run_dir(root_fd, policy.uid, policy.gid)
        finally:
            os.close(root_fd)
    finally:
        close_all(sources)
    return layout


def test_populate_links_writable_files_and_teardown_keeps_them(tmp_path: Path) -> None:
    policy, request = _state_with_files(tmp_path)
    old_umask = os.umask(0o077)  # as under systemd: the jail must still be traversable
    try:
        layout = _populate(policy, request)
    finally:
        os.umask(old_umask)
    for d in (layout.base / "firecracker", layout.jail_dir, layout.root):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert stat.S_IMODE((layout.root / "run").stat().st_mode) == 0o700
    work = layout.root / "work.img"
    assert work.stat().st_ino == request.work_disk.stat().st_ino  # type: ignore[union-attr]
    work.write_bytes(b"written by the guest")
    assert request.work_disk.read_bytes() == b"written by the guest"  # type: ignore[union-attr]
    by_id = teardown_layout(request.vm_id, policy)
    assert (by_id.jail_dir, by_id.cgroup) == (layout.jail_dir, layout.cgroup)
    with pytest.raises(JailerRequestInvalid):
        teardown_layout("../../etc", policy)
    assert teardown_jail(by_id) is True
    assert not layout.jail_dir.exists()
    assert request.work_disk.read_bytes() == b"written by the guest"  # type: ignore[union-attr]
    assert teardown_jail(by_id) is False  # nothing left: not an error


def test_symlinked_source_is_refused(tmp_path: Path) -> None:
    policy, request = _state_with_files(tmp_path)
    kernel = request.kernel
    kernel.unlink()
    kernel.symlink_to("/etc/hostname")
    with pytest.raises(JailSetupError, match=r"kernel: .* is a symlink"):
        open_sources(request, policy)


def test_a_symlinked_directory_on_a_source_path_is_refused(tmp_path: Path) -> None:
    policy, request = _state_with_files(tmp_path)
    kernels = request.kernel.parent
    kernels.rename(tmp_path / "elsewhere")
    kernels.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(JailSetupError, match=r"kernel: .* not a plain directory"):
        open_sources(request, policy)


def test_a_fifo_source_is_refused_without_blocking(tmp_path: Path) -> None:
    policy, request = _state_with_files(tmp_path)
    request.console_log.unlink()
    os.mkfifo(request.console_log)
    with pytest.raises(JailSetupError, match=r"console_log: .* not a regular file of the owner"):
        open_sources(request, policy)


def test_a_source_swapped_after_the_check_is_not_what_gets_linked(tmp_path: Path) -> None:
    """The check and the link use one descriptor: a swap in between changes nothing."""
    policy, request = _state_with_files(tmp_path)
    precious = tmp_path / "precious"
    precious.write_text("not for the jail")
    layout = jail_layout(request, policy)
    sources = open_sources(request, policy)
    try:
        original = os.fstat(sources[request.kernel]).st_ino
        request.kernel.rename(tmp_path / "moved-away")
        request.kernel.symlink_to(precious)  # the swap, after the check
        initrd = request.initrd
        assert initrd is not None
        initrd.unlink()  # gone: no link to make, the checked content is copied
        initrd.hardlink_to(precious)
        root_fd = open_jail_root(layout, create=True)
        assert root_fd is not None
        try:
            populate_jail(root_fd, layout, sources)
        finally:
            os.close(root_fd)
    finally:
        close_all(sources)
    linked = layout.root / "vmlinux"
    assert not linked.is_symlink() and linked.stat().st_ino == original
    assert (layout.root / "initrd.img").read_bytes() == b"initrd"
    assert precious.stat().st_nlink == 2  # only the owner's own hard link
    teardown_jail(layout)
    assert precious.read_text() == "not for the jail"


def test_a_writable_source_unlinked_after_the_check_is_refused(tmp_path: Path) -> None:
    """A writable file is only ever the VM's own inode: once unlinked, it cannot be placed."""
    policy, request = _state_with_files(tmp_path)
    layout = jail_layout(request, policy)
    sources = open_sources(request, policy)
    try:
        request.console_log.unlink()
        request.console_log.symlink_to(tmp_path / "precious")
        root_fd = open_jail_root(layout, create=True)
        assert root_fd is not None
        try:
            with pytest.raises(JailSetupError, match=r"cannot hard-link .*console\.log"):
                populate_jail(root_fd, layout, sources)
        finally:
            os.close(root_fd)
    finally:
        close_all(sources)
    assert not (layout.root / "console.log").exists()
    teardown_jail(layout)


def test_the_pid_file_is_read_by_descriptor_and_bounded(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_pid_file(fd, "firecracker.pid") is None  # not yet written
        (root / "firecracker.pid").write_text("4242\n")
        assert read_pid_file(fd, "firecracker.pid") == 4242
        (root / "elsewhere").write_text("4343\n")
        (root / "firecracker.pid").unlink()
        (root / "firecracker.pid").symlink_to(root / "elsewhere")
        assert read_pid_file(fd, "firecracker.pid") is None  # never through a link
        (root / "firecracker.pid").unlink()
        os.mkfifo(root / "firecracker.pid")
        assert read_pid_file(fd, "firecracker.pid") is None  # no writer: no hang
        (root / "firecracker.pid").unlink()
        (root / "firecracker.pid").write_text("4242" + " " * 100)
        assert read_pid_file(fd, "firecracker.pid") is None  # bounded
    finally:
        os.close(fd)
