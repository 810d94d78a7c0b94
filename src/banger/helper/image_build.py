"""The helper's ``image_build`` op: build a Debian image as root, for the owner.

Image builds need root for ownership (``/etc/shadow`` is root:shadow, package
scripts chroot). The owner's daemon asks for exactly this::

    {"op": "image_build", "args": {"suite": "bookworm", "name": "debian-bookworm",
     "out_dir": "<owner's tmp dir>/register-1a2b3c4d", "mirror": null}}

- ``suite`` is a Debian codename (``[a-z]{2,32}``); the package list is fixed;
- ``name`` is an image name (``[a-z0-9][a-z0-9._-]{0,62}``);
- ``out_dir`` must lie inside an ``--allow-root`` directory (banger's state
  directory), contain no symlink component, be a directory owned by the
  owner, and be empty apart from nothing at all;
- ``mirror`` is null or a plain ``http(s)://host[:port]/path`` URL.

``out_dir`` is opened without following a symlink anywhere on its path. The
build runs inside a fresh root-only ``out_dir/root-<hex>/`` held by
descriptor (:mod:`banger.helper.rootstage`; ``tmp/`` for the work tree,
``images/<id>/`` for the result), which the owner cannot change while root
works; mmdebstrap sees it through a private bind mount
(:mod:`banger.helper.bindexec`). Progress lines are appended to
``out_dir/progress.log``. At the end the image (published files owned by the
owner via ``publish_image(owner=…)``) and the stage are handed to the owner,
who moves ``root-<hex>/images/<id>`` into place. It runs outside the helper's
network-op lock: a build takes minutes.

A failed build leaves nothing of root's in ``out_dir``: the stage is emptied
by descriptor and handed over empty, so the owner can delete ``out_dir``.
Progress is best effort: a write that fails (the disk the build fills is the
one the log is on) drops the line instead of failing — or killing — the
build it reports on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.errors import InvalidArgument
from banger.helper.rootstage import RootStage, open_owner_dir
from banger.helper.validate import Context, OpSpec, _string, checked_path

_SUITE = re.compile(r"[a-z]{2,32}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_MIRROR = re.compile(r"https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")
PROGRESS_NAME = "progress.log"

log = logging.getLogger(__name__)

_build_lock = threading.Lock()


@dataclass(frozen=True)
class ImageBuildArgs:
    suite: str
    name: str
    out_dir: Path
    mirror: str | None


def check_suite(_ctx: Context, value: object) -> str:
    text = _string(value)
    if not _SUITE.fullmatch(text):
        raise ValueError("must be a Debian suite: 2-32 lowercase letters")
    return text


def check_image_name(_ctx: Context, value: object) -> str:
    text = _string(value)
    if not _NAME.fullmatch(text):
        raise ValueError("must match [a-z0-9][a-z0-9._-]{0,62}")
    return text


def check_out_dir(ctx: Context, value: object) -> Path:
    return checked_path(ctx, value, must_exist=True)


def check_mirror(_ctx: Context, value: object) -> str | None:
    if value is None:
        return None
    text = _string(value)
    if not _MIRROR.fullmatch(text):
        raise ValueError("must be null or a plain http(s)://host[:port]/path URL")
    return text


SPEC = OpSpec(
    {
        "suite": check_suite,
        "name": check_image_name,
        "out_dir": check_out_dir,
        "mirror": check_mirror,
    },
    ImageBuildArgs,
    "build debian:<suite> into an empty owner directory (minutes)",
)


def _owner_dir_fd(out_dir: Path, owner_uid: int) -> int:
    fd = open_owner_dir(out_dir, owner_uid, "image_build.args.out_dir")
    if os.listdir(fd):  # noqa: PTH208 - by descriptor: no path lookup after the checks
        os.close(fd)
        raise InvalidArgument(f"image_build.args.out_dir: {out_dir} is not empty")
    return fd


def _progress_writer(log_fd: int) -> Callable[[str], None]:
    """Append a line to the progress file; a failed write (ENOSPC) only loses that line."""

    def write(line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(log_fd, (line + "\n").encode("utf-8", "replace"))

    return write


def image_build(args: ImageBuildArgs, owner_uid: int) -> dict[str, Any]:
    from banger.images.build import build_image
    from banger.paths import Paths

    owner = (owner_uid, pwd.getpwuid(owner_uid).pw_gid)
    dir_fd = _owner_dir_fd(args.out_dir, owner_uid)
    try:
        log_fd = os.open(
            PROGRESS_NAME,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dir_fd,
        )
        try:
            os.fchown(log_fd, *owner)
            # A failed build empties the stage (RootStage.__exit__): nothing of
            # root's is left in out_dir, so the owner can delete it.
            with RootStage.create(dir_fd, owner, args.out_dir) as stage:
                out = stage.path
                paths = Paths(config_dir=out / "config", state_dir=out, cache_dir=out / "cache",
                              runtime_dir=out / "run")  # fmt: skip
                with _build_lock:
                    entry = build_image(
                        f"debian:{args.suite}",
                        paths=paths,
                        mirror=args.mirror,
                        name=args.name,
                        owner=owner,
                        progress=_progress_writer(log_fd),
                    )
                # The owner renames images/<id> into place and deletes the rest.
                stage.hand_over("images")
        finally:
            os.close(log_fd)
    finally:
        os.close(dir_fd)
    return {"id": entry.id, "name": entry.name, "dir": stage.name,
            "path": str(args.out_dir / stage.name / "images" / entry.id)}  # fmt: skip
