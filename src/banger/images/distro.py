"""Distro builds: a Debian root tree from a suite name, with mmdebstrap.

Why it runs as root, as one narrow helper operation: the tree must hold files
owned by other users (``/etc/shadow`` root:shadow, ``/var/mail`` root:mail),
setuid binaries and file capabilities, and package maintainer scripts run in a
chroot. So :func:`build_debian_rootfs` refuses to run without root, and its
arguments are easy to re-validate on the privileged side: a suite name that
matches a fixed pattern, a mirror URL, package names that match Debian's
package-name rule, and an output path inside banger's tmp directory (the
caller checks that). The daemon never runs it directly.

The command line is built by the pure :func:`mmdebstrap_argv` (tested without
the binary); :mod:`banger.images.tether` wraps it so that a killed helper
leaves no mmdebstrap running and nothing mounted. mmdebstrap's default
``cleanup`` hooks already drop the apt package lists and caches from the
tree; finalize is a separate Python step on the finished tree
(:mod:`banger.images.finalize`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from banger.errors import InvalidArgument
from banger.images.aptsources import check_mirror
from banger.images.common import Progress, no_progress, require_root
from banger.images.tether import STAGE_MOUNT_POINT, run_streaming_group

#: What every distro image gets on top of ``minbase``. kmod is left out on
#: purpose: banger's initramfs loads every module the guest needs, so the
#: rootfs holds no kernel modules. libnss-myhostname resolves the guest's own
#: hostname (the initramfs writes /etc/hostname but not /etc/hosts; sudo wants
#: its hostname to resolve). qemu-guest-agent is banger's control channel that
#: needs no network (clock after resume/restore, readiness); util-linux-extra
#: has the hwclock its guest-set-time runs. python3 because an agent sandbox
#: without it surprises people (scripts, the SDK's examples, pip in a venv).
DEFAULT_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "tmux",
    "iproute2",
    "iputils-ping",
    "procps",
    "ca-certificates",
    "git",
    "sudo",
    "less",
    "curl",
    "libnss-myhostname",
    "qemu-guest-agent",
    "util-linux-extra",
    "python3",
)

_SUITE_RE = re.compile(r"^[a-z]{2,32}$")
# Debian policy 5.6.1: lowercase letters, digits, + - . ; two or more, starting alnum.
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class DistroRef:
    distro: str
    suite: str

    def __str__(self) -> str:
        return f"{self.distro}:{self.suite}"

    @property
    def image_name(self) -> str:
        return f"{self.distro}-{self.suite}"


def parse_distro_ref(ref: str) -> DistroRef:
    """``debian:<suite>`` (a Debian codename or alias such as ``bookworm``, ``sid``)."""
    distro, sep, suite = ref.partition(":")
    if distro != "debian" or not sep:
        raise InvalidArgument(
            f"image ref {ref!r} is not a distro ref: expected debian:<suite>",
            hint="for example: banger image build debian:bookworm",
        )
    if not _SUITE_RE.fullmatch(suite):
        raise InvalidArgument(
            f"suite {suite!r} in image ref {ref!r} is invalid: a Debian suite is 2-32 lowercase"
            " letters",
            hint="for example: bookworm, trixie, sid, stable",
        )
    return DistroRef(distro, suite)


def check_packages(packages: Sequence[str]) -> tuple[str, ...]:
    bad = [p for p in packages if not _PACKAGE_RE.fullmatch(p)]
    if bad:
        raise InvalidArgument(
            f"package names are invalid: {', '.join(repr(p) for p in bad)}",
            hint="Debian package names use lowercase letters, digits, '+', '-', '.'",
        )
    return tuple(packages)


#: Suites whose util-linux still ships hwclock (util-linux-extra split it out in
#: bookworm): asking them for util-linux-extra would fail the whole build.
_HWCLOCK_IN_UTIL_LINUX = frozenset({"jessie", "stretch", "buster", "bullseye"})


def packages_for_suite(suite: str, packages: Sequence[str]) -> tuple[str, ...]:
    """``packages`` as ``suite`` can install them (util-linux-extra only where it exists)."""
    if suite in _HWCLOCK_IN_UTIL_LINUX:
        return tuple(p for p in packages if p != "util-linux-extra")
    return tuple(packages)


def mmdebstrap_argv(
    suite: str, out_dir: Path, *, mirror: str, packages: Sequence[str] = DEFAULT_PACKAGES
) -> list[str]:
    """The mmdebstrap command line for a minbase tree of ``suite`` in ``out_dir``."""
    if not _SUITE_RE.fullmatch(suite):
        raise InvalidArgument(f"suite {suite!r} is invalid: expected 2-32 lowercase letters")
    if not out_dir.is_absolute():
        raise InvalidArgument(f"build directory {out_dir} must be an absolute path")
    pkgs = check_packages(packages_for_suite(suite, packages))
    argv = [
        "mmdebstrap",
        # root mode: real ownership, device nodes and chroot for maintainer
        # scripts, no user namespaces needed (they are often disabled).
        "--mode=root",
        "--variant=minbase",
        "--format=directory",
        "--components=main",
    ]
    if pkgs:
        argv.append("--include=" + ",".join(pkgs))
    argv += [suite, str(out_dir), check_mirror(mirror)]
    return argv


def build_debian_rootfs(
    suite: str,
    out_dir: Path,
    *,
    mirror: str,
    packages: Sequence[str] = DEFAULT_PACKAGES,
    progress: Progress = no_progress,
) -> Path:
    """Build a Debian minbase tree in ``out_dir`` (which must not exist yet).

    Needs root (see the module docstring). mmdebstrap's stderr lines are
    passed to ``progress`` as they arrive. Returns ``out_dir``. mmdebstrap
    and everything it starts die with the calling process, and its mounts
    (/proc, /sys, /dev in the tree) are never in the host's mount table
    (:func:`banger.images.tether.group_dies_with_caller`).
    """
    require_root(f"building debian:{suite}")
    if out_dir.exists():
        raise InvalidArgument(f"build directory {out_dir} exists already")
    # mmdebstrap canonicalises its target. The build directory may be the
    # helper's root-only stage reached through /proc/<pid>/fd/<n>, whose
    # canonical path runs through the owner's directories: so mmdebstrap sees
    # the directory bound at a root-only mount point in its private mount
    # namespace, a path that is its own canonical form (banger.helper.bindexec).
    target = Path(STAGE_MOUNT_POINT) / out_dir.name
    argv = mmdebstrap_argv(suite, target, mirror=mirror, packages=packages)
    progress(f"building debian:{suite} from {mirror}")
    run_streaming_group(argv, progress, bind=(str(out_dir.parent), STAGE_MOUNT_POINT))
    return out_dir
