"""oci/guestenv.py: the OCI config's Env, WorkingDir and User as the guest applies them
(issue #22 item 6). The sshd drop-in is checked by the real sshd (-T), the profile
script by a real shell, the command wrapper on its argv."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from banger.api_models import SSHInfo
from banger.cli.sshexec import image_command
from banger.images.oci.config import ImageConfig
from banger.images.oci.guestenv import (
    PROFILE,
    SSHD_CONF,
    apply_image_config,
    guest_env,
    profile_script,
    sshd_conf,
    switch_user_argv,
)
from tests.support import needs_root

CONFIG = ImageConfig(
    env=("PATH=/usr/local/bin:/usr/bin:/bin", "APP_MODE=e2e", "GREETING=hello world",
         'BAD="quoted"', "1NOPE=x", "APP_MODE=final"),
    working_dir="/srv/app",
    user="nobody",
)  # fmt: skip


def test_entries_sshd_cannot_carry_are_left_out_and_the_last_of_a_name_wins() -> None:
    guest = guest_env(CONFIG)
    assert guest.env == (
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("APP_MODE", "final"),
        ("GREETING", "hello world"),
    )
    assert guest.skipped == ('BAD="quoted"', "1NOPE=x")
    assert (guest.working_dir, guest.user) == ("/srv/app", "nobody")
    assert guest_env(ImageConfig(user="root", working_dir="relative")).user == ""
    assert guest_env(ImageConfig(user="0:0")).working_dir == ""
    assert guest_env(ImageConfig(user="$(reboot)")).user == ""


def test_the_real_sshd_reads_every_variable_from_the_drop_in(tmp_path: Path) -> None:
    conf = sshd_conf(guest_env(CONFIG).env)
    assert conf is not None
    (tmp_path / "image.conf").write_text(conf)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hk")],
                   check=True)  # fmt: skip
    (tmp_path / "sshd_config").write_text(f"Include {tmp_path}/image.conf\nHostKey {tmp_path}/hk\n")
    effective = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(tmp_path / "sshd_config")],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    setenv = [line for line in effective.splitlines() if line.startswith("setenv ")]
    assert setenv == [
        "setenv PATH=/usr/local/bin:/usr/bin:/bin",
        "setenv APP_MODE=final",
        "setenv GREETING=hello world",
    ]
    assert sshd_conf(()) is None


def test_a_login_shell_gets_env_and_an_interactive_one_the_working_dir(tmp_path: Path) -> None:
    workdir = tmp_path / "srv app"
    workdir.mkdir()
    config = ImageConfig(env=("GREETING=hello world",), working_dir=str(workdir), user="")
    script = tmp_path / "banger-image.sh"
    script.write_text(profile_script(guest_env(config)))
    show = 'printf "%s|%s|%s\\n" "$GREETING" "$PWD" "${BANGER_IMAGE_ENTERED-}"'
    plain = subprocess.run(["sh", "-c", f". {script}; {show}"], capture_output=True,
                           text=True, check=True, cwd="/").stdout  # fmt: skip
    assert plain == "hello world|/|\n"  # not interactive: Env only, no cd
    interactive = subprocess.run(["bash", "--norc", "-i", "-c", f". {script}; {show}"],
                                 capture_output=True, text=True, check=True,
                                 cwd="/").stdout  # fmt: skip
    assert interactive.splitlines()[-1] == f"hello world|{workdir}|1"


def test_the_user_switch_is_only_for_a_terminal_shell_without_a_command() -> None:
    text = profile_script(guest_env(CONFIG))
    assert 'exec /usr/sbin/runuser -u nobody -- "${SHELL:-/bin/sh}" -l' in text
    assert '[ -z "${BASH_EXECUTION_STRING-}" ]' in text
    assert "export GREETING='hello world'" in text
    assert switch_user_argv("1000") == [
        "/usr/bin/setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "--",
    ]  # fmt: skip
    assert switch_user_argv("1000:50")[2] == "--regid=50"
    assert switch_user_argv("app:staff") == ["/usr/sbin/runuser", "-u", "app", "-g", "staff", "--"]


def test_vm_ssh_commands_run_in_the_working_dir_as_the_user() -> None:
    info = SSHInfo(vm="v", host="10.0.0.2", known_hosts="/k", client_key="/c",
                   workdir="/srv/app", run_as="nobody")  # fmt: skip
    text = image_command(info, ["sh", "-c", "echo $HOME"])
    assert (
        text == "cd -- /srv/app || exit 1\nexec /usr/sbin/runuser -u nobody -- sh -c 'echo $HOME'"
    )


@needs_root
@pytest.mark.root
def test_a_pull_writes_the_files_into_the_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc/ssh").mkdir(parents=True)
    progress: list[str] = []
    apply_image_config(tree, CONFIG, progress.append)
    assert (tree / SSHD_CONF.lstrip("/")).read_text().startswith("# banger:")
    assert "GREETING" in (tree / PROFILE.lstrip("/")).read_text()
    workdir = tree / "srv/app"
    assert workdir.is_dir() and os.stat(workdir).st_uid == 0
    assert progress == [
        "image Env entry 'BAD=\"quoted\"' cannot be passed through sshd: left out",
        "image Env entry '1NOPE=x' cannot be passed through sshd: left out",
    ]
