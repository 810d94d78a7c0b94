"""What a doctor check is: a function from :class:`DoctorContext` to :class:`CheckResult`.

Its own module so that every check module imports the model and the runner
(:mod:`banger.doctor.checks`) imports the checks, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from banger.hostinfo import KvmStatus
from banger.paths import Paths

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class DoctorContext:
    """Facts several checks share, gathered once before the checks run."""

    paths: Paths
    kvm: KvmStatus
    firecracker: str | None
    jailer: str | None
    user: str

    @property
    def firecracker_usable(self) -> bool:
        return self.firecracker is not None and self.kvm.usable_for_ordinary_guests


Check = Callable[[DoctorContext], CheckResult]
