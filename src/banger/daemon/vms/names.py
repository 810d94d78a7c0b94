"""Checks on what a user asks a new VM to be: each failure names its argument.

All of these run before anything is created, so a bad request leaves no trace.
"""

from __future__ import annotations

import re
import secrets

from banger.errors import InvalidArgument
from banger.hostinfo import host_cpu_count, host_memory_mib
from banger.limits import MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB

# Until pipeline.py and service.py (being edited) import it from banger.net.taps.
from banger.net.taps import tap_name as tap_name

#: A VM name is one DNS label (it becomes the guest hostname and `<name>.<domain>`).
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
INIT_MODES = ("systemd", "fast")
_WORDS = ("amber", "brisk", "cedar", "dune", "ember", "fjord", "grove", "heron", "iris", "juniper")


def check_name(name: str) -> str:
    if not _DNS_LABEL.fullmatch(name):
        raise InvalidArgument(
            f"name: {name!r} is not a DNS label",
            hint="use 1-63 lowercase letters, digits or inner hyphens, e.g. dev-1",
        )
    return name


def generated_name() -> str:
    return f"{secrets.choice(_WORDS)}-{secrets.token_hex(2)}"


def check_vcpus(vcpus: int, host_cpus: int | None = None) -> int:
    host = host_cpus if host_cpus is not None else host_cpu_count()
    if isinstance(vcpus, bool) or vcpus < 1:
        raise InvalidArgument(f"cpus: must be at least 1, got {vcpus}")
    if vcpus > min(host, MAX_VCPUS):
        raise InvalidArgument(
            f"cpus: {vcpus} is more than this host's {host} CPUs"
            if vcpus > host
            else f"cpus: at most {MAX_VCPUS}, got {vcpus}",
            hint=f"pick 1-{min(host, MAX_VCPUS)}",
        )
    return vcpus


def check_memory(memory_mib: int, host_mib: int | None = None) -> int:
    host = host_mib if host_mib is not None else host_memory_mib()
    if isinstance(memory_mib, bool) or memory_mib < MIN_MEMORY_MIB:
        raise InvalidArgument(
            f"memory: must be at least {MIN_MEMORY_MIB} MiB, got {memory_mib} MiB",
            hint="e.g. --memory 512",
        )
    if host is not None and memory_mib > host:
        raise InvalidArgument(
            f"memory: {memory_mib} MiB is more than this host's {host} MiB",
            hint=f"pick at most {host} MiB",
        )
    if memory_mib > MAX_MEMORY_MIB:
        raise InvalidArgument(f"memory: at most {MAX_MEMORY_MIB} MiB, got {memory_mib} MiB")
    return memory_mib


def check_init(init: str) -> str:
    if init not in INIT_MODES:
        raise InvalidArgument(f"init: must be 'systemd' or 'fast', got {init!r}")
    return init
