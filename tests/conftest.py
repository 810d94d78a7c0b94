from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support import short_tmpdir

# Prints the reliability COUNTS line and fails the run on any recorded leak.
pytest_plugins = ["tests.reliability_counts"]


def hypothesis_profile(env: Mapping[str, str]) -> str:
    """The Hypothesis profile for this run: "banger-ci" when CI is set (not to 0/false)."""
    ci = env.get("CI", "").strip().lower()
    return "banger-ci" if ci not in ("", "0", "false", "no") else "banger"


# No per-example deadline anywhere in the suite (Hypothesis's default is 200 ms,
# a wall-clock upper bound a loaded machine breaks). Loaded here, before any test
# module is imported, so every @given and every @settings(...) that does not name
# a deadline inherits it: a rule, not a flag each property test must remember.
settings.register_profile("banger", deadline=None)
# In CI (the CI variable set, as every CI service does): the same examples on
# every run, so a red CI run reproduces locally with CI=1 and a green one is not
# luck; no example database (nothing persists between CI runs anyway), and the
# blob to replay a failure printed. Properties that must reach a branch say so
# with tests.support.Branches, which fails the run when one never does.
settings.register_profile(
    "banger-ci", parent=settings.get_profile("banger"), derandomize=True, database=None,
    print_blob=True,
)  # fmt: skip
settings.load_profile(hypothesis_profile(os.environ))

# A shell without job control starts a background job (`make test &`, CI runners
# that background the build) with SIGINT ignored, and an ignored signal stays
# ignored across fork and exec: the CLIs and SDK programs the suite starts would
# never see the Ctrl-C their tests send, and a test waiting for its effect would
# wait forever. A handler (not an ignore) is reset to the default at exec, so with
# Python's own handler installed here every child gets Ctrl-C as a terminal does.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
