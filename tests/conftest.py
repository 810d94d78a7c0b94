from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support import short_tmpdir

# Prints the reliability COUNTS line and fails the run on any recorded leak.
pytest_plugins = ["tests.reliability_counts"]

# No per-example deadline anywhere in the suite (Hypothesis's default is 200 ms,
# a wall-clock upper bound a loaded machine breaks). Loaded here, before any test
# module is imported, so every @given and every @settings(...) that does not name
# a deadline inherits it: a rule, not a flag each property test must remember.
settings.register_profile("banger", deadline=None)
settings.load_profile("banger")


@pytest.fixture(autouse=True)
def _no_autostart_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Safety net: a CLI run in a test never starts bangerd or a root helper by
    itself (a helper started in the host namespace would create a bridge and
    NAT there). Tests of the auto-start pass BANGER_NO_AUTOSTART=0 explicitly."""
    monkeypatch.setenv("BANGER_NO_AUTOSTART", "1")


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
