"""SSH keys: banger's own client key, per-VM host keys, and pinned known_hosts.

banger logs into guests with its own ed25519 key and knows each guest's host
key before the guest boots (it generated it and wrote it onto the work disk),
so the host key is pinned in banger's known_hosts ahead of time and no
trust-on-first-use prompt can ever appear. Every file write is atomic
(temp file in the same directory, fsync, rename).
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from banger import proc
from banger.errors import BangerError, InvalidArgument
from banger.paths import Paths

HOST_KEY_NAME = "ssh_host_ed25519_key"
KEY_TYPE = "ssh-ed25519"

# A host pattern banger writes: a name, an address, or [address]:port. No
# wildcards, negation, hashing, markers or separators.
_NAME = re.compile(r"^(\[[0-9A-Za-z.:_-]+\]:[0-9]{1,5}|[0-9A-Za-z.:_-]+)$")


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    #: "ssh-ed25519 AAAA… comment", as in the .pub file
    public_key: str


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).rename(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_pair(private: Path) -> KeyPair:
    public = private.with_name(private.name + ".pub")
    return KeyPair(private, public, public.read_text().strip())


def _keygen(private: Path, comment: str) -> KeyPair:
    """Generate a new ed25519 pair at ``private`` atomically (both files or neither)."""
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix=".keygen-", dir=private.parent) as tmp:
        key = Path(tmp) / "key"
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
        key.chmod(0o600)
        pub = key.with_name("key.pub")
        pub.chmod(0o644)
        for f in (key, pub):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        # public half first: a private key without its .pub is repaired on load,
        # a .pub without its private key is simply overwritten next time
        pub.rename(private.with_name(private.name + ".pub"))
        key.rename(private)
    _fsync_dir(private.parent)
    return _read_pair(private)


def ensure_owner_key(paths: Paths) -> KeyPair:
    """banger's own client key (``Paths.ssh_key``), generated once."""
    private = paths.ssh_key
    if private.exists():
        public = private.with_name(private.name + ".pub")
        if not public.exists():
            out = proc.run(["ssh-keygen", "-y", "-f", str(private)]).out.strip()
            _write_atomic(public, (out + " banger\n").encode(), 0o644)
        if private.stat().st_mode & 0o077:
            private.chmod(0o600)
        return _read_pair(private)
    return _keygen(private, "banger")


def generate_host_key(dest_dir: Path, comment: str) -> KeyPair:
    """A fresh per-VM sshd host key at ``dest_dir/ssh_host_ed25519_key`` (replaces one)."""
    if not comment or any(c.isspace() for c in comment):
        raise InvalidArgument(f"key comment {comment!r} must be one word")
    return _keygen(dest_dir / HOST_KEY_NAME, comment)


def _check_names(names: list[str]) -> list[str]:
    if not names:
        raise InvalidArgument("pinning a host key needs at least one host name")
    for n in names:
        if not _NAME.fullmatch(n):
            raise InvalidArgument(
                f"host name {n!r} cannot go into known_hosts",
                hint="use a plain name or address (letters, digits, '.', '-', ':', '_')",
            )
    return names


def _key_fields(public_key: str) -> str:
    """``ssh-ed25519 AAAA…`` from a .pub line (the comment dropped)."""
    parts = public_key.split()
    if (
        len(parts) < 2
        or not parts[0].startswith("ssh-")
        or not re.fullmatch(r"[A-Za-z0-9+/=]+", parts[1])
    ):
        raise InvalidArgument(f"not an OpenSSH public key: {public_key[:40]!r}")
    return f"{parts[0]} {parts[1]}"


@contextmanager
def _locked(known_hosts: Path) -> Iterator[None]:
    # read-modify-write of one shared file by concurrent VM starts: serialise
    known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = known_hosts.with_name(known_hosts.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _without(lines: list[str], names: set[str]) -> list[str]:
    kept = []
    for line in lines:
        fields = line.split()
        if fields and not line.lstrip().startswith("#"):
            hosts = set(fields[0].split(","))
            if hosts & names:
                continue
        kept.append(line)
    return kept


def _read_lines(known_hosts: Path) -> list[str]:
    try:
        return known_hosts.read_text().splitlines()
    except FileNotFoundError:
        return []


def pin_host_key(known_hosts: Path, names: list[str], public_key: str) -> None:
    """Make ``names`` (e.g. VM name and IP) known with exactly this key.

    Older lines naming any of them are removed, so a recreated VM with the same
    name or a reused IP never trips a "host key changed" error.
    """
    wanted = _check_names(names)
    entry = f"{','.join(wanted)} {_key_fields(public_key)}"
    with _locked(known_hosts):
        lines = [*_without(_read_lines(known_hosts), set(wanted)), entry]
        _write_atomic(known_hosts, "".join(f"{ln}\n" for ln in lines).encode(), 0o600)


def unpin(known_hosts: Path, names: list[str]) -> None:
    """Forget every line naming any of ``names`` (no-op when none do)."""
    gone = set(_check_names(names))
    with _locked(known_hosts):
        lines = _read_lines(known_hosts)
        kept = _without(lines, gone)
        if kept != lines:
            _write_atomic(known_hosts, "".join(f"{ln}\n" for ln in kept).encode(), 0o600)


def read_public_key(private: Path) -> KeyPair:
    """Load an existing pair (for a VM whose host key was generated earlier)."""
    if not private.is_file():
        raise BangerError(f"key not found: {private}")
    return _read_pair(private)
