"""Foreign finalize decisions on small trees (no package manager is run here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.images.finalize import ImageNotBootable
from banger.images.foreign import (
    APK,
    APT,
    DNF,
    chroot_argv,
    detect_package_manager,
    dockerfile_hint,
    finalize_foreign,
    missing_components,
)


def touch(tree: Path, *paths: str) -> None:
    for guest in paths:
        path = tree / guest.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!fake\n")


def test_complete_tree_needs_nothing(tmp_path: Path) -> None:
    touch(tmp_path, "/bin/sh", "/usr/lib/systemd/systemd", "/usr/sbin/sshd", "/usr/bin/tmux")
    assert missing_components(tmp_path) == []
    assert finalize_foreign(tmp_path) == ()


def test_systemd_found_through_a_merged_usr_symlink(tmp_path: Path) -> None:
    touch(tmp_path, "/usr/lib/systemd/systemd")
    (tmp_path / "lib").symlink_to("usr/lib")
    assert "systemd" not in missing_components(tmp_path)


@pytest.mark.parametrize(
    ("probe", "expected"),
    [("/usr/bin/apt-get", APT), ("/usr/bin/dnf", DNF), ("/sbin/apk", APK), (None, None)],
)
def test_package_manager_detection(tmp_path: Path, probe: str | None, expected: object) -> None:
    if probe:
        touch(tmp_path, probe)
    assert detect_package_manager(tmp_path) is expected


def test_no_package_manager_names_what_is_missing_and_the_dockerfile_line(tmp_path: Path) -> None:
    touch(tmp_path, "/bin/sh", "/usr/bin/tmux")
    with pytest.raises(ImageNotBootable) as err:
        finalize_foreign(tmp_path)
    assert (
        str(err.value) == "the image lacks systemd, sshd (no apt, dnf or apk to install them with)"
    )
    assert err.value.hint == dockerfile_hint(["systemd", "sshd"])
    assert "apt-get install -y --no-install-recommends systemd-sysv udev dbus openssh-server" in (
        err.value.hint or ""
    )


def test_alpine_cannot_provide_systemd(tmp_path: Path) -> None:
    touch(tmp_path, "/bin/sh", "/sbin/apk")
    with pytest.raises(ImageNotBootable, match="systemd, which apk \\(Alpine\\) cannot provide"):
        finalize_foreign(tmp_path)


def test_install_off_refuses(tmp_path: Path) -> None:
    touch(tmp_path, "/bin/sh", "/usr/bin/apt-get", "/lib/systemd/systemd", "/usr/sbin/sshd")
    with pytest.raises(ImageNotBootable, match="lacks tmux \\(installing is off\\)"):
        finalize_foreign(tmp_path, install=False)


def test_chroot_argv_keeps_proc_private() -> None:
    assert chroot_argv(Path("/b/tree"), ["apt-get", "update"]) == [
        "unshare", "--mount", "--pid", "--fork", "--uts", "--ipc", "--mount-proc=/b/tree/proc",
        "chroot", "/b/tree", "apt-get", "update",
    ]  # fmt: skip
    assert APT.install_argv(["tmux"]) == ["apt-get", "install", "-y", "--no-install-recommends",
                                          "tmux"]  # fmt: skip
