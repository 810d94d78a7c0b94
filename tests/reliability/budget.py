"""How hard the hostile-input tests try: small in ``make test``, large in ``make fuzz``.

``BANGER_FUZZ_EXAMPLES`` (default 20) sets the examples per property and per
API operation. The default run is derandomized (the same inputs every time:
a failure in CI reproduces locally); a long run (``BANGER_FUZZ_EXAMPLES``
above the default) draws fresh random inputs so it keeps finding new ones.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

DEFAULT_EXAMPLES = 20
EXAMPLES_ENV = "BANGER_FUZZ_EXAMPLES"


def examples() -> int:
    raw = os.environ.get(EXAMPLES_ENV, "")
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_EXAMPLES
    return value if value > 0 else DEFAULT_EXAMPLES


def long_run() -> bool:
    return examples() > DEFAULT_EXAMPLES


def fuzz_settings(scale: int = 1) -> settings:
    """Hypothesis settings for one property (``scale`` for cheap pure checks)."""
    return settings(
        max_examples=examples() * scale,
        derandomize=not long_run(),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
