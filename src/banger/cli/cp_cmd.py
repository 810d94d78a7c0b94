"""``banger vm cp SRC DST``: copy files between the host and a running VM, as ``docker cp``.

``NAME:PATH`` names the guest side, in either position (exactly one of SRC and
DST). A guest PATH is absolute or relative to ``/root``; a host path with a
colon in it is written ``./a:b``. Like ``docker cp``: copying to an existing
directory puts SRC inside it under its own name, otherwise DST becomes the
copy; ``SRC/.`` copies a directory's contents. Directories are copied
recursively with their permission bits, symlinks as symlinks (their targets
unchanged, never followed), regular files through the daemon's streaming files
API, each written atomically (temporary file + rename) on both sides. Other
kinds (fifos, sockets, devices) are skipped and listed.

The tree is walked here, one API call per directory and per file, rather than
moved as one tar stream: every name arrives exactly as it is (newlines,
unicode), every error names the path it concerns, nothing depends on a ``tar``
in the guest, and the calls are the ones ``banger.sdk`` offers (over the
daemon's held connection, a call costs a channel, not a login).

Exit status: 0 all copied; 2 bad arguments; 3 a path (or the VM) not found;
4 the VM not running, or a file where a directory is needed; 9 permission
denied (guest or host); 5 daemon unavailable; 1 anything else.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from banger.cli.output import print_json
from banger.cli.state import get_state, json_option
from banger.errors import BangerError, Conflict, InvalidArgument, NotFound, PermissionDenied

if TYPE_CHECKING:
    from banger.client import BangerClient
    from banger.client_files import GuestEntry

#: ``NAME:PATH``: a VM name (a DNS label) or id before the first colon.
_GUEST_ARG = re.compile(r"([a-z0-9][a-z0-9-]*):(.*)", re.DOTALL)
#: Below this many bytes a copy finishes before a progress bar would be worth drawing.
PROGRESS_MIN_BYTES = 8 * 1024 * 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    vm: str | None
    path: str

    @property
    def shown(self) -> str:
        return f"{self.vm}:{self.path}" if self.vm else self.path


def parse_endpoint(text: str, field_name: str) -> Endpoint:
    """``NAME:PATH`` (guest) or a host path; an empty path is bad input."""
    match = _GUEST_ARG.fullmatch(text)
    if match:
        vm, path = match.groups()
        if not path:
            raise InvalidArgument(f"{field_name}: {text!r} has no guest path after the colon")
        return Endpoint(vm, path)
    if not text:
        raise InvalidArgument(f"{field_name}: empty path")
    return Endpoint(None, text)


@dataclass
class Summary:
    direction: str
    vm: str
    source: str
    dest: str
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)

    def to_json(self, duration: float) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["duration"] = round(duration, 3)
        return data


class _Meter:
    """Bytes moved: a rich progress bar on a terminal (stderr) once a copy is large."""

    def __init__(self, total: int | None, quiet: bool) -> None:
        self.done = 0
        self.total = total
        self.bar: Any = None
        self.task: Any = None
        big = total is None or total >= PROGRESS_MIN_BYTES
        if not quiet and big and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task("copying", total=total)
            self.bar.start()

    def file(self, name: str) -> Callable[[int], None]:
        """A progress callback for one file (bytes of that file so far)."""
        base = self.done
        if self.bar is not None:
            self.bar.update(self.task, description=_short(name))

        def moved(count: int) -> None:
            self.done = base + count
            if self.bar is not None:
                self.bar.update(self.task, completed=self.done)

        return moved

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _short(name: str, width: int = 40) -> str:
    text = " ".join(name.split())
    return text if len(text) <= width else "…" + text[-(width - 1) :]


@contextmanager
def _host_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise NotFound(f"{os.fspath(path)}: no such file or directory (host)") from None
    except PermissionError:
        raise PermissionDenied(f"{os.fspath(path)}: permission denied (host)") from None
    except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
        raise Conflict(f"{os.fspath(path)}: {exc.strerror} (host)") from None
    except OSError as exc:
        raise BangerError(f"{os.fspath(path)}: {exc.strerror or exc} (host)") from None


# -- host → guest -------------------------------------------------------------------


def _host_size(path: Path) -> int:
    """Bytes of regular files under ``path`` (symlinks not followed), for the progress bar."""
    with _host_errors(path):
        st = path.lstat()
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    total = 0
    if stat.S_ISDIR(st.st_mode):
        for root, _dirs, files in os.walk(path):
            for name in files:
                with suppress(OSError):
                    entry = (Path(root) / name).lstat()
                    if stat.S_ISREG(entry.st_mode):
                        total += entry.st_size
    return total


class _Upload:
    def __init__(self, client: BangerClient, vm: str, summary: Summary, meter: _Meter) -> None:
        self.client = client
        self.vm = vm
        self.summary = summary
        self.meter = meter

    def copy(self, src: Path, dst: str) -> None:
        with _host_errors(src):
            st = src.lstat()
        if stat.S_ISLNK(st.st_mode):
            with _host_errors(src):
                target = str(src.readlink())
            self._replace_with_link(dst, target)
            self.summary.symlinks += 1
        elif stat.S_ISDIR(st.st_mode):
            self.client.make_dir(self.vm, dst, parents=True, mode=stat.S_IMODE(st.st_mode))
            self.summary.dirs += 1
            with _host_errors(src):
                children = sorted(src.iterdir())
            for child in children:
                self.copy(child, posixpath.join(dst, child.name))
        elif stat.S_ISREG(st.st_mode):
            with _host_errors(src), open(src, "rb") as f:
                entry = self.client.write_file(
                    self.vm, dst, f, mode=stat.S_IMODE(st.st_mode), progress=self.meter.file(dst)
                )
            self.summary.files += 1
            self.summary.bytes += entry.size
        else:
            self.summary.skipped.append(str(src))

    def _replace_with_link(self, dst: str, target: str) -> None:
        try:
            self.client.make_symlink(self.vm, dst, target)
        except Conflict:
            existing = self.client.stat_file(self.vm, dst)
            if existing.type == "dir":
                raise Conflict(f"{self.vm}:{dst}: a directory is in the way of a symlink") from None
            self.client.remove_file(self.vm, dst)
            self.client.make_symlink(self.vm, dst, target)


def upload(client: BangerClient, src: str, dst: Endpoint, quiet: bool) -> Summary:
    assert dst.vm is not None
    contents = src.endswith("/.")
    source = Path(src)
    with _host_errors(source):
        st = source.lstat()
    guest = _guest_stat(client, dst.vm, dst.path, follow=True)
    if guest is not None and guest.type == "dir" and not contents:
        target = posixpath.join(dst.path, _base(src))
    elif guest is None and (dst.path.endswith("/") and not stat.S_ISDIR(st.st_mode)):
        raise NotFound(f"{dst.shown}: no such directory")
    elif guest is not None and guest.type != "dir" and stat.S_ISDIR(st.st_mode):
        raise Conflict(f"{dst.shown}: not a directory (cannot copy directory {src} onto it)")
    else:
        target = dst.path.rstrip("/") or "/"
    if guest is None or guest.type != "dir":
        _guest_parent_exists(client, dst.vm, target)
    summary = Summary("upload", dst.vm, src, f"{dst.vm}:{target}")
    meter = _Meter(_host_size(source), quiet)
    try:
        _Upload(client, dst.vm, summary, meter).copy(source, target)
    finally:
        meter.stop()
    return summary


def _guest_stat(client: BangerClient, vm: str, path: str, follow: bool) -> GuestEntry | None:
    try:
        return client.stat_file(vm, path, follow=follow)
    except NotFound as exc:
        if not exc.message.endswith(": no such file or directory"):
            raise  # the VM itself is missing, not the path
        return None


def _guest_parent_exists(client: BangerClient, vm: str, path: str) -> None:
    parent = posixpath.dirname(path.rstrip("/"))
    if not parent:
        return
    entry = _guest_stat(client, vm, parent, follow=True)
    if entry is None:
        raise NotFound(f"{vm}:{parent}: no such directory")
    if entry.type != "dir":
        raise Conflict(f"{vm}:{parent}: not a directory")


def _base(path: str) -> str:
    name = posixpath.basename(path.rstrip("/"))
    if not name or name in (".", ".."):
        raise InvalidArgument(f"SRC: {path!r} has no name to copy under; use DIR/. for contents")
    return name


# -- guest → host -------------------------------------------------------------------


class _Download:
    def __init__(self, client: BangerClient, vm: str, summary: Summary, meter: _Meter) -> None:
        self.client = client
        self.vm = vm
        self.summary = summary
        self.meter = meter

    def copy(self, entry: GuestEntry, src: str, dst: Path) -> None:
        if entry.type == "symlink":
            _host_symlink(entry.target or "", dst)
            self.summary.symlinks += 1
        elif entry.type == "dir":
            with _host_errors(dst):
                if not dst.is_dir() or dst.is_symlink():
                    dst.mkdir(mode=0o700)
            self.summary.dirs += 1
            for child in self.client.list_files(self.vm, src):
                if child.name in ("", ".", "..") or "/" in child.name or "\0" in child.name:
                    # never let a guest's listing steer a write outside the copy
                    raise BangerError(
                        f"{self.vm}:{src}: the guest listed a bad name {child.name!r}"
                    )
                self.copy(child, posixpath.join(src, child.name), dst / child.name)
            with _host_errors(dst):
                dst.chmod(entry.mode)  # last: a read-only directory is filled first
        elif entry.type == "file":
            self.summary.bytes += self._file(src, dst, entry.mode)
            self.summary.files += 1
        else:
            self.summary.skipped.append(f"{self.vm}:{src}")

    def _file(self, src: str, dst: Path, mode: int) -> int:
        """Into a temporary file beside ``dst``, renamed over it once complete."""
        import tempfile  # here: every `banger vm …` command loads this module (bench/cli_latency)

        with _host_errors(dst.parent):
            fd, name = tempfile.mkstemp(prefix=".banger-cp-", dir=dst.parent)
        temp = Path(name)
        try:
            with open(fd, "wb") as out:
                count = self.client.read_file(self.vm, src, out, progress=self.meter.file(src))
            with _host_errors(dst):
                temp.chmod(mode)
                temp.replace(dst)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return count


def _host_symlink(target: str, dst: Path) -> None:
    with _host_errors(dst):
        if dst.is_dir() and not dst.is_symlink():
            raise Conflict(f"{dst}: a directory is in the way of a symlink (host)")
        temp = dst.parent / f".banger-cp-{os.getpid()}-{time.monotonic_ns()}"
        temp.symlink_to(target)
        try:
            temp.replace(dst)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


def download(client: BangerClient, src: Endpoint, dst: str, quiet: bool) -> Summary:
    assert src.vm is not None
    contents = src.path.endswith("/.")
    entry = client.stat_file(src.vm, src.path)
    dest = Path(dst)
    if dest.is_dir() and not contents:
        target = dest / _base(src.path)
    elif entry.type == "dir" and dest.exists() and not dest.is_dir():
        raise Conflict(f"{dst}: not a directory (cannot copy directory {src.shown} onto it)")
    elif dst.endswith("/") and not dest.exists():
        raise NotFound(f"{dst}: no such directory (host)")
    else:
        target = dest
    if not target.parent.is_dir():
        raise NotFound(f"{target.parent}: no such directory (host)")
    summary = Summary("download", src.vm, src.shown, str(target))
    total = entry.size if entry.type == "file" else None
    meter = _Meter(total, quiet)
    try:
        _Download(client, src.vm, summary, meter).copy(entry, src.path, target)
    finally:
        meter.stop()
    return summary


# -- the command --------------------------------------------------------------------


@click.command(name="cp")
@click.argument("src")
@click.argument("dst")
@json_option
def cp(src: str, dst: str) -> None:
    """Copy files between the host and a running VM: NAME:PATH is the guest side.

    \b
      banger vm cp ./build t1:/root/       # into /root/build in the guest
      banger vm cp t1:/var/log/syslog .    # into ./syslog
      banger vm cp t1:/root/out/. ./out    # the directory's contents

    Directories are copied recursively with their modes, symlinks as symlinks;
    each file is written atomically. Exit status: 2 bad arguments, 3 not found,
    4 VM not running or a file in the way, 9 permission denied.
    """
    state = get_state()
    source = parse_endpoint(src, "SRC")
    dest = parse_endpoint(dst, "DST")
    if (source.vm is None) == (dest.vm is None):
        raise InvalidArgument(
            "SRC, DST: exactly one of them names a VM (NAME:PATH)",
            hint="e.g. banger vm cp ./file t1:/root/  or  banger vm cp t1:/etc/hostname .",
        )
    began = time.monotonic()
    if dest.vm is not None:
        summary = state.call(lambda c: upload(c, source.path, dest, state.json))
    else:
        summary = state.call(lambda c: download(c, source, dest.path, state.json))
    took = time.monotonic() - began
    if state.json:
        print_json(summary.to_json(took))
        return
    parts = [f"{summary.files} file{'s' if summary.files != 1 else ''}"]
    if summary.dirs:
        parts.append(f"{summary.dirs} director{'ies' if summary.dirs != 1 else 'y'}")
    if summary.symlinks:
        parts.append(f"{summary.symlinks} symlink{'s' if summary.symlinks != 1 else ''}")
    size = f"{summary.bytes / MIB:.1f} MiB" if summary.bytes >= MIB else f"{summary.bytes} B"
    click.echo(f"copied {', '.join(parts)} ({size}) to {summary.dest} in {took:.1f}s")
    for skipped in summary.skipped:
        click.echo(f"warning: skipped {skipped!r}: not a file, directory or symlink", err=True)


def register(group: click.Group) -> None:
    group.add_command(cp)
