"""Fault injection: the disk fills up during ``banger image build``.

The real production path, as in :mod:`tests.image_cache`: a throwaway owner
runs ``banger image build debian:bookworm`` (the CLI auto-starts ``bangerd``,
whose ImageService asks a real root ``banger-helper`` for ``image_build``:
mmdebstrap through the host's apt mirror, then ``mkfs.ext4 -d``), but the
owner's state directory is a small loop-mounted ext4, too small for the build.

Each case fills the disk at a different step (while mmdebstrap downloads and
unpacks; while the ext4 images are written after mmdebstrap succeeded) and
then asserts what the user is promised:

- the CLI fails with ONE error line (plus at most a hint) saying the disk is
  full and naming the stage ``build_image``, and no traceback;
- the operation is recorded failed at ``build_image``;
- no image (listed or on disk), nothing under ``state/tmp``, nothing owned by
  root in the owner's tree (the helper runs mmdebstrap as root inside it: a
  root-owned leftover is one the owner cannot even delete), and the free
  space is back — right after the failure and again after bangerd restarts
  (its startup reconciliation runs);
- the helper still answers and still refuses a bad request cleanly.

Helper and daemon run in the host network namespace: the build needs the
package mirror and creates no bridge, tap or NAT rule.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from banger.mountinfo import mounts_below
from tests.reliability.build_world import (
    BUILD_TIMEOUT,
    World,
    check_helper,
    error_lines,
    ops,
    owner_home,
    root_owned,
    serving,
    stop_daemon,
)
from tests.reliability.faults import free_bytes, small_filesystem
from tests.reliability_counts import ReliabilityCounts
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

#: Free space may differ by a few blocks: bangerd's log and database grow.
FREE_SLACK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    """A state filesystem of ``size_mib``, too small for the build's step ``step``."""

    size_mib: int
    step: str


@pytest.fixture
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    case: Case = request.param
    with (
        owner_home("bgd") as (user, home, paths),
        small_filesystem(paths.state_dir, case.size_mib, user.uid, user.gid),
        serving(user, home, paths) as w,
    ):
        yield w


def disk_full_leftovers(b: World, free_before: int) -> dict[str, list[str]]:
    state = b.paths.state_dir
    found: dict[str, list[str]] = {}
    found["images listed"] = [str(i) for i in json.loads(b.ok("image", "list", "--json"))]
    images = b.paths.images_dir
    found["image directories"] = sorted(p.name for p in images.iterdir()) if images.is_dir() else []
    tmp = b.paths.tmp_dir
    # Every path under tmp/ (not just the top): the report shows what a build left.
    found["temp files"] = (
        sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")) if tmp.is_dir() else []
    )
    found["root-owned files"] = root_owned(b)
    found["mounts under the state dir"] = mounts_below(state)
    lost = free_before - free_bytes(state)
    found["space not given back"] = [f"{lost} bytes"] if lost > FREE_SLACK else []
    return found


# mmdebstrap's downloads (~100 MiB of .debs) and the unpacked tree do not fit.
DURING_MMDEBSTRAP = Case(200, "mmdebstrap")
# The tree (~380 MiB) fits, its ext4 image (as much again) does not.
DURING_MKFS = Case(700, "mkfs.ext4 rootfs.ext4")


@pytest.mark.parametrize(
    ("world", "case"),
    [
        pytest.param(DURING_MMDEBSTRAP, DURING_MMDEBSTRAP, id="during-mmdebstrap"),
        pytest.param(DURING_MKFS, DURING_MKFS, id="during-mkfs"),
    ],
    indirect=["world"],
)
def test_disk_full_during_image_build(
    world: World, case: Case, reliability_counts: ReliabilityCounts
) -> None:
    b = world
    assert json.loads(b.ok("image", "list", "--json")) == []  # auto-starts bangerd
    free_before = free_bytes(b.paths.state_dir)

    started = time.monotonic()
    result = b.banger("image", "build", "debian:bookworm", "--name", "full", timeout=BUILD_TIMEOUT)
    reliability_counts.fault()
    took = time.monotonic() - started
    assert result.returncode != 0, f"the build succeeded on a full disk:\n{result.stderr}"

    said = error_lines(result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert said, f"no error line after {took:.0f}s:\n{result.stderr}"
    assert len(said) <= 2, f"more than an error and a hint:\n{result.stderr}"
    assert said[0].startswith("error: "), result.stderr
    assert "build_image" in said[0], result.stderr
    assert "no space left on device" in said[0].lower(), result.stderr
    assert f"({case.step})" in said[0], result.stderr
    assert len(said) == 1 or said[1].startswith("hint: "), result.stderr

    [(kind, stage, state, error)] = ops(b)
    assert (stage, state) == ("build_image", "failed"), (kind, stage, state, error)
    assert error is not None and "no space left on device" in error.lower(), error

    reliability_counts.check_leaks(disk_full_leftovers(b, free_before))
    check_helper(b)

    stop_daemon(b)
    assert json.loads(b.ok("image", "list", "--json")) == []  # auto-starts it again
    assert (b.paths.state_dir / "reconcile.json").is_file()
    reliability_counts.restart()
    reliability_counts.check_leaks(disk_full_leftovers(b, free_before))
    [(_, stage, state, _)] = ops(b)
    assert (stage, state) == ("build_image", "failed")
    check_helper(b)
