"""Make sure the COUNTS plugin is active for this suite.

``tests/conftest.py`` is meant to list ``tests.reliability_counts`` in
``pytest_plugins``; until it does (or if it stops), register it here. The
plugin manager registers a module once, so both together are harmless.
"""

from __future__ import annotations

import pytest

PLUGIN = "tests.reliability_counts"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.import_plugin(PLUGIN)
