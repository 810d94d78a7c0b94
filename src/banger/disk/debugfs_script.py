"""Pure builder for debugfs command files: edit an ext4 image without mounting it.

An :class:`Ext4Edit` collects operations (mkdir, write a file, chmod/chown, …),
renders them to ONE debugfs command file, and knows what the image must look
like afterwards (:attr:`Ext4Edit.expectations`) so the caller can read it back.
Nothing here runs a command; :mod:`banger.disk.ext4` applies the script.

What debugfs's command parser (libss, e2fsprogs 1.47) does, as tested:

- words are split on blanks; a double quote toggles quoting anywhere in a word
  (``/x"y z"`` is ``/xy z``), so a path in double quotes may hold spaces, tabs,
  ``#``, ``'``, ``$``, ``;`` and backslashes, all literally;
- there is no escape for ``"`` itself (``\\"`` gives "Unbalanced quotes") and a
  newline ends the command, so paths holding ``"`` or a control character
  cannot be expressed: they are refused with :class:`InvalidArgument`;
- output is split on ``\n`` only (never ``str.splitlines``, which also
  breaks on U+2028 and friends that are valid in names);
- errors go to stderr, yet debugfs exits 0 (or with a count of unknown
  commands). To tell which command failed, the script puts a *marker* after
  each command: an unknown command whose "Command not found" message lands on
  stderr in order, splitting stderr into one segment per command
  (:func:`failures_from_stderr`);
- ``write`` refuses to overwrite (so ``rm`` first), copies from a host path,
  and ``set_inode_field … mode`` takes the whole mode, file-type bits included
  (``0100600`` for a file, ``040700`` for a directory);
- ``mkdir`` and ``symlink`` onto a name that exists, or below a parent that is
  not a directory, fail *after* allocating an inode and a block and leave the
  filesystem damaged (e2fsck: leaked inode, wrong link counts). So a batch is
  never a blind list of commands: :meth:`Ext4Edit.commands` plans them against
  the image's current state (read first, see :meth:`Ext4Edit.probe_paths`),
  issues ``mkdir`` only for names that are absent under a real directory, and
  refuses (:class:`~banger.errors.Conflict`) what it cannot do safely.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from banger.errors import Conflict, InvalidArgument

#: Longest path ext4/Linux accepts (PATH_MAX less the NUL), and one name.
PATH_MAX_BYTES = 4095
NAME_MAX_BYTES = 255

#: The unknown command placed after each real one; see the module docstring.
MARKER_PREFIX = "banger-step-"
_MARKER_NOT_FOUND = "debugfs: Command not found " + MARKER_PREFIX

EntryKind = Literal["file", "dir", "symlink", "other"]

_TYPE_BITS: dict[EntryKind, int] = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
}

# rm of a name the plan believed present but that went with its parent: harmless
_NOT_FOUND = "File not found by ext2_lookup"


def _check_text(value: str, what: str) -> None:
    # control characters include U+0085 and friends, which also break lines
    bad = [c for c in value if c == '"' or unicodedata.category(c) == "Cc"]
    if bad:
        raise InvalidArgument(
            f"{what} {value!r} contains {bad[0]!r}, which debugfs cannot express",
            hint="rename it: double quotes and control characters (newline, tab, …) "
            "cannot be written into a disk image",
        )


def image_path(path: str, what: str = "guest path") -> str:
    """Validate an absolute path inside the image and return it normalised.

    Refuses relative paths, ``.``/``..``/empty components and anything debugfs
    cannot quote, naming the path in the error.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidArgument(
            f"{what} {path!r} must be absolute inside the disk image",
            hint="write it as /dir/name, relative to the disk's root",
        )
    _check_text(path, what)
    if path == "/":
        return path
    parts = path[1:].rstrip("/").split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidArgument(
                f"{what} {path!r} has an empty, '.' or '..' component",
                hint="use a plain absolute path without '..'",
            )
        if len(part.encode()) > NAME_MAX_BYTES:
            raise InvalidArgument(f"{what} {path!r} has a name over {NAME_MAX_BYTES} bytes")
    normal = "/" + "/".join(parts)
    if len(normal.encode()) > PATH_MAX_BYTES:
        raise InvalidArgument(f"{what} {path!r} is over {PATH_MAX_BYTES} bytes")
    return normal


