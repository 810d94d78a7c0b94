"""The helper's entry point: import hygiene, log file safety, argument parsing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.helper.main import open_log, parse_args

ALLOWED_BANGER = {
    "banger",
    "banger.errors",
    "banger.delay_spec",
    "banger.proc",
    "banger.paths",
    "banger.mountinfo",  # the staging removal refuses a directory with a mount below
    "banger.helper",
}


def loaded_after(imports: str) -> set[str]:
    code = f"import sys, json; {imports}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_the_helper_imports_nothing_beyond_stdlib_and_pyroute2() -> None:
    modules = loaded_after("import banger.helper.main, banger.helper.client")
    ours = {m for m in modules if m == "banger" or m.startswith("banger.")}
    assert {m for m in ours if not m.startswith("banger.helper")} <= ALLOWED_BANGER
    # Whatever pyroute2 itself pulls in (it imports psutil) is the only allowance.
    baseline = {m.split(".")[0] for m in loaded_after("import pyroute2")}
    extra = {m.split(".")[0] for m in modules} - baseline - set(sys.stdlib_module_names)
    assert extra == {"banger"}


def test_log_file_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep")
    (tmp_path / "helper.log").symlink_to(target)
    with pytest.raises(InvalidArgument, match="--log"):
        open_log(tmp_path / "helper.log")
    assert target.read_text() == "keep"


def test_log_file_refuses_hard_links(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep")
    (tmp_path / "helper.log").hardlink_to(target)
    with pytest.raises(InvalidArgument, match="one link"):
        open_log(tmp_path / "helper.log")


def test_log_file_is_created_owner_only(tmp_path: Path) -> None:
    handler = open_log(tmp_path / "helper.log")
    assert isinstance(handler, logging.StreamHandler)
    handler.stream.close()
    assert (tmp_path / "helper.log").stat().st_mode & 0o777 == 0o600


def test_arguments() -> None:
    argv = ["--socket", "/run/b/h.sock", "--owner-uid", "1000"]
    args = parse_args([*argv, "--allow-root", "/a", "--allow-root", "/b"])
    assert args.owner_uid == 1000 and args.owner_gid is None
    assert args.allow_root == [Path("/a"), Path("/b")] and not args.foreground
    with pytest.raises(SystemExit):
        parse_args(["--socket", "/x", "--allow-root", "/a"])  # owner uid is required
