"""The lean systemd boot (issue #19 item 3): what finalize masks and what replaces udev.

The two guest scripts that do what banger needed from udev run here (under dash and
busybox sh, as in Debian and other images) against made-up sysfs and /dev trees:
``banger-virtio-ports`` makes the links udev's rule made, ``banger-power-button``
reads input events and starts poweroff.target (a stand-in ``systemctl`` records its
argv). A real guest runs both in tests/integration/test_qemu_guest.py (the ACPI
button powers the systemd guest off) and the agent e2e tests (qemu-ga answers).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from banger.images import finalize, leanboot
from banger.images.finalize import finalize_tree
from tests.image_trees import usrmerged_tree

SHELLS = [sh for sh in ("/bin/sh", shutil.which("busybox")) if sh is not None]
EV_SYN, EV_KEY, KEY_A, KEY_POWER = 0, 1, 30, 116


def event(kind: int, code: int, value: int) -> bytes:
    """A ``struct input_event`` as a 64-bit kernel writes it (timeval, type, code, value)."""
    return struct.pack("<qqHHi", 1765000000, 123456, kind, code, value)


def run(tmp_path: Path, shell: str, script: str, stub: Path | None = None) -> None:
    path = tmp_path / "script"
    path.write_text(script)
    argv = [shell, "sh", str(path)] if shell.endswith("busybox") else [shell, str(path)]
    env = {
        "PATH": f"{stub}:{os.environ['PATH']}" if stub else os.environ["PATH"],
        "BANGER_SYSFS": str(tmp_path / "sys"),
        "BANGER_DEV": str(tmp_path / "dev"),
    }
    done = subprocess.run(argv, env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


def fake_systemctl(tmp_path: Path) -> tuple[Path, Path]:
    """A directory holding a ``systemctl`` that appends its argv to the returned file."""
    stub, calls = tmp_path / "stub", tmp_path / "calls"
    stub.mkdir()
    (stub / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (stub / "systemctl").chmod(0o755)
    return stub, calls


def input_device(tmp_path: Path, event_name: str, name: str, events: bytes) -> None:
    sys_dir = tmp_path / "sys/class/input" / event_name / "device"
    sys_dir.mkdir(parents=True)
    (sys_dir / "name").write_text(name + "\n")
    dev = tmp_path / "dev/input"
    dev.mkdir(parents=True, exist_ok=True)
    (dev / event_name).write_bytes(events)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_power_button_press_starts_poweroff(tmp_path: Path, shell: str) -> None:
    stub, calls = fake_systemctl(tmp_path)
    # Another key first, then the press; the release after it is never read.
    pressed = event(EV_KEY, KEY_A, 1) + event(EV_SYN, 0, 0) + event(EV_KEY, KEY_POWER, 1)
    input_device(tmp_path, "event2", "Power Button", pressed + event(EV_KEY, KEY_POWER, 0))
    run(tmp_path, shell, leanboot.power_button_text(), stub)
    assert calls.read_text() == (
        "start --no-block --job-mode=replace-irreversibly poweroff.target\n"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_other_devices_keys_and_torn_reads_power_nothing_off(tmp_path: Path, shell: str) -> None:
    stub, calls = fake_systemctl(tmp_path)
    # A keyboard's power key is not the ACPI button; a release is not a press; a
    # short read (not an input device) ends the watch instead of spinning.
    input_device(tmp_path, "event0", "AT Translated Set 2 keyboard", event(EV_KEY, KEY_POWER, 1))
    released = event(EV_KEY, KEY_POWER, 0) + event(EV_SYN, 0, 0) + b"torn"
    input_device(tmp_path, "event1", "Power Button", released)
    run(tmp_path, shell, leanboot.power_button_text(), stub)
    assert not calls.exists()
    # No input devices at all (a VMM without ACPI): nothing to watch.
    shutil.rmtree(tmp_path / "sys")
    (tmp_path / "sys").mkdir()
    run(tmp_path, shell, leanboot.power_button_text(), stub)
    assert not calls.exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_virtio_port_links_are_udevs(tmp_path: Path, shell: str) -> None:
    ports = tmp_path / "sys/class/virtio-ports"
    for port, name in (
        ("vport1p1", "org.qemu.guest_agent.0"),
        ("vport2p1", "org.example.other"),
        ("vport2p2", "../escape"),  # the host's name, never a path out of the directory
        ("vport3p1", ""),
    ):
        (ports / port).mkdir(parents=True)
        (ports / port / "name").write_text(name + "\n")
    (tmp_path / "dev").mkdir()
    run(tmp_path, shell, leanboot.virtio_ports_text())
    links = tmp_path / "dev/virtio-ports"
    assert {p.name: os.readlink(p) for p in links.iterdir()} == {
        "org.qemu.guest_agent.0": "../vport1p1",
        "org.example.other": "../vport2p1",
    }
    assert not (tmp_path / "escape").exists()
    # Again at the next boot of the same /dev (or twice): the same links, no error.
    run(tmp_path, shell, leanboot.virtio_ports_text())
    assert sorted(p.name for p in links.iterdir()) == [
        "org.example.other",
        "org.qemu.guest_agent.0",
    ]


def test_no_ports_no_directory(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    run(tmp_path, "/bin/sh", leanboot.virtio_ports_text())
    assert list((tmp_path / "dev").iterdir()) == []


def test_the_agent_unit_starts_from_the_link_not_from_udev() -> None:
    unit = leanboot.QEMU_GA_SERVICE
    assert "BindsTo" not in unit and ".device" not in unit
    assert "ConditionPathExists=/dev/virtio-ports/org.qemu.guest_agent.0\n" in unit
    assert f"After={leanboot.VIRTIO_PORTS_UNIT}\n" in unit
    # After basic.target like the package's (no DefaultDependencies=no): it answers
    # before SSH does, so bangerd records the agent as seen.
    assert "DefaultDependencies" not in unit
    assert "Before=qemu-guest-agent.service" in leanboot.VIRTIO_PORTS_SERVICE
    assert "After=ssh.service\n" in leanboot.POWER_BUTTON_SERVICE


def test_every_mask_says_why() -> None:
    for table in (leanboot.MASKED_UNITS, leanboot.MASKED_GENERATORS):
        assert all(reason.strip() for reason in table.values())
    udev = {u for u in leanboot.MASKED_UNITS if "udev" in u}
    # The sockets too: a kernel event on systemd-udevd-kernel.socket would start udevd.
    assert udev == {
        "systemd-udevd.service",
        "systemd-udevd-control.socket",
        "systemd-udevd-kernel.socket",
        "systemd-udev-trigger.service",
        "systemd-udev-settle.service",
    }


@pytest.mark.root
def test_finalize_applies_the_lean_boot(tmp_path: Path) -> None:
    tree = usrmerged_tree(tmp_path, "usr/lib/systemd/system/multi-user.target.wants")
    (tree / "lib").symlink_to("usr/lib")
    vendor_wants = tree / "usr/lib/systemd/system/multi-user.target.wants"
    for unit in ("dbus.service", "systemd-logind.service", "getty.target"):
        (vendor_wants / unit).symlink_to(f"../{unit}")
    (tree / "usr/lib/systemd/system/ssh.service").write_text(DEBIAN_SSH_SERVICE)
    finalize_tree(tree, home_out=tmp_path / "home")

    system = tree / "etc/systemd/system"
    for unit in leanboot.MASKED_UNITS:
        assert os.readlink(system / unit) == "/dev/null", unit
    for generator in leanboot.MASKED_GENERATORS:
        assert os.readlink(tree / "etc/systemd/system-generators" / generator) == "/dev/null"
    # logind and dbus are not started at boot; the rest of the vendor's wants stay.
    assert sorted(p.name for p in vendor_wants.iterdir()) == ["getty.target"]
    journald = tree / "etc/systemd/journald.conf.d/10-banger.conf"
    assert "[Journal]\nStorage=volatile\n" in journald.read_text()
    tmpfiles = tree / "etc/systemd/system/systemd-tmpfiles-setup.service.d/10-banger.conf"
    assert "ExecStart=\nExecStart=systemd-tmpfiles --create --remove --boot\n" in (
        tmpfiles.read_text()
    )
    for path, text in (
        (leanboot.VIRTIO_PORTS_PATH, leanboot.virtio_ports_text()),
        (leanboot.POWER_BUTTON_PATH, leanboot.power_button_text()),
    ):
        script = tree / path.lstrip("/")
        assert script.read_text() == text and script.stat().st_mode & 0o777 == 0o755
    for unit, text, target in (
        (leanboot.VIRTIO_PORTS_UNIT, leanboot.VIRTIO_PORTS_SERVICE, "sysinit.target"),
        (leanboot.QEMU_GA_UNIT, leanboot.QEMU_GA_SERVICE, "multi-user.target"),
        (leanboot.POWER_BUTTON_UNIT, leanboot.POWER_BUTTON_SERVICE, "multi-user.target"),
    ):
        assert (system / unit).read_text() == text
        assert os.readlink(system / f"{target}.wants" / unit) == f"/etc/systemd/system/{unit}"
    # sshd's vendor unit in the tree gets the same ExecStart with -r (no re-exec)
    dropin = system / "ssh.service.d" / finalize.SSH_NO_REEXEC_DROPIN
    assert dropin.read_text().endswith(
        "[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -r $SSHD_OPTS\n"
    )
    assert not (system / "sshd.service.d" / finalize.SSH_NO_REEXEC_DROPIN).exists()


def test_the_vsock_agent_starter_is_skipped_on_a_qemu_guest() -> None:
    """Where the agent's virtio-serial link exists (QEMU), systemd skips the vsock
    starter by its condition instead of running the script to find out."""
    unit = finalize.AGENT_VSOCK_SERVICE
    assert "ConditionPathExists=!/dev/virtio-ports/org.qemu.guest_agent.0\n" in unit
    assert f"After={leanboot.VIRTIO_PORTS_UNIT}\n" in unit


DEBIAN_SSH_SERVICE = """[Unit]
Description=OpenBSD Secure Shell server

