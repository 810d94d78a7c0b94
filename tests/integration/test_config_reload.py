"""bangerd follows config.toml while it runs (issue #21 item 1): a real daemon, a real file."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.client import CONFIG_ERROR_HEADER
from banger.daemon.config_watch import ERROR_HEADER
from tests.integration.bangerd_harness import Daemon, home_paths, run_cli, running_daemon
from tests.support import short_tmpdir, wait_until


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


def write_config(home: Path, text: str) -> Path:
    path = home_paths(home).config_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def daemon(home: Path) -> Iterator[Daemon]:
    write_config(home, "[vm]\nvcpus = 2\n")
    with running_daemon(home) as running:
        yield running


def vcpus(daemon: Daemon) -> int:
    with daemon.client() as client:
        return int(client.config()["vm"]["vcpus"])


def test_both_sides_name_the_same_header() -> None:
    assert CONFIG_ERROR_HEADER == ERROR_HEADER


def test_an_edit_applies_at_the_next_request(home: Path, daemon: Daemon) -> None:
    assert vcpus(daemon) == 2
    write_config(home, "[vm]\nvcpus = 3\n")
    assert vcpus(daemon) == 3  # no reload, no restart: the next request re-read it
    assert "config.toml reloaded: vm changed" in daemon.log()


def test_an_invalid_edit_is_one_line_and_the_last_good_config_stays(
    home: Path, daemon: Daemon
) -> None:
    write_config(home, "[vm]\nvcpus = 0\n")
    listed = run_cli(home, "vm", "list")
    assert listed.returncode == 0, listed.stderr  # the command still runs, on the old config
    lines = listed.stderr.splitlines()
    assert len(lines) == 1, listed.stderr
    assert lines[0].startswith("error: "), lines
    assert "invalid config: vm.vcpus: must be between 1 and 32" in lines[0], lines
    assert "bangerd keeps the last good config" in lines[0]
    assert vcpus(daemon) == 2

    reloaded = run_cli(home, "config", "reload")
    assert reloaded.returncode == 2
    assert reloaded.stderr.count("vm.vcpus") == 1, reloaded.stderr  # said once, not twice
    assert "the last good config stays in force" in reloaded.stderr

    write_config(home, "[vm]\nvcpus = 4\n")
    fixed = run_cli(home, "vm", "list")
    assert fixed.returncode == 0 and fixed.stderr == "", fixed.stderr
    assert vcpus(daemon) == 4


def test_reload_and_sighup_read_a_change_the_signature_cannot_see(
    home: Path, daemon: Daemon
) -> None:
    path = home_paths(home).config_file
    before = path.stat()
    write_config(home, "[vm]\nvcpus = 5\n")  # same size, same inode ...
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # ... and same mtime
    assert vcpus(daemon) == 2  # the identity did not change: not re-read

    result = run_cli(home, "config", "reload", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["changed"] == ["vm"]
    assert vcpus(daemon) == 5

    write_config(home, "[vm]\nvcpus = 6\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: vcpus(daemon) == 6, 60, "bangerd re-reading config.toml on SIGHUP")
    assert daemon.proc.poll() is None  # SIGHUP reloads; it does not stop the daemon


def test_sections_the_running_daemon_is_built_on_wait_for_a_restart(
    home: Path, daemon: Daemon
) -> None:
    write_config(home, '[vm]\nvcpus = 3\n[network]\nbridge = "other0"\n')
    result = run_cli(home, "config", "reload")
    assert result.returncode == 0, result.stderr
    assert "vm changed" in result.stdout
    assert "network changed too; that applies when bangerd restarts" in result.stderr
    with daemon.client() as client:
        config = client.config()
    assert config["vm"]["vcpus"] == 3
    assert config["network"]["bridge"] == "banger0"  # the running VMs' bridge stays
