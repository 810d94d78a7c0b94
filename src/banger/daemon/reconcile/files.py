"""Startup repair of files: temp builds, half-published artifacts, per-VM leftovers.

Runs before the daemon serves, so no operation can be using any of these:

- ``tmp/``: the image cleanup (:mod:`banger.daemon.images_cleanup`, which also
  waits out a helper still busy in a pull directory) plus everything else in
  there (kernel staging ``*.partial``, …) except the pull directories it
  handles;
- ``images/<id>`` and ``kernels/<id>`` without a store row (publication
  renames the directory first, then records the row: a crash between leaves
  a whole but unrecorded directory) are removed; a row whose directory is
  gone is deleted when no VM uses it, else reported;
- ``vms/<id>`` without a VM row: removed only if it holds no work disk. A
  work disk is the owner's data; one without a record is reported, never
  deleted (the store may have been replaced, not the VM abandoned);
- temp files of an interrupted disk creation (``vms/<id>/.*.tmp-*``).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

from banger.daemon.images_cleanup import PULL_PATTERN, cleanup_image_leftovers
from banger.doctor.reconcile_report import ReconcileReport
from banger.errors import BangerError
from banger.helper.staging import NAME as STAGING_NAME
from banger.paths import Paths
from banger.rmtree import discard_tree
from banger.store import Store

log = logging.getLogger(__name__)

WORK_DISK_NAME = "work.ext4"
#: Store ids (``secrets.token_hex(6)``): only such entries are banger's to judge; anything
#: else (``lost+found`` of a mounted filesystem, the owner's own files) is never touched.
STORE_ID = re.compile(r"[0-9a-f]{12}")
TEMP_DISK_PATTERN = ".*.tmp-*"


def _remove(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        discard_tree(path)
    else:
        path.unlink(missing_ok=True)
    return not path.exists() and not path.is_symlink()


def _rel(paths: Paths, path: Path) -> str:
    try:
        return str(path.relative_to(paths.state_dir))
    except ValueError:
        return str(path)


def temp_leftovers(paths: Paths, report: ReconcileReport) -> None:
    cleanup = cleanup_image_leftovers(paths)
    for path in cleanup.removed:
        report.fixed(f"{_rel(paths, path)}: removed (left by an interrupted image operation)")
    for path in cleanup.waiting:
        report.keep(f"{_rel(paths, path)}: the helper still works in it; removed when it is done")
    tmp = paths.tmp_dir
    if not tmp.is_dir():
        return
    for entry in sorted(tmp.iterdir()):
        if entry.match(PULL_PATTERN):
            continue
        if _remove(entry):
            report.fixed(f"{_rel(paths, entry)}: removed (temporary file of an interrupted build)")
        elif STAGING_NAME.fullmatch(entry.name):
            continue  # root's files of a killed helper: reconcile.after_stack asks the helper
        else:
            report.fail(f"{_rel(paths, entry)}: could not remove")


def half_published(paths: Paths, store: Store, report: ReconcileReport) -> None:
    kinds = (
        ("image", paths.images_dir, {i.id for i in store.list_images()}, store.delete_image),
        ("kernel", paths.kernels_dir, {k.id for k in store.list_kernels()}, store.delete_kernel),
    )
    for noun, directory, ids, delete in kinds:
        present = (
            {e.name for e in directory.iterdir() if e.is_dir() and STORE_ID.fullmatch(e.name)}
            if directory.is_dir()
            else set()
        )
        for name in sorted(present - ids):
            entry = directory / name
            if _remove(entry):
                report.fixed(f"{_rel(paths, entry)}: removed ({noun} directory without a record)")
            else:
                report.fail(f"{_rel(paths, entry)}: could not remove")
        for row_id in sorted(ids - present):
            try:
                delete(row_id)
            except BangerError as exc:
                report.keep(f"{noun} {row_id}: its directory is missing ({exc.message})")
            except sqlite3.IntegrityError as exc:  # a snapshot still needs it
                report.keep(f"{noun} {row_id}: its directory is missing ({exc})")
            else:
                report.fixed(f"{noun} {row_id}: record deleted (its directory was missing)")


def vm_leftovers(paths: Paths, store: Store, report: ReconcileReport) -> None:
    vms = {vm.id: vm for vm in store.list_vms()}
    vms_dir = paths.vms_dir
    present = (
        {e.name for e in vms_dir.iterdir() if e.is_dir() and STORE_ID.fullmatch(e.name)}
        if vms_dir.is_dir()
        else set()
    )
    for name in sorted(present - set(vms)):
        entry = vms_dir / name
        if (entry / WORK_DISK_NAME).exists():
            report.keep(
                f"{_rel(paths, entry)}: no VM record, but it holds a work disk "
                "(kept; remove it by hand if it is not needed)"
            )
        elif _remove(entry):
            report.fixed(f"{_rel(paths, entry)}: removed (VM directory without a record)")
    for vm_id in sorted(present & set(vms)):
        for tmp in sorted((vms_dir / vm_id).glob(TEMP_DISK_PATTERN)):
            if _remove(tmp):
                report.fixed(f"{_rel(paths, tmp)}: removed (disk of an interrupted stage)")


def before_serving(paths: Paths, store: Store, report: ReconcileReport) -> None:
    """Every file repair above, in order; a failing one never stops the next."""
    steps: tuple[Callable[[Paths, Store, ReconcileReport], None], ...] = (
        lambda p, _s, r: temp_leftovers(p, r),
        half_published,
        vm_leftovers,
    )
    for step in steps:
        try:
            step(paths, store, report)
        except Exception as exc:  # reconciliation must never stop the daemon from starting
            log.exception("reconcile step failed")
            report.fail(f"file reconciliation step failed: {exc!r}")
