"""vms/names.FieldProblems: every bad field of a request is reported at once (issue #22 item 7)."""

from __future__ import annotations

import pytest

from banger.daemon.vms.names import FieldProblems, check_init, check_memory, check_name, check_vcpus
from banger.errors import Conflict, InvalidArgument


def test_all_problems_in_order_with_their_hints() -> None:
    fields = FieldProblems()
    assert fields.check(check_name, "Bad_Name") is None
    assert fields.check(check_vcpus, -1, 8) is None
    assert fields.check(check_memory, 512, 4096) == 512
    assert fields.check(check_init, "upstart") is None
    with pytest.raises(InvalidArgument) as err:
        fields.raise_any()
    assert err.value.message == (
        "invalid request (3 problems): name: 'Bad_Name' is not a DNS label; "
        "cpus: must be at least 1, got -1; init: must be 'systemd' or 'fast', got 'upstart'"
    )
    assert err.value.hint == "use 1-63 lowercase letters, digits or inner hyphens, e.g. dev-1"
    assert err.value.exit_code == 2


def test_one_problem_is_raised_as_it_is_and_none_raises_nothing() -> None:
    fields = FieldProblems()
    fields.check(check_vcpus, 4, 8)
    fields.raise_any()
    fields.check(check_vcpus, 0, 8)
    with pytest.raises(InvalidArgument) as err:
        fields.raise_any()
    assert err.value.message == "cpus: must be at least 1, got 0"


def test_other_refusals_are_not_collected() -> None:
    def busy() -> None:
        raise Conflict("VM is running")

    with pytest.raises(Conflict):
        FieldProblems().check(busy)
