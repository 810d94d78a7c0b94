"""``workspace prepare``: copy a host repository into the guest, streamed as a tar over SSH.

Two guest steps (:mod:`.guest_scripts`): receive the stream into a temporary
sibling of the destination, then swap it into place. The swap runs only after
the whole stream was sent and unpacked, so re-running prepare replaces the
guest copy with a complete new one or leaves the old one alone.

Serialising transfers per VM is the caller's job (the VM service's per-VM lock).

An existing copy with work the host never got (commits or file changes since
the last prepare or export) is not replaced unless ``force``
(:mod:`.guard`); after the swap the new copy's state is recorded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from banger.config.file_sync import GUEST_HOME
from banger.errors import InvalidArgument
from banger.workspace import guard, guest_scripts
from banger.workspace.gitfiles import find_repository, list_workspace
from banger.workspace.shell import GuestShell, check
from banger.workspace.tarstream import ProgressCallback, tar_chunks


@dataclass(frozen=True)
class PrepareResult:
    repo: Path
    dest: PurePosixPath
    files: int
    bytes: int
    duration: float
    #: entries skipped on the host, one line each (nested repositories, sockets…)
    warnings: tuple[str, ...]


def guest_destination(
    repo: Path, dest: str | PurePosixPath | None = None, *, guest_home: PurePosixPath = GUEST_HOME
) -> PurePosixPath:
    """Where the copy goes: ``dest`` (absolute, or relative to ``guest_home``).

    Default: ``<guest_home>/<repository name>``.
    """
    path = PurePosixPath(dest) if dest is not None else PurePosixPath(repo.name)
    if not path.is_absolute():
        path = guest_home / path
    text = str(path)
    if ".." in path.parts or path == PurePosixPath("/") or path == guest_home:
        raise InvalidArgument(
            f"workspace path: {text!r} must name a directory inside the guest, not / or the home",
            hint="e.g. /root/myrepo",
        )
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise InvalidArgument(f"workspace path: {text!r} contains control characters")
    return path


async def prepare_workspace(
    shell: GuestShell,
    path: Path,
    *,
    dest: str | PurePosixPath | None = None,
    guest_home: PurePosixPath = GUEST_HOME,
    progress: ProgressCallback | None = None,
    force: bool = False,
    vm: str = "the VM",
) -> PrepareResult:
    """Copy the repository containing ``path`` into the guest (replacing an earlier copy).

    ``path`` is any path inside the repository (the CLI passes the user's cwd);
    the copy goes to ``dest`` or ``<guest_home>/<repository name>``.
    """
    began = time.monotonic()
    repo = await asyncio.to_thread(find_repository, path)
    target = guest_destination(repo, dest, guest_home=guest_home)
    if not force:  # before anything is sent: a refusal costs no transfer
        await guard.check_replaceable(shell, vm, target)
    listing = await asyncio.to_thread(list_workspace, repo)
    received = await shell.run_feeding(
        guest_scripts.receive(target, listing.root_mode),
        tar_chunks(listing.members, progress=progress),
    )
    check(received, f"unpacking the workspace into {target}")
    new_tree = received.out.strip()
    try:
        swapped = await shell.run(guest_scripts.swap(target, new_tree))
        check(swapped, f"moving the new workspace into place at {target}")
    except BaseException:
        await shell.run(guest_scripts.discard(target, new_tree))
        raise
    recorded = await guard.record_state(shell, target)
    return PrepareResult(
        repo=repo,
        dest=target,
        files=listing.files,
        bytes=listing.total_bytes,
        duration=time.monotonic() - began,
        warnings=(*listing.warnings, *([recorded] if recorded else [])),
    )
