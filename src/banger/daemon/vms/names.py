"""Checks on what a user asks a new VM to be: each failure names its argument.

All of these run before anything is created, so a bad request leaves no trace.
:class:`FieldProblems` runs them all and reports every failure at once, as
``config validate`` does, instead of stopping at the first.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import TypeVar

from banger.errors import InvalidArgument
from banger.hostinfo import host_cpu_count, host_memory_mib
from banger.limits import (
    MAX_DISK_BYTES,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    MIB,
    MIN_DISK_BYTES,
    MIN_MEMORY_MIB,
)

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


T = TypeVar("T")


class FieldProblems:
    """Collects the :class:`InvalidArgument` of each check; :meth:`raise_any` reports all."""

    def __init__(self) -> None:
        self.problems: list[InvalidArgument] = []

    def check(self, fn: Callable[..., T], *args: object) -> T | None:
        try:
            return fn(*args)
        except InvalidArgument as exc:
            self.problems.append(exc)
            return None

    def raise_any(self) -> None:
        """One problem: raised as it is. Several: one error naming each, in order."""
        if len(self.problems) == 1:
            raise self.problems[0]
        if self.problems:
            hints = [p.hint for p in self.problems if p.hint]
            raise InvalidArgument(
                f"invalid request ({len(self.problems)} problems): "
                + "; ".join(p.message for p in self.problems),
                hint="; ".join(hints) if hints else None,
            )


def check_work_disk_size(size: int) -> int:
    if isinstance(size, bool) or size < MIN_DISK_BYTES or size % MIB:
        raise InvalidArgument(
            f"work disk size: must be a whole number of MiB, at least 64 MiB (got {size} bytes)"
        )
    if size > MAX_DISK_BYTES:
        raise InvalidArgument(f"work disk size: at most 16 TiB (got {size} bytes)")
    return size


def check_init(init: str) -> str:
    if init not in INIT_MODES:
        raise InvalidArgument(f"init: must be 'systemd' or 'fast', got {init!r}")
    return init
