"""JSON-lines framing and descriptor passing, over real socket pairs."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.helper.protocol import (
    MAX_LINE,
    LineReader,
    ProtocolError,
    decode,
    encode,
    send_line,
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_encode_is_one_compact_line() -> None:
    assert encode({"id": 1, "op": "ping", "args": {}}) == b'{"id":1,"op":"ping","args":{}}\n'
    assert b"\n" not in encode({"x": "a\nb"})[:-1]


@pytest.mark.parametrize(
    "line, error",
    [(b"nope", "not a JSON line"), (b"[1]", "expected a JSON object"), (b"\xff", "not a JSON")],
)
def test_decode_errors(line: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode(line)


def test_encode_refuses_oversized_messages() -> None:
    with pytest.raises(ProtocolError, match="line limit"):
        encode({"x": "a" * MAX_LINE})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    messages=st.lists(st.dictionaries(st.text(), json_values, max_size=4), max_size=5),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_lines_survive_any_chunking(messages: list[dict[str, object]], chunk: int) -> None:
    a, b = socket.socketpair()
    with a, b:
        data = b"".join(encode(m) for m in messages)

        def write() -> None:
            # From a thread: many tiny segments fill the socket buffer quickly.
            for i in range(0, len(data), chunk):
                a.sendall(data[i : i + chunk])
            a.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=write)
        writer.start()
        reader = LineReader(b, accept_fds=False)
        got = []
        while (item := reader.read()) is not None:
            got.append(decode(item[0]))
        writer.join()
        assert got == messages


def test_several_lines_in_one_segment(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(b'{"a":1}\n{"b":2}\n')
    reader = LineReader(b, accept_fds=False)
    assert reader.read() == (b'{"a":1}', [])
    assert reader.read() == (b'{"b":2}', [])


def test_line_too_long_is_refused_without_buffering_it_all(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    a.setblocking(False)
    sent = 0
    # Only a little more than the limit is ever needed to decide.
    while sent < MAX_LINE + 2:
        sent += a.send(b"x" * (MAX_LINE + 2 - sent))
    with pytest.raises(ProtocolError, match="longer than"):
        LineReader(b, accept_fds=False).read()


def test_eof_in_the_middle_of_a_line(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(b'{"a":')
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match="middle of a line"):
        LineReader(b, accept_fds=False).read()


def test_clean_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.shutdown(socket.SHUT_WR)
    assert LineReader(b, accept_fds=False).read() is None


def test_descriptors_travel_with_their_line(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        send_line(a, {"id": 1, "ok": True, "fds": 1}, [w])
        send_line(a, {"id": 2, "ok": True, "fds": 0})
        reader = LineReader(b, accept_fds=True)
        line, fds = reader.read() or (b"", [])
        assert decode(line)["id"] == 1 and len(fds) == 1
        # Received descriptors are close-on-exec: nothing leaks into children.
        assert not os.get_inheritable(fds[0])
        os.write(fds[0], b"hi")
        os.close(fds[0])
        assert os.read(r, 2) == b"hi"
        assert reader.read() == (b'{"id":2,"ok":true,"fds":0}', [])
    finally:
        os.close(r)
        os.close(w)


def test_server_side_closes_descriptors_a_peer_sends(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        before = open_fds()
        send_line(a, {"id": 1}, [w, r])
        item = LineReader(b, accept_fds=False).read()
        assert item is not None
        line, fds = item
        assert fds == [] and decode(line) == {"id": 1}
        assert open_fds() == before
    finally:
        os.close(r)
        os.close(w)
