"""What the daemon does through the guest agent: readiness and the clock.

- Readiness: while a booting guest is waited for over SSH, the agent is polled
  too; its first answer is the first sign of life (logged with its time). SSH
  still has to answer before the VM is "running". Whether the agent answered is
  recorded (``VMConfig.agent_seen``) and shown by ``vm show``.
- The clock: a paused or restored guest's clock does not know the time that
  passed, so after every resume and restore the daemon sets it from the host's
  (``guest-set-time``). A guest whose image has no agent keeps working over SSH
  with its clock behind; the operation says so in one notice.
- Filesystem freeze around a snapshot's disk copies (:class:`Freeze`): the
  guest's filesystems are frozen (``guest-fsfreeze-freeze``) before it is
  paused and thawed after it resumes, so the copied disks are consistent on
  their own, not only together with the saved memory. Thaw is attempted on
  every path once a freeze was asked for. A guest without an answering agent
  is snapshotted as before, unfrozen; the snapshot records which it was.
- Graceful shutdown (:func:`poweroff`): ``vm stop`` asks through the agent
  first — ``guest-shutdown`` under systemd; under the fast init, whose PID 1
  is not systemd (``/sbin/shutdown`` cannot act there), the agent starts the
  init's own ``banger-fast-init poweroff`` — and falls back to SSH when the
  agent does not answer.

Where the agent is reached is the VM's driver's to say (``Pipeline.agent_endpoint``:
QEMU's virtio-serial socket, Firecracker's hybrid vsock and its guest port); a
plain path is a virtio-serial socket.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from banger.daemon.ops import OpHandle
from banger.guest.agent import AgentCommandError, AgentEndpoint, AgentError, GuestAgent
from banger.store import VMConfig
from banger.vmm.bootargs import FAST_INIT

#: Between two connection attempts while a guest boots.
_POLL_INTERVAL = 0.5
#: How long a guest known to run the agent gets to answer after a resume or
#: restore, and one that never answered (an image without it: costs this much).
_SEEN_TIMEOUT = 10.0
_UNSEEN_TIMEOUT = 1.5
#: The clock is good enough when within this of the host's.
_CLOCK_SLACK_NS = 2_000_000_000
#: FIFREEZE syncs every filesystem first: seconds under emulation on a busy host.
_FREEZE_TIMEOUT = 60.0
#: How long ``guest-shutdown`` is listened to for a failure answer (success has none).
_SHUTDOWN_ERROR_WINDOW = 3.0


#: An agent endpoint, or a path: the host end of a virtio-serial port.
Where = AgentEndpoint | Path


async def _connect(where: Where, timeout: float) -> GuestAgent:
    endpoint = where if isinstance(where, AgentEndpoint) else AgentEndpoint(where)
    return await endpoint.connect(timeout=timeout)


def has_channel(config: VMConfig) -> bool:
    return config.agent_channel is True


def agent_state(config: VMConfig) -> str:
    """What ``vm show`` says about the agent channel."""
    if not has_channel(config):
        return "none (the VM was created without the guest agent channel)"
    seen = config.agent_seen
    if seen is True:
        return "available"
    if seen is False:
        return "not answering (the image may lack qemu-guest-agent; SSH only)"
    return "unknown"


async def first_answer(socket: Where) -> float:
    """Poll the agent until it answers a ping; the seconds that took. Runs until cancelled."""
    start = time.monotonic()
    while True:
        try:
            async with await _connect(socket, 2.0) as agent:
                await agent.ping()
                return time.monotonic() - start
        except AgentError:
            await asyncio.sleep(_POLL_INTERVAL)


async def set_clock(socket: Where, *, seen: bool) -> int:
    """Set the guest's clock to the host's; the guest's offset afterwards, in ns.

    The agent sets the system clock, then writes the RTC with ``hwclock``; an
    image without hwclock fails that second step with the clock already set,
    so a failure is judged by reading the clock back.
    """
    timeout = _SEEN_TIMEOUT if seen else _UNSEEN_TIMEOUT
    async with await _connect(socket, timeout) as agent:
        try:
            await agent.set_time(time.time_ns())
        except AgentCommandError:
            offset = await agent.get_time() - time.time_ns()
            if abs(offset) > _CLOCK_SLACK_NS:
                raise
            return offset
        return await agent.get_time() - time.time_ns()


async def resync_clock(socket: Where, config: VMConfig, op: OpHandle, why: str) -> bool:
    """:func:`set_clock` after a resume or restore, reported on ``op``; whether it was set."""
    if not has_channel(config):
        return False
    seen = config.agent_seen is True
    try:
        offset = await set_clock(socket, seen=seen)
    except AgentError as exc:
        await op.event("notice", f"guest clock not set after {why}: {exc.message}")
        return False
    await op.event("info", f"guest clock set from the host's after {why} ({offset / 1e9:+.3f}s)")
    return True


class Freeze:
    """A filesystem freeze of one guest around a snapshot; :meth:`thaw` on every path.

    ``frozen`` says whether the guest's filesystems were frozen; ``note`` why not.
    """

    def __init__(self, socket: Where) -> None:
        self.socket = socket
        self.frozen = False
        self.note = "the VM has no guest agent channel"
        self._asked = False

    async def freeze(self, config: VMConfig) -> bool:
        """Freeze the guest's filesystems if its agent answers; whether they are frozen."""
        if not has_channel(config):
            return False
        timeout = _SEEN_TIMEOUT if config.agent_seen is True else _UNSEEN_TIMEOUT
        try:
            agent = await _connect(self.socket, timeout)
        except AgentError as exc:
            self.note = f"the guest agent did not answer ({exc.message})"
            return False
        # From here the agent may freeze even if its answer is lost: thaw on any failure.
        self._asked = True
        try:
            async with agent:
                count = await agent.fsfreeze_freeze(timeout=_FREEZE_TIMEOUT)
        except AgentCommandError as exc:
            # An answered failure: the agent thawed whatever it had frozen itself.
            self._asked = False
            self.note = f"the freeze failed ({exc.message})"
            return False
        except AgentError as exc:
            # No answer: the freeze may have happened all the same.
            self.note = f"the freeze failed ({exc.message})"
            await self.thaw()
            return False
        self.frozen = True
        self.note = f"{count} filesystem{'s' if count != 1 else ''} frozen"
        return True

    async def thaw(self) -> None:
        """Thaw what :meth:`freeze` froze (the guest must run); raises when it cannot.

        The connection used for the freeze is closed before the guest is paused
        (a half-read message in the saved channel would wedge a restored agent),
        so this is a new one.
        """
        if not self._asked:
            return
        last: AgentError | None = None
        for _ in range(3):
            try:
                async with await _connect(self.socket, _SEEN_TIMEOUT) as agent:
                    await agent.fsfreeze_thaw(timeout=_FREEZE_TIMEOUT)
                    self._asked = False
                    return
            except AgentError as exc:
                last = exc
        assert last is not None
        raise AgentError(
            f"the guest's filesystems may still be frozen: thaw failed ({last.message})",
            hint="retry with: banger vm stop (a frozen guest cannot write its disks)",
        )


async def thaw_restored(socket: Where) -> int:
    """Thaw a guest restored from a snapshot taken frozen; how many filesystems thawed.

    The saved memory holds the frozen state and the agent's record of it, so
    the restored agent thaws them as if no time had passed.
    """
    async with await _connect(socket, _SEEN_TIMEOUT) as agent:
        return await agent.fsfreeze_thaw(timeout=_FREEZE_TIMEOUT)


async def poweroff(socket: Where, config: VMConfig, init_mode: str) -> str | None:
    """Ask the guest to power off through its agent; how it was asked, None when it was not.

    None means the agent did not answer or refused: the caller asks over SSH.
    """
    if not has_channel(config):
        return None
    timeout = _SEEN_TIMEOUT if config.agent_seen is True else _UNSEEN_TIMEOUT
    try:
        async with await _connect(socket, timeout) as agent:
            if init_mode == "fast":
                await agent.execute("guest-exec", {"path": FAST_INIT, "arg": ["poweroff"]})
                return f"guest-exec {FAST_INIT} poweroff"
            await agent.shutdown("powerdown", error_window=_SHUTDOWN_ERROR_WINDOW)
            return "guest-shutdown"
    except AgentError:
        return None
