"""``banger kernel build --config microvm|FILE --version V`` (issue #19 item 2): the
fragment a user's file makes, the source a series names, and the CLI's one-line
refusals before anything is built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.kernels.build import package_of, source_package, user_fragment
from banger.kernels.kconfig import config_hash, fragment_text, parse_config, with_additions

BASE = "CONFIG_VIRTIO_BLK=y\n# CONFIG_MODULES is not set\nCONFIG_NR_CPUS=64\n"


def test_additions_are_appended_and_win_nothing_of_banger_s() -> None:
    merged = with_additions(BASE, "CONFIG_BTRFS_FS=y\nCONFIG_NR_CPUS=64\n", "extra.config")
    options = parse_config(merged)
    assert options["CONFIG_BTRFS_FS"] == "y"  # added
    assert options["CONFIG_VIRTIO_BLK"] == "y" and options["CONFIG_MODULES"] is None
    assert "# --- added from extra.config ---" in merged
    assert config_hash(merged) != config_hash(BASE)  # a new cache key, a new build


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ("CONFIG_VIRTIO_BLK=n\n", "CONFIG_VIRTIO_BLK=n (banger's fragment: y)"),
        ("# CONFIG_VIRTIO_BLK is not set\n", "CONFIG_VIRTIO_BLK=n (banger's fragment: y)"),
        ("CONFIG_MODULES=y\n", "CONFIG_MODULES=y (banger's fragment: n)"),
        ("CONFIG_NR_CPUS=8\n", "CONFIG_NR_CPUS=8 (banger's fragment: 64)"),
    ],
)
def test_changing_an_option_banger_sets_is_refused_naming_it(extra: str, said: str) -> None:
    with pytest.raises(ValueError, match="changes options banger's microVM guests need") as e:
        with_additions(BASE, "CONFIG_EXT2_FS=y\n" + extra, "mine.config")
    assert said in str(e.value) and "CONFIG_EXT2_FS" not in str(e.value)


def test_a_file_without_options_is_refused() -> None:
    with pytest.raises(ValueError, match="has no CONFIG_ option lines"):
        with_additions(BASE, "# just a comment\nFOO=1\n", "empty.config")


def test_user_fragment_reads_the_file_or_says_why_not(tmp_path: Path) -> None:
    assert user_fragment(None) == user_fragment("microvm") == fragment_text()
    mine = tmp_path / "mine.config"
    mine.write_text("CONFIG_BTRFS_FS=y\n")
    assert parse_config(user_fragment(str(mine)))["CONFIG_BTRFS_FS"] == "y"
    with pytest.raises(InvalidArgument, match=r"^config: cannot read .*missing\.config") as e:
        user_fragment(str(tmp_path / "missing.config"))
    assert e.value.field == "config"
    mine.write_text("CONFIG_VIRTIO_BLK=n\n")
    with pytest.raises(InvalidArgument, match=r"^config: .*CONFIG_VIRTIO_BLK=n"):
        user_fragment(str(mine))


def test_a_series_names_its_package_and_tarball() -> None:
    assert source_package("6.1") == (
        "linux-source-6.1",
        Path("/usr/src/linux-source-6.1.tar.xz"),
    )
    assert source_package("6.12")[0] == "linux-source-6.12"
    for bad in ("6", "abc", "6.1; rm", "../6.1", "6.1.0"):
        with pytest.raises(InvalidArgument, match=r"^version: "):
            source_package(bad)
    assert package_of(Path("/usr/src/linux-source-6.12.tar.xz")) == "linux-source-6.12"
    assert package_of(Path("/home/me/linux-6.1.tar.xz")) is None


def _banger(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home)}
    script = Path(sys.executable).parent / "banger"
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True)


def test_the_cli_refuses_bad_choices_in_one_line_before_building(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    bad = tmp_path / "bad.config"
    bad.write_text("CONFIG_VIRTIO_NET=n\n")
    cases = [
        (["--version", "6.1", "--source", str(bad)], "error: version: --version picks"),
        (["--version", "abc"], "error: version: 'abc' is not a kernel series"),
        (["--config", str(tmp_path / "nope.config")], "error: config: cannot read"),
        (["--config", str(bad)], "error: config: " + str(bad) + " changes options"),
    ]
    for args, said in cases:
        result = _banger(home, "kernel", "build", *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert lines[0].startswith(said), (args, result.stderr)
    assert list(home.iterdir()) == []  # nothing made: no cache, no daemon, no state
