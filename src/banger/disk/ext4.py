"""Read and edit ext4 image files with debugfs: no mount, no root.

The daemon runs as the owner user and edits images it owns. Writes go through
an :class:`~banger.disk.debugfs_script.Ext4Edit` batch applied by
:func:`apply` in ONE ``debugfs -w -f`` run, then read back and compared
(:func:`verify`). Reads use ``ls -p``, debugfs's parseable listing
(``/inode/mode/uid/gid/name/size/``), never its human ``stat`` text.
"""

from __future__ import annotations

import os
import stat as st
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from banger import proc
from banger.disk.debugfs_script import (
    Command,
    EntryKind,
    Expect,
    Ext4Edit,
    Failure,
    failures_from_stderr,
    image_path,
    quote,
    render_commands,
)
from banger.errors import BangerError, CommandError, NotFound

#: ``__none__`` tells debugfs never to pipe listings through a pager.
_ENV = {"DEBUGFS_PAGER": "__none__", "PAGER": "cat"}
_OPEN_FAILED = ("while trying to open", "Filesystem not open")


@dataclass(frozen=True)
class Ext4Stat:
    kind: EntryKind
    #: permission bits only (``mode & 0o7777``); ``raw_mode`` has the type too
    mode: int
    uid: int
    gid: int
    #: bytes for files and symlinks; None for directories (``ls -p`` omits it)
    size: int | None
    inode: int
    raw_mode: int


def _kind(raw_mode: int) -> EntryKind:
    if st.S_ISREG(raw_mode):
        return "file"
    if st.S_ISDIR(raw_mode):
        return "dir"
    if st.S_ISLNK(raw_mode):
        return "symlink"
    return "other"


def parse_ls_p(text: str) -> dict[str, Ext4Stat]:
    """Parse ``ls -p`` output lines (``/inode/mode/uid/gid/name/size/``) by name."""
    entries: dict[str, Ext4Stat] = {}
    for line in text.split("\n"):
        if not line.startswith("/") or not line.endswith("/"):
            continue
        fields = line[1:-1].split("/")
        if len(fields) != 6:
            continue  # names cannot hold "/", so this is not an entry line
        inode, mode, uid, gid, name, size = fields
        raw = int(mode, 8)
        entries[name] = Ext4Stat(
            kind=_kind(raw),
            mode=raw & 0o7777,
            uid=int(uid),
            gid=int(gid),
            size=int(size) if size else None,
            inode=int(inode),
            raw_mode=raw,
        )
    return entries


def _check_image(image: Path) -> Path:
    if not image.is_file():
        raise NotFound(f"disk image not found: {image}")
    return image


def _debugfs(image: Path, script: str, *, write: bool) -> proc.Completed:
    """Run one debugfs command file against ``image``; raise if it cannot open it."""
    with tempfile.NamedTemporaryFile("w", prefix="banger-debugfs-", suffix=".cmd") as f:
        f.write(script)
        f.flush()
        argv = ["debugfs", *(["-w"] if write else []), "-f", f.name, str(image)]
        # debugfs's exit status is the count of unknown commands (our per-command
        # markers) mod 256, not an error indicator: any value 0..255 is normal.
        # Only a signal death is fatal here; a missing binary is raised by proc.
        result = proc.run(argv, check=False, env=_ENV)
    if result.returncode < 0:
        raise CommandError(result.argv, returncode=result.returncode, stderr=result.err)
    opened = [ln for ln in result.err.split("\n") if any(t in ln for t in _OPEN_FAILED)]
    if opened:
        raise BangerError(
            f"debugfs cannot open {image}: {opened[0].removeprefix('debugfs: ')}",
            hint="is it an ext4 image you can write, and not in use by a running VM?",
        )
    return result


def _split_by_echo(stdout: str) -> list[str]:
    """stdout of a ``-f`` run, one chunk per command (debugfs echoes each one)."""
    chunks: list[list[str]] = []
    for line in stdout.split("\n"):
        if line.startswith("debugfs: "):
            chunks.append([])
        elif chunks:
            chunks[-1].append(line)
    return ["\n".join(c) for c in chunks]


def _list_dirs(image: Path, dirs: list[str]) -> dict[str, dict[str, Ext4Stat] | None]:
    """List several directories in one debugfs run; None for a missing one."""
    if not dirs:
        return {}
    script = "".join(f"ls -p {quote(d)}\n" for d in dirs)
    result = _debugfs(image, script, write=False)
    chunks = _split_by_echo(result.out)
    if len(chunks) != len(dirs):
        raise BangerError(f"unexpected debugfs output listing {image}: {result.err.strip()}")
    out: dict[str, dict[str, Ext4Stat] | None] = {}
    for d, chunk in zip(dirs, chunks, strict=True):
        entries = parse_ls_p(chunk)
        # every directory lists "." — an empty listing means missing or not a dir
        out[d] = entries if "." in entries else None
    return out


