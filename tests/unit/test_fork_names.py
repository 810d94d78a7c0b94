"""``vm fork``'s children names: planned and validated before anything is created;
and the error a fork whose children ran in parallel reports."""

from __future__ import annotations

import asyncio

import pytest

from banger.daemon.vms.fork import MAX_CHILDREN, child_names, first_failure
from banger.errors import BangerError, InvalidArgument


def test_default_prefix_is_source_fork() -> None:
    assert child_names("dev", 3, None) == ["dev-fork-1", "dev-fork-2", "dev-fork-3"]


def test_given_prefix() -> None:
    assert child_names("dev", 2, "try") == ["try-1", "try-2"]
    assert child_names("dev", 1, "a") == ["a-1"]


@pytest.mark.parametrize("count", [0, -1, MAX_CHILDREN + 1, True])
def test_count_out_of_range_names_the_field(count: int) -> None:
    with pytest.raises(InvalidArgument, match=rf"^count: must be 1-{MAX_CHILDREN}") as exc:
        child_names("dev", count, None)
    assert exc.value.exit_code == 2


def test_the_limit_itself_is_allowed() -> None:
    names = child_names("dev", MAX_CHILDREN, None)
    assert len(names) == MAX_CHILDREN == len(set(names))
    assert names[-1] == f"dev-fork-{MAX_CHILDREN}"


@pytest.mark.parametrize("prefix", ["Upper", "under_score", "-lead", "sp ace", "a/b", "x" * 62, ""])
def test_bad_prefix_names_the_field(prefix: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^name: the child name") as exc:
        child_names("dev", 2, prefix)
    assert exc.value.exit_code == 2


def test_a_long_source_name_without_prefix_says_where_the_name_came_from() -> None:
    source = "s" * 60  # a valid VM name; "<source>-fork-1" is not
    with pytest.raises(InvalidArgument, match="from the source name") as exc:
        child_names(source, 1, None)
    assert exc.value.hint is not None and "--name PREFIX" in exc.value.hint


def test_longest_prefix_that_fits() -> None:
    prefix = "p" * (63 - len("-16"))
    assert child_names("dev", 16, prefix)[-1] == f"{prefix}-16"
    with pytest.raises(InvalidArgument):
        child_names("dev", 16, prefix + "p")


def test_a_failed_fork_reports_its_first_child_failure() -> None:
    first, second = BangerError("child a: failed"), BangerError("child b: failed")
    group = BaseExceptionGroup("children", [first, second])
    assert first_failure(group) is first
    assert first_failure(BaseExceptionGroup("outer", [group])) is first
    cancelled = asyncio.CancelledError()
    assert first_failure(cancelled) is cancelled
