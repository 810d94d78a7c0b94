from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import short_tmpdir

# Prints the reliability COUNTS line and fails the run on any recorded leak.
pytest_plugins = ["tests.reliability_counts"]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


@pytest.fixture
def banger_home(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated BANGER_HOME for one test (short, so sockets fit)."""
    monkeypatch.setenv("BANGER_HOME", str(short_tmp))
    monkeypatch.delenv("BANGER_RUNTIME_DIR", raising=False)
    return short_tmp
