"""The SDK's pure parts (issue #17 item 5): requests, sizes, output split into lines."""

from __future__ import annotations

import pytest

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
