"""The SDK's pure parts (issue #17 item 5): requests, sizes, output split into lines."""

from __future__ import annotations

import pytest

from banger.api_models import VMCreateRequest
from banger.errors import InvalidArgument
from banger.sdk import common


def test_a_list_is_an_argv_and_a_string_a_shell_command() -> None:
    assert common.exec_request(["echo", "a b"], env=None, cwd=None, user=None, timeout=None) == {
        "argv": ["echo", "a b"]
    }
    request = common.exec_request("ls | wc -l", env={"A": "1"}, cwd="/tmp", user=None, timeout=5)
    assert request == {"shell": "ls | wc -l", "env": {"A": "1"}, "cwd": "/tmp", "timeout": 5}


def test_sizes_take_ints_and_words_and_name_the_field() -> None:
    assert common.memory_mib("1G") == 1024
    assert common.memory_mib(512) == 512
    assert common.memory_mib(None) is None
    assert common.disk_bytes("4G") == 4 << 30
    for bad, call in (("lots", common.memory_mib), ("huge", common.disk_bytes)):
        with pytest.raises(InvalidArgument) as caught:
            call(bad)
        assert caught.value.field in ("memory", "disk_size") and caught.value.hint


def test_output_reaches_the_callback_line_by_line() -> None:
    lines: list[str] = []
    splitter = common._Lines(lines.append)
    text = "first\nsecønd\nthi".encode()
    for i in range(len(text)):  # one byte at a time: ø spans two chunks
        splitter.feed(text[i : i + 1])
    assert lines == ["first", "secønd"]
    splitter.feed(b"rd\n\nlast")
    splitter.end()
    assert lines == ["first", "secønd", "third", "", "last"]


def test_a_result_decodes_its_output() -> None:
    r = common.CommandResult(0, None, False, "ø\n".encode(), b"\xff")
    assert (r.stdout, r.stderr, r.ok) == ("ø\n", "\ufffd", True)
    assert not common.CommandResult(None, "KILL", True, b"", b"").ok


def _create(**kwargs: object) -> VMCreateRequest:
    given: dict[str, object] = {"image": None, "kernel": None, "cpus": None, "memory": None,
                                "disk_size": None, "init": None, "start": True}  # fmt: skip
    return common.create_request("t1", **{**given, **kwargs})  # type: ignore[arg-type]


def test_a_pool_request_keeps_the_workspace_and_leaves_the_shape_to_the_pool() -> None:
    request = _create(pool="py", workspace="/", workspace_dest="w")
    assert request.model_dump(exclude_none=True) == {
        "name": "t1", "pool": "py", "start": True, "workspace": {"path": "/", "dest": "w"},
    }  # fmt: skip
    with pytest.raises(InvalidArgument) as caught:
        _create(pool="py", memory="1G")
    assert caught.value.field == "memory"
    assert caught.value.message == "memory: a VM from pool py has the pool's; leave memory out"
    with pytest.raises(InvalidArgument) as caught:
        _create(pool="py", start=False)
    assert caught.value.field == "start"


def test_the_pool_set_body_takes_memory_as_create_does() -> None:
    body = common.pool_set_request(
        image=None, kernel=None, size=2, cpus=None, memory="1G", init="fast"
    )
    assert body.model_dump(exclude_none=True) == {"size": 2, "memory_mib": 1024, "init": "fast"}


def test_both_sdks_have_the_same_pools() -> None:
    import inspect

    from banger.sdk import Banger, Pools, aio

    for name in ("set", "get", "list", "remove", "wait_ready"):
        blocking, awaited = getattr(Pools, name), getattr(aio.Pools, name)
        assert inspect.iscoroutinefunction(awaited), name
        assert inspect.signature(blocking) == inspect.signature(awaited), name
    assert inspect.signature(aio.Banger.create) == inspect.signature(Banger.create)
