"""Make a foreign root tree (an OCI image, mostly) bootable as a banger guest.

A container image usually lacks what a VM needs: an init (systemd), an sshd,
and tmux for sessions. :func:`finalize_foreign` names what is missing and,
when the image has a package manager banger knows (apt, dnf, apk), installs
it inside the tree; otherwise it fails with the Dockerfile line that would
add it. The caller then runs the ordinary finalize (guest contract).

Root only, as one helper operation. The package manager runs as
``unshare --mount --pid --fork --uts --ipc --mount-proc=TREE/proc chroot
TREE ...``: the private mount namespace means ``/proc`` disappears with the
process (no mount can leak, even on a crash), and device nodes needed by
package scripts (``/dev/null`` & co.) are created only for the duration and
removed after. The host network is used to reach the image's own package
mirrors, with the host's ``resolv.conf`` (finalize rewrites it afterwards).

Trust: this runs the image's own ``apt-get``/``dnf``/``apk`` and maintainer
scripts as root on the host, inside a chroot, which is not a security
boundary against root. Pull images you would run anyway; images already
carrying systemd, sshd and tmux never reach this step.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from banger import proc
from banger.errors import CommandError
from banger.images import treepath
from banger.images.common import Progress, no_progress, require_root
from banger.images.finalize import ImageNotBootable

#: What a guest needs, by the paths that prove it is there.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "systemd": ("/lib/systemd/systemd", "/usr/lib/systemd/systemd"),
    "sshd": ("/usr/sbin/sshd",),
    "tmux": ("/usr/bin/tmux",),
}
SHELL = "/bin/sh"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSTALL_TIMEOUT = 1800.0
#: Device nodes package scripts expect (name, major, minor).
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))  # fmt: skip
POLICY_RC_D = "/usr/sbin/policy-rc.d"


@dataclass(frozen=True)
class PackageManager:
    name: str
    probe: str  # guest path of its binary
    install: tuple[str, ...]
    packages: dict[str, tuple[str, ...]]  # component → packages providing it
    update: tuple[str, ...] = ()
    cleanup: tuple[tuple[str, ...], ...] = ()
    distro: str = ""
    env: dict[str, str] = field(default_factory=dict)
    #: Installed after what is missing, when the manager runs anyway, but not
    #: required: the guest agent (readiness, clock sync). An image that cannot get it keeps
    #: working over SSH.
    extras: tuple[str, ...] = ("qemu-guest-agent",)

    def install_argv(self, components: Sequence[str]) -> list[str]:
        pkgs = [p for c in components for p in self.packages[c]]
        return [*self.install, *pkgs]


APT = PackageManager(
    name="apt",
    probe="/usr/bin/apt-get",
    update=("apt-get", "update"),
    install=("apt-get", "install", "-y", "--no-install-recommends"),
    packages={
        # udev and dbus: systemd boots without them, but degraded and slower.
        "systemd": ("systemd-sysv", "udev", "dbus"),
        "sshd": ("openssh-server",),
        "tmux": ("tmux",),
    },
    cleanup=(("apt-get", "clean"),),
    distro="Debian/Ubuntu",
    env={"DEBIAN_FRONTEND": "noninteractive"},
)
DNF = PackageManager(
    name="dnf",
    probe="/usr/bin/dnf",
    install=("dnf", "install", "-y", "--setopt=install_weak_deps=False"),
    packages={"systemd": ("systemd",), "sshd": ("openssh-server",), "tmux": ("tmux",)},
    cleanup=(("dnf", "clean", "all"),),
    distro="Fedora/RHEL",
)
#: Alpine has no systemd package: an apk image can get sshd and tmux, not init.
APK = PackageManager(
    name="apk",
    probe="/sbin/apk",
    install=("apk", "add", "--no-cache"),
    packages={"sshd": ("openssh-server",), "tmux": ("tmux",)},
    distro="Alpine",
)
PACKAGE_MANAGERS = (APT, DNF, APK)


def missing_components(tree: Path) -> list[str]:
    return [
        name
        for name, probes in COMPONENTS.items()
        if not any(treepath.exists(tree, probe) for probe in probes)
    ]


def detect_package_manager(tree: Path) -> PackageManager | None:
    for pm in PACKAGE_MANAGERS:
        if treepath.exists(tree, pm.probe):
            return pm
    return None


def dockerfile_hint(missing: Sequence[str]) -> str:
    """The Dockerfile lines that would add ``missing`` on the common distros."""
    apt = " ".join(APT.install_argv(missing))
    dnf = " ".join(DNF.install_argv(missing))
    return (
        f"add to the image's Dockerfile: 'RUN apt-get update && {apt}' (Debian/Ubuntu)"
        f" or 'RUN {dnf}' (Fedora); Alpine images cannot provide systemd"
    )


def chroot_argv(tree: Path, argv: Sequence[str]) -> list[str]:
    """Run ``argv`` chrooted in ``tree`` with a private /proc (see the module docstring)."""
    return ["unshare", "--mount", "--pid", "--fork", "--uts", "--ipc",
            f"--mount-proc={tree}/proc", "chroot", str(tree), *argv]  # fmt: skip


class _InstallEnvironment:
    """Temporary device nodes, resolv.conf and policy-rc.d for package installs."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        self.created: list[str] = []

    def __enter__(self) -> _InstallEnvironment:
        treepath.make_dirs(self.tree, "/proc", 0o555)
        dev = treepath.make_dirs(self.tree, "/dev", 0o755)
        for name, major, minor in DEVICES:
            if not os.path.lexists(dev / name):
                os.mknod(dev / name, stat.S_IFCHR | 0o666, os.makedev(major, minor))
                (dev / name).chmod(0o666)
                self.created.append(f"/dev/{name}")
        if not treepath.exists(self.tree, POLICY_RC_D):
            # Debian convention: maintainer scripts must not start services here.
            treepath.write_file(self.tree, POLICY_RC_D, "#!/bin/sh\nexit 101\n", 0o755)
            self.created.append(POLICY_RC_D)
        host_resolv = Path("/etc/resolv.conf")
        treepath.write_file(self.tree, "/etc/resolv.conf",
                            host_resolv.read_bytes() if host_resolv.exists() else b"")  # fmt: skip
        return self

    def __exit__(self, *_exc: object) -> None:
        for guest_path in self.created:
            treepath.remove(self.tree, guest_path)


