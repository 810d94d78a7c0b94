"""Test-only hook: hold one named helper op after its work, before its reply.

``BANGER_TEST_HELPER_DELAY=<op>:<seconds>`` is read ONCE, when banger-helper
starts (:func:`configure_from_env`). While set, a request for ``<op>`` runs
as usual — the tap is made, the rule written, the descriptor opened — then
the helper logs :data:`MARKER` and sleeps ``<seconds>`` before replying, so
the fault-injection suite can kill -9 the helper exactly mid-op: its work
done on the host, the daemon still waiting for the answer. Unset (always,
outside tests) :func:`pause_after` is one ``None`` check. The hook only
delays: it cannot skip a check, change an argument or widen what an op does.
The variable reaches the helper only from whoever starts it as root (sudo
and systemd both start it with a clean environment).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from banger.delay_spec import StageDelay, parse

log = logging.getLogger(__name__)

ENV = "BANGER_TEST_HELPER_DELAY"
#: Logged (with the op) right before the sleep; tests wait for it in the helper's log.
MARKER = "test op delay"

_active: StageDelay | None = None


def configure_from_env(env: Mapping[str, str] | None = None) -> StageDelay | None:
    """Read the variable once (helper start); later changes to the environment do nothing."""
    global _active
    raw = (os.environ if env is None else env).get(ENV)
    _active = parse(raw, ENV) if raw else None
    if _active is not None:
        log.warning(
            "%s is set: op %s sleeps %.1fs before its reply (test hook)",
            ENV,
            _active.stage,
            _active.seconds,
        )
    return _active


def pause_after(op: str) -> None:
    """Sleep after ``op`` did its work if the hook names it; otherwise return at once."""
    delay = _active
    if delay is None or delay.stage != op:
        return
    log.warning("%s: %s done, sleeping %.1fs before the reply", MARKER, op, delay.seconds)
    time.sleep(delay.seconds)
