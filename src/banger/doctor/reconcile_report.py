"""The startup reconciliation report: what was repaired, what was left for the owner.

Here, not in the daemon, because two processes share it: bangerd writes it
(:mod:`banger.daemon.reconcile.startup`) and the CLI's ``banger doctor`` reads it, and
the CLI never imports the daemon. Written once per daemon start to
``state/reconcile.json`` (temp file, fsync, rename) and logged line by line;
``banger doctor`` shows it as the "reconciliation" check.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from banger.paths import Paths

log = logging.getLogger("banger.daemon.reconcile")

REPORT_NAME = "reconcile.json"


def report_path(paths: Paths) -> Path:
    return paths.state_dir / REPORT_NAME


@dataclass
class ReconcileReport:
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    #: One line per repair ("tap bt-…: deleted, no running VM owns it").
    repaired: list[str] = field(default_factory=list)
    #: One line per inconsistency left alone on purpose (data that may matter).
    kept: list[str] = field(default_factory=list)
    #: One line per repair that failed (the helper was down, a permission, …).
    failed: list[str] = field(default_factory=list)

    def fixed(self, line: str) -> None:
        log.warning("reconcile: %s", line)
        self.repaired.append(line)

    def keep(self, line: str) -> None:
        log.warning("reconcile: left alone: %s", line)
        self.kept.append(line)

    def fail(self, line: str) -> None:
        log.error("reconcile: could not repair: %s", line)
        self.failed.append(line)

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "repaired": self.repaired,
            "kept": self.kept,
            "failed": self.failed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReconcileReport:
        def lines(key: str) -> list[str]:
            value = data.get(key)
            return [str(v) for v in value] if isinstance(value, list) else []

        return cls(
            str(data.get("started_at", "")), lines("repaired"), lines("kept"), lines("failed")
        )

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        # 0600 like everything of the owner's: it names VMs, taps and paths.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(path)
        summary = (
            f"{len(self.repaired)} repaired, {len(self.kept)} left alone, {len(self.failed)} failed"
        )
        if self.repaired or self.kept or self.failed:
            log.warning("reconciliation at start: %s (details in %s)", summary, path)
        else:
            log.info("reconciliation at start: store and host agree")


def read_report(path: Path) -> ReconcileReport | None:
    """The last start's report, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return ReconcileReport.from_json(data) if isinstance(data, dict) else None
