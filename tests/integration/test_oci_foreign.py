"""Foreign finalize on a real Debian minbase tree: apt in a chroot installs what is missing.

The minbase tree (mmdebstrap, no systemd/sshd/tmux; ``tests.image_cache.cached_minbase``)
is built once through the host's Debian mirror and cached under
``/var/cache/banger-test/`` keyed by its inputs; each test works on a ``cp -a`` copy.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from banger.images import treepath
from banger.images.finalize import check_bootable, finalize_tree
from banger.images.foreign import (
    APT,
    CHROOT_PATH,
    _install_extras,
    _InstallEnvironment,
    finalize_foreign,
    missing_components,
)
from tests.image_cache import cached_minbase
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]


def test_minbase_gets_systemd_sshd_tmux_from_apt_and_finalizes(short_tmp: Path) -> None:
    tree = short_tmp / "tree"
    subprocess.run(["cp", "-a", "--no-target-directory", str(cached_minbase()), str(tree)],
                   check=True)  # fmt: skip
    assert missing_components(tree) == ["systemd", "sshd", "tmux"]
    lines: list[str] = []
    installed = finalize_foreign(tree, progress=lines.append)
    assert installed == (
        "systemd-sysv", "udev", "dbus", "openssh-server", "tmux", "qemu-guest-agent",
    )  # fmt: skip
    assert treepath.exists(tree, "/usr/sbin/qemu-ga")  # the guest agent (issue #18)
    # An extra the repositories lack is left out with one line; the finalize goes on.
    unknown = dataclasses.replace(APT, extras=("banger-no-such-package",))
    with _InstallEnvironment(tree):
        got = _install_extras(tree, unknown, {"PATH": CHROOT_PATH, **APT.env}, lines.append)
    assert got == ()
    assert any(line.startswith("not installed: banger-no-such-package") for line in lines)
    assert missing_components(tree) == []
    check_bootable(tree)
    # The temporary install environment is gone; no mount is left behind.
    assert not (tree / "usr/sbin/policy-rc.d").exists()
    assert list((tree / "var/lib/apt/lists").glob("*_Packages")) == []
    assert str(tree) not in Path("/proc/self/mountinfo").read_text()
    result = finalize_tree(tree, home_out=short_tmp / "home")
    assert result.removed_host_keys  # openssh-server's postinst generated them
    assert treepath.resolve(tree, "/sbin/init").name == "systemd"
