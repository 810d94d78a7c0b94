"""The hostile owner of issue #16, as a program: run as the owner (never root).

``python -m tests.reliability.owner_racer PLAN.json``. The plan names the
owner's staging directories, decoy directories to point symlinks at, and a
stop file. Until the stop file appears it keeps doing everything the owner
may do to the paths the root helper works under, as fast as it can:

- swaps ``tmp``, ``images``, ``build-*``, ``layers`` and each ``root-*``
  stage for a symlink to a decoy (renaming the real one away, then back);
- plants symlinks named like what the helper creates (``tmp``, ``images``,
  ``tree``) at the top of each staging directory;
- tries to create, rename and link inside every ``root-*`` stage (which only
  root may: each attempt that succeeds is counted and reported).

It prints one JSON line at the end: how many swaps it made and how many
writes into a root stage succeeded (must be 0).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _swap(path: Path, decoy: Path) -> bool:
    """Rename ``path`` away, put a symlink to ``decoy`` in its place, then undo it."""
    aside = path.with_name(path.name + ".aside")
    try:
        path.rename(aside)
    except OSError:
        return False
    try:
        path.symlink_to(decoy)
        path.unlink()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            aside.rename(path)
    return True


def _roots(path: Path) -> bool:
    try:
        return path.lstat().st_uid == 0
    except OSError:
        return False


def _poke_stage(stage: Path, decoy: Path) -> int:
    """Everything an owner would try inside root's stage; the number that worked while
    the stage was still root's.

    Only a success with the stage *still* root's afterwards counts: the helper
    hands the stage over (root's -> the owner's, never back) when it is done,
    and from then on writing in it is the owner's right.
    """
    worked = 0
    if not _roots(stage):
        return 0  # handed over: the owner's now, and the test checks what it holds
    attempts: list[Callable[[], object]] = [
        lambda: (stage / "tmp").symlink_to(decoy),
        lambda: (stage / "images").symlink_to(decoy),
        lambda: (stage / "planted").mkdir(),
        lambda: os.link(decoy / "anchor", stage / "linked"),
    ]

    def move(entry: Path) -> Callable[[], object]:
        def attempt() -> None:
            moved = entry.rename(entry.with_name(entry.name + ".moved"))
            if not _roots(stage):  # handed over meanwhile: leave the owner's result be
                moved.rename(entry)

        return attempt

    for child in ("tmp", "images"):
        with contextlib.suppress(OSError):  # EACCES while the stage is root's
            if (stage / child).is_symlink():
                continue  # one of the racer's own symlinks (after the hand-over): not root's
            attempts += [move(entry) for entry in (stage / child).iterdir()]
    for attempt in attempts:
        try:
            attempt()
        except OSError:
            continue
        if _roots(stage):
            worked += 1
    return worked


def main(plan_file: str) -> int:
    plan: dict[str, Any] = json.loads(Path(plan_file).read_text())
    dirs = [Path(d) for d in plan["staging_dirs"]]
    decoys = [Path(d) for d in plan["decoys"]]
    stop = Path(plan["stop_file"])
    swaps = stage_writes = rounds = 0
    while not stop.exists() or rounds == 0:
        rounds += 1
        decoy = decoys[rounds % len(decoys)]
        for top in dirs:
            # Like the reported attack: the op has passed its checks (it holds
            # helper.lock) before the owner starts swapping things under it.
            if not (top / "helper.lock").exists():
                continue
            for name in ("tmp", "images", "tree"):
                with contextlib.suppress(OSError):
                    (top / name).symlink_to(decoy)
            with contextlib.suppress(OSError):
                entries = list(top.iterdir())
            for entry in entries:
                if entry.name.startswith("root-") and not entry.is_symlink():
                    stage_writes += _poke_stage(entry, decoy)
                if entry.name in ("layers", "tmp", "images") or entry.name.startswith("root-"):
                    swaps += _swap(entry, decoy)
            swaps += _swap(top.parent, decoy)  # the owner's tmp/ itself
    print(json.dumps({"swaps": swaps, "stage_writes": stage_writes, "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
