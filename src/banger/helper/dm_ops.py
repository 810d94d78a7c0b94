"""The helper's device-mapper snapshot ops: a raw root disk per VM in constant time.

::

    {"op": "dm_snapshot_create", "args": {"vm_id": "<12 hex>",
        "origin": "<state>/images/<id>/rootfs.ext4", "cow": "<state>/vms/<id>/root.cow"}}
    -> {"device": "/dev/mapper/banger-<id>", "origin_loop": "/dev/loopN",
        "cow_loop": "/dev/loopM", "sectors": N}
    {"op": "dm_snapshot_remove", "args": {"vm_id": "<12 hex>"}}
    -> {"removed": true | false}

- ``vm_id`` is 12 hex digits; the device is always ``banger-<vm_id>``, so no
  request can name another device;
- ``origin`` and ``cow`` lie inside an ``--allow-root`` directory with no
  symlink component (:func:`banger.helper.validate.checked_path`); each is
  then opened with ``O_NOFOLLOW`` and checked *on the descriptor*: a regular
  file the owner owns, the cow at least 1 MiB and the origin a whole number
  of sectors. The loop devices are attached to those descriptors
  (``LOOP_CONFIGURE``), never to a path the owner could swap; the origin's
  read-only;
- the snapshot node is given to the owner (the owner's Firecracker opens it);
- undo: every loop device is attached with ``LO_FLAGS_AUTOCLEAR``, so if
  ``dmsetup create`` fails the helper's close detaches it, and once the
  snapshot is removed its loops go with it; a half-made device is removed.

This machine has no device-mapper: the validation, the structs and the argv
are tested here (tests/unit/test_dm_snapshot.py); creating a device is not.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger import proc
from banger.errors import CommandError, HelperError, InvalidArgument
from banger.helper.validate import Context, OpSpec, _string, checked_path

log = logging.getLogger(__name__)

CREATE = "dm_snapshot_create"
REMOVE = "dm_snapshot_remove"
MIN_COW = 1 << 20
#: banger.disk.dmsnap's rule, repeated: the helper loads that module only when an op runs.
_VM_ID = re.compile(r"[0-9a-f]{12}")
_O_FILE = os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class DmCreateArgs:
    vm_id: str
    origin: Path
    cow: Path


@dataclass(frozen=True)
class DmRemoveArgs:
    vm_id: str


def check_vm_id(_ctx: Context, value: object) -> str:
    text = _string(value)
    if not _VM_ID.fullmatch(text):
        raise ValueError("must be a VM id: 12 hex digits")
    return text


def check_file(ctx: Context, value: object) -> Path:
    return checked_path(ctx, value, must_exist=True)


CREATE_SPEC = OpSpec(
    {"vm_id": check_vm_id, "origin": check_file, "cow": check_file},
    DmCreateArgs,
    "a device-mapper snapshot of an image rootfs (read-only loop) over a VM's cow file",
)
REMOVE_SPEC = OpSpec({"vm_id": check_vm_id}, DmRemoveArgs, "remove a VM's snapshot device")


def open_owned_file(path: Path, owner_uid: int, *, write: bool, what: str) -> int:
    """``path`` opened without following a link, checked on the descriptor."""
    try:
        fd = os.open(path, (os.O_RDWR if write else os.O_RDONLY) | _O_FILE)
    except OSError as exc:  # ELOOP: swapped for a symlink since validation
        raise InvalidArgument(f"{what}: {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_uid != owner_uid:
        problem = "is not the owner's file"
    elif st.st_nlink != 1:
        problem = "has other hard links"
    if problem:
        os.close(fd)
        raise InvalidArgument(f"{what}: {path} {problem}")
    return fd


def attach_loop(file_fd: int, *, read_only: bool, name: str) -> tuple[int, str]:
    """A free loop device configured on ``file_fd``: (its open descriptor, its path)."""
    from banger.disk import dmsnap

    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(8):  # another process may take the free device first
            number = fcntl.ioctl(ctl, dmsnap.LOOP_CTL_GET_FREE)
            device = f"/dev/loop{number}"
            loop_fd = os.open(device, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
            config = dmsnap.loop_config(file_fd, read_only=read_only, file_name=name)
            try:
                fcntl.ioctl(loop_fd, dmsnap.LOOP_CONFIGURE, config)
            except OSError as exc:
                os.close(loop_fd)
                if exc.errno == errno.EBUSY:
                    continue
                raise HelperError(
                    f"{CREATE}: attaching {name} to {device}: {exc.strerror}"
                ) from None
            return loop_fd, device
    finally:
        os.close(ctl)
    raise HelperError(f"{CREATE}: no free loop device after 8 tries")


def _give_to_owner(device: Path, owner_uid: int) -> None:
    node = Path(os.path.realpath(device))  # /dev/mapper/x may be a udev link to ../dm-N
    if not node.is_block_device() or not str(node).startswith("/dev/"):
        raise HelperError(f"{CREATE}: {device} is not a block device")
    os.chown(node, owner_uid, -1)
    node.chmod(0o600)


def dm_snapshot_create(args: DmCreateArgs, owner_uid: int) -> dict[str, Any]:
    from banger.disk import dmsnap

    name = dmsnap.dm_name(args.vm_id)
    origin_fd = open_owned_file(args.origin, owner_uid, write=False, what=f"{CREATE}.args.origin")
    fds = [origin_fd]
    try:
        cow_fd = open_owned_file(args.cow, owner_uid, write=True, what=f"{CREATE}.args.cow")
        fds.append(cow_fd)
        sectors = dmsnap.sectors_for(os.fstat(origin_fd).st_size, f"{CREATE}.args.origin")
        if os.fstat(cow_fd).st_size < MIN_COW:
            raise InvalidArgument(f"{CREATE}.args.cow: {args.cow} is smaller than 1 MiB")
        origin_loop_fd, origin_loop = attach_loop(origin_fd, read_only=True, name=name + "-origin")
        fds.append(origin_loop_fd)
        cow_loop_fd, cow_loop = attach_loop(cow_fd, read_only=False, name=name + "-cow")
        fds.append(cow_loop_fd)
        table = dmsnap.snapshot_table(origin_loop, cow_loop, sectors)
        try:
            proc.run(dmsnap.dmsetup_create_argv(name, table))
        except CommandError as exc:
            # A device half made (created, table not loaded) must not stay.
            proc.run(dmsnap.dmsetup_remove_argv(name), check=False)
            raise HelperError(f"{CREATE}: dmsetup create {name} failed: {exc.message}") from None
        device = Path("/dev/mapper") / name
        try:
            _give_to_owner(device, owner_uid)
        except BaseException:
            proc.run(dmsnap.dmsetup_remove_argv(name), check=False)
            raise
        return {"device": str(device), "origin_loop": origin_loop, "cow_loop": cow_loop,
                "sectors": sectors}  # fmt: skip
    finally:
        # The snapshot holds the loop devices now; ours close (autoclear detaches
        # them when the snapshot goes, or now if it was never made).
        for fd in fds:
            os.close(fd)


def dm_snapshot_remove(args: DmRemoveArgs, owner_uid: int) -> dict[str, Any]:
    from banger.disk import dmsnap

    name = dmsnap.dm_name(args.vm_id)
    listed = proc.run(dmsnap.DMSETUP_LS_ARGV, check=False)
    if not any(d.name == name for d in dmsnap.parse_dmsetup_ls(listed.out)):
        return {"removed": False}
    # Device names are VM ids, not owners: another owner's device is not ours to remove.
    if dmsnap.node_owner(name) != owner_uid:
        raise InvalidArgument(f"{REMOVE}.args.vm_id: {name} is not the owner's device")
    proc.run(dmsnap.dmsetup_remove_argv(name))
    return {"removed": True}
