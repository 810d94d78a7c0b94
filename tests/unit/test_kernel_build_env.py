"""``banger kernel build``'s reproducibility inputs (issue #19 item 2): what the build
bakes into the kernel besides its sources is fixed, and its date is the source's own.

A real double build takes minutes of both cores (see build.py's docstring for the
result of one), so here: the date read from tarballs (and, where the host has
Debian's linux-source-6.1, that it is the package's changelog date), its form
(what ``date -u`` prints), and every ``make`` of a build run for real against a
stand-in source tree whose Makefile records the environment it was given.
"""

from __future__ import annotations

import email.utils
import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from banger.errors import BangerError
from banger.kernels.build import (
    BUILD_META,
    DEFAULT_SOURCE,
    SOURCE_PACKAGE,
    BuildInputs,
    build_env,
    build_kernel,
    build_timestamp,
    kernel_meta,
    source_date_epoch,
)
from banger.kernels.store import sha256_file

#: 2026-11-26 17:12:56 UTC, linux-source-6.1 6.1.192-3's changelog date.
EPOCH = 1795713176
BAKED = ("KBUILD_BUILD_TIMESTAMP", "KBUILD_BUILD_USER", "KBUILD_BUILD_HOST",
         "KBUILD_BUILD_VERSION", "SOURCE_DATE_EPOCH", "TZ", "ARCH")  # fmt: skip


def tarball(path: Path, members: list[tuple[str, int, bytes | None]], mode: str = "w:xz") -> Path:
    """A tarball of ``(name, mtime, data)`` in that order; None data: a directory."""
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, mtime, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("epoch", [0, 86399, 951782400, EPOCH, 2147483648])
def test_the_timestamp_reads_as_date_u_prints_it(epoch: int) -> None:
    date = subprocess.run(
        ["date", "-u", "-d", f"@{epoch}"],
        env={"PATH": os.environ["PATH"], "LC_ALL": "C", "TZ": "UTC"},
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert build_timestamp(epoch) == date


def test_the_environment_bakes_in_fixed_values_and_the_source_date() -> None:
    env = build_env(EPOCH)
    assert env["KBUILD_BUILD_TIMESTAMP"] == "Thu Nov 26 17:12:56 UTC 2026"
    assert env["SOURCE_DATE_EPOCH"] == str(EPOCH)
    assert (env["KBUILD_BUILD_USER"], env["KBUILD_BUILD_HOST"]) == ("banger", "banger")
    assert env["KBUILD_BUILD_VERSION"] == "1"
    assert env["TZ"] == "UTC" and env["ARCH"] == "x86_64"
    # Nothing from the clock, the user or the host: the same date, the same environment.
    assert build_env(EPOCH) == env
    assert build_env(EPOCH + 1)["KBUILD_BUILD_TIMESTAMP"] != env["KBUILD_BUILD_TIMESTAMP"]


@pytest.mark.parametrize("mode", ["w:xz", "w:gz", "w"])
def test_the_source_date_is_the_tarball_first_entry(tmp_path: Path, mode: str) -> None:
    path = tarball(
        tmp_path / "src.tar",
        [("linux/", EPOCH, None), ("linux/Makefile", EPOCH + 500, b"x"), ("linux/old", 5, b"")],
        mode,
    )
    assert source_date_epoch(path) == EPOCH


def test_a_source_that_is_no_tarball_is_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.xz"
    bad.write_bytes(b"not a tarball at all" * 100)
    with pytest.raises(BangerError, match="is not a readable tarball"):
        source_date_epoch(bad)
    empty = tarball(tmp_path / "empty.tar.gz", [], "w:gz")
    with pytest.raises(BangerError, match="is an empty tarball"):
        source_date_epoch(empty)


@pytest.mark.skipif(not DEFAULT_SOURCE.is_file(), reason=f"no {SOURCE_PACKAGE} on this host")
def test_the_debian_tarball_date_is_its_changelog_date() -> None:
    """Debian makes the tarball under SOURCE_DATE_EPOCH, its changelog's date: the
    date banger bakes in is the package's, whichever version is installed."""
    changelog = Path(f"/usr/share/doc/{SOURCE_PACKAGE}/changelog.Debian.gz")
    with gzip.open(changelog, "rt") as f:
        trailer = next(line for line in f if line.startswith(" -- "))
    date = trailer.split(">", 1)[1].strip()
    assert source_date_epoch(DEFAULT_SOURCE) == int(
        email.utils.parsedate_to_datetime(date).timestamp()
    )


#: A stand-in Linux tree: each target the build runs records its environment.
MAKEFILE = """\
record = printf '%s\\n' "$(1)" "$$KBUILD_BUILD_TIMESTAMP" "$$KBUILD_BUILD_USER" \\
\t"$$KBUILD_BUILD_HOST" "$$KBUILD_BUILD_VERSION" "$$SOURCE_DATE_EPOCH" "$$TZ" "$$ARCH" \\
\t>> env.log
tinyconfig:
\t@$(call record,tinyconfig)
\t@echo 'CONFIG_TINY=y' > .config
olddefconfig:
\t@$(call record,olddefconfig)
kernelversion:
\t@$(call record,kernelversion)
\t@echo 6.1.999
bzImage:
\t@$(call record,bzImage)
\t@mkdir -p arch/x86/boot && echo image > arch/x86/boot/bzImage
\t@cp env.log $(CURDIR)/../../env.log
"""


def test_every_make_of_a_build_gets_the_fixed_environment(tmp_path: Path) -> None:
    source = tarball(
        tmp_path / "linux-standin.tar.xz",
        [
            ("linux-standin/", EPOCH, None),
            ("linux-standin/arch/", EPOCH, None),
            ("linux-standin/arch/x86/", EPOCH, None),
            ("linux-standin/Makefile", EPOCH, MAKEFILE.encode()),
        ],
    )
    inputs = BuildInputs(
        source=source,
        source_sha256=sha256_file(source),
        package_version=None,
        # What the stand-in's tinyconfig writes: the check after olddefconfig passes.
        fragment="CONFIG_TINY=y\n",
        toolchain="test",
        source_date_epoch=source_date_epoch(source),
    )
    cache = tmp_path / "cache"
    built = build_kernel(inputs, cache, jobs=1)
    # Every make saw the same values (copied out before the work tree was removed).
    lines = (cache / "kernel-builds" / "env.log").read_text().splitlines()
    runs = [lines[i : i + 8] for i in range(0, len(lines), 8)]
    assert [r[0] for r in runs] == ["tinyconfig", "olddefconfig", "kernelversion", "bzImage"]
    expected = build_env(EPOCH)
    for r in runs:
        assert dict(zip(BAKED, r[1:], strict=True)) == {k: expected[k] for k in BAKED}, r[0]
    meta = json.loads((built.path / BUILD_META).read_text())
    assert meta["source_date_epoch"] == EPOCH
    assert kernel_meta(built)["build"]["source_date_epoch"] == EPOCH
