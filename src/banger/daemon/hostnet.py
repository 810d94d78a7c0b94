"""HostNetwork: the daemon's glue to the root helper's network ops.

The bridge (``network.bridge``, address = ``network.gateway``/prefix) and its
NAT rule are ensured before every VM start (both ops are idempotent and take
milliseconds); each VM gets a persistent tap ``bt-<id prefix>`` enslaved to
the bridge, handed back as an open descriptor for the VMM. A tap the helper
may have made without answering (killed mid-op) is remembered and deleted
once a helper answers again (:mod:`banger.daemon.owed_taps`).

:meth:`HostNetwork.teardown` removes them again (``banger system
cleanup-network``, :mod:`banger.daemon.netcleanup`); :attr:`HostNetwork.lock`
orders it against every ensure.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from banger.config import Config
from banger.daemon.owed_taps import OwedTaps
from banger.helper.client import HelperClient, HelperUnreachable

log = logging.getLogger(__name__)


class HostNetwork:
    def __init__(self, config: Config, helper: HelperClient) -> None:
        self.config = config
        self.helper = helper
        #: Taps that may be on the host with nothing left to delete them.
        self.owed = OwedTaps(helper)
        #: Called after every ensure (the bridge exists then): the DNS service hooks in here.
        self.after_ensure: list[Callable[[], Awaitable[None]]] = []
        #: Taken by every ensure and by the network cleanup for its check and
        #: teardown: a start that begins during a cleanup waits and then makes
        #: the bridge again, instead of losing it between its ensure and its tap.
        self.lock = asyncio.Lock()

    @property
    def bridge(self) -> str:
        return self.config.network.bridge

    async def ensure(self) -> None:
        net = self.config.network
        cidr = f"{net.gateway}/{net.subnet.prefixlen}"
        async with self.lock:
            await self.helper.acall("ensure_bridge", name=net.bridge, cidr=cidr)
            await self.helper.acall("ensure_nat", cidr=str(net.subnet), bridge=net.bridge)
            for hook in self.after_ensure:
                await hook()
        await self.owed.settle()  # the helper just answered: clear what an earlier one left

    async def teardown(self) -> dict[str, Any]:
        """The helper's ``teardown_network`` for our bridge; the caller holds :attr:`lock`."""
        return await self.helper.acall("teardown_network", bridge=self.bridge)

    async def open_tap(self, name: str, *, detached: bool = False) -> int:
        """A descriptor of the tap ``name`` on the bridge; the caller closes it.

        ``detached``: on no bridge and down (``open_tap_detached``) until
        :meth:`attach_tap` — a restored guest that still has its snapshot's
        identity (:mod:`banger.daemon.vms.reident`).
        """
        await self.owed.claim(name)
        try:
            if detached:
                _result, fds = await self.helper.acall_with_fds("open_tap_detached", name=name)
            else:
                _result, fds = await self.helper.acall_with_fds(
                    "open_tap", name=name, bridge=self.bridge
                )
        except HelperUnreachable as exc:
            if exc.sent:  # the helper may have made the tap before it went away
                self.owed.owe(name)
            raise
        for extra in fds[1:]:
            os.close(extra)
        return fds[0]

    async def attach_tap(self, name: str) -> None:
        """The detached tap ``name`` joins the bridge and comes up (``attach_tap``)."""
        await self.helper.acall("attach_tap", name=name, bridge=self.bridge)

    async def delete_tap(self, name: str) -> None:
        try:
            await self.helper.acall("delete_tap", name=name)
        except HelperUnreachable:
            self.owed.owe(name)  # retried once a helper answers
            raise
        self.owed.paid(name)
