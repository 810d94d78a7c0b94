"""The ``reconciliation`` doctor check: what bangerd repaired (or could not) at its last start.

bangerd compares its store with the host every time it starts and writes
``state/reconcile.json`` (:mod:`banger.doctor.reconcile_report`). This check
reads that file; it never talks to the daemon, so it also works when bangerd
is down. Repairs alone pass (they are the system working); anything left
alone on purpose (a work disk without a VM record) or a repair that failed
(the helper was down) is a warning with the first line shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from banger.doctor.model import CheckResult
from banger.doctor.reconcile_report import read_report, report_path

if TYPE_CHECKING:
    from banger.doctor.model import DoctorContext

NAME = "reconciliation"


def _more(lines: list[str]) -> str:
    return f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""


def check_reconciliation(ctx: DoctorContext) -> CheckResult:
    path = report_path(ctx.paths)
    report = read_report(path)
    if report is None:
        return CheckResult(
            NAME, "pass", f"no report yet ({path}): bangerd writes it when it starts"
        )
    when = f"at the last start ({report.started_at})"
    if report.failed:
        return CheckResult(
            NAME,
            "warn",
            f"{when}: could not repair: {report.failed[0]}{_more(report.failed)}",
            f"see {path}; with banger-helper running, restart bangerd to retry",
        )
    if report.kept:
        return CheckResult(
            NAME,
            "warn",
            f"{when}: left alone: {report.kept[0]}{_more(report.kept)}",
            f"see {path}; nothing was deleted, decide by hand",
        )
    if report.repaired:
        return CheckResult(
            NAME,
            "pass",
            f"{when}: repaired {len(report.repaired)}: "
            f"{report.repaired[0]}{_more(report.repaired)}",
        )
    return CheckResult(NAME, "pass", f"{when}: store and host agreed")