[Service]
EnvironmentFile=-/etc/default/ssh
ExecStartPre=/usr/sbin/sshd -t
ExecStart=/usr/sbin/sshd -D $SSHD_OPTS
ExecReload=/usr/sbin/sshd -t
ExecReload=/bin/kill -HUP $MAINPID
Type=notify
"""


@pytest.mark.parametrize(
    ("unit", "exec_start", "expected"),
    [
        # Debian/Ubuntu's ssh.service, Fedora's sshd.service: -r right after -D
        ("ssh.service", None, "/usr/sbin/sshd -D -r $SSHD_OPTS"),
        ("sshd.service", "ExecStart=/usr/sbin/sshd -D $OPTIONS", "/usr/sbin/sshd -D -r $OPTIONS"),
        ("sshd.service", "ExecStart=-/usr/bin/sshd -D", "-/usr/bin/sshd -D -r"),
        # left as the image has it: already -r, not in the foreground, not sshd
        ("sshd.service", "ExecStart=/usr/sbin/sshd -D -r", None),
        ("sshd.service", "ExecStart=/usr/sbin/sshd -i", None),
        ("sshd.service", "ExecStart=/usr/sbin/sshd -Dx", None),
        ("sshd.service", "ExecStart=/opt/wrapper /usr/sbin/sshd -D", None),
    ],
)
def test_sshd_runs_without_reexec_under_systemd(
    tmp_path: Path, unit: str, exec_start: str | None, expected: str | None
) -> None:
    tree = usrmerged_tree(tmp_path, "usr/lib/systemd/system")
    (tree / "lib").symlink_to("usr/lib")
    text = DEBIAN_SSH_SERVICE
    if exec_start is not None:
        text = text.replace("ExecStart=/usr/sbin/sshd -D $SSHD_OPTS", exec_start)
    (tree / "lib/systemd/system" / unit).write_text(text)
    assert finalize._vendor_sshd_exec_start(tree, unit) == expected
    other = "sshd.service" if unit == "ssh.service" else "ssh.service"
    assert finalize._vendor_sshd_exec_start(tree, other) is None  # no such unit


def test_a_unit_with_two_exec_starts_is_left_alone(tmp_path: Path) -> None:
    tree = usrmerged_tree(tmp_path, "usr/lib/systemd/system")
    text = DEBIAN_SSH_SERVICE + "ExecStart=/usr/sbin/sshd -D -f /etc/other\n"
    (tree / "usr/lib/systemd/system/ssh.service").write_text(text)
    assert finalize._vendor_sshd_exec_start(tree, "ssh.service") is None
