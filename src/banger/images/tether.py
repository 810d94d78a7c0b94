"""The long commands of an image build die with the process that started them.

A root helper killed in the middle of ``image_build`` (kill -9, the OOM
killer) kills nothing it started: mmdebstrap, reparented to init, goes on
installing packages into the owner's staging directory for minutes, with
/proc, /sys and /dev mounted inside the tree, and the daemon's cleanup
(``remove_staging``) must refuse a directory with mounts in it. So:

- every such command is started under ``setpriv --pdeathsig``: the kernel
  signals it when its parent dies (SIGTERM for a lone process such as
  mkfs.ext4, which needs nothing more). Precisely, when the parent
  *thread* that forked it exits; the helper runs each op in its connection
  thread, which sits blocked in :func:`banger.proc.run` (or ``run_streaming``)
  until the command returns, so that thread outlives the command unless the
  whole process dies — exactly the case this is for. The same holds in
  bangerd, which runs these commands from a worker thread blocked on them.
- mmdebstrap is a tree of processes (a main process that ignores SIGTERM
  while it waits for its setup child, apt, dpkg, maintainer scripts), written
  for the terminal's Ctrl-C, which signals the whole process group; and its
  own cleanup does not reliably unmount what it mounted when it is stopped
  with its stderr pipe gone (measured: the mounts stayed). So it runs as
  process 1 of a PID namespace and in a mount namespace of its own
  (``unshare --pid --fork --kill-child --mount --propagation private``):
  ``setpriv --pdeathsig KILL`` kills ``unshare`` with the caller (``unshare``
  ignores SIGTERM while it waits), ``--kill-child`` then SIGKILLs process 1,
  and the kernel SIGKILLs every process left in a PID namespace whose
  process 1 died, and drops the namespace's mounts with its last process.
  No mount ever appears in the host's mount table. Nothing of value is lost
  by not asking mmdebstrap to stop gracefully: the tree is thrown away (by
  ``remove_staging``) either way.

The wrappers change the command line only (argv, through :mod:`banger.proc`);
a failure is still reported under the wrapped command's name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from banger import proc
from banger.errors import CommandError

#: ``setpriv`` (util-linux) sets PR_SET_PDEATHSIG, then execs the command.
DIE_WITH_PARENT: tuple[str, ...] = ("setpriv", "--pdeathsig", "TERM", "--")
#: The same with SIGKILL, for ``unshare``, which ignores SIGTERM while it waits.
KILLED_WITH_PARENT: tuple[str, ...] = ("setpriv", "--pdeathsig", "KILL", "--")
#: Exit status of setpriv and unshare when the command they exec does not exist.
_EXEC_NOT_FOUND = 127


#: Where a command that canonicalises paths sees the directory it works in
#: (banger.helper.bindexec): root's, on every Debian/Ubuntu (FHS).
STAGE_MOUNT_POINT = "/mnt"


def mount_namespace() -> str:
    """This process's mount namespace (``mnt:[<inode>]``)."""
    return str(Path("/proc/self/ns/mnt").readlink())


def dies_with_caller(argv: Sequence[str]) -> list[str]:
    """``argv`` (one process, such as mkfs.ext4) killed with SIGTERM when its parent dies."""
    return [*DIE_WITH_PARENT, *argv]


def group_dies_with_caller(argv: Sequence[str], bind: tuple[str, str] | None = None) -> list[str]:
    """``argv`` and every process it starts SIGKILLed when the parent dies; its mounts private.

    For mmdebstrap (see the module docstring): process 1 of a new PID
    namespace, in a new mount namespace, so that nothing it starts or mounts
    outlives it or the caller.
    """
    if bind is not None:
        # Inside that private namespace, see directory bind[0] at bind[1]
        # before exec (banger.helper.bindexec: for commands that canonicalise paths).
        argv = [sys.executable, "-I", "-m", "banger.helper.bindexec", mount_namespace(), *bind,
                "--", *argv]  # fmt: skip
    return [
        *KILLED_WITH_PARENT,
        "unshare", "--pid", "--fork", "--kill-child",
        "--mount", "--propagation", "private", "--",
        *argv,
    ]  # fmt: skip


def named_for(exc: CommandError, argv: Sequence[str]) -> CommandError:
    """``exc`` of a wrapped command, reworded to name ``argv`` (the command that failed).

    ``setpriv: failed to execute mkfs.ext4`` is exit status 127: "command
    not found: mkfs.ext4". A wrapper that is itself missing keeps its name.
    """
    if exc.not_found or exc.timed_out:
        return exc
    missing = exc.returncode == _EXEC_NOT_FOUND and "No such file or directory" in exc.stderr
    stderr = "" if missing else exc.stderr  # the wrapper's own words add nothing then
    return CommandError(list(argv), returncode=exc.returncode, stderr=stderr, not_found=missing)


def run(argv: Sequence[str]) -> proc.Completed:
    """:func:`banger.proc.run` of ``argv`` under :func:`dies_with_caller`."""
    try:
        return proc.run(dies_with_caller(argv))
    except CommandError as exc:
        raise named_for(exc, argv) from exc


def run_streaming_group(
    argv: Sequence[str], on_line: Callable[[str], None], bind: tuple[str, str] | None = None
) -> None:
    """:func:`banger.proc.run_streaming` of ``argv`` under :func:`group_dies_with_caller`."""
    try:
        proc.run_streaming(group_dies_with_caller(argv, bind), on_line)
    except CommandError as exc:
        raise named_for(exc, argv) from exc
