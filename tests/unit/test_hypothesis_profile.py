"""The suite-wide Hypothesis profiles (tests/conftest.py): no per-example deadline;
derandomized when CI is set."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import hypothesis_profile


@settings(max_examples=5)
@given(st.integers())
def _a_property_naming_no_deadline(value: int) -> None:
    pass


def test_the_default_profile_has_no_deadline() -> None:
    assert settings.default is not None and settings.default.deadline is None


def test_a_settings_that_names_no_deadline_inherits_none() -> None:
    applied = _a_property_naming_no_deadline._hypothesis_internal_use_settings  # type: ignore[attr-defined]
    assert applied.max_examples == 5 and applied.deadline is None


def test_ci_selects_the_derandomized_profile() -> None:
    assert hypothesis_profile({"CI": "true"}) == hypothesis_profile({"CI": "1"}) == "banger-ci"
    for unset in ({}, {"CI": ""}, {"CI": "0"}, {"CI": "false"}):
        assert hypothesis_profile(unset) == "banger"
    ci = settings.get_profile("banger-ci")
    assert ci.derandomize and ci.database is None and ci.deadline is None


def test_this_run_uses_the_profile_its_environment_selects() -> None:
    selected = settings.get_profile(hypothesis_profile(os.environ))
    assert settings.default is not None
    assert settings.default.derandomize == selected.derandomize
