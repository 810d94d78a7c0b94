"""A lean systemd boot: the units finalize masks, replaces and adds in every image.

Under software emulation every program a boot runs costs ~0.3-0.5 s of emulated CPU
(exec, dynamic linking, translating code never run before), and a systemd guest ran
dozens before sshd. What is left is what a disposable microVM uses; each entry below
says why the rest goes. Measured on the microVM kernel under TCG, 2 vCPUs (issue #19
item 3, numbers in the commit messages): the first SSH answer from ~9-12 s to ~5-6 s.

The largest single cost was udev: ``systemd-udevd`` and its coldplug
(``systemd-udev-trigger``: an event for every device the kernel made, ~500 with a
kernel built with legacy PTYs), and every device unit systemd makes from them. A
banger guest has no hotplug (disks and NICs are fixed at launch), names its disks by
kernel name (``/dev/vda``, ``/dev/vdb``) and its NIC ``eth0`` (``net.ifnames=0``), and
its rootfs holds no kernel modules for udev to load. What udev did that banger needs
is done by two small units instead: the ``/dev/virtio-ports/<name>`` link the QEMU
guest agent opens (``banger-virtio-ports``, and ``qemu-guest-agent.service`` replaced
by one that starts from that link, not from udev's device unit), and the ACPI power
button (``banger-power-button``: logind finds buttons only through udev).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from banger.images import treepath

#: Units masked in every image, and why (each costs boot time or CPU under
#: emulation and does nothing useful in a disposable VM).
MASKED_UNITS = {
    # Daily apt list downloads and unattended upgrades: the guest may have no
    # route out, and a background apt holds the dpkg lock the user wants.
    "apt-daily.timer": "background apt downloads",
    "apt-daily-upgrade.timer": "background upgrades",
    # e2fsprogs' scrubber works on LVM snapshots; a guest's disks are plain
    # virtio-blk, so the weekly timer and the boot-time reaper (an lvs run on
    # every boot) find nothing to do.
    "e2scrub_all.timer": "weekly ext4 scrub of LVM volumes (there are none)",
    "e2scrub_reap.service": "boot-time cleanup of e2scrub's LVM snapshots",
    # Weekly TRIM and dpkg database backups: housekeeping for long-lived machines.
    "fstrim.timer": "weekly TRIM",
    "dpkg-db-backup.timer": "daily dpkg database backup",
    # The serial console is a log file banger reads (QEMU's chardev, Firecracker's
    # serial output; `vm console` prints it): nobody can type at a login prompt
    # there, and agetty's start is CPU the boot's tail would otherwise spend on sshd.
    "serial-getty@ttyS0.service": "a login prompt on a console nobody can type at",
    # The rootfs holds no kernel modules (banger's kernels come with their module
    # set in banger's initramfs, or have none: kernel build's) and distro images no
    # kmod: each modprobe@ instance (six at boot: configfs, dm_mod, drm, efi_pstore,
    # fuse, loop) and the modules-load pass only fail, at ~0.4 s of emulated CPU each.
    "modprobe@.service": "module loads from a rootfs that holds no kernel modules",
    "systemd-modules-load.service": "modules-load.d loads from a rootfs with no modules",
    # udev (see the module docstring): no hotplug, kernel names for disks and eth0,
    # no modules to load; its coldplug and device units were the largest part of
    # the boot. The agent's port link and the power button have banger's units.
    "systemd-udevd.service": "the device manager: no hotplug in a banger VM",
    "systemd-udevd-control.socket": "udevd's control socket",
    "systemd-udevd-kernel.socket": "udevd's kernel event socket (it would start udevd)",
    "systemd-udev-trigger.service": "udev's coldplug of every device the kernel made",
    "systemd-udev-settle.service": "waits for udev's queue (no udev)",
    # journald keeps the journal in /run (JOURNALD_DROPIN): nothing to flush to
    # /var/log/journal, a write of the whole boot's journal on the way to sysinit.
    "systemd-journal-flush.service": "moving the journal to disk (it stays in /run)",
    # Registers binfmt.d formats at boot: Debian's only one runs .pyc files directly.
    # Formats a user registers (qemu-user-static) need `systemctl unmask systemd-binfmt`.
    "systemd-binfmt.service": "binfmt.d registrations (Debian's only one: python3 .pyc)",
    # Every VM boots a copy of the image's disk, so a saved seed is the image's (or
    # none), the same in every clone; the kernel seeds itself (RDRAND, trusted in
    # banger's kernels; jitter), and restored snapshots are reseeded by banger.
    "systemd-random-seed.service": "a seed file every clone of the image shares",
    # Boot and runlevel records in utmp/wtmp (`who -b`, `last reboot`, `runlevel`);
    # sshd records logins itself, and invoke-rc.d takes "past sysinit" as runlevel 5
    # under systemd without them.
    "systemd-update-utmp.service": "boot/shutdown records in wtmp",
    "systemd-update-utmp-runlevel.service": "runlevel records in utmp",
    # The kernel mounts the root read-write (`rw` on banger's command line) with the
    # options banger's /etc/fstab lists: the remount repeated them (two program runs).
    "systemd-remount-fs.service": "a remount of / with the options it already has",
    # POSIX message queues work without it (mq_open is a system call); the mount
    # only lists them under /dev/mqueue.
    "dev-mqueue.mount": "a listing of POSIX message queues",
    # Its one run is folded into systemd-tmpfiles-setup (TMPFILES_DROPIN): the two
    # runs are split so udevd, started between them, finds the static nodes.
    "systemd-tmpfiles-setup-dev.service": "/dev's tmpfiles entries (done by tmpfiles-setup)",
    # SysV compatibility and password prompts: each is a unit systemd loads and
    # starts before sshd (PID 1 itself is the largest CPU user of the boot under
    # emulation), for something a banger VM never does. /dev/initctl is the SysV
    # `telinit` FIFO (systemd's own shutdown/telinit use D-Bus); fsckd shows the
    # progress of boot-time fscks (none: the root is mounted rw, the work disk by
    # banger-workdisk); the ask-password watchers serve cryptsetup prompts (no
    # encrypted disks) on a console nobody types at.
    "systemd-initctl.socket": "the SysV /dev/initctl FIFO (systemctl uses D-Bus)",
    "systemd-fsckd.socket": "progress of boot-time fscks (a banger VM runs none)",
    "systemd-ask-password-console.path": "password prompts on the console (no encrypted disks)",
    "systemd-ask-password-wall.path": "password prompts forwarded to wall (none)",
}

#: Generators masked (``/etc/systemd/system-generators/NAME`` -> /dev/null): systemd
#: runs every generator before it loads a unit, ~0.4-0.5 s of guest time for these.
MASKED_GENERATORS = {
    "systemd-cryptsetup-generator": "/etc/crypttab (a banger VM has no encrypted disks)",
    "systemd-integritysetup-generator": "/etc/integritytab (none)",
    "systemd-veritysetup-generator": "/etc/veritytab and verity roots (none)",
    "systemd-gpt-auto-generator": "GPT partition discovery (root= is given; no partitions)",
    "systemd-hibernate-resume-generator": "resume= from hibernation (no swap, no resume)",
    "systemd-getty-generator": "gettys for consoles (the serial getty is masked; no VT)",
    "systemd-system-update-generator": "offline updates via /system-update (none)",
    # These two read only the kernel command line (systemd.run=, systemd.mask=,
    # systemd.wants=, systemd.debug_shell), which is banger's own and has none of them.
    "systemd-run-generator": "systemd.run= on the kernel command line (banger's has none)",
    "systemd-debug-generator": "systemd.mask=/wants=/debug_shell on the command line (none)",
}

#: Wants-links removed. A login on tty1 needs a display the VM does not have (the
#: console is ttyS0). logind and dbus are not started at boot: logind's jobs there are
#: seats, sessions (distro images have no pam_systemd) and power keys (it finds them
#: only through udev, which is masked); both stay activatable (dbus.socket, and bus
#: activation of org.freedesktop.login1 for loginctl, hostnamectl, `systemctl poweroff`).
REMOVED_WANTS = (
    "/etc/systemd/system/getty.target.wants/getty@tty1.service",
    "/lib/systemd/system/multi-user.target.wants/systemd-logind.service",
    "/lib/systemd/system/multi-user.target.wants/dbus.service",
)

#: systemd-logind (seats, loginctl) after sshd, not beside it, when something starts
#: it at boot after all (an image whose packages re-add its wants-link).
LOGIND_DROPIN_PATH = "/etc/systemd/system/systemd-logind.service.d/10-banger.conf"
LOGIND_DROPIN = (
    "# banger: after sshd, so the first login does not share the CPU with its start.\n"
    "[Unit]\n"
    "After=ssh.service\n"
)
#: The journal in /run only: a VM is disposable, its boot messages are on the console
#: log bangerd keeps (`vm logs`); `journalctl -b -1` after a restart has nothing.
JOURNALD_DROPIN_PATH = "/etc/systemd/journald.conf.d/10-banger.conf"
JOURNALD_DROPIN = (
    "# banger: the journal in /run only (no flush to /var/log/journal at every boot);\n"
    "# the boot's messages are also on the console log banger keeps (vm logs).\n"
    "[Journal]\n"
    "Storage=volatile\n"
)
#: One systemd-tmpfiles run instead of two (systemd-tmpfiles-setup-dev is masked).
TMPFILES_DROPIN_PATH = "/etc/systemd/system/systemd-tmpfiles-setup.service.d/10-banger.conf"
TMPFILES_DROPIN = (
    "# banger: /dev's entries too, in the same run (systemd-tmpfiles-setup-dev is masked:\n"
    "# it ran apart only so that udevd, which banger's images do not run, found them).\n"
    "[Service]\n"
    "ExecStart=\n"
    "ExecStart=systemd-tmpfiles --create --remove --boot\n"
)

VIRTIO_PORTS_PATH = "/sbin/banger-virtio-ports"
VIRTIO_PORTS_UNIT = "banger-virtio-ports.service"
VIRTIO_PORTS_SERVICE = (
    "# banger: /dev/virtio-ports/<name> links, as udev's rule makes them (no udev here).\n"
    "[Unit]\n"
    "Description=virtio-serial port links (banger)\n"
    "DefaultDependencies=no\n"
    "Before=qemu-guest-agent.service shutdown.target\n"
    "Conflicts=shutdown.target\n"
    "\n"
    "[Service]\n"
    "Type=oneshot\n"
    "RemainAfterExit=yes\n"
    f"ExecStart={VIRTIO_PORTS_PATH}\n"
    "\n"
    "[Install]\n"
    "WantedBy=sysinit.target\n"
)
#: Replaces the package's unit, which is bound to udev's device unit for the port
#: (``BindsTo=dev-virtio\\x2dports-org.qemu.guest_agent.0.device``, started by udev's
#: rule): without udev that device never appears. This one starts from the link
#: banger-virtio-ports made, after basic.target like the package's, and is skipped
#: where the VM has no agent port (Firecracker: banger-agent-vsock) or no qemu-ga.
QEMU_GA_UNIT = "qemu-guest-agent.service"
QEMU_GA_SERVICE = (
    "# banger: the package's unit waits for udev's device unit for the port; banger's\n"
    "# images run no udev, so this starts from the link banger-virtio-ports makes.\n"
    "[Unit]\n"
    "Description=QEMU Guest Agent\n"
    f"Wants={VIRTIO_PORTS_UNIT}\n"
    f"After={VIRTIO_PORTS_UNIT}\n"
    "ConditionPathExists=/usr/sbin/qemu-ga\n"
    "ConditionPathExists=/dev/virtio-ports/org.qemu.guest_agent.0\n"
    "\n"
    "[Service]\n"
    "ExecStart=-/usr/sbin/qemu-ga\n"
    "Restart=always\n"
    "RestartSec=0\n"
    "\n"
    "[Install]\n"
    "WantedBy=multi-user.target\n"
)
POWER_BUTTON_PATH = "/sbin/banger-power-button"
POWER_BUTTON_UNIT = "banger-power-button.service"
POWER_BUTTON_SERVICE = (
    "# banger: the ACPI power button powers off (logind finds it only through udev).\n"
    "[Unit]\n"
    "Description=ACPI power button powers off (banger)\n"
    # Not beside sshd's start: the first login should not share the CPU with it.
    "After=ssh.service\n"
    "\n"
    "[Service]\n"
    f"ExecStart={POWER_BUTTON_PATH}\n"
    "\n"
    "[Install]\n"
    "WantedBy=multi-user.target\n"
)


def virtio_ports_text() -> str:
    """The text of ``/sbin/banger-virtio-ports`` (shipped as package data)."""
    return (resources.files("banger.images") / "banger-virtio-ports.sh").read_text()


def power_button_text() -> str:
    """The text of ``/sbin/banger-power-button`` (shipped as package data)."""
    return (resources.files("banger.images") / "banger-power-button.sh").read_text()


def configure_units(tree: Path) -> None:
    """Mask, remove, replace and add what the lean boot above says, in ``tree``."""
    for unit in MASKED_UNITS:
        treepath.symlink(tree, f"/etc/systemd/system/{unit}", "/dev/null")
        treepath.remove(tree, f"/etc/systemd/system/timers.target.wants/{unit}")
    for generator in MASKED_GENERATORS:
        treepath.symlink(tree, f"/etc/systemd/system-generators/{generator}", "/dev/null")
    for wants in REMOVED_WANTS:
        treepath.remove(tree, wants)
    treepath.write_file(tree, LOGIND_DROPIN_PATH, LOGIND_DROPIN)
    treepath.write_file(tree, JOURNALD_DROPIN_PATH, JOURNALD_DROPIN)
    treepath.write_file(tree, TMPFILES_DROPIN_PATH, TMPFILES_DROPIN)
    install_unit(
        tree,
        VIRTIO_PORTS_UNIT,
        VIRTIO_PORTS_SERVICE,
        "sysinit.target",
        (VIRTIO_PORTS_PATH, virtio_ports_text()),
    )
    install_unit(tree, QEMU_GA_UNIT, QEMU_GA_SERVICE, "multi-user.target")
    install_unit(
        tree,
        POWER_BUTTON_UNIT,
        POWER_BUTTON_SERVICE,
        "multi-user.target",
        (POWER_BUTTON_PATH, power_button_text()),
    )


def install_unit(
    tree: Path,
    unit_name: str,
    unit_text: str,
    wanted_by: str,
    script: tuple[str, str] | None = None,
) -> None:
    """A unit (and the script it runs), enabled as ``systemctl enable`` would."""
    if script is not None:
        treepath.write_file(tree, script[0], script[1], 0o755)
    unit = f"/etc/systemd/system/{unit_name}"
    treepath.write_file(tree, unit, unit_text)
    treepath.symlink(tree, f"/etc/systemd/system/{wanted_by}.wants/{unit_name}", unit)
