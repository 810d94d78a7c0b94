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
from collections.abc import Mapping

from banger import delay_spec
from banger.delay_spec import StageDelay as StageDelay

log = logging.getLogger(__name__)

ENV = "BANGER_TEST_STAGE_DELAY"
#: Logged (with the stage and the operation id) right before the sleep; tests wait for it.
MARKER = "test stage delay"

_active: StageDelay | None = None


def parse(value: str) -> StageDelay | None:
    """``"<stage>:<seconds>"`` → :class:`StageDelay`; None (with a warning) if malformed."""
    return delay_spec.parse(value, ENV)


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
