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

The build runs in ``out_dir`` (``tmp/`` for the work tree, ``images/<id>/``
for the result), progress lines are appended to ``out_dir/progress.log``,
and everything left at the top of ``out_dir`` is handed to the owner
(published files via ``publish_image(owner=…)``), who moves the image into
place. It runs outside the helper's network-op lock: a build takes minutes.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.errors import InvalidArgument
from banger.helper.validate import OPS, Context, OpSpec, _string, checked_path

_SUITE = re.compile(r"[a-z]{2,32}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_MIRROR = re.compile(r"https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")
PROGRESS_NAME = "progress.log"

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


def register() -> None:
    """Add ``image_build`` to the helper's op table (``banger-helper`` does at start).

    Explicit rather than at import: the op pulls in the image builder, and the
    table stays the network ops alone for code that only validates requests.
    """
    OPS["image_build"] = SPEC


def unregister() -> None:
    OPS.pop("image_build", None)


def _owner_dir_fd(out_dir: Path, owner_uid: int) -> int:
    fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner_uid:
        os.close(fd)
        raise InvalidArgument(f"image_build.args.out_dir: {out_dir} is not the owner's directory")
    if os.listdir(fd):  # noqa: PTH208 - by descriptor: no path lookup after the checks
        os.close(fd)
        raise InvalidArgument(f"image_build.args.out_dir: {out_dir} is not empty")
    return fd


def image_build(args: ImageBuildArgs, owner_uid: int) -> dict[str, Any]:
    from banger.images.build import build_image
    from banger.paths import Paths

    owner_gid = pwd.getpwuid(owner_uid).pw_gid
    dir_fd = _owner_dir_fd(args.out_dir, owner_uid)
    try:
        log_fd = os.open(
            PROGRESS_NAME,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dir_fd,
        )
        os.fchown(log_fd, owner_uid, owner_gid)
        with os.fdopen(log_fd, "a", buffering=1, encoding="utf-8") as progress:
            out = args.out_dir
            paths = Paths(config_dir=out / "config", state_dir=out, cache_dir=out / "cache",
                          runtime_dir=out / "run")  # fmt: skip
            with _build_lock:
                entry = build_image(
                    f"debian:{args.suite}",
                    paths=paths,
                    mirror=args.mirror,
                    name=args.name,
                    owner=(owner_uid, owner_gid),
                    progress=lambda line: print(line, file=progress),
                )
        # Hand over what the build left at the top (images/, tmp/, cache/): the
        # owner renames images/<id> into place and deletes the rest.
        for name in os.listdir(dir_fd):  # noqa: PTH208 - by descriptor, as above
            os.chown(name, owner_uid, owner_gid, dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(dir_fd)
    return {"id": entry.id, "name": entry.name, "path": str(entry.path)}
