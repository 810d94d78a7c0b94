"""The real `banger` console script against a real bangerd: output, errors, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.daemon.selftest import STAGES
from tests.integration.bangerd_harness import Daemon, run_cli, running_daemon
from tests.support import assert_one_line_error, short_tmpdir


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_tmpdir() as home, running_daemon(home) as d:
        yield d


@pytest.fixture
def home(daemon: Daemon) -> Path:
    return daemon.home


@pytest.mark.parametrize(
    "argv",
    [
        ["version"],
        ["vm", "list"],
        ["ops", "list"],
        ["ops", "list", "--all"],
        ["ops", "selftest"],
        ["config", "show"],
        ["config", "validate"],
    ],
)
def test_json_output_parses(home: Path, argv: list[str]) -> None:
    for args in ([*argv, "--json"], ["--json", *argv]):
        result = run_cli(home, *args)
        assert result.returncode == 0, result.stderr
        json.loads(result.stdout)


def test_version_reports_cli_and_daemon(home: Path, daemon: Daemon) -> None:
    data = json.loads(run_cli(home, "--json", "version").stdout)
    assert data["cli"]["version"] == data["daemon"]["version"]
    assert data["daemon"]["pid"] == daemon.proc.pid
    human = run_cli(home, "version").stdout
    assert f"pid {daemon.proc.pid}" in human
    assert run_cli(home, "--version").stdout.strip() == f"banger {data['cli']['version']}"


def test_version_json_carries_what_a_bug_report_needs(home: Path) -> None:
    """Issue #15: the installed versions of the key packages and host tools, as found."""
    from importlib import metadata

    data = json.loads(run_cli(home, "--json", "version").stdout)
    packages = data["packages"]
    # As installed in this interpreter (the locked set), not a list written down.
    for name in ("asyncssh", "cryptography", "pydantic", "fastapi", "pyroute2"):
        assert packages[name] == metadata.version(name)
    tools = data["host_tools"]
    assert set(tools) >= {"qemu-system-x86_64", "skopeo", "mmdebstrap", "mkfs.ext4"}
    for name, found in tools.items():
        assert found["path"] and Path(found["path"]).name == name, name
        assert found["version"] and found["version"][0].isdigit(), (name, found)
    # mkfs.ext4 lives in /usr/sbin: found even with a PATH that lacks it.
    plain = run_cli(home, "--json", "version", PATH="/usr/bin:/bin")
    assert json.loads(plain.stdout)["host_tools"]["mkfs.ext4"]["version"] is not None


def test_vm_list_human_is_a_table(home: Path) -> None:
    result = run_cli(home, "vm", "list")
    assert result.returncode == 0
    assert result.stdout.split() == ["NAME", "STATE", "IP", "IMAGE", "CPUS", "MEMORY", "AGE"]


def test_selftest_then_follow_streams_stages_in_order(home: Path) -> None:
    started = run_cli(home, "ops", "selftest", "--delay-ms", "100")
    assert started.returncode == 0
    op_id = started.stdout.strip()
    followed = run_cli(home, "ops", "show", op_id, "--follow")
    assert followed.returncode == 0, followed.stderr
    stage_lines = [line.split("▸ ")[1] for line in followed.stdout.splitlines() if "▸ " in line]
    assert stage_lines == list(STAGES)
    assert followed.stdout.splitlines()[-1].endswith("✓ succeeded")
    shown = json.loads(run_cli(home, "ops", "show", op_id, "--json").stdout)
    assert shown["state"] == "succeeded"
    listed = json.loads(run_cli(home, "ops", "list", "--all", "--json").stdout)
    assert op_id in [op["id"] for op in listed]


def test_follow_json_is_ndjson(home: Path) -> None:
    op_id = json.loads(run_cli(home, "ops", "selftest", "--json").stdout)["id"]
    result = run_cli(home, "--json", "ops", "show", op_id, "--follow")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["kind"] == "succeeded"


