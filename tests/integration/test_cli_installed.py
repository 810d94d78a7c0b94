"""The real CLI on a machine where ``banger system install`` put the services.

The install metadata is pointed at with ``BANGER_INSTALL_METADATA`` (its
default, /etc/banger/install.toml, is the real system's). With an install,
the CLI talks to the runtime directory recorded there and never starts a
daemon or a helper of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.install_meta import write_metadata
from tests.support import VENV_BIN, netns, short_tmpdir, wait_until


@pytest.fixture
def tree() -> Iterator[Path]:
    with short_tmpdir() as path:
        (path / "home").mkdir()
        (path / "run").mkdir(mode=0o700)
        yield path


def cli(tree: Path, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tree / "home"),
        "BANGER_INSTALL_METADATA": str(tree / "install.toml"),
        "BANGER_NO_AUTOSTART": "0",
        "BANGER_ALLOW_ROOT": "1",
    }
    return subprocess.run(
        [*prefix, str(VENV_BIN / "banger"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_installed_but_not_answering_starts_nothing(tree: Path) -> None:
    write_metadata(tree / "install.toml", owner_uid=os.getuid(), runtime_dir=str(tree / "run"))
    result = cli(tree, "vm", "list")
    assert result.returncode == 5, result.stderr
    assert result.stderr.splitlines()[0] == (
        "error: bangerd.service is installed but not answering: `systemctl status bangerd`"
    )
    assert "hint: `banger system status`" in result.stderr
    # Nothing was started: no daemon socket, pid file or log anywhere.
    assert list((tree / "run").iterdir()) == []
    assert not (tree / "home/.local/state/banger/bangerd.log").exists()


def test_the_cli_talks_to_the_installed_runtime_dir(tree: Path) -> None:
    """A daemon serving on the recorded socket answers the owner's CLI."""
    write_metadata(tree / "install.toml", owner_uid=os.getuid(), runtime_dir=str(tree / "run"))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tree / "home"),
        "BANGER_RUNTIME_DIR": str(tree / "run"),  # what bangerd.service sets
        "BANGER_ALLOW_ROOT": "1",
    }
    daemon = subprocess.Popen(
        [str(VENV_BIN / "bangerd"), "--allow-root"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def bound() -> bool:
            assert daemon.poll() is None, "bangerd exited"
            return (tree / "run/bangerd.sock").exists()

        wait_until(bound, 60, "bangerd binding its socket")
        result = cli(tree, "--json", "version")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["daemon"]["pid"] == daemon.pid
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def test_installed_for_another_user_says_whose_it_is(tree: Path) -> None:
    write_metadata(tree / "install.toml", owner_uid=os.getuid() + 1, runtime_dir=str(tree / "run"))
    result = cli(tree, "vm", "list")
    assert result.returncode == 5
    assert result.stderr.startswith("error: banger is installed as a system service for someone,")
    assert list((tree / "run").iterdir()) == []


@pytest.mark.root
def test_a_vm_command_does_not_start_a_helper_when_installed(tree: Path) -> None:
    write_metadata(tree / "install.toml", owner_uid=os.getuid(), runtime_dir=str(tree / "run"))
    with netns("bgi") as ns:
        result = cli(tree, "vm", "create", "--name", "x", prefix=tuple(ns.argv()))
    assert result.returncode == 5, result.stderr
    assert "bangerd.service is installed but not answering" in result.stderr
    assert "started banger-helper" not in result.stderr
    assert list((tree / "run").iterdir()) == []
