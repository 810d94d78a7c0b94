"""The owner's git identity, merged into the guest's ``/root/.gitconfig``.

The owner's ``user.name``/``user.email`` come from their global git config,
read by git itself (``git config --global --includes``) with ``HOME`` pointed at
the owner's home. The guest file is merged, never replaced: the current content
(the work disk's ``.gitconfig``, or the host file ``[[file_sync]]`` puts there)
is copied to a temporary file and ``git config --file`` sets the two keys on the
copy, so every other key, section, comment and include survives exactly as git
would keep it. The result is staged as a :class:`FileSyncItem` for the one
provisioning batch.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from banger import proc
from banger.disk import ext4
from banger.disk.workdisk import FileSyncItem
from banger.errors import BangerError, CommandError

#: Relative to the work disk root, which is ``/root`` in the guest.
GITCONFIG = ".gitconfig"
GITCONFIG_MODE = 0o644
#: Said when the owner has no identity to merge (before boot, and into a running guest).
NO_IDENTITY_NOTICE = (
    "git identity: none on the host (git config --global user.name/user.email); "
    "the guest's ~/.gitconfig is left as it is"
)
#: ``git config --get`` exits 1 when the key is not set.
_UNSET = 1


@dataclass(frozen=True)
class GitIdentity:
    name: str | None
    email: str | None

    @property
    def empty(self) -> bool:
        return not self.name and not self.email


@dataclass(frozen=True)
class StagedIdentity:
    """The merged ``.gitconfig`` to write (``item``), or why there is none (``notice``)."""

    item: FileSyncItem | None
    identity: GitIdentity
    notice: str | None = None


def _git_env(home: Path) -> dict[str, str]:
    # the system config is the machine's, not the owner's identity
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "GIT_CONFIG_NOSYSTEM": "1"}


def _get(home: Path, key: str) -> str | None:
    argv = ["git", "config", "--global", "--includes", "--get", key]
    result = proc.run(argv, check=False, env=_git_env(home), cwd=home)
    if result.returncode == _UNSET:
        return None
    if result.returncode != 0:
        raise CommandError(result.argv, returncode=result.returncode, stderr=result.err)
    value = result.out.rstrip("\n")
    return value or None


def read_host_identity(home: Path) -> GitIdentity:
    """``user.name``/``user.email`` from the owner's global git config (None when unset)."""
    return GitIdentity(_get(home, "user.name"), _get(home, "user.email"))


def merge_gitconfig(existing: bytes, identity: GitIdentity, *, workdir: Path) -> bytes:
    """``existing`` with ``user.name``/``user.email`` set by git's own config writer."""
    fd, name = tempfile.mkstemp(prefix="gitconfig-", dir=workdir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(existing)
        for key, value in (("user.name", identity.name), ("user.email", identity.email)):
            if value:
                try:
                    proc.run(["git", "config", "--file", path, key, value], cwd=workdir)
                except CommandError as exc:
                    raise BangerError(
                        f"cannot merge the git identity into the guest's ~/.gitconfig: {exc}",
                        hint="fix or remove the .gitconfig in the image's work seed or "
                        "the one synced by [[file_sync]]",
                    ) from None
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def _current_content(disk: Path, synced: FileSyncItem | None) -> bytes:
    """What the guest's ``.gitconfig`` will hold before the identity is merged in."""
    if synced is not None:
        return synced.host_path.read_bytes()
    path = "/" + GITCONFIG
    if ext4.exists(disk, path):
        return ext4.read_file(disk, path)
    return b""


def stage_git_identity(
    disk: Path, *, home: Path, stage_dir: Path, synced: FileSyncItem | None = None
) -> StagedIdentity:
    """Merge the owner's identity into the guest ``.gitconfig``, staged in ``stage_dir``.

    ``synced`` is the ``.gitconfig`` a ``[[file_sync]]`` entry writes, if any
    (see :meth:`banger.disk.sync_plan.SyncPlan.file_for`): its content is the base
    and the returned item replaces it (:meth:`SyncPlan.with_file`). Otherwise
    the work disk's current file is the base. ``stage_dir`` must outlive the
    provisioning batch.
    """
    identity = read_host_identity(home)
    if identity.empty:
        return StagedIdentity(None, identity, NO_IDENTITY_NOTICE)
    merged = merge_gitconfig(_current_content(disk, synced), identity, workdir=stage_dir)
    fd, name = tempfile.mkstemp(prefix="gitconfig-merged-", dir=stage_dir)
    with os.fdopen(fd, "wb") as f:
        f.write(merged)
    return StagedIdentity(FileSyncItem(GITCONFIG, Path(name), GITCONFIG_MODE), identity)