def test_failed_op_keeps_stage_error_and_hint_and_exits_nonzero(home: Path) -> None:
    result = run_cli(home, "ops", "selftest", "--fail-at", "emit_events", "--follow")
    assert result.returncode == 1
    assert "✗ failed at emit_events" in result.stdout
    assert_one_line_error(result.stderr)
    assert "failed at stage emit_events" in result.stderr
    op_id = json.loads(run_cli(home, "--json", "ops", "list", "--all").stdout)[0]["id"]
    shown = json.loads(run_cli(home, "--json", "ops", "show", op_id).stdout)
    assert shown["state"] == "failed"
    assert shown["stage"] == "emit_events"
    assert shown["error"] == "selftest failed at stage emit_events as requested"
    assert "fail_at" in shown["hint"]


def test_not_found_exits_3(home: Path) -> None:
    result = run_cli(home, "ops", "show", "0123456789ab")
    assert result.returncode == 3
    assert_one_line_error(result.stderr)
    assert result.stderr.startswith("error: no operation with id '0123456789ab'")


def test_bad_argument_from_the_daemon_exits_2(home: Path) -> None:
    result = run_cli(home, "ops", "selftest", "--fail-at", "nowhere")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    assert "fail_at" in result.stderr


def test_vm_create_names_every_bad_field_and_exits_2(home: Path) -> None:
    """Issue #22 item 7: both the name and --cpus, in one line, as config validate does."""
    result = run_cli(home, "vm", "create", "Bad_Name", "--cpus", "-1")
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: invalid request (2 problems): name: 'Bad_Name'")
    assert "; cpus: must be at least 1, got -1" in first
    assert run_cli(home, "--json", "vm", "list").stdout.strip() == "[]"


def test_debug_shows_the_traceback(home: Path) -> None:
    result = run_cli(home, "--debug", "ops", "show", "0123456789ab")
    assert result.returncode == 3
    assert "Traceback (most recent call last)" in result.stderr
    assert "error: no operation with id '0123456789ab'" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [["vmm"], ["ops", "show"], ["ops", "list", "--bogus"], ["ops", "selftest", "--delay-ms", "-4"]],
)
def test_usage_errors_exit_2(home: Path, argv: list[str]) -> None:
    result = run_cli(home, *argv)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_config_validate_lists_every_problem_and_exits_2(home: Path, short_tmp: Path) -> None:
    bad = short_tmp / "bad.toml"
    bad.write_text(
        'vmm = "x"\nbogus = 1\n[vm]\nvcpus = "many"\n'
        # Destinations vm start refuses are refused here too (issue #21 item 9).
        '[[file_sync]]\nhost = "~/a"\nguest = "~/.ssh/authorized_keys"\n'
        '[[file_sync]]\nhost = "~/b"\nguest = "/root/.banger/x"\n'
    )
    result = run_cli(home, "config", "validate", str(bad))
    assert result.returncode == 2  # bad input, as README "Exit status" says
    problems = result.stdout.splitlines()
    assert len(problems) == 5
    assert any(p.startswith("vmm:") for p in problems)
    assert "bogus: unknown key" in problems
    assert any(p.startswith("vm.vcpus:") for p in problems)
    assert any(
        p.startswith("file_sync[0].guest: ~/.ssh/authorized_keys is managed by banger")
        for p in problems
    ), problems
    assert any(
        p.startswith("file_sync[1].guest: ~/.banger/x is managed by banger") for p in problems
    ), problems
    assert result.stderr == f"error: {bad}: 5 problems\n"
    data = json.loads(run_cli(home, "config", "validate", str(bad), "--json").stdout)
    assert data == {"path": str(bad), "valid": False, "problems": problems}


def test_config_validate_missing_named_file_is_a_problem(home: Path, short_tmp: Path) -> None:
    result = run_cli(home, "config", "validate", str(short_tmp / "absent.toml"))
    assert result.returncode == 2
    assert result.stdout.strip()


def test_config_show_matches_daemon_view_and_rejects_bad_file(home: Path, short_tmp: Path) -> None:
    shown = json.loads(run_cli(home, "config", "show", "--json").stdout)
    from banger.client import BangerClient
    from tests.integration.bangerd_harness import home_paths

    with BangerClient(home_paths(home)) as client:
        assert shown == client.config()
    assert "vm.vcpus = " in run_cli(home, "config", "show").stdout
    bad = short_tmp / "bad.toml"
    bad.write_text("vmm = 3\n")
    result = run_cli(home, "config", "show", "--file", str(bad))
    assert result.returncode == 2
    assert_one_line_error(result.stderr)
