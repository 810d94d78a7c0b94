"""Workspaces: a host repository copied into a guest, and the work brought back as a branch.

- :mod:`.gitfiles` — what to copy (``.git`` + tracked + untracked-not-ignored).
- :mod:`.tarstream` — the tar stream, produced as the guest takes it.
- :mod:`.guest_scripts` — every shell snippet run in the guest.
- :mod:`.shell` — :class:`GuestShell`, the guest side as the code needs it
  (:class:`SSHGuestShell` over an asyncssh connection).
- :mod:`.prepare` / :mod:`.export` — the two operations.
"""

from __future__ import annotations

from banger.workspace.export import ExportResult, default_branch, export_workspace
from banger.workspace.gitfiles import NotARepository, find_repository
from banger.workspace.prepare import PrepareResult, guest_destination, prepare_workspace
from banger.workspace.shell import GuestCommandFailed, GuestShell, SSHGuestShell
from banger.workspace.tarstream import Progress, ProgressCallback

__all__ = [
    "ExportResult",
    "GuestCommandFailed",
    "GuestShell",
    "NotARepository",
    "PrepareResult",
    "Progress",
    "ProgressCallback",
    "SSHGuestShell",
    "default_branch",
    "export_workspace",
    "find_repository",
    "guest_destination",
    "prepare_workspace",
]
