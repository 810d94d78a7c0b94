"""What the real-guest modules share: one banger install per module (``b``).

A module that needs another shape (its own environment, config or helper)
defines its own ``b``, which wins over this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import Banger, banger_env


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with banger_env() as env:
        yield env
