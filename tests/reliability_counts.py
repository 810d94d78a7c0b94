"""pytest plugin: the reliability suite's COUNTS, printed once at the end of the run.

Tests take the session-scoped ``reliability_counts`` fixture and record what
they did: a fault injected (kill -9, full disk), a restart the system
survived, hostile inputs tried, leaks found. The terminal summary prints one
line (only when some test used the fixture)::

    reliability COUNTS: faults_injected=12 restarts_survived=12 hostile_inputs=5230 leaks=0

The wording is deliberately unlike pytest's own closing line (``N passed``)
so nothing that parses that line is confused. A leak recorded by any test
fails the session even if that test forgot to assert on it: leaks must be 0.

Registered from ``tests/conftest.py`` (``pytest_plugins``); the reliability
suite's own conftest registers it too when that line is missing, so the
suite works either way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

_KEY = pytest.StashKey["ReliabilityCounts"]()


@dataclass
class ReliabilityCounts:
    faults_injected: int = 0
    restarts_survived: int = 0
    hostile_inputs: int = 0
    leaks: int = 0
    #: What each leak was, for the summary (a count alone does not help anyone fix it).
    leak_details: list[str] = field(default_factory=list)
    used: bool = False
    # Hypothesis and the API fuzzer call in from one thread today; the lock keeps
    # the counts right if a test ever records from worker threads.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fault(self, n: int = 1) -> None:
        """A fault was injected (a process killed, a disk filled, ...)."""
        with self._lock:
            self.faults_injected += n

    def restart(self, n: int = 1) -> None:
        """A component was restarted after a fault and came back consistent."""
        with self._lock:
            self.restarts_survived += n

    def hostile(self, n: int = 1) -> None:
        """``n`` hostile inputs were tried (and refused or handled safely)."""
        with self._lock:
            self.hostile_inputs += n

    def leaked(self, what: str) -> None:
        """Record one leaked resource (a tap, a lease, a process, a temp file, ...)."""
        with self._lock:
            self.leaks += 1
            self.leak_details.append(what)

    def check_leaks(self, found: dict[str, list[str]]) -> None:
        """Record every item of ``found`` (kind -> leftovers) as a leak, then assert none.

        The typical end of a fault-injection test: gather what is left behind by
        kind, and let this both count and fail on it.
        """
        for kind, items in found.items():
            for item in items:
                self.leaked(f"{kind}: {item}")
        leftovers = {kind: items for kind, items in found.items() if items}
        assert not leftovers, f"leaked resources: {leftovers}"

    def line(self) -> str:
        return (
            f"reliability COUNTS: faults_injected={self.faults_injected} "
            f"restarts_survived={self.restarts_survived} "
            f"hostile_inputs={self.hostile_inputs} leaks={self.leaks}"
        )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_KEY] = ReliabilityCounts()


@pytest.fixture(scope="session")
def reliability_counts(request: pytest.FixtureRequest) -> ReliabilityCounts:
    """The run's counters (session scoped, so hypothesis tests may use it too)."""
    counts = request.config.stash[_KEY]
    counts.used = True
    return counts


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    counts = session.config.stash.get(_KEY, None)
    if counts is not None and counts.leaks and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts = terminalreporter.config.stash.get(_KEY, None)
    if counts is None or not counts.used:
        return
    terminalreporter.write_sep("-", "reliability suite")
    for detail in counts.leak_details:
        terminalreporter.write_line(f"LEAK {detail}", red=True)
    terminalreporter.write_line(counts.line(), bold=True, red=bool(counts.leaks))
