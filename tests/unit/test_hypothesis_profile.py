"""The suite-wide Hypothesis profile (tests/conftest.py): no per-example deadline."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=5)
@given(st.integers())
def _a_property_naming_no_deadline(value: int) -> None:
    pass


def test_the_default_profile_has_no_deadline() -> None:
    assert settings.default is not None and settings.default.deadline is None


def test_a_settings_that_names_no_deadline_inherits_none() -> None:
    applied = _a_property_naming_no_deadline._hypothesis_internal_use_settings  # type: ignore[attr-defined]
    assert applied.max_examples == 5 and applied.deadline is None
