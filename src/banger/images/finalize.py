"""Finalize: make any root tree a banger guest (the image side of the boot contract).

Applied to every image tree however it was obtained (distro build, registered
directory or tarball, OCI pull), as plain file operations on a directory, so
it runs as root in banger-helper or in the tests. Every path is resolved
inside the tree (:mod:`banger.images.treepath`): a symlink in a foreign image
never makes root write on the host.

What a finalized tree has (see docs/ARCHITECTURE.md, "Guest boot contract"):

- sshd drop-ins: the hardened ``10-banger.conf`` and ``20-banger-hostkey.conf``
  pointing at the per-VM host key on the work disk; the image's own
  ``/etc/ssh/ssh_host_*`` keys removed (every clone would share them). Debian's
  ssh.service never regenerates keys (only the package's postinst does), and
  its ``sshd -t`` pre-start passes once the work disk supplies the key, so
  ssh.service is ordered after ``banger-workdisk.service``. Where the image's
  ssh.service (or sshd.service) runs ``sshd -D``, a drop-in repeats that
  ``ExecStart`` with ``-r``: no re-exec per login, as under the fast init.
- ``/etc/fstab`` mounting the root disk only. The work disk (``/dev/vdb``) is
  mounted on ``/root`` by ``/sbin/banger-workdisk`` — the fast init runs it, and
  its enabled ``banger-workdisk.service`` under systemd, which ssh.service wants
  and follows — from the kernel's device node: an fstab mount waits for udev's
  coldplug (~5 s under emulation). A broken work disk still leaves a console.
- an empty ``/etc/hostname`` (mmdebstrap copies the *host's*), localhost-only
  ``/etc/hosts``, a plain ``/etc/resolv.conf``: the initramfs writes the
  guest's hostname and DNS server into them at every boot.
- ``/sbin/banger-resolv`` and its enabled ``banger-resolv.service``: for a
  kernel booted without the initramfs (``kernel build``'s, which applies
  ``ip=`` itself), ``/etc/resolv.conf`` from the DNS server the kernel lists in
  ``/proc/net/pnp`` and ``/etc/hostname`` from the hostname it set; the fast
  init runs it too. A no-op where that file is absent (the Debian kernel, whose
  initramfs wrote resolv.conf).
- an empty ``/etc/machine-id``: systemd generates one per guest at first boot.
- ``/sbin/banger-fast-init``, the PID 1 of the ``fast`` init mode, and
  ``/etc/banger-fast-init.fstab``, what it mounts in one ``mount -a``.
- ``/sbin/banger-agent-vsock`` and its enabled ``banger-agent-vsock.service``: the
  guest agent on vsock port 1024 for VMMs without a virtio-serial agent port
  (Firecracker); it does nothing on QEMU, whose qemu-ga starts as before (from
  its udev rule under systemd, from the fast init's port loop).
- ``/root`` an empty 0755 root:root mount point; its old content is handed
  back as the work seed's home skeleton.
- ``/etc/.updated`` and ``/var/.updated`` stamped with ``/usr``'s mtime, so
  systemd's ``ConditionNeedsUpdate=`` units (sysusers) do not run on every
  VM's first boot.
- the lean systemd boot of :mod:`banger.images.leanboot`: units and generators
  masked (udev among them), the journal in /run, and the small units that do what
  banger needed from udev (the agent's port link, the ACPI power button).
- ``/etc/banger-release``: JSON marker with the finalize version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from banger.errors import BangerError
from banger.images import leanboot, treepath

#: Bump when the finalized layout changes: images record it, and the test
#: image cache keys on it.
FINALIZE_VERSION = 1
INIT_MODES = ("systemd", "fast")
FAST_INIT_PATH = "/sbin/banger-fast-init"
#: What the fast init mounts after /proc, in one ``mount -a -T`` (one program run
#: instead of six under emulation); /dev is skipped where it is mounted already.
FAST_INIT_FSTAB_PATH = "/etc/banger-fast-init.fstab"
FAST_INIT_FSTAB = (
    "# banger: mounted by /sbin/banger-fast-init (mount -a -T), not by systemd\n"
    "sysfs /sys sysfs defaults 0 0\n"
    "devtmpfs /dev devtmpfs mode=755 0 0\n"
    "devpts /dev/pts devpts gid=5,mode=620,ptmxmode=666,X-mount.mkdir 0 0\n"
    "tmpfs /run tmpfs mode=755,nosuid,nodev 0 0\n"
    "tmpfs /dev/shm tmpfs mode=1777,nosuid,nodev,X-mount.mkdir 0 0\n"
    # sshd's privilege separation directory (it must exist, root's, not writable by
    # others): made by X-mount.mkdir instead of a mkdir run before sshd.
    "tmpfs /run/sshd tmpfs mode=755,size=4k,nosuid,nodev,noexec,X-mount.mkdir 0 0\n"
)
AGENT_VSOCK_PATH = "/sbin/banger-agent-vsock"
AGENT_VSOCK_UNIT = "banger-agent-vsock.service"
AGENT_VSOCK_SERVICE = (
    "# banger: the QEMU guest agent on vsock, where the VMM (Firecracker) gives the\n"
    "# guest a vsock device and no virtio-serial agent port; a no-op elsewhere.\n"
    "[Unit]\n"
    "Description=QEMU guest agent on vsock (banger)\n"
    "ConditionPathExists=/usr/sbin/qemu-ga\n"
    # Skipped, no shell run at all, where QEMU gave the virtio-serial agent port (its
    # link made by banger-virtio-ports): that port's qemu-ga is the channel there.
    "After=banger-virtio-ports.service\n"
    "ConditionPathExists=!/dev/virtio-ports/org.qemu.guest_agent.0\n"
    "\n"
    "[Service]\n"
    f"ExecStart={AGENT_VSOCK_PATH}\n"
    # The vsock transport may still be loading (a module udev loads): try again.
    "Restart=on-failure\n"
    "RestartSec=1\n"
    "\n"
    "[Install]\n"
    "WantedBy=multi-user.target\n"
)
RESOLV_PATH = "/sbin/banger-resolv"
RESOLV_UNIT = "banger-resolv.service"
RESOLV_SERVICE = (
    "# banger: /etc/resolv.conf from the DNS server in the kernel's ip=, and\n"
    "# /etc/hostname from the hostname it set, for a guest booted without banger's\n"
    "# initramfs (the kernel applied ip= itself and lists the server in\n"
    "# /proc/net/pnp); skipped where the kernel has no IP_PNP.\n"
    "[Unit]\n"
    "Description=resolv.conf from the kernel's ip= (banger)\n"
    "DefaultDependencies=no\n"
    "ConditionPathExists=/proc/net/pnp\n"
    # Early, before anything resolves: the root is mounted rw from the kernel's
    # command line on; the remount only keeps it so.
    "After=systemd-remount-fs.service\n"
    "Before=sysinit.target nss-lookup.target network-pre.target\n"
    "\n"
    "[Service]\n"
    "Type=oneshot\n"
    f"ExecStart={RESOLV_PATH}\n"
    "\n"
    "[Install]\n"
    "WantedBy=sysinit.target\n"
)
WORKDISK_PATH = "/sbin/banger-workdisk"
WORKDISK_UNIT = "banger-workdisk.service"
WORKDISK_SERVICE = (
    "# banger: the work disk on /root, mounted from the kernel's device node rather than\n"
    "# from /etc/fstab, whose mount would wait for udev's coldplug (seconds under\n"
    "# emulation) before sshd could read its host key there.\n"
    "[Unit]\n"
    "Description=the work disk on /root (banger)\n"
    "DefaultDependencies=no\n"
    "After=systemd-remount-fs.service\n"
    "Before=local-fs.target umount.target\n"
    "Conflicts=umount.target\n"
    "\n"
    "[Service]\n"
    "Type=oneshot\n"
    "RemainAfterExit=yes\n"
    f"ExecStart={WORKDISK_PATH}\n"
    "\n"
    "[Install]\n"
    "WantedBy=local-fs.target\n"
)
HOST_KEY_PATH = "/root/.banger/ssh_host_ed25519_key"

SSHD_HARDENING = (
    "PermitRootLogin prohibit-password\n"
    "PubkeyAuthentication yes\n"
    "PasswordAuthentication no\n"
    "KbdInteractiveAuthentication no\n"
    "AuthorizedKeysFile /root/.ssh/authorized_keys\n"
)
SSHD_HOSTKEY = f"HostKey {HOST_KEY_PATH}\n"
SSHD_INCLUDE = "Include /etc/ssh/sshd_config.d/*.conf\n"
SSH_UNIT_DROPIN = (
    "# banger: the host key lives on the work disk, which banger-workdisk mounts on /root.\n"
    "[Unit]\n"
    f"Wants={WORKDISK_UNIT}\n"
    f"After={WORKDISK_UNIT}\n"
    "\n"
    "# No 'sshd -t' before every start: under emulation it is a second sshd run\n"
    "# (~0.5 s) on the way to the first login, and a bad config fails the start anyway.\n"
    "[Service]\n"
    "ExecStartPre=\n"
)
FSTAB = (
    "# banger: the root disk; the work disk (/dev/vdb) is mounted on /root by\n"
    "# /sbin/banger-workdisk (banger-workdisk.service), not from here: a mount listed\n"
    "# here waits for udev's coldplug. See docs/ARCHITECTURE.md.\n"
    "/dev/vda / ext4 rw,relatime 0 1\n"
)
HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\t\tip6-allnodes\n"
    "ff02::2\t\tip6-allrouters\n"
)
RESOLV_CONF = (
    "# written at every boot from the kernel command line's ip= (by the banger\n"
    "# initramfs, or by /sbin/banger-resolv from /proc/net/pnp without one)\n"
)

#: Required files, by guest path, with what they are for (named in the error).
REQUIRED = {
    "/bin/sh": "a POSIX shell (/bin/sh)",
    "/usr/sbin/sshd": "the OpenSSH server (/usr/sbin/sshd)",
    "/usr/bin/tmux": "tmux (/usr/bin/tmux), for sessions",
}


class ImageNotBootable(BangerError):
    """The tree lacks something a banger guest cannot do without."""

    http_status = 400
    exit_code = 2


@dataclass(frozen=True)
class FinalizeResult:
    version: int
    removed_host_keys: tuple[str, ...]
    home_files: tuple[str, ...]


def fast_init_text() -> str:
    """The text of ``/sbin/banger-fast-init`` (shipped as package data)."""
    return (resources.files("banger.images") / "banger-fast-init.sh").read_text()


def agent_vsock_text() -> str:
    """The text of ``/sbin/banger-agent-vsock`` (shipped as package data)."""
    return (resources.files("banger.images") / "banger-agent-vsock.sh").read_text()


def resolv_text() -> str:
    """The text of ``/sbin/banger-resolv`` (shipped as package data)."""
    return (resources.files("banger.images") / "banger-resolv.sh").read_text()


def workdisk_text() -> str:
    """The text of ``/sbin/banger-workdisk`` (shipped as package data)."""
    return (resources.files("banger.images") / "banger-workdisk.sh").read_text()


def release_marker() -> str:
    return json.dumps({"finalize_version": FINALIZE_VERSION, "init_modes": list(INIT_MODES)}) + "\n"


def check_bootable(tree: Path) -> None:
    """Raise :class:`ImageNotBootable` naming everything missing."""
    if not tree.is_dir():
        raise ImageNotBootable(f"image tree {tree} is not a directory")
    missing = [what for path, what in REQUIRED.items() if not treepath.exists(tree, path)]
    if missing:
        raise ImageNotBootable(
            f"image at {tree} is missing {', '.join(missing)}",
            hint="install openssh-server and tmux in the image (e.g. apt-get install"
            " openssh-server tmux) and register it again",
        )


def finalize_tree(tree: Path, *, home_out: Path) -> FinalizeResult:
    """Finalize ``tree`` in place; the old ``/root`` content moves to ``home_out``.

    ``home_out`` must not exist; it is created (0755 root:root) holding the
    image's root home skeleton (``.bashrc``, ``.profile``, ...), or
    ``/etc/skel``'s when ``/root`` was empty (e.g. a tree finalized before).
    """
    check_bootable(tree)
    _configure_sshd(tree)
    removed = _remove_host_keys(tree)
    treepath.write_file(tree, "/etc/fstab", FSTAB)
    treepath.write_file(tree, "/etc/hostname", "")
    treepath.write_file(tree, "/etc/hosts", HOSTS)
    treepath.write_file(tree, "/etc/resolv.conf", RESOLV_CONF)
    treepath.write_file(tree, "/etc/machine-id", "", 0o444)
    leanboot.configure_units(tree)
    treepath.write_file(tree, FAST_INIT_PATH, fast_init_text(), 0o755)
    treepath.write_file(tree, FAST_INIT_FSTAB_PATH, FAST_INIT_FSTAB)
    _install_agent_vsock(tree)
    _install_resolv(tree)
    _install_workdisk(tree)
    _mark_updated(tree)
    home_files = _split_root_home(tree, home_out)
    treepath.write_file(tree, "/etc/banger-release", release_marker())
    return FinalizeResult(FINALIZE_VERSION, removed, home_files)


def _configure_sshd(tree: Path) -> None:
    treepath.make_dirs(tree, "/etc/ssh/sshd_config.d")
    treepath.write_file(tree, "/etc/ssh/sshd_config.d/10-banger.conf", SSHD_HARDENING)
    treepath.write_file(tree, "/etc/ssh/sshd_config.d/20-banger-hostkey.conf", SSHD_HOSTKEY)
    # Debian's sshd_config includes the drop-in directory; an image whose
    # main config does not would silently ignore both files.
    main = treepath.resolve(tree, "/etc/ssh/sshd_config")
    text = main.read_text() if treepath.is_regular_file(tree, "/etc/ssh/sshd_config") else ""
    if SSHD_INCLUDE.strip() not in text:
        treepath.write_file(tree, "/etc/ssh/sshd_config", SSHD_INCLUDE + text)
    for unit in ("ssh.service", "sshd.service"):
        treepath.write_file(tree, f"/etc/systemd/system/{unit}.d/10-banger.conf", SSH_UNIT_DROPIN)
        exec_start = _vendor_sshd_exec_start(tree, unit)
        if exec_start is not None:
            treepath.write_file(
                tree,
                f"/etc/systemd/system/{unit}.d/{SSH_NO_REEXEC_DROPIN}",
                SSH_NO_REEXEC_HEAD + f"ExecStart=\nExecStart={exec_start}\n",
            )
    _drop_pam_motd(tree)


#: Where distributions put their units (the first one holding the unit wins).
_VENDOR_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")
#: A unit's ``ExecStart=`` that runs sshd in the foreground: (prefix, program, rest).
_SSHD_EXEC_START = re.compile(r"^ExecStart=([-@:+!]*)(/\S*/sshd)[ \t]+-D(?=\s|$)(.*)$")
SSH_NO_REEXEC_DROPIN = "30-banger-no-reexec.conf"
SSH_NO_REEXEC_HEAD = (
    "# banger: sshd without its per-connection re-exec (-r), as under the fast init:\n"
    "# ~0.15 s less per login under emulation; each connection is a fork of the\n"
    "# listener and shares its address-space layout. See docs/SECURITY.md.\n"
    "[Service]\n"
)


def _vendor_sshd_exec_start(tree: Path, unit: str) -> str | None:
    """The image's own ``ExecStart`` of ``unit`` with ``-r`` after ``-D``, or None.

    None where the unit is not there, has more or less than one ``ExecStart``, runs
    sshd some other way, or already passes ``-r``: then the unit stays as it is.
    """
    for directory in _VENDOR_UNIT_DIRS:
        path = f"{directory}/{unit}"
        if treepath.is_regular_file(tree, path):
            text = treepath.resolve(tree, path).read_text(errors="replace")
            break
    else:
        return None
    starts = [line.strip() for line in text.splitlines() if line.strip().startswith("ExecStart=")]
    if len(starts) != 1 or (match := _SSHD_EXEC_START.match(starts[0])) is None:
        return None
    prefix, program, rest = match.groups()
    if "-r" in rest.split():
        return None
    return f"{prefix}{program} -D -r{rest}"


#: A ``pam_motd.so`` line of a PAM service file (not a comment).
_PAM_MOTD = re.compile(r"^\s*[^#\s].*(?:^|[\s/])pam_motd\.so(?:\s|$)")
PAM_MOTD_MARK = "# banger: no message of the day per SSH session (finalize): "


def _drop_pam_motd(tree: Path) -> None:
    """Turn off sshd's ``pam_motd`` lines: for every session — each of banger's commands
    over SSH included — it runs ``/etc/update-motd.d`` (a shell and ``uname`` on Debian, a
    dozen scripts on Ubuntu) to print a banner no program reads; ~0.3 s per login under
    TCG, in systemd guests and wherever the fast init keeps PAM. Commented out, marked,
    so ``sed -i 's/^# banger: [^:]*: //'`` brings them back."""
    if not treepath.is_regular_file(tree, "/etc/pam.d/sshd"):
        return
    text = treepath.resolve(tree, "/etc/pam.d/sshd").read_text()
    lines = [
        PAM_MOTD_MARK + line if _PAM_MOTD.match(line) else line
        for line in text.splitlines(keepends=True)
    ]
    if "".join(lines) != text:
        treepath.write_file(tree, "/etc/pam.d/sshd", "".join(lines))


def _remove_host_keys(tree: Path) -> tuple[str, ...]:
    ssh_dir = treepath.resolve(tree, "/etc/ssh")
    if not ssh_dir.is_dir():
        return ()
    removed = []
    for entry in sorted(ssh_dir.iterdir()):
        if entry.name.startswith("ssh_host_"):
            treepath.remove(tree, f"/etc/ssh/{entry.name}")
            removed.append(f"/etc/ssh/{entry.name}")
    return tuple(removed)


def _install_agent_vsock(tree: Path) -> None:
    """The vsock agent starter, run by the fast init itself and enabled under systemd."""
    _install_helper(
        tree,
        AGENT_VSOCK_PATH,
        agent_vsock_text(),
        AGENT_VSOCK_UNIT,
        AGENT_VSOCK_SERVICE,
        "multi-user.target",
    )


def _install_resolv(tree: Path) -> None:
    """resolv.conf from /proc/net/pnp: run by the fast init itself, enabled under systemd."""
    _install_helper(tree, RESOLV_PATH, resolv_text(), RESOLV_UNIT, RESOLV_SERVICE, "sysinit.target")


def _install_workdisk(tree: Path) -> None:
    """The work-disk mount: run by the fast init itself, enabled under systemd."""
    _install_helper(
        tree, WORKDISK_PATH, workdisk_text(), WORKDISK_UNIT, WORKDISK_SERVICE, "local-fs.target"
    )


def _install_helper(
    tree: Path, path: str, script: str, unit_name: str, unit_text: str, wanted_by: str
) -> None:
    """One of banger's guest scripts and its unit, enabled as ``systemctl enable`` would."""
    leanboot.install_unit(tree, unit_name, unit_text, wanted_by, (path, script))


