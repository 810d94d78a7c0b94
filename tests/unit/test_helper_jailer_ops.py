"""``start_jailer``/``teardown_jail`` through the helper's own request validation, fuzzed.

Whatever a caller sends, validation ends in exactly one of two ways: a
``RequestInvalid`` naming fields, or arguments whose every path lies inside
the state directory (never inside the jail base, which is root's) and whose binaries, uid and gid
are the helper's policy. The ops run for real (as root, with stand-ins) in
``tests/integration/test_jailer_op.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from banger.errors import BangerError, HelperError
from banger.helper import jailer_ops
from banger.helper.optable import op_specs, op_table
from banger.helper.validate import Context, OpSpec, RequestInvalid, validate_request
from banger.vmm.firecracker.jailer import JailerPolicy
from tests.support import Branches

STATE = Path("/var/lib/banger-test-state")
POLICY = JailerPolicy(STATE, 1000, 1000, Path("/opt/fc/jailer"), Path("/opt/fc/firecracker"))
CTX = Context((STATE,))


def good_args() -> dict[str, Any]:
    vm = STATE / "vms" / "abc"
    return {
        "vm_id": "abc",
        "vcpus": 2,
        "memory_mib": 512,
        "kernel": str(STATE / "kernels" / "k" / "vmlinux"),
        "initrd": None,
        "root_disk": str(vm / "root.ext4"),
        "root_read_only": False,
        "work_disk": str(vm / "work.ext4"),
        "console_log": str(vm / "console.log"),
        "log": str(vm / "firecracker.log"),
        "metrics": str(vm / "firecracker.metrics"),
        "netns": None,
    }


#: The helper's op table as banger-helper builds it with --jailer/--firecracker.
SPECS = op_specs(op_table(POLICY))


def validate(op: str, args: object, specs: Mapping[str, OpSpec] = SPECS) -> Any:
    return validate_request(CTX, {"id": 1, "op": op, "args": args}, specs).args


def test_valid_request_gets_the_helpers_policy() -> None:
    args = validate("start_jailer", good_args())
    assert isinstance(args, jailer_ops.StartJailerArgs)
    assert args.policy == POLICY
    assert args.request.kernel == STATE / "kernels" / "k" / "vmlinux"
    teardown = validate("teardown_jail", {"vm_id": "a_b"})
    assert teardown.layout.jail_dir == Path("/srv/jailer/firecracker/a-b")


def test_the_request_cannot_choose_binaries_uid_or_chroot() -> None:
    for key, value in (("jailer", "/bin/sh"), ("uid", 0), ("chroot_base", "/"), ("exec_file", "x")):
        with pytest.raises(RequestInvalid, match=rf"start_jailer\.args\.{key}: unknown field"):
            validate("start_jailer", {**good_args(), key: value})


def test_all_problems_named_at_once() -> None:
    bad = {**good_args(), "vcpus": 0, "kernel": "/etc/shadow", "vm_id": "../x"}
    with pytest.raises(RequestInvalid) as info:
        validate("start_jailer", bad)
    text = str(info.value)
    for field in ("vcpus", "kernel", "vm_id"):
        assert f"start_jailer.args.{field}" in text


def test_without_a_policy_both_ops_are_refused_when_run() -> None:
    without_policy = op_specs(op_table(None))
    for op, args in (("start_jailer", good_args()), ("teardown_jail", {"vm_id": "abc"})):
        parsed = validate(op, args, without_policy)
        with pytest.raises(jailer_ops.JailerNotConfigured, match="without --jailer") as info:
            jailer_ops.run(parsed)
        assert info.value.hint is not None and "--firecracker PATH" in info.value.hint


def test_policy_flags(tmp_path: Path) -> None:
    exe = tmp_path / "jailer"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert jailer_ops.policy_from_flags(None, None, (tmp_path,), 1000, 1000) is None
    with pytest.raises(HelperError, match="go together"):
        jailer_ops.policy_from_flags(exe, None, (tmp_path,), 1000, 1000)
    with pytest.raises(HelperError, match="--firecracker relative"):
        jailer_ops.policy_from_flags(exe, Path("relative"), (tmp_path,), 1000, 1000)
    with pytest.raises(HelperError, match="--jail-base goes with --jailer"):
        jailer_ops.policy_from_flags(None, None, (tmp_path,), 1000, 1000, Path("/srv/jailer"))
    # Accepted bases (root's alone) are tested as root: tests/integration/test_jailer_op.py.
    with pytest.raises(HelperError, match=r"--jail-base .*: must not overlap --allow-root"):
        jailer_ops.policy_from_flags(exe, exe, (tmp_path,), 1000, 1001, tmp_path / "jail")
    with pytest.raises(BangerError, match=r"^--jail-base .*/j: /tmp is group- or other-writable"):
        jailer_ops.policy_from_flags(exe, exe, (tmp_path / "s",), 1000, 1001, tmp_path / "j")


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
paths = st.one_of(
    st.text(max_size=60),
    st.builds(lambda s: f"{STATE}/{s}", st.text(max_size=40)),
    st.builds(lambda s: f"{STATE}/jail/{s}", st.text(max_size=20)),
    st.sampled_from([str(STATE), f"{STATE}/../etc/shadow", f"{STATE}//x", f"{STATE}/a/./b"]),
)
PATH_FIELDS = ("kernel", "initrd", "root_disk", "work_disk", "console_log", "log", "metrics")


def test_fuzzed_start_requests_are_refused_or_stay_inside_the_state_dir() -> None:
    branches = Branches()

    @settings(max_examples=300)
    @example(changes={}, dropped=set())  # the daemon's own request: accepted
    @example(changes={"vcpus": 4, "initrd": str(STATE / "kernels" / "k" / "initrd")}, dropped=set())
    @example(changes={"kernel": "/etc/shadow"}, dropped=set())  # outside: refused
    @given(
        changes=st.dictionaries(
            st.sampled_from([*good_args(), "extra", ""]),
            json_values | paths,
            max_size=5,
        ),
        dropped=st.sets(st.sampled_from(sorted(good_args())), max_size=2),
    )
    def refused_or_inside_the_state_dir(changes: dict[str, Any], dropped: set[str]) -> None:
        args = {**good_args(), **changes}
        for key in dropped:
            args.pop(key, None)
        try:
            parsed = validate("start_jailer", args)
        except RequestInvalid as exc:
            branches.took("refused")
            assert exc.problems
            assert all(p.startswith(("start_jailer.args", "op")) for p in exc.problems)
            return
        branches.took("accepted")
        request = parsed.request
        assert parsed.policy == POLICY
        for field in PATH_FIELDS:
            value = getattr(request, field)
            if value is None:
                continue
            assert value.is_relative_to(STATE) and value != STATE
            assert not value.is_relative_to(POLICY.chroot_base)
            assert ".." not in value.parts
        assert 1 <= request.vcpus <= 32 and request.memory_mib >= 64
        assert request.jail_id.replace("-", "").isalnum()

    refused_or_inside_the_state_dir()
    branches.require("accepted", "refused")


def test_fuzzed_teardown_ids_never_leave_the_jail_base() -> None:
    branches = Branches()

    @settings(max_examples=300)
    @example("abc")  # accepted
    @example("a-b_c9")
    @example("..")  # refused
    @given(
        vm_id=json_values
        | st.text(max_size=80)
        | st.from_regex(r"[a-z0-9_-]{1,40}", fullmatch=True)
    )
    def never_leave_the_jail_base(vm_id: object) -> None:
        try:
            parsed = validate("teardown_jail", {"vm_id": vm_id})
        except RequestInvalid:
            branches.took("refused")
            return
        branches.took("accepted")
        jail_dir = parsed.layout.jail_dir
        assert jail_dir.parent == POLICY.chroot_base / "firecracker"
        assert jail_dir.name not in ("", ".", "..")
        assert parsed.layout.cgroup.parent == Path("/sys/fs/cgroup/banger")

    never_leave_the_jail_base()
    branches.require("accepted", "refused")
