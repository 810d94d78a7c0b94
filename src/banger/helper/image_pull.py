"""The helper's ``image_pull`` op: turn OCI layers the owner fetched into an image, as root.

The owner's daemon downloads an image's blobs itself (skopeo as the owner,
with the owner's registry credentials, into its shared layer cache: no root
and no network as root). What needs root is the rest — flatten keeps file
owners, device nodes and capabilities; a foreign image gets systemd/sshd/tmux
installed in a chroot; mkfs must read every file — so the daemon asks for
exactly that::

    {"op": "image_pull", "args": {
      "out_dir": "<owner's state>/tmp/pull-1a2b3c4d",
      "name": "team-app-1.2",
      "source": "registry.example/team/app:1.2@sha256:<hex>",
      "layers": ["sha256:<hex>", ...],
      "config": {"Env": ["PATH=/usr/bin"], "WorkingDir": "/srv", "User": "app"},
      "max_unpacked": 68719476736}}

- ``out_dir`` lies inside an ``--allow-root`` directory with no symlink
  component, is a directory owned by the owner and holds exactly
  ``layers/`` (one file per layer, named by its hex digest) and
  ``daemon.lock``;
- ``name`` is an image name; ``source`` is ``<pull reference>@sha256:<hex>``,
  its reference re-parsed with :func:`banger.images.oci.ref.parse_ref`;
- ``layers`` are 1-256 sha256 digests; each file is opened with
  ``O_NOFOLLOW`` below a descriptor of ``out_dir`` and read through that
  descriptor (``/proc/self/fd/N``), so swapping it afterwards changes
  nothing; flatten checks every layer's digest as it reads it;
- ``config`` has exactly ``Env`` (strings), ``WorkingDir`` and ``User``
  (strings), all printable and bounded;
- ``max_unpacked`` is the owner's cap on the unpacked size in bytes
  (``images.max_unpacked_size``, 1 MiB-16 TiB); flatten also stops before
  half the free space under ``out_dir`` is used
  (:mod:`banger.images.oci.budget`).

Progress lines go to ``out_dir/progress.log``. While it works the helper
holds an flock on ``out_dir/helper.lock``; the daemon holds one on
``daemon.lock`` for as long as it waits for the reply. When the daemon
dies mid-pull (its flock is released) the helper stops at its next step and
removes its work; the restarted daemon waits for ``helper.lock`` before it
deletes the directory.

``out_dir`` is opened without following a symlink anywhere on its path, and
everything root writes — the flattened tree, the ext4 images — is written
inside a fresh root-only ``out_dir/root-<hex>/`` the helper holds by
descriptor (:mod:`banger.helper.rootstage`): the owner cannot rename, link
or replace anything below it while root works. At the end the image's
directory and then the stage are handed to the owner, who moves
``root-<hex>/images/<id>`` into place (the reply names both).
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.errors import BangerError, InvalidArgument
from banger.helper.image_build import check_image_name
from banger.helper.rootstage import RootStage, open_owner_dir
from banger.helper.validate import Context, OpSpec, _string, checked_path

OP = "image_pull"
LAYERS_DIR = "layers"
DAEMON_LOCK = "daemon.lock"
HELPER_LOCK = "helper.lock"
PROGRESS_NAME = "progress.log"
#: What the daemon puts into ``out_dir`` before asking.
EXPECTED_ENTRIES = frozenset({LAYERS_DIR, DAEMON_LOCK})
MAX_LAYERS = 256
MAX_ENV = 512
MAX_TEXT = 4096
MIN_UNPACKED, MAX_UNPACKED = 1 << 20, 16 << 40
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

#: One flatten/mkfs at a time: each is disk- and CPU-bound.
_pull_lock = threading.Lock()


class PullAbandoned(BangerError):
    """The daemon that asked for the pull is gone; the work was dropped."""

    exit_code = 1


@dataclass(frozen=True)
class ImagePullArgs:
    out_dir: Path
    name: str
    source: str
    layers: tuple[str, ...]
    config: dict[str, Any]
    max_unpacked: int


def _printable(value: object, what: str) -> str:
    text = _string(value)
    if len(text) > MAX_TEXT or not text.isprintable():
        raise ValueError(f"{what} must be printable and at most {MAX_TEXT} characters")
    return text


def check_source(_ctx: Context, value: object) -> str:
    from banger.images.oci.ref import parse_ref

    text = _printable(value, "the source")
    ref, at, digest = text.rpartition("@")
    if not at or not _DIGEST.fullmatch(digest):
        raise ValueError("must be <reference>@sha256:<64 hex digits>")
    try:
        parse_ref(ref)
    except InvalidArgument as exc:
        raise ValueError(exc.message) from None
    return text


def check_layers(_ctx: Context, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LAYERS:
        raise ValueError(f"must be a list of 1-{MAX_LAYERS} layer digests")
    for item in value:
        if not isinstance(item, str) or not _DIGEST.fullmatch(item):
            raise ValueError("every layer must be sha256:<64 hex digits>")
    return tuple(value)


def check_config(_ctx: Context, value: object) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"Env", "WorkingDir", "User"}:
        raise ValueError("must be an object with exactly Env, WorkingDir and User")
    env = value["Env"]
    if not isinstance(env, list) or len(env) > MAX_ENV:
        raise ValueError(f"Env must be a list of at most {MAX_ENV} strings")
    return {
        "Env": [_printable(e, "every Env entry") for e in env],
        "WorkingDir": _printable(value["WorkingDir"], "WorkingDir"),
        "User": _printable(value["User"], "User"),
    }


def check_max_unpacked(_ctx: Context, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a number of bytes")
    if not MIN_UNPACKED <= value <= MAX_UNPACKED:
        raise ValueError(f"must be between {MIN_UNPACKED} and {MAX_UNPACKED} bytes")
    return value


def check_out_dir(ctx: Context, value: object) -> Path:
    return checked_path(ctx, value, must_exist=True)


SPEC = OpSpec(
    {
        "out_dir": check_out_dir,
        "name": check_image_name,
        "source": check_source,
        "layers": check_layers,
        "config": check_config,
        "max_unpacked": check_max_unpacked,
    },
    ImagePullArgs,
    "flatten fetched OCI layers, make them bootable, publish into an owner directory",
)


def _open_out_dir(out_dir: Path, owner_uid: int) -> int:
    fd = open_owner_dir(out_dir, owner_uid, f"{OP}.args.out_dir")
    try:
        entries = set(os.listdir(fd))  # noqa: PTH208 - by descriptor: no path lookup
        if entries != EXPECTED_ENTRIES:
            raise InvalidArgument(
                f"{OP}.args.out_dir: {out_dir} must hold exactly {sorted(EXPECTED_ENTRIES)},"
                f" found {sorted(entries)[:8]}"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _owner_file(fd: int, owner_uid: int, what: str) -> None:
    """Refuse anything but the owner's own regular file: a hard link the owner
    made to a file of root's (where protected_hardlinks is off) is not read."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != owner_uid:
        raise InvalidArgument(f"{OP}: {what} is not a regular file of the owner's")


