"""A workspace written onto a stopped VM's work disk from the host: no guest, no SSH.

``vm run``/``vm create`` inside a repository know the workspace before the VM
boots, so the copy ``workspace prepare`` would stream over SSH (and unpack with
an emulated CPU) is written into the work disk image instead, as the owner,
with debugfs (no mount, no root): exactly the files
:func:`~banger.workspace.gitfiles.list_workspace` gives, with their modes,
mtimes and symlinks, owned by root as after a prepare, plus the state record
(:mod:`.host_state`) so the guard and ``workspace export`` work as after one.

Host files are opened here with ``O_NOFOLLOW`` and debugfs reads them through
``/proc/<our pid>/fd/<n>``: a file replaced by a symlink since it was listed is
refused, never followed out of the repository. Open descriptors are bounded, so
the files go in batches of debugfs runs; each batch is checked for failures
and the whole result is read back at the end. A failure leaves a partial copy:
the caller removes the work disk (the create's undo does).
"""

from __future__ import annotations

import os
import resource
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from banger import proc
from banger.config.file_sync import GUEST_HOME
from banger.disk import ext4
from banger.errors import BangerError, Conflict
from banger.workspace.disk_plan import (
    DiskEntry,
    HostEntry,
    check_room,
    dir_commands,
    disk_root,
    expectations,
    finish_commands,
    leaf_commands,
    plan_entries,
    room_needed,
)
from banger.workspace.gitfiles import Listing, Member
from banger.workspace.host_state import HostState, compute_state
from banger.workspace.tarstream import Progress, ProgressCallback

#: Most descriptors one batch holds open (less when the process limit is lower).
MAX_BATCH = 2048
#: Loose object files and their directories, as git writes them.
OBJECT_MODE = 0o444
OBJECT_DIR_MODE = 0o755
RECORD_MODE = 0o644


class DestinationExists(Conflict):
    """The work disk already has something at the workspace's path."""


@dataclass(frozen=True)
class DiskWriteResult:
    dest: PurePosixPath
    files: int
    bytes: int
    duration: float
    state: HostState


def _host_entry(m: Member) -> HostEntry | None:
    try:
        st = m.path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None  # gone since listing: as the tar stream does
    mode, mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    if m.kind == "dir" and stat.S_ISDIR(st.st_mode):
        return HostEntry(m.arcname, "dir", mode, mtime)
    if m.kind == "symlink" and stat.S_ISLNK(st.st_mode):
        return HostEntry(m.arcname, "symlink", 0o777, mtime, target=str(m.path.readlink()))
    if m.kind == "file" and stat.S_ISREG(st.st_mode):
        return HostEntry(m.arcname, "file", mode, mtime, st.st_size, source=m.path)
    raise BangerError(
        f"{m.path} changed type while the workspace was read", hint="run the command again"
    )


def host_entries(
    listing: Listing, state: HostState, record: Path
) -> tuple[HostEntry, list[HostEntry]]:
    """The repository directory, its members, then the record and the objects it needs."""
    st = listing.root.lstat()
    root = HostEntry("", "dir", stat.S_IMODE(st.st_mode), int(st.st_mtime))
    members = [e for e in (_host_entry(m) for m in listing.members) if e is not None]
    now = int(time.time())
    dirs = {e.arcname for e in members if e.kind == "dir"}
    for arcname, path in state.objects:
        parent = arcname.rsplit("/", 1)[0]
        if parent not in dirs:
            dirs.add(parent)
            members.append(HostEntry(parent, "dir", OBJECT_DIR_MODE, now))
        size = path.stat().st_size
        members.append(HostEntry(arcname, "file", OBJECT_MODE, now, size, source=path))
    record_name = ".git/banger.workspace"
    members.append(
        HostEntry(record_name, "file", RECORD_MODE, now, len(state.record), source=record)
    )
    return root, members


def free_space(disk: Path) -> tuple[int, int, int]:
    """``(free blocks, free inodes, block size)`` from the superblock (``dumpe2fs -h``)."""
    out = proc.run(["dumpe2fs", "-h", str(disk)]).out
    fields: dict[str, int] = {}
    for line in out.split("\n"):
        key, sep, value = line.partition(":")
        if sep and key in ("Free blocks", "Free inodes", "Block size"):
            fields[key] = int(value.strip())
    try:
        return fields["Free blocks"], fields["Free inodes"], fields["Block size"]
    except KeyError as exc:
        raise BangerError(f"dumpe2fs gave no {exc.args[0]!r} for {disk}") from None


