"""CLI building blocks without a daemon: error lines, exit codes, JSON flattening, laziness."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import click
import pytest
from click.testing import CliRunner

from banger.api_models import OpEvent
from banger.cli.config_cmd import flatten
from banger.cli.ops_cmd import format_event
from banger.cli.output import print_error
from banger.cli.placeholder import NotImplementedYet, add_placeholders
from banger.client import RemoteCommandError, RemoteConfigError, error_from_response
from banger.errors import (
    BangerError,
    CommandError,
    ConfigError,
    Conflict,
    DaemonUnavailable,
    HelperError,
    InvalidArgument,
    NotFound,
)


def test_banger_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; from banger.cli.main import cli; "
        "print([m for m in ('httpx', 'fastapi', 'uvicorn', 'pydantic') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_error_is_one_line_plus_hint(capsys: pytest.CaptureFixture[str]) -> None:
    code = print_error(
        NotFound("no VM named 'x'\n(really)", hint="see `banger vm list`"), debug=False
    )
    assert code == 3
    assert (
        capsys.readouterr().err == "error: no VM named 'x' (really)\nhint: see `banger vm list`\n"
    )


def test_unexpected_error_suggests_debug(capsys: pytest.CaptureFixture[str]) -> None:
    assert print_error(KeyError("k"), debug=False) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: internal error: KeyError: 'k'",
        "hint: this is a bug in banger; rerun with --debug for the traceback",
    ]


def test_debug_prints_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise Conflict("busy", hint="wait")
    except Conflict as exc:
        assert print_error(exc, debug=True) == 4
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)")
    assert err.endswith("error: busy\nhint: wait\n")


@pytest.mark.parametrize(
    ("status", "kind", "cls", "exit_code"),
    [
        (400, "InvalidArgument", InvalidArgument, 2),
        (400, "ConfigError", ConfigError, 2),
        (404, "NotFound", NotFound, 3),
        (409, "Conflict", Conflict, 4),
        (503, "DaemonUnavailable", DaemonUnavailable, 5),
        (502, "HelperError", HelperError, 6),
        (500, "CommandError", CommandError, 7),
        (500, "BangerError", BangerError, 1),
        (500, "SomethingNewer", BangerError, 1),
        (404, "SomethingNewer", NotFound, 3),
    ],
)
def test_error_bodies_become_the_same_error_class(
    status: int, kind: str, cls: type[BangerError], exit_code: int
) -> None:
    body = json.dumps({"error": "it broke", "hint": "fix it", "kind": kind}).encode()
    err = error_from_response(status, body)
    assert isinstance(err, cls)
    assert (err.message, err.hint, err.exit_code) == ("it broke", "fix it", exit_code)


def test_rebuilt_errors_keep_their_attributes() -> None:
    assert RemoteCommandError("qemu failed").argv == []
    assert RemoteConfigError("bad").problems == ["bad"]


def test_non_json_error_body_falls_back_to_status() -> None:
    err = error_from_response(409, b"<html>busy</html>")
    assert isinstance(err, Conflict)
    assert err.message == "bangerd answered HTTP 409: <html>busy</html>"


def test_placeholders_exit_nonzero_with_a_plain_message() -> None:
    @click.group(name="demo")
    def demo() -> None:
        pass

    add_placeholders(demo, [("thing", "Do a thing")])
    result = CliRunner().invoke(demo, ["thing", "--any", "arg"])
    assert isinstance(result.exception, NotImplementedYet)
    assert result.exception.message == "`banger demo thing` is not implemented yet"
    assert result.exception.exit_code == 1
    assert "(not implemented yet)" in CliRunner().invoke(demo, ["--help"]).output


def test_flatten_config_for_humans() -> None:
    data = {"vmm": "auto", "vm": {"vcpus": 2, "root": None}, "file_sync": [{"host": "~/.x"}]}
    assert flatten(data) == [
        ("vmm", '"auto"'),
        ("vm.vcpus", "2"),
        ("vm.root", "null"),
        ("file_sync[0].host", '"~/.x"'),
    ]
    assert flatten({"file_sync": []}) == [("file_sync", "[]")]


def test_event_lines() -> None:
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def ev(kind: str, stage: str | None, message: str) -> str:
        line = format_event(
            OpEvent(op_id="a", seq=1, at=at, kind=kind, stage=stage, message=message)
        )
        return line.split(" ", 1)[1]

    assert ev("stage", "boot", "boot") == "▸ boot"
    assert ev("succeeded", "boot", "done") == "✓ succeeded"
    assert ev("failed", "boot", "timed\nout") == "✗ failed at boot: timed out"
    assert ev("warning", "boot", "slow") == "  warning: slow"