def stat_many(image: Path, paths: Iterable[str]) -> dict[str, Ext4Stat | None]:
    """Stat several paths in one debugfs run (by listing their parents)."""
    _check_image(image)
    wanted = [image_path(p) for p in paths]
    parents: list[str] = []
    for p in wanted:
        parent = p if p == "/" else str(PurePosixPath(p).parent)
        if parent not in parents:
            parents.append(parent)
    listings = _list_dirs(image, parents)
    out: dict[str, Ext4Stat | None] = {}
    for p in wanted:
        if p == "/":
            listing = listings["/"]
            out[p] = listing["."] if listing else None
        else:
            pp = PurePosixPath(p)
            listing = listings[str(pp.parent)]
            out[p] = listing.get(pp.name) if listing else None
    return out


def stat(image: Path, path: str) -> Ext4Stat:
    found = stat_many(image, [path])[image_path(path)]
    if found is None:
        raise NotFound(f"{path} not found in {image}")
    return found


def exists(image: Path, path: str) -> bool:
    return stat_many(image, [path])[image_path(path)] is not None


def listdir(image: Path, path: str) -> list[str]:
    """Names in a directory of the image (without ``.`` and ``..``), sorted."""
    _check_image(image)
    p = image_path(path)
    listing = _list_dirs(image, [p])[p]
    if listing is None:
        raise NotFound(f"{path} is not a directory in {image}")
    return sorted(n for n in listing if n not in (".", ".."))


def read_file(image: Path, path: str) -> bytes:
    """The content of a regular file in the image."""
    found = stat(image, path)
    if found.kind != "file":
        raise BangerError(f"{path} in {image} is a {found.kind}, not a file")
    result = _debugfs(image, f"cat {quote(image_path(path))}\n", write=False)
    errors = [ln for ln in result.err.split("\n") if ln.strip() and not ln.startswith("debugfs ")]
    if errors:
        raise BangerError(f"debugfs could not read {path} from {image}: {errors[0]}")
    # stdout is the echoed command line, then the bytes
    echo, _, data = result.stdout.partition(b"\n")
    if not echo.startswith(b"debugfs: cat "):
        raise BangerError(f"unexpected debugfs output reading {path} from {image}")
    if len(data) != found.size:
        raise BangerError(f"read {len(data)} bytes of {path} from {image}, expected {found.size}")
    return data


def apply(
    image: Path, edit: Ext4Edit, *, stage_dir: Path | None = None, verify: bool = True
) -> None:
    """Apply a batch in one ``debugfs -w`` run, then read the results back.

    ``stage_dir`` must be the directory given to :meth:`Ext4Edit.write_bytes`
    when the batch has staged content; it is filled here (0600 files) and left
    for the caller to remove.
    """
    _check_image(image)
    if edit.staged:
        if stage_dir is None:
            raise ValueError("this batch has staged content: pass its stage_dir")
        for name, data in edit.staged.items():
            fd = os.open(stage_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    if not edit.ops:
        return
    # plan against the image as it is: debugfs damages the filesystem when
    # mkdir/symlink meet an existing name (see banger.disk.debugfs_script)
    current = stat_many(image, edit.probe_paths())
    commands = edit.commands({p: s.kind if s else None for p, s in current.items()})
    result = _debugfs(image, render_commands(commands), write=True)
    failures = failures_from_stderr(commands, result.err)
    if failures:
        raise _failure_error(image, failures)
    if verify:
        check(image, edit.expectations)


def run_commands(image: Path, commands: list[Command]) -> None:
    """Run planned commands in one ``debugfs -w`` run; raise naming the first that failed.

    For callers that plan their own batch (:mod:`banger.workspace.disk_plan`) and
    check the result themselves (:func:`check`).
    """
    _check_image(image)
    if not commands:
        return
    result = _debugfs(image, render_commands(commands), write=True)
    failures = failures_from_stderr(commands, result.err)
    if failures:
        raise _failure_error(image, failures)


def _failure_error(image: Path, failures: list[Failure]) -> BangerError:
    first = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return BangerError(
        f"debugfs failed on {image}: `{first.command}`: {first.message}{more}",
        hint="the path's parent may be a file, or the disk may be full",
    )


def check(image: Path, expectations: list[Expect]) -> None:
    """Compare the image with what a batch promised; one error lists every mismatch."""
    found = stat_many(image, [e.path for e in expectations])
    problems: list[str] = []
    for e in expectations:
        got = found[e.path]
        if got is None:
            problems.append(f"{e.path}: missing")
            continue
        size = e.size
        if size is None and e.size_from is not None:
            size = Path(e.size_from).stat().st_size
        wanted = {
            "type": (e.kind, got.kind),
            "mode": (e.mode, got.mode),
            "uid": (e.uid, got.uid),
            "gid": (e.gid, got.gid),
            "size": (size, got.size),
        }
        for name, (want, have) in wanted.items():
            if want is not None and want != have:
                shown = (f"{want:o}", f"{have:o}") if name == "mode" else (want, have)
                problems.append(f"{e.path}: {name} is {shown[1]}, expected {shown[0]}")
    if problems:
        raise BangerError(
            f"{image} does not hold what was written: " + "; ".join(problems),
            hint="the disk image may be damaged: check it with `e2fsck -fn`",
        )
