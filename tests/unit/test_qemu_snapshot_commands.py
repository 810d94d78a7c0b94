"""Pure builders of the QMP commands and argv a QEMU snapshot save/restore uses."""

from __future__ import annotations

import pytest

from banger.errors import InvalidArgument
from banger.vmm import qemu_snapshot as qs


def test_save_and_load_go_through_a_passed_descriptor_never_exec() -> None:
    assert qs.getfd() == ("getfd", {"fdname": "banger-state"})
    assert qs.migrate_to_fd() == ("migrate", {"uri": "fd:banger-state"})
    assert qs.migrate_from_fd() == ("migrate-incoming", {"uri": "fd:banger-state"})
    for _name, args in (qs.migrate_to_fd(), qs.migrate_from_fd()):
        assert not str(args["uri"]).startswith(("exec:", "tcp:", "unix:"))


def test_completion_is_event_driven_and_unthrottled() -> None:
    assert qs.events_on() == (
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "events", "state": True}]},
    )
    name, args = qs.full_speed()
    assert name == "migrate-set-parameters" and args["max-bandwidth"] >= 1 << 30


@pytest.mark.parametrize("bad", ["", "3fd", "a b", "x;y", "fd:1", "a" * 40, "ok\n"])
def test_descriptor_names_are_checked(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="fdname"):
        qs.getfd(bad)
    with pytest.raises(InvalidArgument, match="fdname"):
        qs.migrate_to_fd(bad)


def test_incoming_argv_waits_stopped_for_the_state() -> None:
    argv = ["qemu-system-x86_64", "-M", "microvm"]
    assert qs.incoming_argv(argv) == [*argv, "-incoming", "defer", "-S"]
    with pytest.raises(InvalidArgument, match="already has -incoming"):
        qs.incoming_argv(qs.incoming_argv(argv))


def test_the_link_is_set_on_the_nics_netdev() -> None:
    """set_link names the netdev banger's argv gives the NIC (QEMU then sets the NIC's link)."""
    assert qs.set_link(False) == ("set_link", {"name": "n0", "up": False})
    assert qs.set_link(True) == ("set_link", {"name": "n0", "up": True})
    assert qs.NETDEV == "n0"
