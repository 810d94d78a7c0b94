"""Pure checks on VM requests, the undo stack, and the helper's image_build validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from banger.daemon.vms.names import check_init, check_memory, check_name, check_vcpus
from banger.daemon.vms.undo import UndoStack
from banger.errors import InvalidArgument
from banger.helper.image_build import ImageBuildArgs
from banger.helper.optable import op_specs, op_table
from banger.helper.validate import Context, RequestInvalid, validate_request
from banger.net.taps import tap_name


@pytest.mark.parametrize("name", ["a", "dev-1", "x" * 63, "0abc"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a.b", "x" * 64, "a b", "a\n"])
def test_bad_names_name_the_argument(name: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^name: "):
        check_name(name)


def test_vcpus_bounds() -> None:
    assert check_vcpus(2, host_cpus=2) == 2
    for bad in (0, -1, 3, 4096):
        with pytest.raises(InvalidArgument, match=r"^cpus: "):
            check_vcpus(bad, host_cpus=2)


def test_memory_bounds() -> None:
    assert check_memory(512, host_mib=1024) == 512
    for bad in (0, 64, 2048):
        with pytest.raises(InvalidArgument, match=r"^memory: "):
            check_memory(bad, host_mib=1024)


def test_init_mode() -> None:
    assert check_init("fast") == "fast"
    with pytest.raises(InvalidArgument, match=r"^init: "):
        check_init("sysvinit")


def test_tap_names_fit_the_kernel_limit_and_the_helper_pattern() -> None:
    name = tap_name("0123456789abcdef")
    assert name == "bt-0123456789ab" and len(name) == 15


async def test_undo_runs_newest_first_and_survives_a_failing_step() -> None:
    done: list[str] = []

    def step(label: str, fail: bool = False):  # type: ignore[no-untyped-def]
        async def undo() -> None:
            done.append(label)
            if fail:
                raise RuntimeError(f"{label} stuck")

        return undo

    stack = UndoStack()
    stack.push("disk", step("disk"))
    stack.push("tap", step("tap", fail=True))
    stack.push("vmm", step("vmm"))
    failures = await stack.unwind()
    assert done == ["vmm", "tap", "disk"]
    assert failures == ["tap: tap stuck"]
    assert len(stack) == 0


#: The helper's op table, as banger-helper builds it.
SPECS = op_specs(op_table(None))


def test_image_build_request_is_validated(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ctx = Context((tmp_path.resolve(),))
    good = {"suite": "bookworm", "name": "debian-bookworm", "out_dir": str(out), "mirror": None}
    request = validate_request(ctx, {"id": 1, "op": "image_build", "args": good}, SPECS)
    assert isinstance(request.args, ImageBuildArgs) and request.args.out_dir == out
    os.symlink(out, tmp_path / "link")
    bad = {
        "suite": "bookworm; rm -rf /",
        "name": "../x",
        "out_dir": str(tmp_path / "link"),
        "mirror": "file:///etc",
    }
    with pytest.raises(RequestInvalid) as caught:
        validate_request(ctx, {"id": 2, "op": "image_build", "args": bad}, SPECS)
    problems = " ".join(caught.value.problems)
    for field in ("suite", "name", "out_dir", "mirror"):
        assert f"image_build.args.{field}:" in problems
    outside = {**good, "out_dir": "/etc"}
    with pytest.raises(RequestInvalid, match="out_dir"):
        validate_request(ctx, {"id": 3, "op": "image_build", "args": outside}, SPECS)
