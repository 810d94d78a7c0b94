"""The OCI config's Env, WorkingDir and User, applied in the guest as ``docker run`` does.

An OCI image says how its processes run: with ``Env``, in ``WorkingDir``, as
``User``. A banger guest is reached over SSH as root, so a pull writes that
into the image (:func:`apply_image_config`, on the flattened tree):

- ``/etc/ssh/sshd_config.d/30-banger-image.conf``: one ``SetEnv`` line with
  every Env entry, so every SSH session (``vm ssh``, ``vm run``, exec,
  sessions, banger's own commands) starts with the image's environment.
  banger sets its own variables with ``export`` in the command text, after
  sshd, so banger's win. An entry sshd cannot carry (a quote, a backslash,
  ``#`` or a control character in it, or a name that is not a shell name)
  is left out and reported;
- ``/etc/profile.d/banger-image.sh``, read by login shells: the same Env
  again (Debian's ``/etc/profile`` resets PATH), and for an interactive
  shell (``vm ssh`` without a command, a session's shell) a ``cd`` into
  WorkingDir and, when User is set, the switch to that user
  (``runuser``, or ``setpriv`` for a numeric uid);
- WorkingDir is created (root's, 0755) when the image lacks it, as Docker does.

Commands (``vm ssh VM -- CMD``) get WorkingDir and User from the host side:
bangerd's SSH info for the VM carries them and the CLI wraps the command
(:func:`banger.guest.ssh.image_command`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from banger.images import treepath
from banger.images.common import Progress, no_progress
from banger.images.oci.config import ImageConfig

SSHD_CONF = "/etc/ssh/sshd_config.d/30-banger-image.conf"
PROFILE = "/etc/profile.d/banger-image.sh"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*(:[A-Za-z0-9_.][A-Za-z0-9_.-]*)?")
_UNSAFE = set("\"\\#'")


@dataclass(frozen=True)
class GuestEnv:
    env: tuple[tuple[str, str], ...]
    skipped: tuple[str, ...]  # Env entries left out, as the image wrote them
    working_dir: str
    user: str


def guest_env(config: ImageConfig) -> GuestEnv:
    """What of ``config`` the guest can apply (see the module docstring)."""
    kept: dict[str, str] = {}
    skipped = []
    for entry in config.env:
        name, eq, value = entry.partition("=")
        if not eq or not _NAME.fullmatch(name) or not value.isprintable() or _UNSAFE & set(value):
            skipped.append(entry)
            continue
        kept[name] = value  # a later entry wins, as in Docker
    working_dir = config.working_dir if config.working_dir.startswith("/") else ""
    user = config.user if _USER.fullmatch(config.user) else ""
    if user in ("root", "0", "root:root", "0:0"):
        user = ""
    return GuestEnv(tuple(kept.items()), tuple(skipped), working_dir, user)


def sshd_conf(env: Sequence[tuple[str, str]]) -> str | None:
    """The sshd drop-in (sshd keeps only the first SetEnv line: all go on one)."""
    if not env:
        return None
    quoted = " ".join(f'"{name}={value}"' for name, value in env)
    return f"# banger: the OCI image's Env, for every SSH session\nSetEnv {quoted}\n"


#: Absolute: the image's PATH (now the session's) often lacks /usr/sbin.
RUNUSER = "/usr/sbin/runuser"
SETPRIV = "/usr/bin/setpriv"


def switch_user_argv(user: str) -> list[str]:
    """The command prefix that runs what follows as the image's ``user`` (name or uid[:gid])."""
    name, _, group = user.partition(":")
    if name.isdigit():
        gid = group if group.isdigit() else name
        return [SETPRIV, f"--reuid={name}", f"--regid={gid}", "--clear-groups", "--"]
    argv = [RUNUSER, "-u", name]
    if group:
        argv += ["-g", group]
    return [*argv, "--"]


def profile_script(guest: GuestEnv) -> str:
    lines = [
        "# banger: the OCI image's Env, WorkingDir and User for login shells (as docker run).",
        *(f"export {name}={shlex.quote(value)}" for name, value in guest.env),
    ]
    body = []
    if guest.working_dir:
        body.append(f"    cd -- {shlex.quote(guest.working_dir)} 2>/dev/null || :")
    if guest.user:
        switch = shlex.join(switch_user_argv(guest.user))
        # Only a terminal shell without a command (bash -c sets BASH_EXECUTION_STRING).
        body.append('    if [ "$(id -u)" = 0 ] && [ -z "${BASH_EXECUTION_STRING-}" ]; then')
        body.append(f'        exec {switch} "${{SHELL:-/bin/sh}}" -l')
        body.append("    fi")
    if body:
        lines += [
            'if [ -z "${BANGER_IMAGE_ENTERED-}" ]; then',
            "  case $- in *i*)",
            "    BANGER_IMAGE_ENTERED=1; export BANGER_IMAGE_ENTERED",
            *body,
            "  ;; esac",
            "fi",
        ]
    return "\n".join(lines) + "\n"


def apply_image_config(
    tree: Path, config: ImageConfig, progress: Progress = no_progress
) -> GuestEnv:
    """Write the files above into the flattened ``tree`` (root, like the rest of a pull)."""
    guest = guest_env(config)
    for entry in guest.skipped:
        progress(f"image Env entry {entry[:80]!r} cannot be passed through sshd: left out")
    conf = sshd_conf(guest.env)
    if conf is not None:
        treepath.make_dirs(tree, "/etc/ssh/sshd_config.d")
        treepath.write_file(tree, SSHD_CONF, conf)
    if guest.env or guest.working_dir or guest.user:
        treepath.make_dirs(tree, "/etc/profile.d")
        treepath.write_file(tree, PROFILE, profile_script(guest))
    if guest.working_dir and not treepath.exists(tree, guest.working_dir):
        treepath.make_dirs(tree, guest.working_dir)
    return guest