def host_path(path: Path | str, what: str = "host file") -> str:
    """Validate a host source path for ``write`` (absolute, quotable)."""
    text = os.fspath(path)
    if not Path(text).is_absolute():
        raise InvalidArgument(f"{what} {text!r} must be an absolute path")
    _check_text(text, what)
    return text


def quote(path: str) -> str:
    """Quote an already validated path for the debugfs command line."""
    return f'"{path}"'


def full_mode(kind: EntryKind, mode: int) -> int:
    """Permission bits plus the file-type bits ``set_inode_field`` needs."""
    if not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"mode {mode:#o} is not a permission mode (0 to 07777)")
    if kind not in _TYPE_BITS:
        raise InvalidArgument(f"cannot set a mode for a {kind}")
    return _TYPE_BITS[kind] | mode


def _check_id(value: int, what: str) -> int:
    if not 0 <= value < 2**32 - 1:
        raise InvalidArgument(f"{what} {value} is not a valid id (0 to 4294967294)")
    return value


@dataclass(frozen=True)
class Command:
    """One debugfs command line, and error texts that do not count as failure."""

    text: str
    tolerate: tuple[str, ...] = ()


@dataclass(frozen=True)
class Expect:
    """What one path must look like after the batch ran (None: not checked)."""

    path: str
    kind: EntryKind
    mode: int | None = None  # permission bits only
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    #: for files written from a host file: its size is read back at verify time
    size_from: str | None = None


@dataclass(frozen=True)
class Failure:
    """A command whose stderr segment held an unexpected message."""

    command: str
    message: str


@dataclass(frozen=True)
class _Owner:
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True)
class _Op:
    """One requested change; :meth:`Ext4Edit.commands` turns it into debugfs commands."""

    action: Literal["dir", "write", "symlink", "chown", "remove"]
    path: str
    owner: _Owner | None = None
    source: str = ""  # host file for "write", target for "symlink"
    kind: EntryKind = "dir"  # for "chown": what the path must be


def _parent(path: str) -> str:
    return str(PurePosixPath(path).parent)


