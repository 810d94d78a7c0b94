"""``Paths.from_env`` and the system install: the CLI finds the installed services' sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from banger.errors import BangerError
from banger.paths import INSTALL_METADATA, Paths, install_metadata_path, system_install
from tests.install_meta import write_metadata


def env_for(tmp_path: Path, meta: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path), "BANGER_INSTALL_METADATA": str(meta), **extra}


def test_metadata_path_defaults_to_etc_and_is_overridable(tmp_path: Path) -> None:
    assert install_metadata_path({}) == INSTALL_METADATA == Path("/etc/banger/install.toml")
    assert install_metadata_path({"BANGER_INSTALL_METADATA": "/x/i.toml"}) == Path("/x/i.toml")


def test_nothing_installed(tmp_path: Path) -> None:
    env = env_for(tmp_path, tmp_path / "absent.toml", XDG_RUNTIME_DIR="/run/user/7")
    assert system_install(env) is None
    assert Paths.from_env(env).runtime_dir == Path("/run/user/7/banger")


def test_installed_for_me_uses_its_runtime_dir(tmp_path: Path) -> None:
    meta = write_metadata(tmp_path / "i.toml", owner_uid=os.getuid(), runtime_dir="/run/bgx")
    env = env_for(tmp_path, meta, XDG_RUNTIME_DIR="/run/user/7")
    installed = system_install(env)
    assert installed is not None and installed.serves_me and installed.owner == "someone"
    paths = Paths.from_env(env)
    assert paths.daemon_socket == Path("/run/bgx/bangerd.sock")
    assert paths.helper_socket == Path("/run/bgx/helper.sock")
    # Keys, SSH config and known_hosts stay in the owner's own state directory.
    assert paths.state_dir == tmp_path / ".local/state/banger"
    assert paths.known_hosts == tmp_path / ".local/state/banger/ssh/known_hosts"


def test_installed_for_someone_else_is_not_mine(tmp_path: Path) -> None:
    meta = write_metadata(tmp_path / "i.toml", owner_uid=os.getuid() + 1, runtime_dir="/run/bgx")
    env = env_for(tmp_path, meta, XDG_RUNTIME_DIR="/run/user/7")
    installed = system_install(env)
    assert installed is not None and not installed.serves_me
    assert Paths.from_env(env).runtime_dir == Path("/run/user/7/banger")


def test_explicit_runtime_dir_and_banger_home_win(tmp_path: Path) -> None:
    meta = write_metadata(tmp_path / "i.toml", owner_uid=os.getuid(), runtime_dir="/run/bgx")
    assert Paths.from_env(env_for(tmp_path, meta, BANGER_RUNTIME_DIR="/r")).runtime_dir == Path(
        "/r"
    )
    home = env_for(tmp_path, meta, BANGER_HOME=str(tmp_path / "bh"))
    assert Paths.from_env(home).runtime_dir == tmp_path / "bh" / "run"


def test_unreadable_metadata_is_an_error_naming_the_file(tmp_path: Path) -> None:
    meta = tmp_path / "i.toml"
    meta.write_text("owner = 3\n")
    with pytest.raises(BangerError, match=r"i\.toml: unreadable install metadata: owner"):
        Paths.from_env(env_for(tmp_path, meta))


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to root and another group")
def test_private_dir_check_accepts_the_system_layout_only(tmp_path: Path) -> None:
    """/run/banger is root:<owner group> 0770 (systemd's RuntimeDirectory for the helper)."""
    from banger.errors import InvalidArgument
    from banger.paths import check_private_dir

    run = tmp_path / "run"
    run.mkdir()
    os.chown(run, 0, os.getegid())
    run.chmod(0o770)
    assert check_private_dir(run) == run
    os.chown(run, 0, os.getegid() + 4242)  # writable by a group that is not ours
    with pytest.raises(InvalidArgument, match="writable by other users"):
        check_private_dir(run)
    os.chown(run, 0, os.getegid())
    run.chmod(0o777)
    with pytest.raises(InvalidArgument, match="writable by other users"):
        check_private_dir(run)
