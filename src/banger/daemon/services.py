"""The daemon's collaborators, built once (``lifecycle.build_services``) and passed to every router.

No module-level singletons: a test (or a second app in one process) builds
its own :class:`Services` and gets an independent daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from banger.config import Config
from banger.daemon.ops import Operations
from banger.paths import Paths

if TYPE_CHECKING:
    # Type-only: this module stays import-light (the store, the VM stack and the
    # resolver are built by lifecycle.py, which imports them).
    from banger.daemon.config_watch import ConfigWatch
    from banger.daemon.dns_svc import DNSService
    from banger.daemon.guestconn import GuestConns
    from banger.daemon.vms.stack import VMStack
    from banger.store import Store


@dataclass(frozen=True)
class Services:
    paths: Paths
    config: Config
    store: Store
    ops: Operations
    started_at: datetime
    #: Kernels, images, host network, VMs.
    stack: VMStack
    #: The VM resolver, started by ``Background`` with the bridge.
    dns: DNSService
    #: Re-reads config.toml when it changes and pushes the new config here.
    config_watch: ConfigWatch
    #: One held SSH connection per running VM (``await guest_conns.get(vm)``,
    #: ``async with guest_conns.channel(vm) as conn``): the stack's.
    guest_conns: GuestConns
