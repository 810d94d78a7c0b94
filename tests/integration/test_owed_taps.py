"""A tap made by a helper killed inside ``open_tap`` is deleted once a helper answers again.

The real banger-helper, as root, in a throwaway network namespace (all it
makes lives and dies there), started with the test-only hook
``BANGER_TEST_HELPER_DELAY=open_tap:300`` so it can be killed exactly between
making the tap and answering; the daemon side is the real ``HostNetwork``
over the real ``HelperClient``, without bangerd around it (the same fault
with guests, a running bangerd and ``banger doctor`` is in
tests/reliability/test_faults.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from banger.config import Config
from banger.daemon.hostnet import HostNetwork
from banger.helper.client import HelperClient, HelperUnreachable
from banger.helper.op_delay import ENV as DELAY_ENV
from banger.helper.op_delay import MARKER
from banger.paths import Paths
from tests.helper_launch import helper_paths, start_helper
from tests.support import Netns, async_wait_until, needs_root, netns, short_tmpdir, wait_until

pytestmark = [pytest.mark.root, needs_root]

TAP = "bt-owed0000001"


@dataclass
class Host:
    ns: Netns
    dir: Path
    pid: int | None = None

    @property
    def paths(self) -> Paths:
        return helper_paths(self.dir)

    @property
    def socket(self) -> Path:
        return self.paths.helper_socket

    @property
    def log(self) -> Path:
        return self.paths.helper_log

    def start_helper(self, **env: str) -> None:
        self.pid = start_helper(self.paths, 0, ns=self.ns, env=env)

    def kill_helper(self, sig: signal.Signals = signal.SIGKILL) -> None:
        assert self.pid is not None
        os.kill(self.pid, sig)
        pid = self.pid
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, f"helper {pid} exits")
        self.pid = None

    def taps(self) -> list[str]:
        out = self.ns.run("ip", "-o", "link", "show").stdout
        names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
        return [n for n in names if n.startswith("bt-")]


@pytest.fixture
def host() -> Iterator[Host]:
    with netns("bgo") as ns, short_tmpdir("bgo-") as tmp:
        h = Host(ns, tmp)
        try:
            yield h
        finally:
            if h.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    h.kill_helper(signal.SIGTERM)


def hostnet_for(h: Host) -> HostNetwork:
    return HostNetwork(Config(), HelperClient(h.socket, timeout=30))


async def test_a_tap_the_killed_helper_made_is_deleted_once_a_helper_is_back(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.start_helper(**{DELAY_ENV: "open_tap:300"})
    hostnet = hostnet_for(host)
    retries = 0  # delete_tap requests that got their answer (or found no helper)
    ask = hostnet.owed.helper.acall

    async def counted(op: str, **args: Any) -> dict[str, Any]:
        nonlocal retries
        try:
            return await ask(op, **args)
        finally:
            retries += op == "delete_tap"

    monkeypatch.setattr(hostnet.owed.helper, "acall", counted)
    await hostnet.ensure()
    asked = asyncio.create_task(hostnet.open_tap(TAP))
    await async_wait_until(lambda: MARKER in host.log.read_text(), 60, "op delay marker in the log")
    host.kill_helper()
    with pytest.raises(HelperUnreachable) as info:
        await asked
    assert info.value.sent
    assert host.taps() == [TAP]  # made on the host, never handed over
    assert hostnet.owed.names == [TAP]

    # The create's undo asks the dead helper, and the retries find nobody: still owed.
    with pytest.raises(HelperUnreachable):
        await hostnet.delete_tap(TAP)
    before = retries
    retrying = asyncio.create_task(hostnet.owed.settle_periodically(0.1))
    try:
        await async_wait_until(lambda: retries >= before + 3, 60, "three retries of the delete")
        assert hostnet.owed.names == [TAP] and host.taps() == [TAP]

        host.start_helper()  # a new helper, no create: the retry alone removes the tap
        # The tap goes first, then the answer reaches bangerd and it stops owing it:
        # wait for both (asserting the second right after the first was a race).
        await async_wait_until(lambda: not host.taps(), 60, "tap deleted")
        await async_wait_until(lambda: not hostnet.owed.names, 60, "tap no longer owed")
    finally:
        retrying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retrying


async def test_the_next_ensure_deletes_an_owed_tap_but_never_one_asked_for_again(
    host: Host,
) -> None:
    host.start_helper()
    hostnet = hostnet_for(host)
    await hostnet.ensure()
    again = "bt-owed0000002"
    os.close(await hostnet.open_tap(TAP))
    hostnet.owed.owe(TAP)
    hostnet.owed.owe(again)  # its open_tap got no answer ...
    os.close(await hostnet.open_tap(again))  # ... and its VM starts again before any retry
    assert hostnet.owed.names == [TAP]  # claimed: no retry may delete it now

    await hostnet.ensure()  # every create and start: the helper answered, the debt is paid

    assert hostnet.owed.names == []
    assert host.taps() == [again]


async def test_an_unreachable_helper_never_made_the_tap(host: Host) -> None:
    """No connection, no request: nothing can have been made, nothing is owed."""
    hostnet = hostnet_for(host)  # no helper was ever started
    with pytest.raises(HelperUnreachable) as info:
        await hostnet.open_tap(TAP)
    assert not info.value.sent
    assert hostnet.owed.names == []