@dataclass
class Ext4Edit:
    """A batch of edits to one ext4 image, rendered to one debugfs script.

    Content generated in memory (:meth:`write_bytes`) is *staged*: the applier
    writes it to ``<stage_dir>/<name>`` before running debugfs, because
    ``write`` only copies from host files.
    """

    ops: list[_Op] = field(default_factory=list)
    expectations: list[Expect] = field(default_factory=list)
    staged: dict[str, bytes] = field(default_factory=dict)

    def _expect(self, exp: Expect) -> None:
        # the last word on a path wins: later operations replace earlier ones
        self.expectations = [e for e in self.expectations if e.path != exp.path] + [exp]

    @staticmethod
    def _owner(mode: int, uid: int, gid: int) -> _Owner:
        if not 0 <= mode <= 0o7777:
            raise InvalidArgument(f"mode {mode:#o} is not a permission mode (0 to 07777)")
        return _Owner(mode, _check_id(uid, "uid"), _check_id(gid, "gid"))

    # -- operations ----------------------------------------------------------
    def mkdir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Ext4Edit:
        """Make sure ``path`` is a directory with this mode and owner.

        An existing directory is kept (its contents too); a file or symlink in
        the way is removed first. The parent must be a directory (see
        :meth:`mkdir_p`).
        """
        p = image_path(path)
        self.ops.append(_Op("dir", p, self._owner(mode, uid, gid)))
        self._expect(Expect(p, "dir", mode, uid, gid))
        return self

    def mkdir_p(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Ext4Edit:
        """Like ``mkdir -p``, then chmod/chown of the last component only.

        Missing parents are created as debugfs makes them (0755 root:root);
        existing parents are left alone.
        """
        p = image_path(path)
        parts = PurePosixPath(p).parts[1:]
        for i in range(1, len(parts)):
            parent = "/" + "/".join(parts[:i])
            if not any(e.path == parent for e in self.expectations):
                self.ops.append(_Op("dir", parent))
                self._expect(Expect(parent, "dir"))
        return self.mkdir(p, mode, uid, gid)

    def write_file(
        self, path: str, source: Path | str, mode: int = 0o600, uid: int = 0, gid: int = 0
    ) -> Ext4Edit:
        """Copy host file ``source`` to ``path`` (replacing a file there), set mode/owner."""
        p = image_path(path)
        if p == "/":
            raise InvalidArgument("guest path '/' is the root directory, not a file")
        src = host_path(source)
        self.ops.append(_Op("write", p, self._owner(mode, uid, gid), source=src))
        self._expect(Expect(p, "file", mode, uid, gid, size_from=src))
        return self

    def write_bytes(
        self,
        path: str,
        data: bytes,
        mode: int = 0o600,
        uid: int = 0,
        gid: int = 0,
        *,
        stage_dir: Path,
    ) -> Ext4Edit:
        """Write generated content: staged as ``<stage_dir>/stage-N`` by the applier."""
        name = f"stage-{len(self.staged)}"
        self.staged[name] = data
        self.write_file(path, Path(stage_dir) / name, mode, uid, gid)
        self._expect(Expect(image_path(path), "file", mode, uid, gid, size=len(data)))
        return self

    def symlink(self, path: str, target: str, uid: int = 0, gid: int = 0) -> Ext4Edit:
        """Make ``path`` a symlink to ``target`` (replacing a file or link there)."""
        p = image_path(path)
        if p == "/" or not target:
            raise InvalidArgument(f"symlink {p!r} needs a name and a target")
        _check_text(target, "symlink target")
        self.ops.append(_Op("symlink", p, self._owner(0o777, uid, gid), source=target))
        self._expect(Expect(p, "symlink", None, uid, gid, size=len(target.encode())))
        return self

    def set_owner_mode(
        self, path: str, kind: EntryKind, mode: int, uid: int = 0, gid: int = 0
    ) -> Ext4Edit:
        """chmod + chown of an existing entry, which must be of type ``kind``."""
        p = image_path(path)
        full_mode(kind, mode)  # validate early
        self.ops.append(_Op("chown", p, self._owner(mode, uid, gid), kind=kind))
        self._expect(Expect(p, kind, mode, uid, gid))
        return self

    def ensure_root_dir_mode(self, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Ext4Edit:
        """The image's ``/`` (the guest's ``/root`` for a work disk): 0755 root:root.

        sshd's StrictModes refuses keys below a group/world-writable home.
        """
        return self.set_owner_mode("/", "dir", mode, uid, gid)

    def remove(self, path: str) -> Ext4Edit:
        """Remove a file or symlink if present (a directory there is a conflict)."""
        p = image_path(path)
        if p == "/":
            raise InvalidArgument("cannot remove '/'")
        self.ops.append(_Op("remove", p))
        self.expectations = [e for e in self.expectations if e.path != p]
        return self

    # -- planning --------------------------------------------------------------
    def probe_paths(self) -> list[str]:
        """Paths whose current type :meth:`commands` needs: every target and its parent."""
        out: list[str] = []
        for op in self.ops:
            for p in (op.path, _parent(op.path)):
                if p not in out:
                    out.append(p)
        return out

    def commands(self, existing: Mapping[str, EntryKind | None]) -> list[Command]:
        """Plan the debugfs commands against the image's current state.

        ``existing`` gives the type of every :meth:`probe_paths` entry (None:
        absent). Raises :class:`Conflict` for what cannot be done safely.
        """
        state: dict[str, EntryKind | None] = dict(existing)
        out: list[Command] = []

        def kind(p: str) -> EntryKind | None:
            if p not in state:
                raise ValueError(f"{p} was not probed; pass the state of probe_paths()")
            return state[p]

        def forget_below(p: str) -> None:
            for key in state:
                if key.startswith(p.rstrip("/") + "/"):
                    state[key] = None

        def need_dir_parent(p: str) -> None:
            parent = _parent(p)
            if kind(parent) != "dir":
                what = kind(parent) or "missing"
                raise Conflict(
                    f"cannot create {p} in the disk image: {parent} is {_a(what)}",
                    hint="remove or rename the entry in the way",
                )

        def set_fields(p: str, k: EntryKind, owner: _Owner, with_mode: bool = True) -> None:
            q = quote(p)
            if with_mode:
                out.append(Command(f"set_inode_field {q} mode 0{full_mode(k, owner.mode):o}"))
            out.append(Command(f"set_inode_field {q} uid {owner.uid}"))
            out.append(Command(f"set_inode_field {q} gid {owner.gid}"))

        def clear_for_new(p: str) -> None:
            current = kind(p)
            if current == "dir":
                raise Conflict(
                    f"{p} is a directory in the disk image; cannot replace it",
                    hint="remove the directory in the guest, or pick another path",
                )
            if current is not None:
                out.append(Command(f"rm {quote(p)}", tolerate=(_NOT_FOUND,)))
                state[p] = None

        for op in self.ops:
            p = op.path
            if op.action == "dir":
                if p != "/" and kind(p) != "dir":
                    need_dir_parent(p)
                    if op.owner is None and kind(p) is not None:
                        # a parent for mkdir -p: never replace what is there
                        raise Conflict(
                            f"cannot create below {p} in the disk image: it is {_a(kind(p) or '')}",
                            hint="remove or rename the entry in the way",
                        )
                    if kind(p) is not None:
                        out.append(Command(f"rm {quote(p)}", tolerate=(_NOT_FOUND,)))
                    out.append(Command(f"mkdir {quote(p)}"))
                    forget_below(p)
                    state[p] = "dir"
                if op.owner is not None:
                    set_fields(p, "dir", op.owner)
            elif op.action in ("write", "symlink"):
                need_dir_parent(p)
                clear_for_new(p)
                assert op.owner is not None
                if op.action == "write":
                    out.append(Command(f"write {quote(op.source)} {quote(p)}"))
                    state[p] = "file"
                    set_fields(p, "file", op.owner)
                else:
                    out.append(Command(f"symlink {quote(p)} {quote(op.source)}"))
                    state[p] = "symlink"
                    set_fields(p, "symlink", op.owner, with_mode=False)
            elif op.action == "chown":
                if kind(p) != op.kind:
                    raise Conflict(
                        f"{p} is {_a(kind(p) or 'missing')} in the disk image, not {_a(op.kind)}"
                    )
                assert op.owner is not None
                set_fields(p, op.kind, op.owner)
            else:  # remove
                clear_for_new(p)
        return out

    def render(self, existing: Mapping[str, EntryKind | None]) -> str:
        """The debugfs command file: each command followed by its marker."""
        return render_commands(self.commands(existing))


def _a(word: str) -> str:
    return word if word == "missing" else ("an " if word[0] in "aeiou" else "a ") + word


def render_commands(commands: list[Command]) -> str:
    lines: list[str] = []
    for i, cmd in enumerate(commands):
        lines += [cmd.text, f"{MARKER_PREFIX}{i}"]
    return "".join(line + "\n" for line in lines)


def _is_banner(line: str) -> bool:
    # "debugfs 1.47.0 (5-Feb-2023)", printed on stderr at start
    return line.startswith("debugfs ") and line[8:9].isdigit()


def failures_from_stderr(commands: list[Command], stderr: str) -> list[Failure]:
    """Split debugfs's stderr at the markers and report unexpected messages.

    Segment *i* (before marker *i*) belongs to command *i*. A segment whose
    every line contains one of the command's tolerated texts is fine.
    """
    segments: list[list[str]] = [[] for _ in commands]
    index = 0
    trailing: list[str] = []
    for raw in stderr.split("\n"):
        line = raw.strip()
        if not line or _is_banner(line):
            continue
        if line.startswith(_MARKER_NOT_FOUND):
            index += 1
            continue
        if index < len(commands):
            segments[index].append(line)
        else:
            trailing.append(line)
    failures: list[Failure] = []
    for cmd, lines in zip(commands, segments, strict=True):
        unexpected = [ln for ln in lines if not any(t in ln for t in cmd.tolerate)]
        if unexpected:
            failures.append(Failure(cmd.text, " | ".join(unexpected)))
    if trailing:
        failures.append(Failure("(end of script)", " | ".join(trailing)))
    return failures