def _install_extras(
    tree: Path, pm: PackageManager, env: dict[str, str], progress: Progress
) -> tuple[str, ...]:
    """Install ``pm.extras`` if the image's repositories have them; what was installed."""
    if not pm.extras:
        return ()
    argv = [*pm.install, *pm.extras]
    try:
        proc.run(chroot_argv(tree, argv), env=env, timeout=INSTALL_TIMEOUT)
    except CommandError as exc:
        first = exc.message.splitlines()[0] if exc.message else "failed"
        progress(
            f"not installed: {' '.join(pm.extras)} ({first}); the guest agent will be"
            " missing and the VM works over SSH only"
        )
        return ()
    return pm.extras


def finalize_foreign(
    tree: Path, *, progress: Progress = no_progress, install: bool = True
) -> tuple[str, ...]:
    """Install whatever of systemd/sshd/tmux ``tree`` lacks; returns the packages installed.

    Raises :class:`ImageNotBootable` naming what is missing and how to add it
    when it cannot be installed (no known package manager, Alpine's missing
    systemd, ``install=False``) or is still missing afterwards.
    """
    missing = missing_components(tree)
    if not missing:
        return ()
    what = ", ".join(missing)
    pm = detect_package_manager(tree)
    if pm is None or not install or not treepath.exists(tree, SHELL):
        reason = "no apt, dnf or apk to install them with" if install else "installing is off"
        raise ImageNotBootable(f"the image lacks {what} ({reason})", hint=dockerfile_hint(missing))
    unavailable = [c for c in missing if c not in pm.packages]
    if unavailable:
        raise ImageNotBootable(
            f"the image lacks {', '.join(unavailable)}, which {pm.name} ({pm.distro}) cannot"
            " provide",
            hint="use a Debian, Ubuntu or Fedora based image, or " + dockerfile_hint(missing),
        )
    require_root(f"installing {what} into the image")
    env = {"PATH": CHROOT_PATH, **pm.env}
    argv = pm.install_argv(missing)
    progress(f"installing {what} with {pm.name}: {' '.join(argv)}")
    with _InstallEnvironment(tree):
        if pm.update:
            proc.run(chroot_argv(tree, pm.update), env=env, timeout=INSTALL_TIMEOUT)
        proc.run(chroot_argv(tree, argv), env=env, timeout=INSTALL_TIMEOUT)
        extras = _install_extras(tree, pm, env, progress)
        for step in pm.cleanup:
            proc.run(chroot_argv(tree, step), env=env, timeout=INSTALL_TIMEOUT)
    if pm is APT:
        lists = treepath.resolve(tree, "/var/lib/apt/lists")
        if lists.is_dir():
            for entry in lists.iterdir():
                if entry.is_file() and not entry.is_symlink():
                    entry.unlink()
    packages = tuple(argv[len(pm.install) :]) + extras
    still = missing_components(tree)
    if still:
        raise ImageNotBootable(
            f"the image still lacks {', '.join(still)} after installing {' '.join(packages)}",
            hint=dockerfile_hint(still),
        )
    return packages
