"""The work seed: a small ext4 image each VM's work disk (``/root``) starts from.

It holds the image's root home skeleton (``.bashrc``, ``.profile``, ... as
handed back by finalize) plus what banger's per-VM provisioning expects to
find: ``/`` 0755 root:root and ``.ssh`` 0700 (so sshd's StrictModes holds),
``.banger`` 0700 (the per-VM sshd host key goes there), ``.hushlogin``.
``.ssh`` is always empty: banger writes the VM's authorized key per VM, and
keys that came with an image must not reach every clone.

The seed is small and sparse; ``banger.disk`` copies it per VM and grows it
with ``resize2fs``. Growth is reserved up to :data:`WORK_MAX_GROW` so the
grow never needs more group-descriptor blocks than mkfs set aside.
"""

from __future__ import annotations

import os
from pathlib import Path

from banger.images.ext4build import MiB, make_ext4_from_tree
from banger.rmtree import remove_tree

WORK_SEED_SIZE = 64 * MiB
WORK_MAX_GROW = 1024 * 1024 * MiB  # 1 TiB
WORK_LABEL = "banger-work"


def prepare_home(home: Path) -> None:
    """Give ``home`` (a work disk's root) the layout and modes banger relies on."""
    os.chown(home, 0, 0)
    home.chmod(0o755)
    ssh = home / ".ssh"
    if ssh.is_symlink() or (ssh.exists() and not ssh.is_dir()):
        ssh.unlink()
    elif ssh.is_dir():
        remove_tree(ssh)
    for name in (".ssh", ".banger"):
        path = home / name
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        path.mkdir(mode=0o700, exist_ok=True)
        os.chown(path, 0, 0)
        path.chmod(0o700)
    hush = home / ".hushlogin"
    if hush.is_symlink():
        hush.unlink()
    hush.touch(mode=0o644)
    os.chown(hush, 0, 0)


def make_work_seed(home: Path, out: Path, size_bytes: int = WORK_SEED_SIZE) -> int:
    """Turn ``home`` into the work seed image ``out``; returns its size in bytes."""
    prepare_home(home)
    return make_ext4_from_tree(home, out, size_bytes, WORK_LABEL, max_grow_bytes=WORK_MAX_GROW)
