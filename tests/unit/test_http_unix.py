"""banger's minimal HTTP/1.1 exchange, against a real socket peer sending exact bytes.

Each test's peer is the other end of a socketpair: it reads the request and
answers with bytes written out by hand, so every framing the reader must know
(Content-Length, chunked with chunks splitting lines, extensions and
trailers, end of connection, no body) and every way an answer can be broken
is exercised byte for byte. Against uvicorn itself the client is exercised by
every CLI and daemon integration test.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from banger.http_unix import MAX_HEADERS, ProtocolError, Response, read_response, send_request


@contextmanager
def answered(answer: bytes, *, close: bool = True) -> Iterator[tuple[Response, list[bytes]]]:
    """Send a GET; the peer records the request and writes ``answer`` (then closes)."""
    ours, theirs = socket.socketpair()
    got: list[bytes] = []

    def peer() -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += theirs.recv(4096)
        got.append(data)
        theirs.sendall(answer)
        if close:
            theirs.close()

    thread = threading.Thread(target=peer)
    thread.start()
    try:
        ours.settimeout(5)
        send_request(ours, "GET", "/v1/vms?x=1", {"Accept": "application/json"})
        with ours.makefile("rb") as stream:
            yield read_response(stream), got
    finally:
        thread.join(5)
        ours.close()
        theirs.close()


def test_the_request_is_plain_http_1_1() -> None:
    with answered(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]") as (resp, got):
        assert resp.read() == b"[]"
    assert got[0] == (b"GET /v1/vms?x=1 HTTP/1.1\r\nHost: bangerd\r\nConnection: close\r\n"
                      b"Accept: application/json\r\n\r\n")  # fmt: skip


def test_a_body_is_sent_with_its_length_and_bodiless_posts_say_zero() -> None:
    for body, expected in ((b'{"a":1}', b"Content-Length: 7\r\n\r\n{\"a\":1}"),
                           (None, b"Content-Length: 0\r\n\r\n")):  # fmt: skip
        ours, theirs = socket.socketpair()
        with ours, theirs:
            send_request(ours, "POST", "/v1/vms", {}, body)
            assert theirs.recv(4096).endswith(expected)


@pytest.mark.parametrize("bad", ["GET /x HTTP/1.1\r\nEvil: 1", "/a b", "/a\nb"])
def test_request_lines_and_headers_cannot_be_split(bad: str) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs, pytest.raises(ValueError, match="refusing"):
        send_request(ours, "GET", bad, {})
    with ours, theirs, pytest.raises(ValueError, match="refusing"):
        send_request(ours, "GET", "/x", {"X-A": "1\r\nEvil: 2"})


def test_content_length_status_and_headers() -> None:
    answer = (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-A: 1\r\n"
              b"x-a: 2\r\ncontent-length: 13\r\n\r\n{\"error\":\"x\"}")  # fmt: skip
    with answered(answer) as (resp, _):
        assert (resp.status, resp.reason) == (404, "Not Found")
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["x-a"] == "1, 2"
        assert resp.read() == b'{"error":"x"}'


def test_chunked_lines_split_across_chunks_with_extensions_and_trailers() -> None:
    answer = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
              b"5;ext=1\r\n{\"a\":\r\n"
              b"b\r\n1}\n{\"b\":2}\n\r\n"
              b"3\r\n{}\n\r\n"
              b"0\r\nX-Trailer: yes\r\n\r\n")  # fmt: skip
    with answered(answer, close=False) as (resp, _):
        # close=False: the reader stops at the last chunk, not at the end of the connection.
        assert list(resp) == [b'{"a":1}\n', b'{"b":2}\n', b"{}\n"]


def test_a_body_to_the_end_of_the_connection_and_no_body_for_204() -> None:
    with answered(b"HTTP/1.0 200 OK\r\n\r\nline1\nlast") as (resp, _):
        assert list(resp) == [b"line1\n", b"last"]
    with answered(b"HTTP/1.1 204 No Content\r\n\r\n", close=False) as (resp, _):
        assert resp.read() == b""


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"", "closed mid-response"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not an HTTP status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\n x: folded\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * (MAX_HEADERS + 1) + b"\r\n", "headers"),
        (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 70000 + b"\r\n\r\n", "too long"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "ended 5 bytes early"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "bad content-length"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", "unsupported"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-1\r\n", "negative"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\nabc", "inside a chunk"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXX", "CRLF"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n", "closed"),
    ],
)
def test_broken_answers_are_protocol_errors(answer: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why), answered(answer) as (resp, _):
        resp.read()


def test_a_body_is_read_once() -> None:
    with answered(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]") as (resp, _):
        assert resp.read() == b"[]"
        with pytest.raises(ProtocolError, match="already read"):
            resp.read()
