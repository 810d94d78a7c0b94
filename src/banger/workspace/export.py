"""``workspace export``: bring the guest copy's work back as a branch of the host repository.

In the guest (:func:`guest_scripts.export_snapshot`): uncommitted changes
become one extra commit on top of ``HEAD`` (made on a temporary index, so the
guest's own tree and branch are untouched), and a ``git bundle`` holds every
commit the host lacks. The bundle is streamed back over SSH into a temporary
file inside the host repository's git directory, verified, and fetched with
``git fetch <bundle> refs/banger/export:refs/heads/<branch>``.

On the host only that one ref is written: the user's working tree, index and
current branch are never touched (no checkout, no ``git status`` refresh). An
existing branch is replaced only with ``force``; the checked-out branch never.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from banger import proc
from banger.errors import BangerError, CommandError, Conflict, InvalidArgument
from banger.workspace import guard, guest_scripts
from banger.workspace.gitfiles import find_repository
from banger.workspace.shell import GuestShell, check

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@dataclass(frozen=True)
class ExportResult:
    repo: Path
    branch: str
    commit: str
    #: True when uncommitted guest changes were turned into an extra commit
    snapshot: bool
    #: ``git log --oneline`` of the commits that came back, newest first
    commits: tuple[str, ...]
    #: ``git diff --stat`` from where the guest work started to the branch
    diffstat: str
    files_changed: tuple[str, ...]
    bytes: int
    duration: float


def default_branch(vm: str) -> str:
    return f"banger/{vm}"


async def _git(repo: Path, *args: str, input: bytes | None = None) -> str:
    result = await proc.arun(["git", *args], cwd=repo, input=input)
    return result.out


async def check_branch_name(repo: Path, branch: str) -> str:
    """The branch name as git accepts it (``git check-ref-format --branch``)."""
    if not branch or branch.startswith("-") or branch.startswith("@{"):
        raise InvalidArgument(f"branch: {branch!r} is not a valid branch name")
    try:
        out = await _git(repo, "check-ref-format", "--branch", branch)
    except CommandError:
        raise InvalidArgument(
            f"branch: {branch!r} is not a valid branch name",
            hint="see `git check-ref-format --help`; e.g. banger/my-vm",
        ) from None
    name = out.strip()
    if name != branch:  # "@{-1}" and friends expand to another branch: refuse
        raise InvalidArgument(f"branch: {branch!r} is not a plain branch name")
    return name


async def _branch_commit(repo: Path, branch: str) -> str | None:
    result = await proc.arun(
        ["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}"],
        cwd=repo,
        check=False,
    )
    return result.out.strip() if result.returncode == 0 else None


async def _checked_out_branches(repo: Path) -> set[str]:
    out = await _git(repo, "worktree", "list", "--porcelain", "-z")
    refs = {f[len("branch ") :] for f in out.split("\0") if f.startswith("branch ")}
    return {r.removeprefix("refs/heads/") for r in refs}


async def refuse_overwrite(repo: Path, branch: str, force: bool) -> None:
    """Refuse a checked-out target branch always, an existing one unless ``force``."""
    if branch in await _checked_out_branches(repo):
        raise Conflict(
            f"branch {branch} is checked out on the host; export never changes your working tree",
            hint="export to another branch: --branch NAME",
        )
    existing = await _branch_commit(repo, branch)
    if existing is not None and not force:
        raise Conflict(
            f"branch {branch} already exists in {repo} (at {existing[:12]})",
            hint="pass --force to replace it, or --branch to pick another name",
        )


async def _known_commits(repo: Path, branch: str) -> list[str]:
    """Commits the host already has (branch, tag, remote tips and HEAD): the bundle's base.

    The branch being replaced is left out, so the summary shows everything on
    the new branch since the guest copy started, not since the last export.
    """
    out = await _git(
        repo,
        "for-each-ref",
        "--format=%(objectname) %(objecttype) %(*objectname) %(*objecttype) %(refname)",
        "refs/heads",
        "refs/tags",
        "refs/remotes",
    )
    known: dict[str, None] = {}
    for line in out.splitlines():
        fields = line.split()
        if line.endswith(f" refs/heads/{branch}"):
            continue
        if len(fields) >= 2 and fields[1] == "commit":
            known.setdefault(fields[0], None)
        elif len(fields) == 5 and fields[3] == "commit":  # an annotated tag of a commit
            known.setdefault(fields[2], None)
    head = await proc.arun(
        ["git", "rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=repo, check=False
    )
    if head.returncode == 0:
        known.setdefault(head.out.strip(), None)
    return list(known)


async def _summary(repo: Path, branch: str, known: list[str]) -> tuple[list[str], str, list[str]]:
    negatives = "".join(f"^{c}\n" for c in known).encode()
    ref = f"refs/heads/{branch}"
    log = await _git(repo, "log", "--oneline", "--no-decorate", "--stdin", ref, input=negatives)
    chain = await _git(
        repo, "rev-list", "--first-parent", "--reverse", "--stdin", ref, input=negatives
    )
    first_new = chain.split()[0] if chain.split() else None
    if first_new is None:
        base = ref
    else:
        parents = (await _git(repo, "rev-list", "--parents", "-n", "1", first_new)).split()
        base = parents[1] if len(parents) > 1 else EMPTY_TREE
    stat = await _git(repo, "diff", "--stat", base, ref)
    names = await _git(repo, "diff", "--name-only", "-z", base, ref)
    files = [n for n in names.split("\0") if n]
    return log.splitlines(), stat.rstrip("\n"), files


async def _receive_bundle(
    shell: GuestShell, bundle: str, repo_in_guest: PurePosixPath, dest: Path
) -> int:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    size = 0
    with os.fdopen(fd, "wb") as f:

        async def sink(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            await asyncio.to_thread(f.write, chunk)

        result = await shell.run_draining(guest_scripts.export_send(bundle, repo_in_guest), sink)
    check(result, "sending the export bundle")
    return size


async def export_workspace(
    shell: GuestShell,
    path: Path,
    *,
    vm: str,
    guest_path: str | PurePosixPath,
    branch: str | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> ExportResult:
    """Fetch the guest copy at ``guest_path`` into the repository containing ``path``.

    The new branch (default ``banger/<vm>``) holds the guest's commits and, on
    top, one commit with its uncommitted changes (if any).
    """
    began = time.monotonic()
    repo = await asyncio.to_thread(find_repository, path)
    name = await check_branch_name(repo, branch or default_branch(vm))
    guest_repo = PurePosixPath(guest_path)
    await refuse_overwrite(repo, name, force)
    known = await _known_commits(repo, name)
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S %Z")
    message = f"banger: uncommitted changes from {vm} at {stamp}"
    snap = await shell.run(
        guest_scripts.export_snapshot(guest_repo, message, fallback_name=f"banger ({vm})"),
        stdin="".join(f"{c}\n" for c in known).encode(),
    )
    check(snap, f"snapshotting {guest_repo}")
    try:
        commit, snapshot_flag, bundle = snap.out.rstrip("\n").split(" ", 2)
    except ValueError:
        raise BangerError(f"unexpected answer from the guest export script: {snap.out!r}") from None
    size = 0
    try:
        if bundle == "-":
            # the host already has the commit (nothing new in the guest): just name it
            args = ["update-ref", "-m", f"banger: export from {vm}", f"refs/heads/{name}", commit]
            await _git(repo, *(args if force else [*args, ""]))
        else:
            git_dir = Path((await _git(repo, "rev-parse", "--absolute-git-dir")).strip())
            with tempfile.TemporaryDirectory(prefix="banger-export-", dir=git_dir) as tmp:
                local = Path(tmp) / "export.bundle"
                size = await _receive_bundle(shell, bundle, guest_repo, local)
                await _git(repo, "bundle", "verify", "-q", str(local))
                refspec = f"{'+' if force else ''}{guest_scripts.EXPORT_REF}:refs/heads/{name}"
                await _git(
                    repo,
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    str(local),
                    refspec,
                )
    finally:
        cleanup = guest_scripts.export_cleanup(None if bundle == "-" else bundle, guest_repo)
        await shell.run(cleanup)
    # the host has this state now: a later prepare may replace it without --force
    await guard.record_state(shell, guest_repo, commit, snapshot_flag == "1")
    commits, diffstat, files = await _summary(repo, name, known)
    return ExportResult(
        repo=repo,
        branch=name,
        commit=commit,
        snapshot=snapshot_flag == "1",
        commits=tuple(commits),
        diffstat=diffstat,
        files_changed=tuple(files),
        bytes=size,
        duration=time.monotonic() - began,
    )
