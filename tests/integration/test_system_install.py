"""``banger system install/uninstall/status`` against a --prefix tree, for real.

systemd is not PID 1 on this machine, so enabling and starting the units is
not exercised here; the files they consist of are, and so is a real helper
answering on the socket path the units declare (under the prefix).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

import banger
from banger.cli.system_cmd import system
from banger.errors import BangerError
from banger.paths import INSTALL_METADATA, Paths
from banger.system.install import install, resolve_owner, systemd_running, uninstall
from banger.system.status import gather_status
from tests.helper_launch import helper_command_line
from tests.support import VENV_BIN, throwaway_user, wait_until


def snapshot(root: Path, *, dir_mtimes: bool = False) -> dict[str, tuple[int, int, bytes | str]]:
    """Every path under root: mode, mtime (ns) and content (or link target).

    A directory's mtime changes whenever an entry comes and goes, so it is
    only compared where nothing at all may have been written.
    """
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            content: bytes | str = os.readlink(path)
        elif path.is_file():
            content = path.read_bytes()
        else:
            content = b""
        mtime = st.st_mtime_ns if dir_mtimes or not path.is_dir() else 0
        out[str(path.relative_to(root))] = (st.st_mode, mtime, content)
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "banger"), "system", *args], capture_output=True, text=True, check=False
    )


def test_units_pass_systemd_analyze_verify(short_tmp: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze missing: apt-get install systemd")
    install(resolve_owner("root"), short_tmp)
    units = sorted((short_tmp / "etc/systemd/system").glob("*.service"))
    assert [u.name for u in units] == ["banger-helper.service", "bangerd.service"]
    proc = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, check=False
    )
    # verify only warns (exit 0) on unknown keys: demand silence as well.
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc.stderr


@pytest.mark.root
def test_units_for_an_ordinary_owner_verify(short_tmp: Path) -> None:
    with throwaway_user() as user:
        install(resolve_owner(user.name), short_tmp)
        units = sorted(map(str, (short_tmp / "etc/systemd/system").glob("*.service")))
        proc = subprocess.run(
            ["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False
        )
        text = Path(units[1]).read_text()
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert f"User={user.name}" in text and "--allow-root" not in text


def test_install_then_uninstall_leaves_the_tree_as_before(short_tmp: Path) -> None:
    # Something already there that is not ours must survive untouched.
    (short_tmp / "etc/systemd/system").mkdir(parents=True)
    (short_tmp / "etc/systemd/system/other.service").write_text("[Unit]\n")
    (short_tmp / "var").mkdir()
    before = snapshot(short_tmp)

    proc = cli("install", "--prefix", str(short_tmp), "--owner", "root")
    assert proc.returncode == 0, proc.stderr
    after_install = snapshot(short_tmp)
    assert "etc/banger/install.toml" in after_install
    assert "etc/systemd/system/bangerd.service" in after_install

    proc = cli("uninstall", "--prefix", str(short_tmp))
    assert proc.returncode == 0, proc.stderr
    assert snapshot(short_tmp) == before


def test_install_into_an_empty_prefix_and_back(short_tmp: Path) -> None:
    before = snapshot(short_tmp)
    install(resolve_owner("root"), short_tmp)
    uninstall(short_tmp)
    assert snapshot(short_tmp) == before == {}


def test_second_install_changes_nothing(short_tmp: Path) -> None:
    first = install(resolve_owner("root"), short_tmp)
    assert len(first.written) == 3
    state = snapshot(short_tmp, dir_mtimes=True)
    time.sleep(0.01)  # a rewrite would show in the mtimes
    proc = cli("install", "--prefix", str(short_tmp), "--owner", "root", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["written"] == []
    assert snapshot(short_tmp, dir_mtimes=True) == state


def test_reinstall_for_another_owner_updates_in_place(short_tmp: Path) -> None:
    install(resolve_owner("root"), short_tmp)
    with throwaway_user() as user:
        result = install(resolve_owner(user.name), short_tmp)
    assert {p.name for p in result.written} == {
        "bangerd.service",
        "banger-helper.service",
        "install.toml",
    }
    assert f'owner = "{user.name}"' in (short_tmp / "etc/banger/install.toml").read_text()
    uninstall(short_tmp)
    assert snapshot(short_tmp) == {}


@pytest.mark.skipif(systemd_running(), reason="this host runs systemd: install would be real")
def test_install_without_systemd_fails_clearly() -> None:
    with pytest.raises(BangerError, match="systemd is not running as PID 1") as info:
        install(resolve_owner("root"), None)
    assert info.value.hint and "--prefix" in info.value.hint
    proc = cli("install")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: systemd is not running as PID 1")
    assert not Path("/etc/banger/install.toml").exists()


def test_uninstall_when_not_installed(short_tmp: Path) -> None:
    result = CliRunner().invoke(system, ["uninstall", "--prefix", str(short_tmp)])
    assert isinstance(result.exception, BangerError)
    assert "not installed" in result.exception.message


def test_purge_asks_and_removes_only_banger_dirs(short_tmp: Path) -> None:
    install(resolve_owner("root"), short_tmp)
    meta = (short_tmp / "etc/banger/install.toml").read_text()
    state = short_tmp / "root/.local/state/banger"
    (state / "vms").mkdir(parents=True)
    (short_tmp / "root/.config/banger").mkdir(parents=True)
    refused = CliRunner().invoke(
        system, ["uninstall", "--prefix", str(short_tmp), "--purge"], input="n\n"
    )
    assert refused.exit_code == 1 and (short_tmp / "etc/banger/install.toml").read_text() == meta
    done = CliRunner().invoke(system, ["uninstall", "--prefix", str(short_tmp), "--purge", "--yes"])
    assert done.exit_code == 0, done.output
    assert not state.exists()
    assert (short_tmp / "root/.config/banger").is_dir()  # the owner's config is kept


# -- status --------------------------------------------------------------------


@contextmanager
def running_helper(prefix: Path) -> Iterator[Path]:
    """The real banger-helper, with the unit's arguments moved under ``prefix``."""
    paths = Paths(prefix / "config", prefix / "state", prefix / "cache", prefix / "run/banger")
    socket_path = paths.helper_socket
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    paths.state_dir.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        helper_command_line(paths, 0, ["--owner-gid", "0", "--foreground"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def bound() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            return socket_path.exists()

        wait_until(bound, 60, "the helper binding its socket")
        yield socket_path
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def test_status_when_not_installed(short_tmp: Path) -> None:
    report = gather_status(short_tmp)
    assert not report.installed and not report.healthy
    proc = cli("status", "--prefix", str(short_tmp), "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["installed"] is False


def test_status_unhealthy_when_the_helper_socket_is_absent(short_tmp: Path) -> None:
    install(resolve_owner("root"), short_tmp)
    proc = cli("status", "--prefix", str(short_tmp), "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["installed"] is True and report["healthy"] is False
    assert any(p.startswith("helper socket missing") for p in report["problems"])
    assert report["version_mismatch"] is False


@pytest.mark.root
def test_status_with_a_real_helper(short_tmp: Path) -> None:
    install(resolve_owner("root"), short_tmp)
    with running_helper(short_tmp):
        report = gather_status(short_tmp)
    helper = next(s for s in report.sockets if s.name == "helper")
    assert helper.present and helper.answering and helper.layout_ok, helper
    assert helper.mode == "0660"
    assert report.versions["running_helper"] == banger.__version__
    assert not report.version_mismatch
    # Only the daemon is missing now.
    assert [p for p in report.problems if "helper" in p] == []
    assert any(p.startswith("daemon socket missing") for p in report.problems)


@pytest.mark.root
def test_status_flags_an_older_helper_version(short_tmp: Path) -> None:
    install(resolve_owner("root"), short_tmp)
    meta = short_tmp / INSTALL_METADATA.relative_to("/")
    meta.write_text(
        meta.read_text().replace(f'helper = "{banger.__version__}"', 'helper = "0.0.1"')
    )
    with running_helper(short_tmp):
        proc = cli("status", "--prefix", str(short_tmp), "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["version_mismatch"] is True
    assert report["versions"]["installed_helper"] == "0.0.1"
    assert report["versions"]["running_helper"] == banger.__version__
    assert any(p.startswith("version mismatch") for p in report["problems"])
