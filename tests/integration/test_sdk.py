"""The Python SDK against a real bangerd with no VMs (issue #17 item 5).

What needs no guest: errors come back as :mod:`banger.errors` classes with the
daemon's message, hint and field, from the HTTP API, the exec WebSocket and
the files API alike; a failed operation is :class:`OperationFailed` naming its
stage; bad arguments are refused before anything is sent; a daemon that is
not there is :class:`DaemonUnavailable`. The real guest is
tests/e2e/test_sdk_e2e.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.api_models import Operation
from banger.errors import DaemonUnavailable, InvalidArgument, NotFound
from banger.sdk import VM, Banger, OperationFailed, aio, common
from tests.integration.bangerd_harness import Daemon, home_paths, running_daemon
from tests.support import short_tmpdir


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_tmpdir() as home, running_daemon(home) as d:
        yield d


@pytest.fixture
def bg(daemon: Daemon) -> Iterator[Banger]:
    with Banger(daemon.paths) as banger:
        yield banger


def test_an_unknown_vm_is_not_found_with_the_daemons_message_and_hint(bg: Banger) -> None:
    with pytest.raises(NotFound) as caught:
        bg.get("nope")
    assert "no VM named 'nope'" in caught.value.message
    assert caught.value.hint
    assert caught.value.field is None
    assert bg.list() == []


@pytest.mark.parametrize(
    "call",
    [
        lambda vm: vm.run(["true"]),  # the exec WebSocket's error frame
        lambda vm: vm.run("true", background=True),
        lambda vm: vm.files.read("/etc/hostname"),  # the files API (streamed)
        lambda vm: vm.files.list("/root"),
        lambda vm: vm.sessions.start("s", ["true"]),
        lambda vm: vm.stop(),
        lambda vm: vm.snapshot("s1"),
    ],
)
def test_every_path_to_an_unknown_vm_raises_not_found(bg: Banger, call: object) -> None:
    assert callable(call)
    with pytest.raises(NotFound, match="no VM named 'ghost'"):
        call(VM(bg, "ghost"))


def test_bad_fields_are_named_by_the_daemon(bg: Banger) -> None:
    with pytest.raises(InvalidArgument) as caught:
        bg.create("Not A Label!", cpus=-1, start=False)
    assert caught.value.fields == ("name", "cpus")
    assert caught.value.field == "name"
    assert "at least 1" in caught.value.message
    assert bg.list() == []  # nothing half-made


def test_bad_arguments_are_refused_before_anything_is_sent(bg: Banger) -> None:
    with pytest.raises(InvalidArgument) as caught:
        bg.create("t1", memory="lots")
    assert caught.value.field == "memory" and caught.value.hint
    with pytest.raises(NotFound, match="is not inside a git repository"):
        bg.create("t1", workspace="/", start=False)  # the copy now needs no running VM
    vm = VM(bg, "ghost")
    for command in ([], "  ", ["sh", 3]):
        with pytest.raises(InvalidArgument) as caught:
            vm.run(command)  # type: ignore[arg-type]
        assert caught.value.field == "command"
    with pytest.raises(InvalidArgument) as caught:
        vm.run(["true"], timeout=0)
    assert caught.value.field == "timeout"


def test_a_failed_operation_names_its_stage(bg: Banger) -> None:
    op = bg.client.selftest(fail_at="check_runtime_dir", delay_ms=1)
    with pytest.raises(OperationFailed) as caught:
        common.follow(bg.client, op)
    assert caught.value.stage == "check_runtime_dir"
    assert caught.value.operation == op.id
    assert "failed at stage check_runtime_dir" in caught.value.message
    ok = bg.client.selftest(delay_ms=1)
    assert common.follow(bg.client, ok) == {}
    assert isinstance(bg.client.get_op(ok.id), Operation)


def test_no_daemon_is_daemon_unavailable(short_tmp: Path) -> None:
    # BANGER_NO_AUTOSTART=1 (the suite's default): the SDK says so instead of starting one
    with pytest.raises(DaemonUnavailable) as caught:
        Banger(home_paths(short_tmp))
    assert "auto-start is off" in (caught.value.hint or "")
    # autostart=False: the first call says nothing answers
    with pytest.raises(DaemonUnavailable, match="not running"):
        Banger(home_paths(short_tmp), autostart=False).list()


def test_the_asyncio_sdk_raises_the_same_errors(daemon: Daemon) -> None:
    async def main() -> None:
        async with aio.Banger(daemon.paths) as bg:
            with pytest.raises(NotFound, match="no VM named 'nope'"):
                await bg.get("nope")
            vm = aio.VM(bg, "ghost")
            with pytest.raises(NotFound):
                await vm.run(["true"])
            with pytest.raises(NotFound):
                await vm.files.read("/etc/hostname")
            with pytest.raises(InvalidArgument) as caught:
                await bg.create("Not A Label!", cpus=-1, start=False)
            assert caught.value.fields == ("name", "cpus")
            assert await bg.list() == []

    asyncio.run(main())
