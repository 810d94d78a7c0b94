"""The session and image-transfer commands go through BangerClient's public methods.

Against a real bangerd with no VMs: every call reaches the daemon and its
error comes back as one line with the right exit status (errors are mapped in
the client alone); ids with a slash are refused by the client before any call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.bangerd_harness import Daemon, run_cli, running_daemon
from tests.support import assert_one_line_error, short_tmpdir


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_tmpdir() as home, running_daemon(home) as d:
        yield d


@pytest.fixture
def home(daemon: Daemon) -> Path:
    return daemon.home


def test_session_list_is_empty(home: Path) -> None:
    assert json.loads(run_cli(home, "session", "list", "--json").stdout) == []
    table = run_cli(home, "session", "list")
    assert table.returncode == 0 and table.stdout.split()[:3] == ["VM", "NAME", "STATE"]


@pytest.mark.parametrize(
    "argv",
    [
        ["session", "list", "nope"],
        ["session", "start", "nope", "--name", "a", "--env", "K=V", "--", "sh", "-c", "true"],
        ["session", "logs", "nope", "x"],
        ["session", "logs", "-f", "--tail", "3", "nope", "x"],
        ["session", "send", "nope", "x", "hello", "--enter"],  # a 204 route
        ["session", "stop", "nope", "x", "--timeout", "1"],
        ["session", "rm", "nope", "x"],  # a 204 route
        ["image", "promote", "nope", "new-image"],
    ],
)
def test_unknown_vm_is_a_one_line_not_found(home: Path, argv: list[str]) -> None:
    result = run_cli(home, *argv)
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr)
    assert "no VM named 'nope'" in result.stderr


def test_image_export_of_an_unknown_image_fails_its_operation(home: Path, short_tmp: Path) -> None:
    result = run_cli(home, "image", "export", "nope", "-o", str(short_tmp / "x.bundle"))
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr)
    assert "image.export nope failed" in result.stderr and "no image named 'nope'" in result.stderr
    assert not (short_tmp / "x.bundle").exists()


def test_image_pull_of_a_missing_bundle_fails_its_operation(home: Path, short_tmp: Path) -> None:
    missing = short_tmp / "missing.bundle"
    result = run_cli(home, "image", "pull", f"bundle:{missing}")
    assert result.returncode != 0
    assert f"bundle {missing} does not exist" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["session", "logs", "a/b", "x"],
        ["session", "send", "vm", "../x", "hi"],
        ["image", "export", "a/b", "-o", "/tmp/never.bundle"],
    ],
)
def test_an_id_with_a_slash_is_refused_by_the_client(home: Path, argv: list[str]) -> None:
    result = run_cli(home, *argv)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: invalid id:")
