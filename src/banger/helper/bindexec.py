"""``python -m banger.helper.bindexec NS SRC DST -- ARGV...``: run ARGV with SRC seen at DST.

For a command that canonicalises the paths it is given (mmdebstrap runs its
target through ``abs_path``) while it works, as root, in the helper's
root-only stage. The stage is reached as ``/proc/<pid>/fd/<n>``
(:mod:`banger.helper.rootstage`); canonicalising that yields the directory's
path through the owner's directories, which the owner can swap for symlinks
while the command runs. Bound at a fixed root-owned mount point (``/mnt``:
FHS, on every Debian/Ubuntu), the stage has a path that canonicalises to
itself and that no one but root can change.

Only ever run inside a private mount namespace (``unshare --mount
--propagation private``, :func:`banger.images.tether.group_dies_with_caller`):
the bind mount lives and dies with that namespace and is never seen on the
host. It refuses to mount in the namespace of its caller (``NS``, as
:func:`banger.images.tether.mount_namespace` read it there): then it was not
run in a private one. Lives with the helper: only root runs it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from banger.helper.rootstage import walk_nofollow
from banger.images.tether import mount_namespace

MS_BIND = 0x1000


def _fail(message: str) -> int:
    print(f"bindexec: {message}", file=sys.stderr)
    return 126


def _same_directory_here(src: str) -> int:
    """A descriptor, opened in *this* mount namespace, of the directory ``src`` names.

    ``src`` is ``/proc/<caller>/fd/<n>[/...]``: a directory in the caller's namespace,
    which the kernel will not bind into this one (EINVAL). Its path, walked here
    without following a symlink, must lead to that very directory (device and
    inode): if the owner moved a component, the walk fails or finds another
    directory, and nothing is mounted.
    """
    want = Path(src).stat()
    # realpath only computes the candidate name (the magic link's target, plus
    # whatever follows it inside the stage); the walk and the inode decide.
    fd = walk_nofollow(os.path.realpath(src))
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (want.st_dev, want.st_ino):
        os.close(fd)
        raise OSError(116, "the directory was moved while it was bound", src)  # ESTALE
    return fd


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        return _fail("usage: bindexec CALLER_MNT_NS SRC DST -- ARGV...")
    caller_ns, src, dst, command = argv[0], argv[1], argv[2], argv[4:]
    # The caller says which namespace it is in: the bind must not land there.
    # (Not compared with PID 1's: reading that needs CAP_SYS_PTRACE, which a
    # hardened helper does not have.)
    if mount_namespace() == caller_ns:
        return _fail("refusing to mount outside a private mount namespace")
    try:
        fd = _same_directory_here(src)
    except OSError as exc:
        return _fail(f"cannot reach {src} here: {exc.strerror}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(f"/proc/self/fd/{fd}".encode(), os.fsencode(dst), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        return _fail(f"bind mount {src} at {dst}: {os.strerror(err)}")
    os.close(fd)
    try:
        os.execvp(command[0], command)  # noqa: S606 - argv, as everywhere: no shell
    except OSError as exc:
        _fail(f"failed to execute {command[0]}: {exc.strerror}")
        # 127 + "No such file or directory", as setpriv and unshare say it:
        # tether.named_for reports the wrapped command as not found.
        return 127 if isinstance(exc, FileNotFoundError) else 126


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
