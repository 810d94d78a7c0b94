"""Run the system ``ssh`` into a guest with the terminal inherited.

The one place the CLI starts a child outside :mod:`banger.proc`: an
interactive shell needs our stdin/stdout/stderr (``proc.run`` reads stdin
from /dev/null and captures output). The argv comes from
:func:`banger.guest.ssh.ssh_argv` (no shell string), and the exit status is
ssh's, which is the remote command's (255 when ssh itself failed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from banger.api_models import SSHInfo
from banger.guest.ssh import SSHTarget, ssh_argv


def argv_for(info: SSHInfo, command: Sequence[str] | None, *, tty: bool | None = None) -> list[str]:
    from pathlib import Path

    target = SSHTarget(
        info.host, Path(info.known_hosts), Path(info.client_key), info.port, info.user
    )
    want_tty = (not command) if tty is None else tty
    want_tty = want_tty and sys.stdin.isatty()
    if command and (info.workdir or info.run_as):
        return ssh_argv(target, image_command(info, command), tty=want_tty)
    return ssh_argv(target, list(command) if command else None, tty=want_tty)


def image_command(info: SSHInfo, command: Sequence[str]) -> str:
    """``command`` as the image's config says, like ``docker run``: in its WorkingDir
    (created at pull) and as its User. An interactive shell gets both from the
    image's /etc/profile.d/banger-image.sh instead (banger.images.oci.guestenv)."""
    from banger.guest.ssh import remote_command
    from banger.images.oci.guestenv import switch_user_argv

    argv = list(command)
    if info.run_as:
        argv = [*switch_user_argv(info.run_as), *argv]
    return remote_command(argv, cwd=info.workdir)


def run_ssh(argv: list[str]) -> int:
    """Run ssh in the foreground and return its exit status."""
    return subprocess.run(argv, check=False).returncode


def exec_ssh(argv: list[str]) -> None:
    """Replace this process with ssh (``banger vm ssh``: nothing to do afterwards)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)  # noqa: S606 - argv from ssh_argv, no shell
