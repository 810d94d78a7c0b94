"""What the daemon does through the guest agent: readiness and the clock.

- Readiness: while a booting guest is waited for over SSH, the agent is polled
  too; its first answer is the first sign of life (logged with its time). SSH
  still has to answer before the VM is "running". Whether the agent answered is
  recorded (``VMConfig.agent_seen``) and shown by ``vm show``.
- The clock: a paused or restored guest's clock does not know the time that
  passed, so after every resume and restore the daemon sets it from the host's
  (``guest-set-time``). A guest whose image has no agent keeps working over SSH
  with its clock behind; the operation says so in one notice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from banger.daemon.ops import OpHandle
from banger.guest.agent import AgentCommandError, AgentError, GuestAgent
from banger.store import VMConfig

#: Between two connection attempts while a guest boots.
_POLL_INTERVAL = 0.5
#: How long a guest known to run the agent gets to answer after a resume or
#: restore, and one that never answered (an image without it: costs this much).
_SEEN_TIMEOUT = 10.0
_UNSEEN_TIMEOUT = 1.5
#: The clock is good enough when within this of the host's.
_CLOCK_SLACK_NS = 2_000_000_000


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


async def first_answer(socket: Path) -> float:
    """Poll the agent until it answers a ping; the seconds that took. Runs until cancelled."""
    start = time.monotonic()
    while True:
        try:
            async with await GuestAgent.connect(socket, timeout=2.0) as agent:
                await agent.ping()
                return time.monotonic() - start
        except AgentError:
            await asyncio.sleep(_POLL_INTERVAL)


async def set_clock(socket: Path, *, seen: bool) -> int:
    """Set the guest's clock to the host's; the guest's offset afterwards, in ns.

    The agent sets the system clock, then writes the RTC with ``hwclock``; an
    image without hwclock fails that second step with the clock already set,
    so a failure is judged by reading the clock back.
    """
    timeout = _SEEN_TIMEOUT if seen else _UNSEEN_TIMEOUT
    async with await GuestAgent.connect(socket, timeout=timeout) as agent:
        try:
            await agent.set_time(time.time_ns())
        except AgentCommandError:
            offset = await agent.get_time() - time.time_ns()
            if abs(offset) > _CLOCK_SLACK_NS:
                raise
            return offset
        return await agent.get_time() - time.time_ns()


async def resync_clock(socket: Path, config: VMConfig, op: OpHandle, why: str) -> bool:
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
