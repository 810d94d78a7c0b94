from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from banger.images import treepath
from banger.images.finalize import (
    FSTAB,
    PAM_MOTD_MARK,
    SSHD_HARDENING,
    WORKDISK_PATH,
    ImageNotBootable,
    fast_init_text,
    finalize_tree,
    workdisk_text,
)
from banger.images.workseed import prepare_home
from tests.image_trees import usrmerged_tree

pytestmark = pytest.mark.root


def make_tree(root: Path) -> Path:
    """A tiny usrmerged root tree with fake binaries and the traps of real ones."""
    tree = usrmerged_tree(root, "etc/skel", "root/.ssh", "run", "var")
    (tree / "etc/ssh/sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n")
    for key in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key"):
        (tree / "etc/ssh" / key).write_text("shared key\n")
    (tree / "etc/hostname").write_text("buildhost\n")
    (tree / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    (tree / "root/.bashrc").write_text("# bashrc\n")
    (tree / "root/.profile").write_text("# profile\n")
    (tree / "root/.ssh/authorized_keys").write_text("ssh-ed25519 AAAA image-builder\n")
    (tree / "root").chmod(0o700)
    (tree / "etc/skel/.bashrc").write_text("# skel\n")
    wants = tree / "etc/systemd/system/timers.target.wants"
    wants.mkdir(parents=True)
    (wants / "apt-daily.timer").symlink_to("/lib/systemd/system/apt-daily.timer")
    getty = tree / "etc/systemd/system/getty.target.wants"
    getty.mkdir()
    (getty / "getty@tty1.service").symlink_to("/lib/systemd/system/getty@.service")
    return tree


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_finalize_writes_the_guest_contract(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    result = finalize_tree(tree, home_out=tmp_path / "home")

    dropins = tree / "etc/ssh/sshd_config.d"
    assert (dropins / "10-banger.conf").read_text() == (
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "AuthorizedKeysFile /root/.ssh/authorized_keys\n"
    )
    assert (dropins / "10-banger.conf").read_text() == SSHD_HARDENING
    assert (dropins / "20-banger-hostkey.conf").read_text() == (
        "HostKey /root/.banger/ssh_host_ed25519_key\n"
    )
    assert mode(dropins / "10-banger.conf") == 0o644
    assert sorted(p.name for p in (tree / "etc/ssh").glob("ssh_host_*")) == []
    assert len(result.removed_host_keys) == 3
    # The Include already there is not duplicated.
    assert (tree / "etc/ssh/sshd_config").read_text().count("Include") == 1
    unit = tree / "etc/systemd/system/ssh.service.d/10-banger.conf"
    assert "Wants=banger-workdisk.service\nAfter=banger-workdisk.service\n" in unit.read_text()
    assert "RequiresMountsFor" not in unit.read_text()  # it waited for udev's coldplug
    assert "[Service]\nExecStartPre=\n" in unit.read_text()  # no second sshd run per boot
    usr_ns = (tree / "usr").stat().st_mtime_ns
    for stamp in (tree / "etc/.updated", tree / "var/.updated"):
        # As systemd-update-done writes it: ConditionNeedsUpdate= is false for /usr as built.
        assert stamp.stat().st_mtime_ns == usr_ns
        assert f"TIMESTAMP_NSEC={usr_ns}\n" in stamp.read_text()
    logind = tree / "etc/systemd/system/systemd-logind.service.d/10-banger.conf"
    assert "[Unit]\nAfter=ssh.service\n" in logind.read_text()

    assert (tree / "etc/fstab").read_text() == FSTAB
    fstab_entries = [line for line in FSTAB.splitlines() if not line.startswith("#")]
    # Only the root disk: the work disk is banger-workdisk's, not an fstab mount.
    assert fstab_entries == ["/dev/vda / ext4 rw,relatime 0 1"]
    workdisk = tree / "usr/sbin/banger-workdisk"
    assert workdisk.read_text() == workdisk_text() and mode(workdisk) == 0o755
    workdisk_unit = tree / "etc/systemd/system/banger-workdisk.service"
    assert f"ExecStart={WORKDISK_PATH}\n" in workdisk_unit.read_text()
    assert "DefaultDependencies=no\n" in workdisk_unit.read_text()
    wants = tree / "etc/systemd/system/local-fs.target.wants/banger-workdisk.service"
    assert os.readlink(wants) == "/etc/systemd/system/banger-workdisk.service"
    assert (tree / "etc/hostname").read_text() == ""
    assert "127.0.0.1\tlocalhost" in (tree / "etc/hosts").read_text()
    resolv = tree / "etc/resolv.conf"
    assert not resolv.is_symlink() and resolv.is_file()
    assert not (tree / "run/systemd").exists()  # the old link target was not written
    assert (tree / "etc/machine-id").read_text() == ""

    assert os.readlink(tree / "etc/systemd/system/apt-daily.timer") == "/dev/null"
    for masked in (
        "e2scrub_all.timer",
        "e2scrub_reap.service",
        "serial-getty@ttyS0.service",
        "modprobe@.service",  # a template: every instance masked with it
        "systemd-modules-load.service",
    ):
        assert os.readlink(tree / "etc/systemd/system" / masked) == "/dev/null"
    assert not os.path.lexists(tree / "etc/systemd/system/timers.target.wants/apt-daily.timer")
    assert not os.path.lexists(tree / "etc/systemd/system/getty.target.wants/getty@tty1.service")

    init = tree / "usr/sbin/banger-fast-init"  # /sbin is a symlink to usr/sbin
    assert init.read_text() == fast_init_text()
    assert mode(init) == 0o755
    fast_fstab = (tree / "etc/banger-fast-init.fstab").read_text()
    mounted = [line.split()[1] for line in fast_fstab.splitlines() if not line.startswith("#")]
    # parents first; /run/sshd is sshd's privilege separation directory (no mkdir run)
    assert mounted == ["/sys", "/dev", "/dev/pts", "/run", "/dev/shm", "/run/sshd"]
    (sshd_dir,) = [line.split() for line in fast_fstab.splitlines() if " /run/sshd " in line]
    assert {"mode=755", "X-mount.mkdir"} <= set(sshd_dir[3].split(","))

    root_home = tree / "root"
    assert root_home.is_dir() and list(root_home.iterdir()) == []
    assert mode(root_home) == 0o755 and root_home.stat().st_uid == 0

    home = tmp_path / "home"
    assert (home / ".bashrc").read_text() == "# bashrc\n"
    assert result.home_files == (".bashrc", ".profile", ".ssh")

    release = json.loads((tree / "etc/banger-release").read_text())
    assert release == {"finalize_version": 1, "init_modes": ["systemd", "fast"]}


DEBIAN_PAM_SSHD = """\
@include common-auth
session [success=ok ignore=ignore module_unknown=ignore default=bad] pam_selinux.so close
session    required     pam_loginuid.so
@include common-session
session    optional     pam_motd.so  motd=/run/motd.dynamic
session    optional     pam_motd.so noupdate
#session   optional     pam_motd.so  (already a comment)
session    optional     pam_mail.so standard noenv # [1]
session    required     /lib/x86_64-linux-gnu/security/pam_motd.so
session    required     pam_env.so user_readenv=1 envfile=/etc/default/locale
"""


def test_sshds_pam_motd_lines_are_commented_out_and_marked(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tree / "etc/pam.d").mkdir()
    (tree / "etc/pam.d/sshd").write_text(DEBIAN_PAM_SSHD)
    finalize_tree(tree, home_out=tmp_path / "home")
    lines = (tree / "etc/pam.d/sshd").read_text().splitlines()
    original = DEBIAN_PAM_SSHD.splitlines()
    assert len(lines) == len(original)
    for line, before in zip(lines, original, strict=True):
        if before.startswith("session") and "pam_motd.so" in before:
            assert line == PAM_MOTD_MARK + before
        else:
            assert line == before
    # again: already marked lines are comments, left as they are
    finalize_tree(tree, home_out=tmp_path / "home2")
    assert (tree / "etc/pam.d/sshd").read_text().splitlines() == lines


def test_work_seed_home_layout(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    finalize_tree(tree, home_out=tmp_path / "home")
    home = tmp_path / "home"
    prepare_home(home)
    assert mode(home) == 0o755
    assert mode(home / ".ssh") == 0o700 and list((home / ".ssh").iterdir()) == []
    assert mode(home / ".banger") == 0o700
    assert (home / ".hushlogin").is_file()
    assert (home / ".profile").read_text() == "# profile\n"


def test_finalize_again_takes_the_home_skeleton_from_skel(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    finalize_tree(tree, home_out=tmp_path / "home1")
    again = finalize_tree(tree, home_out=tmp_path / "home2")
    assert again.home_files == (".bashrc",)
    assert (tmp_path / "home2/.bashrc").read_text() == "# skel\n"
    assert again.removed_host_keys == ()


def test_symlinks_in_the_tree_never_reach_the_host(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    outside = tmp_path / "host-etc"
    outside.mkdir()
    # A hostile image: /etc/systemd points at an absolute host path, /etc/fstab
    # at a host file, /root is a symlink out of the tree.
    (tree / "etc/systemd/system/timers.target.wants/apt-daily.timer").unlink()
    (tree / "etc/systemd").rename(tmp_path / "unused")
    (tree / "etc/systemd").symlink_to(str(outside))
    (tree / "etc/fstab").symlink_to(str(outside / "fstab"))
    (outside / "fstab").write_text("host fstab\n")
    finalize_tree(tree, home_out=tmp_path / "home")
    assert (outside / "fstab").read_text() == "host fstab\n"
    assert sorted(p.name for p in outside.iterdir()) == ["fstab"]
    # The absolute link target was resolved inside the tree instead.
    assert (tree / str(outside).lstrip("/") / "system/ssh.service.d/10-banger.conf").is_file()


def test_resolve_is_chroot_like(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/up").symlink_to("../../../..")
    (tmp_path / "abs").symlink_to("/a")
    assert treepath.resolve(tmp_path, "/a/up/etc") == tmp_path / "etc"
    assert treepath.resolve(tmp_path, "/abs/x") == tmp_path / "a/x"
    assert treepath.resolve(tmp_path, "/abs", follow_last=False) == tmp_path / "abs"
    (tmp_path / "loop").symlink_to("/loop")
    with pytest.raises(Exception, match="too many levels"):
        treepath.resolve(tmp_path, "/loop/x")


def test_missing_binaries_are_named(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tree / "usr/sbin/sshd").unlink()
    (tree / "usr/bin/tmux").unlink()
    with pytest.raises(ImageNotBootable) as info:
        finalize_tree(tree, home_out=tmp_path / "home")
    assert "/usr/sbin/sshd" in info.value.message
    assert "tmux" in info.value.message
    assert "/bin/sh" not in info.value.message
    assert info.value.hint and "openssh-server" in info.value.hint
    assert not (tmp_path / "home").exists()  # nothing was changed


def test_fast_init_script() -> None:
    text = fast_init_text()
    assert text.startswith("#!/bin/sh\n")
    for needle in (
        "mount -t proc proc /proc",
        "mount -a -T /etc/banger-fast-init.fstab",
        "mount -o remount,rw /",
        'echo "$name" >/proc/sys/kernel/hostname',
        "ip link set lo up",
        "\n(. /sbin/banger-workdisk)\n",  # the work disk, before sshd
        "(. /sbin/banger-resolv)",
        # no per-connection re-exec, no PAM stack per login (measured, see the script)
        '/usr/sbin/sshd -D -e -r -o UsePAM="$use_pam" &',
        "sshd_use_pam /etc/shadow\n",
        "trap poweroff_now TERM INT",
        "echo o >/proc/sysrq-trigger",
        "kill -TERM 1",
    ):
        assert needle in text, needle
    assert "exec /usr/sbin/sshd" not in text  # PID 1 must stay to reap
    assert "mkdir -m 755 -p /run/sshd" not in text  # the fstab's X-mount.mkdir makes it
    assert text.index("/sbin/banger-workdisk") < text.index("/usr/sbin/sshd -D -e")


@pytest.mark.parametrize("shell", [["sh"], ["busybox", "sh"]])
@pytest.mark.parametrize(
    ("shadow", "use_pam"),
    [
        ("root:*:20794:0:99999:7:::\n", "no"),
        ("daemon:*:1::::::\nroot:$y$j9T$salt$hash:20794::::::\n", "no"),
        ("root:!locked::0:99999:7:::\n", "yes"),
        ("root:!!:20794::::::\n", "yes"),
        ("daemon:!:1::::::\nroot:*:1::::::\n", "no"),  # another account's lock
        (None, "no"),
    ],
)
def test_fast_init_keeps_pam_only_for_a_locked_root(
    shell: list[str], shadow: str | None, use_pam: str, tmp_path: Path
) -> None:
    """sshd without PAM refuses a "!"-locked account even for keys; PAM lets keys in."""
    match = re.search(r"^sshd_use_pam\(\) \{\n.*?^\}\n", fast_init_text(), re.M | re.S)
    assert match
    path = tmp_path / "shadow"
    if shadow is not None:
        path.write_text(shadow)
    script = match.group(0) + 'sshd_use_pam "$1"; echo "$use_pam"'
    out = subprocess.run(
        [*shell, "-c", script, "sh", str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout == use_pam + "\n"


def test_workdisk_script() -> None:
    text = workdisk_text()
    assert text.startswith("#!/bin/sh\n")
    for needle in (
        "banger.work=*",
        '[ "$mnt" = /root ] && exit 0',
        'mount -t ext4 -o rw,relatime "$work" /root',
    ):
        assert needle in text, needle


@pytest.mark.parametrize("shell", [["sh", "-n"], ["busybox", "sh", "-n"]])
def test_fast_init_parses(shell: list[str], tmp_path: Path) -> None:
    for name, text in (("init", fast_init_text()), ("workdisk", workdisk_text())):
        script = tmp_path / name
        script.write_text(text)
        subprocess.run([*shell, str(script)], check=True)


def test_fast_init_subcommands_outside_pid1(tmp_path: Path) -> None:
    script = tmp_path / "init"
    script.write_text(fast_init_text())
    bad = subprocess.run(["sh", str(script), "reboot"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_fast_init_poweroff_signals_pid1(tmp_path: Path) -> None:
    """Inside a fresh PID namespace: ``banger-fast-init poweroff`` SIGTERMs PID 1."""
    script = tmp_path / "init"
    script.write_text(fast_init_text())
    pid1 = f'trap "echo pid1-got-term; exit 0" TERM; sh {script} poweroff; sleep 10 & wait'
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", pid1],
        capture_output=True,
        text=True,
        timeout=8,
    )
    assert "pid1-got-term" in done.stdout