def _batch_size() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = sum(1 for _ in Path("/proc/self/fd").iterdir())
    room = (soft if soft != resource.RLIM_INFINITY else 65536) - in_use - 64
    return max(16, min(MAX_BATCH, room // 2))


def _open_source(path: Path) -> tuple[int, int] | None:
    """An open descriptor of a regular file (never through a symlink) and its size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BangerError(
            f"cannot read {path}: {exc.strerror or exc}",
            hint="a file replaced by a symlink is never followed; fix it and run again",
        ) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BangerError(f"{path} is no longer a regular file", hint="run the command again")
    return fd, st.st_size


def _write_leaves(
    disk: Path,
    leaves: Sequence[DiskEntry],
    progress: ProgressCallback | None,
    totals: tuple[int, int],
) -> dict[str, int]:
    """Files and symlinks in batches of open descriptors; returns the sizes written."""
    sizes: dict[str, int] = {}
    batch = _batch_size()
    pid = os.getpid()
    done_files = done_bytes = 0
    for start in range(0, len(leaves), batch):
        chunk = leaves[start : start + batch]
        with ExitStack() as stack:
            sources: dict[str, str] = {}
            for e in chunk:
                if e.kind != "file" or e.source is None:
                    continue
                opened = _open_source(e.source)
                if opened is None:
                    continue
                fd, size = opened
                stack.callback(os.close, fd)
                sources[e.path] = f"/proc/{pid}/fd/{fd}"
                sizes[e.path] = size
            ext4.run_commands(disk, leaf_commands(chunk, sources))
        done_files += len(chunk)
        done_bytes += sum(sizes.get(e.path, 0) for e in chunk)
        if progress is not None:
            progress(Progress(done_files, totals[0], done_bytes, totals[1]))
    return sizes


def write_workspace(
    disk: Path,
    listing: Listing,
    dest: PurePosixPath,
    *,
    guest_home: PurePosixPath = GUEST_HOME,
    progress: ProgressCallback | None = None,
    on_state: Callable[[HostState], None] | None = None,
) -> DiskWriteResult:
    """Write the workspace of ``listing`` at ``dest`` (a guest path under ``guest_home``)
    into the stopped work disk ``disk``.

    Raises :class:`~banger.workspace.disk_plan.Unwritable` (a name debugfs cannot
    express), :class:`DestinationExists`, or
    :class:`~banger.workspace.disk_plan.NoRoom` before writing anything.
    Blocking: call it in a thread.
    """
    began = time.monotonic()
    base = disk_root(dest, guest_home)
    # names first: an unwritable one is refused before any work is done
    plan_entries(*_bare_entries(listing), base)
    with tempfile.TemporaryDirectory(prefix="banger-workspace-") as tmp:
        work = Path(tmp)
        (work / "git").mkdir()
        state = compute_state(listing, work / "git")
        record = work / "record"
        record.write_bytes(state.record)
        root, members = host_entries(listing, state, record)
        entries = plan_entries(root, members, base)
        _check_destination(disk, base)
        free_blocks, free_inodes, block_size = free_space(disk)
        check_room(room_needed(entries, block_size), free_blocks, free_inodes, block_size)
        if on_state is not None:
            on_state(state)
        ext4.run_commands(disk, dir_commands(entries))
        leaves = [e for e in entries if e.kind != "dir"]
        totals = (len(leaves), sum(e.size for e in leaves if e.kind == "file"))
        sizes = _write_leaves(disk, leaves, progress, totals)
        ext4.run_commands(disk, finish_commands(entries))
        ext4.check(disk, expectations(entries, sizes))
    files = sum(1 for m in listing.members if m.kind != "dir")
    return DiskWriteResult(dest, files, listing.total_bytes, time.monotonic() - began, state)


def _bare_entries(listing: Listing) -> tuple[HostEntry, list[HostEntry]]:
    """Names only (no stat): enough to find one debugfs cannot express."""
    out: list[HostEntry] = []
    for m in listing.members:
        if m.kind == "symlink":
            try:
                target = str(m.path.readlink())
            except OSError:
                continue
            out.append(HostEntry(m.arcname, "symlink", 0o777, 0, target=target))
        else:
            out.append(HostEntry(m.arcname, "file" if m.kind == "file" else "dir", 0o644, 0))
    return HostEntry("", "dir", 0o755, 0), out


def _check_destination(disk: Path, base: str) -> None:
    """Every ancestor of ``base`` is a directory on the disk, and ``base`` is free."""
    parts = PurePosixPath(base).parts[1:]
    ancestors = ["/" + "/".join(parts[:i]) for i in range(len(parts))]
    found = ext4.stat_many(disk, [*ancestors, base])
    for a in ancestors:
        got = found["/" if a == "/" else a]
        if got is None or got.kind != "dir":
            what = "missing" if got is None else "not a directory"
            raise DestinationExists(f"workspace path: {a} on the work disk is {what}")
    if found[base] is not None:
        raise DestinationExists(f"workspace path: {base} already exists on the work disk")
