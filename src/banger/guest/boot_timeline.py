"""Where a cold boot's time goes: its phases, read from the serial console.

The phases, in order: the VMM starts → the kernel's first line → the
initramfs ``/init`` → the real init (after switch_root, or the kernel running
it directly) → sshd listening → the first SSH answer. bangerd knows the first
and the last (it starts the VMM and waits for SSH); the others are lines on
the console, found by :data:`MARKERS`.

Each phase gets two clocks when it can: ``seconds``, wall time since the VMM
started, taken by :class:`ConsoleWatch` noticing the line while bangerd waits
for SSH (so it also times lines without a printk timestamp, such as sshd's
"Server listening" or systemd's status lines; resolution :data:`POLL`); and
``kernel``, the printk timestamp the line carries, if any (Debian's kernels
have ``CONFIG_PRINTK_TIME``; the guest's clock, from the kernel's start).
:func:`parse_console` reads the second from a log alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Seconds between two looks at the console while waiting.
POLL = 0.05
#: (phase, label) in boot order; the first and last are bangerd's own events.
PHASES: tuple[tuple[str, str], ...] = (
    ("vmm_start", "VMM started"),
    ("kernel", "first kernel line"),
    ("initramfs", "initramfs /init"),
    ("init", "init"),
    ("sshd", "sshd listening"),
    ("ssh", "first SSH answer"),
)
_PRINTK = re.compile(r"^\[\s*(\d+\.\d+)\]")
#: The console lines that mark each guest phase (the first match after the previous one).
MARKERS: dict[str, re.Pattern[str]] = {
    "kernel": re.compile(r"^\[\s*\d+\.\d+\]|Linux version "),
    "initramfs": re.compile(r"Run /init as init process|banger-initramfs: start"),
    # banger's initramfs hands over with switch_root; a kernel without one runs init itself.
    "init": re.compile(r"switch_root to \S+ at|Run (?!/init )\S+ as init process"),
    # Fast init: sshd -e logs to the console. systemd: its status line for ssh.service.
    "sshd": re.compile(r"Server listening on|Started (ssh\.service|.*OpenBSD Secure Shell)"),
}


@dataclass(frozen=True)
class Phase:
    phase: str
    label: str
    #: Wall seconds since the VMM started, when bangerd saw it.
    seconds: float | None = None
    #: The printk timestamp of the line (guest clock), when it had one.
    kernel: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "label": self.label,
            "seconds": self.seconds,
            "kernel": self.kernel,
        }


def _kernel_time(line: str) -> float | None:
    match = _PRINTK.match(line)
    return float(match.group(1)) if match else None


def scan_lines(lines: Sequence[str], found: dict[str, float | None]) -> None:
    """Record in ``found`` (phase → printk time or None) the phases ``lines`` reach.

    Phases are taken in order: only a phase after the last one found can match,
    so a later phase's line cannot be mistaken for an earlier one. A phase a
    boot does not have (``initramfs`` for a kernel booted without one) stays
    missing.
    """
    order = [name for name, _label in PHASES if name in MARKERS]
    for line in lines:
        done = [order.index(name) for name in found if name in order]
        for name in order[max(done, default=-1) + 1 :]:
            if MARKERS[name].search(line):
                found[name] = _kernel_time(line)
                break


def last_boot(text: str) -> str:
    """The part of an appended console log that the last boot wrote.

    Each boot starts with the kernel's banner (``Linux version``); QEMU appends
    every boot to the same file.
    """
    start = text.rfind("Linux version ")
    if start < 0:
        return text
    return text[text.rfind("\n", 0, start) + 1 :]


def parse_console(text: str) -> list[Phase]:
    """The guest phases of the last boot in ``text`` with their printk times (no wall clock)."""
    found: dict[str, float | None] = {}
    scan_lines(last_boot(text).splitlines(), found)
    return [
        Phase(name, label, None, found.get(name))
        for name, label in PHASES
        if name in MARKERS and name in found
    ]


class ConsoleWatch:
    """Notes when each phase's line appears in the console log, while a boot runs.

    ``offset`` is the log's size when the VMM started: QEMU appends, so what
    is before belongs to earlier boots. Make it with :meth:`before_launch`
    just before starting the VMM, enter it (``async with``) once the VMM runs,
    for as long as bangerd waits for SSH; :meth:`timeline` gives what it saw.
    Lines written before it is entered are timed at its first look (the VMM's
    own start-up, tenths of a second).
    """

    @classmethod
    def before_launch(cls, console: Path) -> ConsoleWatch:
        try:
            offset = console.stat().st_size
        except FileNotFoundError:
            offset = 0
        return cls(console, offset, time.time())

    def __init__(self, console: Path, offset: int, started: float) -> None:
        self.console = console
        self.offset = offset
        self.started = started
        #: Phase → wall seconds since ``started`` when first seen.
        self.seen: dict[str, float] = {}
        self.kernel: dict[str, float | None] = {}
        self._partial = ""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ConsoleWatch:
        await asyncio.to_thread(self.poll)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.poll()  # what arrived since the last look

    def poll(self) -> None:
        try:
            with open(self.console, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        now = time.time() - self.started
        self.offset += len(data)
        text = self._partial + data.decode("utf-8", "replace")
        lines = text.split("\n")
        self._partial = lines.pop()  # an incomplete line waits for its end
        before = set(self.kernel)
        scan_lines(lines, self.kernel)
        for name in set(self.kernel) - before:
            self.seen[name] = round(now, 3)

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self.poll)
            await asyncio.sleep(POLL)

    def timeline(self, ssh_answered: float | None) -> list[Phase]:
        """Every phase with what is known of it; ``ssh_answered`` is a wall time (epoch)."""
        out = []
        for name, label in PHASES:
            if name == "vmm_start":
                out.append(Phase(name, label, 0.0, None))
            elif name == "ssh":
                seconds = None if ssh_answered is None else round(ssh_answered - self.started, 3)
                out.append(Phase(name, label, seconds, None))
            else:
                out.append(Phase(name, label, self.seen.get(name), self.kernel.get(name)))
        return out


def phases_from_json(data: object) -> list[Phase]:
    """The phases as stored in a VM's config (``boot_timeline``); nothing on bad data."""
    if not isinstance(data, list):
        return []
    out = []
    for item in data:
        if not isinstance(item, dict):
            continue

        def number(key: str, item: dict[str, Any] = item) -> float | None:
            value = item.get(key)
            return float(value) if isinstance(value, int | float) else None

        out.append(
            Phase(
                str(item.get("phase")), str(item.get("label")), number("seconds"), number("kernel")
            )
        )
    return out


def render(phases: Sequence[Phase]) -> list[str]:
    """The timeline as text lines: wall time since the VMM started, the step, printk time."""
    rows = [("phase", "at", "step", "kernel")]
    previous: float | None = None
    for phase in phases:
        at = "-" if phase.seconds is None else f"{phase.seconds:.2f} s"
        step = "-"
        if phase.seconds is not None and previous is not None:
            step = f"+{phase.seconds - previous:.2f} s"
        if phase.seconds is not None:
            previous = phase.seconds
        kernel = "-" if phase.kernel is None else f"[{phase.kernel:.3f}]"
        rows.append((phase.label, at, step, kernel))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}".rstrip()
        for row in rows
    ]
