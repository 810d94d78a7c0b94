"""Real guests for the benchmarks: the e2e harness, and what they read back from it.

The benchmarks that boot VMs use :func:`tests.e2e.harness.banger_env` as it is
(root helper + an unprivileged owner's bangerd inside a network namespace,
kernel and image seeded from the test caches); this module only adds reading:
operation events as stage timings, a VM's store row, and running a piece of
work inside the namespace (a thread that joined it, so sockets and children
it starts live there).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tests.e2e.harness import Banger
from tests.qemu_support import on_netns_thread
from tests.support import VENV_BIN

from banger.paths import Paths

T = TypeVar("T")


def banger_paths(b: Banger) -> Paths:
    return Paths.from_env({"BANGER_HOME": str(b.home)})


def run_in_netns(ns: str, work: Callable[[], T]) -> T:
    """``work()`` on a thread that joined network namespace ``ns`` (children inherit it)."""
    return on_netns_thread(ns, work)


def vm_row(b: Banger, name: str) -> dict[str, Any]:
    """The VM's store row (read-only; ``config`` decoded)."""
    uri = f"file:{banger_paths(b).db}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM vms WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise LookupError(f"no VM {name!r} in the store")
    data = dict(row)
    data["config"] = json.loads(data["config"])
    return data


def at(text: str) -> float:
    """An API timestamp as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class OpTrace:
    """One finished operation: when it was created and ended, and its stages in order."""

    op_id: str
    kind: str
    created: float
    finished: float
    #: (stage, seconds from its stage event to the next stage event or the op's end)
    stages: tuple[tuple[str, float], ...]

    def stage(self, name: str) -> float:
        return sum(seconds for stage, seconds in self.stages if stage == name)


def stage_seconds(events: Sequence[dict[str, Any]], end: float) -> tuple[tuple[str, float], ...]:
    """Durations of the ``stage`` events: each lasts until the next one, the last until ``end``.

    A stage entered twice (a retried boot) appears twice, in order.
    """
    marks = [(e["stage"], at(e["at"])) for e in events if e.get("kind") == "stage"]
    out = []
    for index, (stage, start) in enumerate(marks):
        stop = marks[index + 1][1] if index + 1 < len(marks) else end
        out.append((str(stage), max(stop - start, 0.0)))
    return tuple(out)


def ops_for(b: Banger, target: str) -> list[dict[str, Any]]:
    """Every operation (finished too) on ``target``, oldest first."""
    listed = json.loads(b.banger("ops", "list", "--all", "--json", timeout=60).stdout)
    ours = [op for op in listed if op.get("target") == target]
    return sorted(ours, key=lambda op: at(op["created_at"]))


def trace(b: Banger, op: dict[str, Any]) -> OpTrace:
    """Events of a finished operation (``ops show --follow --json`` replays them)."""
    out = b.banger("ops", "show", op["id"], "--follow", "--json", check=False, timeout=60).stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    if op.get("finished_at"):
        finished = at(op["finished_at"])
    else:
        finished = max((at(e["at"]) for e in events), default=at(op["created_at"]))
    return OpTrace(
        op["id"], op["kind"], at(op["created_at"]), finished, stage_seconds(events, finished)
    )


@dataclass(frozen=True)
class Timed:
    """One CLI run: wall clock start/end (epoch, comparable with op timestamps) and status."""

    start: float
    end: float
    returncode: int
    stderr: str

    @property
    def seconds(self) -> float:
        return self.end - self.start


def start_cli(b: Banger, *args: str) -> tuple[float, subprocess.Popen[str]]:
    """Start ``banger ARGS`` as the owner in the namespace (output captured); returns its start."""
    started = time.time()
    child = subprocess.Popen(
        b.as_owner([str(VENV_BIN / "banger"), *args]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return started, child


def finish_cli(started: float, child: subprocess.Popen[str], timeout: float) -> Timed:
    try:
        _, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        _, err = child.communicate()
        return Timed(started, time.time(), -9, f"timed out after {timeout:g} s: {err[-300:]}")
    return Timed(started, time.time(), child.returncode, err)


def timed_cli(b: Banger, *args: str, timeout: float = 600) -> Timed:
    started, child = start_cli(b, *args)
    return finish_cli(started, child, timeout)


def bangerd_pid(b: Banger) -> int:
    return int((b.runtime_dir / "bangerd.pid").read_text().split()[0])


def owner_dir(b: Banger, name: str) -> Path:
    """A fresh directory in the owner's state dir, owned by the owner (0700)."""
    path = b.state_dir / name
    path.mkdir(mode=0o700)
    os.chown(path, b.user.uid, b.user.gid)
    return path
