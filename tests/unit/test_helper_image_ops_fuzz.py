"""``image_build``, ``image_pull`` and ``remove_staging`` through the helper's validation, fuzzed.

The three helper ops that take paths into the owner's directories. Whatever a
caller sends, validation ends in exactly one of two ways: a
``RequestInvalid`` whose every problem names a field of the op, or typed
arguments whose paths lie strictly inside the allow-root, contain no ``..``
and no symlink component — and, for ``remove_staging``, name nothing but a
``tmp/(register|pull)-<8 hex>`` directory. (What the ops then do with such a
path is tested for real: tests/unit/test_helper_staging.py, the image e2e and
fault suites.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from banger.helper import staging
from banger.helper.optable import op_specs, op_table
from banger.helper.validate import Context, RequestInvalid, validate_request
from tests.reliability_counts import ReliabilityCounts
from tests.support import Branches

DIGEST = "sha256:" + "ab" * 32
OPS = ("image_build", "image_pull", "remove_staging")
#: The helper's op table, as banger-helper builds it.
SPECS = op_specs(op_table(None))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An allow-root with the directories the daemon would have made, and traps beside them."""
    base = tmp_path_factory.mktemp("allow")
    for d in ("tmp/register-1a2b3c4d", "tmp/pull-1a2b3c4d/layers", "images/pull-00000000"):
        (base / d).mkdir(parents=True)
    (base / "tmp" / "pull-1a2b3c4d" / "daemon.lock").touch()
    os.symlink("/etc", base / "tmp" / "pull-0000000f")  # a symlink with a staging name
    os.symlink(base / "tmp", base / "tmplink")
    return base


def valid(root: Path) -> dict[str, dict[str, Any]]:
    return {
        "image_build": {"suite": "bookworm", "name": "debian-bookworm",
                        "out_dir": f"{root}/tmp/register-1a2b3c4d", "mirror": None},
        "image_pull": {"out_dir": f"{root}/tmp/pull-1a2b3c4d", "name": "app-1.2",
                       "source": f"127.0.0.1:5000/team/app:1.2@{DIGEST}", "layers": [DIGEST],
                       "config": {"Env": ["A=1"], "WorkingDir": "/srv", "User": "app"},
                       "max_unpacked": 1 << 30},
        "remove_staging": {"path": f"{root}/tmp/pull-1a2b3c4d"},
    }  # fmt: skip


def paths(root: Path) -> st.SearchStrategy[str]:
    """Path strings built from pieces that have broken path checks before."""
    pieces = st.sampled_from([
        "tmp", "pull-1a2b3c4d", "register-1a2b3c4d", "pull-0000000f", "images",
        "pull-00000000", "tmplink", "..", ".", "", "layers", "x" * 300, "y" * 255,
        "a\x00b", "pull-1a2b3c4d\n", "~", "$(id)", "*",
    ])  # fmt: skip
    prefixes = st.sampled_from([str(root), "", "/", "/etc", str(root) + "/", "//" + str(root)])
    return st.builds(
        lambda p, parts: p + "/" + "/".join(parts),
        prefixes,
        st.lists(pieces, max_size=5),
    )


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


def check(root: Path, op: str, args: object) -> Any:
    return validate_request(Context((root,)), {"id": 1, "op": op, "args": args}, SPECS).args


def test_the_daemons_requests_are_accepted(root: Path) -> None:
    for op, args in valid(root).items():
        assert check(root, op, args) is not None


#: The fields the fuzzer rewrites ("" and "extra" are not fields: refused).
CHANGED = ["out_dir", "path", "name", "suite", "mirror", "source", "layers", "config", "extra", ""]


def test_fuzzed_requests_are_refused_by_field_or_stay_inside_the_root(
    root: Path, reliability_counts: ReliabilityCounts
) -> None:
    branches = Branches()

    @settings(max_examples=400)
    @example(op="image_build", changes={}, path=None, dropped=set())  # the daemon's own: accepted
    @example(op="remove_staging", changes={}, path=f"{root}/tmp/register-1a2b3c4d", dropped=set())
    @example(op="image_pull", changes={"extra": 1}, path=None, dropped=set())  # refused
    @given(
        op=st.sampled_from(OPS),
        changes=st.dictionaries(st.sampled_from(CHANGED), json_values, max_size=4),
        path=st.none() | paths(root),
        dropped=st.sets(
            st.sampled_from(["out_dir", "path", "name", "suite", "layers"]), max_size=2
        ),
    )
    def refused_by_field_or_inside_the_root(
        op: str, changes: dict[str, Any], path: str | None, dropped: set[str]
    ) -> None:
        args = {**valid(root)[op], **changes}
        path_field = "path" if op == "remove_staging" else "out_dir"
        if path is not None:
            args[path_field] = path
        for key in dropped:
            args.pop(key, None)
        reliability_counts.hostile()
        try:
            parsed = check(root, op, args)
        except RequestInvalid as exc:
            branches.took("refused")
            assert exc.problems
            assert all(p.startswith((f"{op}.args.", "op")) for p in exc.problems), exc.problems
            return
        branches.took(f"{op} accepted")
        target = Path(getattr(parsed, path_field))
        assert target.is_relative_to(root) and target != root
        assert ".." not in target.parts and "\x00" not in str(target)
        assert os.path.realpath(target) == str(target), "a symlink component was accepted"
        if op == "remove_staging":
            assert target.parent.name == "tmp" and staging.NAME.fullmatch(target.name), target
        else:
            assert parsed.name == args["name"]  # names are never rewritten into something else

    refused_by_field_or_inside_the_root()
    branches.require("refused", "image_build accepted", "remove_staging accepted")


def test_every_accepted_staging_path_is_one_of_the_two_real_ones(
    root: Path, reliability_counts: ReliabilityCounts
) -> None:
    branches = Branches()

    @settings(max_examples=200)
    @example(f"{root}/tmp/pull-1a2b3c4d")  # accepted
    @example(f"{root}/tmp/pull-0000000f")  # a symlink with a staging name: refused
    @given(paths(root))
    def only_the_two_real_ones(path: str) -> None:
        reliability_counts.hostile()
        try:
            parsed = check(root, "remove_staging", {"path": path})
        except RequestInvalid:
            branches.took("refused")
            return
        branches.took("accepted")
        assert parsed.path in {root / "tmp" / "pull-1a2b3c4d", root / "tmp" / "register-1a2b3c4d"}

    only_the_two_real_ones()
    branches.require("accepted", "refused")
