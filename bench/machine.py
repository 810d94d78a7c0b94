"""The machine a run happened on: recorded with every result (ratios only compare within it)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from banger import hostinfo


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    cores: int
    memory_mib: int | None
    kernel: str
    accelerator: hostinfo.Accelerator
    accelerator_reason: str
    python: str
    #: 1-minute load average when the run started: other work inflates absolute times
    load_average: float = 0.0


def cpu_model_from(cpuinfo: str) -> str:
    """The ``model name`` of the first processor; ``unknown`` when absent (some arm hosts)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip()
    return "unknown"


def this_machine() -> Machine:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        cpuinfo = ""
    kvm = hostinfo.kvm_status()
    return Machine(
        cpu_model=cpu_model_from(cpuinfo),
        cores=hostinfo.host_cpu_count(),
        memory_mib=hostinfo.host_memory_mib(),
        kernel=os.uname().release,
        accelerator=hostinfo.choose_accelerator(kvm),
        accelerator_reason=kvm.reason,
        python=platform.python_version(),
        load_average=os.getloadavg()[0],
    )
