"""The suite's own assertion helpers (tests/support.py) accept what they promise and
reject the rest: a helper that cannot fail would make every test using it vacuous."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import Branches, assert_refusal


def done(code: int, stderr: str, stdout: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["banger"], code, stdout, stderr)


@pytest.mark.parametrize(
    "stderr",
    [
        "error: name: 'X' is not a DNS label\n",
        "error: name: 'X' is not a DNS label\nhint: use lowercase\n",
        "▸ pause\n  detail line\nerror: name: 'X' is not a DNS label\nhint: use lowercase\n",
    ],
)
def test_a_refusal_is_accepted(stderr: str) -> None:
    assert assert_refusal(done(2, stderr), 2, "DNS label") == "error: name: 'X' is not a DNS label"


@pytest.mark.parametrize(
    ("result", "hint"),
    [
        (done(1, "error: name: bad\n"), None),  # another exit status
        (done(2, "error: name: bad\n", stdout="[]\n"), None),  # a result printed
        (done(2, "error: cpus: bad\n"), None),  # the wrong error
        (done(2, "error: name: bad\nerror: name: again\n"), None),  # two errors
        (done(2, "Traceback (most recent call last):\nerror: name: bad\n"), None),
        (done(2, "note: something\nerror: name: bad\n"), None),  # not progress
        (done(2, "error: name: bad\nhint: a\nhint: b\n"), None),  # two hints
        (done(2, "error: name: bad\nsomething else\n"), None),
        (done(2, "error: name: bad\n"), "pick another"),  # the hint is missing
        (done(2, "error: name: bad\nhint: other\n"), "pick another"),
        (done(2, ""), None),  # nothing said
    ],
)
def test_anything_else_is_not(result: subprocess.CompletedProcess[str], hint: str | None) -> None:
    with pytest.raises(AssertionError):
        assert_refusal(result, 2, "name:", hint=hint)


def test_branches_fail_a_property_whose_branch_never_ran() -> None:
    branches = Branches()

    @given(st.integers(min_value=0, max_value=10))
    def small(value: int) -> None:
        branches.took("small" if value < 100 else "large")

    small()
    branches.require("small")
    with pytest.raises(AssertionError, match=r"never taken: \['large'\]"):
        branches.require("small", "large")
