"""``<name>:<seconds>``, the value of banger's test-only delay hooks.

Shared by bangerd's stage delay (``BANGER_TEST_STAGE_DELAY``) and the
helper's op delay (``BANGER_TEST_HELPER_DELAY``); stdlib only, because the
root helper imports it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: An upper bound so a stray setting cannot park an operation for days.
MAX_SECONDS = 3600.0

_SPEC = re.compile(r"([a-z_]{1,40}):(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class StageDelay:
    stage: str
    seconds: float


def parse(value: str, env: str) -> StageDelay | None:
    """``"<name>:<seconds>"`` → :class:`StageDelay`; None (with a warning) if malformed.

    ``env`` only names the variable in the warning.
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