def _open_layers(dir_fd: int, digests: tuple[str, ...], owner_uid: int) -> list[int]:
    """One read-only descriptor per layer file, opened without following symlinks."""
    layers_fd = os.open(LAYERS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=dir_fd)  # fmt: skip
    fds: list[int] = []
    try:
        if os.fstat(layers_fd).st_uid != owner_uid:
            raise InvalidArgument(f"{OP}: {LAYERS_DIR}/ is not the owner's directory")
        for digest in digests:
            name = digest.removeprefix("sha256:")
            # O_NONBLOCK: a fifo the owner put there must not hang the open.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=layers_fd)
            fds.append(fd)
            _owner_file(fd, owner_uid, f"layer {digest}")
    except FileNotFoundError as exc:
        for fd in fds:
            os.close(fd)
        raise InvalidArgument(f"{OP}: a layer file is missing: {exc.filename}") from None
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        os.close(layers_fd)
    return fds


class _DaemonWatch:
    """Tells whether the daemon still holds ``daemon.lock`` (it does while it waits)."""

    def __init__(self, dir_fd: int, owner_uid: int) -> None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        self.fd = os.open(DAEMON_LOCK, flags, dir_fd=dir_fd)
        try:
            _owner_file(self.fd, owner_uid, DAEMON_LOCK)
        except BaseException:
            os.close(self.fd)
            raise

    def check(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # held: the daemon is waiting for us
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        raise PullAbandoned("the daemon that asked for this pull is gone; stopped")

    def close(self) -> None:
        os.close(self.fd)


def image_pull(args: ImagePullArgs, owner_uid: int) -> dict[str, Any]:
    from banger.images.oci.config import ImageConfig
    from banger.images.oci.pull import image_from_layers
    from banger.paths import Paths

    owner = (owner_uid, pwd.getpwuid(owner_uid).pw_gid)
    dir_fd = _open_out_dir(args.out_dir, owner_uid)
    try:
        lock_fd = os.open(HELPER_LOCK, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)  # fmt: skip
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            watch = _DaemonWatch(dir_fd, owner_uid)
            try:
                layer_fds = _open_layers(dir_fd, args.layers, owner_uid)
                try:
                    log_fd = os.open(PROGRESS_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                     | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                                     dir_fd=dir_fd)  # fmt: skip
                    os.fchown(log_fd, *owner)
                    with (
                        os.fdopen(log_fd, "a", buffering=1, encoding="utf-8") as log,
                        RootStage.create(dir_fd, owner, args.out_dir) as stage,
                    ):

                        def progress(line: str) -> None:
                            watch.check()
                            print(line, file=log)

                        # Everything below happens inside the root-only stage,
                        # reached through its descriptor (banger.helper.rootstage).
                        out = stage.path
                        paths = Paths(config_dir=out / "config", state_dir=out,
                                      cache_dir=out / "cache", runtime_dir=out / "run")  # fmt: skip
                        layers = [(d, Path(f"/proc/self/fd/{fd}")) for d, fd in
                                  zip(args.layers, layer_fds, strict=True)]  # fmt: skip
                        config = ImageConfig(tuple(args.config["Env"]),
                                             args.config["WorkingDir"],
                                             args.config["User"])  # fmt: skip
                        with _pull_lock:
                            watch.check()
                            entry = image_from_layers(layers, paths=paths, name=args.name,
                                                      source=args.source, config=config,
                                                      owner=owner, progress=progress,
                                                      max_unpacked=args.max_unpacked,
                                                      )  # fmt: skip
                        # The owner renames images/<id> into place and deletes the rest.
                        stage.hand_over("images")
                finally:
                    for fd in layer_fds:
                        os.close(fd)
            finally:
                watch.close()
        finally:
            os.close(lock_fd)  # releases helper.lock: the owner may delete out_dir now
    finally:
        os.close(dir_fd)
    return {"id": entry.id, "name": entry.name, "dir": stage.name,
            "path": str(args.out_dir / stage.name / "images" / entry.id)}  # fmt: skip
