"""The daemon's collaborators, built once in ``main`` and passed to every router.

No module-level singletons: a test (or a second app in one process) builds
its own :class:`Services` and gets an independent daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from banger.config import Config
from banger.daemon.ops import Operations
from banger.paths import Paths


@dataclass(frozen=True)
class Services:
    paths: Paths
    config: Config
    #: :class:`banger.store.Store`; typed loosely here so this module stays import-light.
    store: Any
    ops: Operations
    started_at: datetime
    #: :class:`banger.daemon.vms.stack.VMStack` (kernels, images, host network, VMs);
    #: None in tests that build a bare daemon.
    stack: Any = None
    #: :class:`banger.daemon.dns_svc.DNSService` (the VM resolver, started by
    #: ``Background`` with the bridge); None in a bare daemon.
    dns: Any = None
    #: :class:`banger.daemon.config_watch.ConfigWatch`: re-reads config.toml when it
    #: changes and pushes the new config here; None in tests that build a bare daemon.
    config_watch: Any = None
    #: :class:`banger.daemon.guestconn.GuestConns`: one held SSH connection per running
    #: VM (``await guest_conns.get(vm)``, ``async with guest_conns.channel(vm) as conn``);
    #: the stack's, None in a bare daemon.
    guest_conns: Any = None
