"""Test-only hook: pause every operation before one named stage.

``BANGER_TEST_STAGE_DELAY=<stage>:<seconds>`` is read ONCE, when bangerd
starts (:func:`configure_from_env`). While set, an operation entering stage
``<stage>`` records the stage, logs :data:`MARKER` and sleeps ``<seconds>``
before doing that stage's work, so the fault-injection suite can kill -9
bangerd at a chosen point of the VM pipeline. Unset (always, outside tests)
:func:`pause` is one ``None`` check. The hook only ever delays: it cannot
skip a stage, a check or a lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

ENV = "BANGER_TEST_STAGE_DELAY"
#: Logged (with the stage and the operation id) right before the sleep; tests wait for it.
MARKER = "test stage delay"
#: An upper bound so a stray setting cannot park an operation for days.
MAX_SECONDS = 3600.0

_SPEC = re.compile(r"([a-z_]{1,40}):(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class StageDelay:
    stage: str
    seconds: float


_active: StageDelay | None = None


def parse(value: str, env: str = ENV) -> StageDelay | None:
    """``"<stage>:<seconds>"`` → :class:`StageDelay`; None (with a warning) if malformed.

    ``env`` only names the variable in the warning (the helper's op hook parses the same way).
    """
    match = _SPEC.fullmatch(value.strip())
    if match is None:
        log.warning("ignoring %s=%r: expected <name>:<seconds>", env, value)
        return None
    seconds = float(match[2])
    if not 0 < seconds <= MAX_SECONDS:
        log.warning("ignoring %s=%r: seconds must be in (0, %d]", env, value, MAX_SECONDS)
        return None
    return StageDelay(match[1], seconds)


def configure_from_env(env: Mapping[str, str] | None = None) -> StageDelay | None:
    """Read the variable once (bangerd start); later changes to the environment do nothing."""
    global _active
    raw = (os.environ if env is None else env).get(ENV)
    _active = parse(raw) if raw else None
    if _active is not None:
        log.warning(
            "%s is set: operations pause %.1fs before stage %s (test hook)",
            ENV,
            _active.seconds,
            _active.stage,
        )
    return _active


def active() -> StageDelay | None:
    return _active


async def pause(stage: str, op_id: str) -> None:
    """Sleep before ``stage`` if the hook names it; otherwise return at once."""
    delay = _active
    if delay is None or delay.stage != stage:
        return
    log.warning("%s: op %s sleeping %.1fs before stage %s", MARKER, op_id, delay.seconds, stage)
    await asyncio.sleep(delay.seconds)
