"""Re-preparing a workspace never throws away guest work silently.

After a prepare and after an export, the guest copy's state (``HEAD`` and
the tree of its working files) is recorded in its git directory
(:func:`guest_scripts.record_state`): that is the state the host has. Before
a prepare replaces an existing copy, :func:`check_replaceable` compares the
copy with the record; commits made since, or files changed since, refuse the
prepare with one line naming them, unless ``force``. A directory that banger
did not prepare is refused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from banger.errors import BangerError, Conflict
from banger.workspace import guest_scripts
from banger.workspace.shell import GuestShell, check

#: How many commits / files the one-line refusal names before "…".
SHOWN = 5


@dataclass(frozen=True)
class GuestWork:
    """What is at the destination: ``absent``, ``unrecorded`` or ``recorded``."""

    state: str
    commits: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    @property
    def unexported(self) -> bool:
        return bool(self.commits or self.files)


def parse_guest_work(out: str) -> GuestWork:
    lines = [line for line in out.splitlines() if line]
    if lines[:1] in (["absent"], ["unrecorded"]):
        return GuestWork(lines[0])
    if not lines or lines[-1] != "end":
        raise BangerError(f"unexpected answer from the guest about its workspace: {out[-200:]!r}")
    commits = tuple(line[len("commit ") :] for line in lines if line.startswith("commit "))
    files = tuple(line[len("file ") :] for line in lines if line.startswith("file "))
    return GuestWork("recorded", commits, files)


def _named(items: tuple[str, ...], what: str) -> str:
    shown = ", ".join(items[:SHOWN]) + (", …" if len(items) > SHOWN else "")
    return f"{len(items)} {what}{'s' if len(items) != 1 else ''} ({shown})"


def refusal(vm: str, dest: PurePosixPath, work: GuestWork) -> Conflict | None:
    """The one-line error for replacing ``dest`` in ``vm``, or None when nothing is lost."""
    if work.state == "unrecorded":
        return Conflict(
            f"workspace prepare: {vm}:{dest} exists and is not a copy banger prepared;"
            " it would be replaced",
            hint="pass --force to replace it, or --dest to copy elsewhere",
        )
    if not work.unexported:
        return None
    parts = []
    if work.commits:
        parts.append(_named(work.commits, "commit"))
    if work.files:
        parts.append(_named(work.files, "changed file"))
    return Conflict(
        f"workspace prepare: {vm}:{dest} has work that was never exported: " + "; ".join(parts),
        hint=f"banger workspace export {vm} brings it back first; --force replaces it anyway",
    )


async def check_replaceable(shell: GuestShell, vm: str, dest: PurePosixPath) -> None:
    """Raise :class:`Conflict` if replacing ``dest`` would lose guest work."""
    result = await shell.run(guest_scripts.unexported_work(dest))
    check(result, f"checking {dest} for work that was never exported")
    problem = refusal(vm, dest, parse_guest_work(result.out))
    if problem is not None:
        raise problem


async def record_state(
    shell: GuestShell, dest: PurePosixPath, exported: str | None = None, snapshot: bool = False
) -> str | None:
    """Record ``dest``'s state as the host's; a warning line if that failed."""
    result = await shell.run(guest_scripts.record_state(dest, exported, snapshot))
    if result.exit_status != 0:
        err = result.err.strip().splitlines()
        reason = err[-1] if err else f"exit status {result.exit_status}"
        return (
            f"could not record the state of {dest} ({reason}): a later prepare will ask for --force"
        )
    return None
