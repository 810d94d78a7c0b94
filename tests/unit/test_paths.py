from __future__ import annotations

from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.paths import SUN_PATH_MAX, Paths, check_socket_path


def test_banger_home_puts_everything_under_it(tmp_path: Path) -> None:
    p = Paths.from_env({"BANGER_HOME": str(tmp_path)})
    for d in (p.config_dir, p.state_dir, p.cache_dir, p.runtime_dir):
        assert d.is_relative_to(tmp_path)
    assert p.config_file == tmp_path / "config" / "config.toml"
    assert p.db == tmp_path / "state" / "banger.db"


def test_xdg_defaults(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": "/run/user/1000"}
    p = Paths.from_env(env)
    assert p.config_file == tmp_path / ".config/banger/config.toml"
    assert p.state_dir == tmp_path / ".local/state/banger"
    assert p.cache_dir == tmp_path / ".cache/banger"
    assert p.daemon_socket == Path("/run/user/1000/banger/bangerd.sock")


def test_relative_xdg_values_are_ignored(tmp_path: Path) -> None:
    p = Paths.from_env({"HOME": str(tmp_path), "XDG_STATE_HOME": "relative"})
    assert p.state_dir == tmp_path / ".local/state/banger"


def test_runtime_override() -> None:
    p = Paths.from_env({"BANGER_HOME": "/x", "BANGER_RUNTIME_DIR": "/r"})
    assert p.helper_socket == Path("/r/helper.sock")
    assert p.vm_qmp_socket("abc") == Path("/r/vm-abc.qmp")
    assert p.vm_agent_socket("abc") == Path("/r/vm-abc.qga")


def test_long_socket_path_refused_with_clear_error() -> None:
    long_dir = "/tmp/" + "x" * (SUN_PATH_MAX - 10)
    p = Paths.from_env({"BANGER_HOME": "/x", "BANGER_RUNTIME_DIR": long_dir})
    with pytest.raises(InvalidArgument, match="Unix socket limit"):
        _ = p.daemon_socket
    # exactly at the limit minus the NUL byte is fine
    ok = Path("/" + "y" * (SUN_PATH_MAX - 2))
    assert check_socket_path(ok) == ok


def test_ensure_creates_private_dirs(tmp_path: Path) -> None:
    p = Paths.from_env({"BANGER_HOME": str(tmp_path / "h")})
    p.ensure()
    for d in p.all_owner_dirs():
        assert d.is_dir()
        assert d.stat().st_mode & 0o777 == 0o700