def _mark_updated(tree: Path) -> None:
    """``/etc/.updated`` and ``/var/.updated`` as systemd-update-done writes them.

    Units with ``ConditionNeedsUpdate=`` (systemd-sysusers: 0.8-1.6 s of emulated
    CPU on the way to sshd; ldconfig, hwdb and catalog updates where enabled) run
    when ``/usr`` is newer than these stamps, and every VM boots a fresh copy of
    the image, so without them each VM redid work the image build already did
    (packages' postinst ran sysusers and ldconfig). Stamped with ``/usr``'s
    mtime, which is what systemd compares; an image whose ``/usr`` changes later
    (an apt install in the guest) is newer again and gets its update pass.
    """
    usr = treepath.resolve(tree, "/usr")
    if not usr.is_dir():
        return
    usr_ns = usr.stat().st_mtime_ns
    stamp = f"# This file was created by banger's image finalize.\nTIMESTAMP_NSEC={usr_ns}\n"
    for directory in ("/etc", "/var"):
        if not treepath.resolve(tree, directory).is_dir():
            continue
        written = treepath.write_file(tree, f"{directory}/.updated", stamp)
        os.utime(written, ns=(usr_ns, usr_ns), follow_symlinks=False)


def _split_root_home(tree: Path, home_out: Path) -> tuple[str, ...]:
    """Move ``/root``'s content to ``home_out``; leave ``/root`` empty, 0755 root:root."""
    home_out.mkdir(mode=0o755)
    os.chown(home_out, 0, 0)
    home_out.chmod(0o755)
    root_home = treepath.resolve(tree, "/root", follow_last=False)
    if root_home.is_dir() and not root_home.is_symlink():
        for entry in sorted(root_home.iterdir()):
            shutil.move(entry, home_out / entry.name)
    else:
        treepath.remove(tree, "/root")
    if not any(home_out.iterdir()):
        # Nothing to keep (a tree finalized before, or a bare image): start
        # from the image's /etc/skel.
        skel = treepath.resolve(tree, "/etc/skel")
        if skel.is_dir():
            for entry in sorted(skel.iterdir()):
                _copy_entry(entry, home_out / entry.name)
    root_home = treepath.make_dirs(tree, "/root", 0o755)
    os.chown(root_home, 0, 0)
    root_home.chmod(0o755)
    return tuple(sorted(p.name for p in home_out.iterdir()))


def _copy_entry(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)
