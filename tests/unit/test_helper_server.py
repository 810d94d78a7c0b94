"""The helper server in-process (no root, no network ops): framing, replies, shutdown."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from banger.errors import Conflict, HelperError, InvalidArgument
from banger.helper.client import UNREACHABLE_HINT, HelperClient
from banger.helper.ops import Operations
from banger.helper.protocol import MAX_LINE
from banger.helper.server import HelperServer
from banger.helper.validate import Context


def make_server(path: Path) -> HelperServer:
    return HelperServer(
        path,
        owner_uid=os.getuid(),
        owner_gid=None,
        context=Context.from_dirs([path.parent]),
        operations=Operations(os.getuid()),
    )


@pytest.fixture
def served(short_tmp: Path) -> Iterator[tuple[HelperServer, Path]]:
    path = short_tmp / "h.sock"
    server = make_server(path)
    server.bind()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server, path
    finally:
        server.stop()
        thread.join(15)
        assert not thread.is_alive()


def connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def exchange(sock: socket.socket, raw: bytes) -> dict[str, Any]:
    sock.sendall(raw)
    return read_reply(sock)


def read_reply(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def test_ping_and_version_through_the_client(served: tuple[HelperServer, Path]) -> None:
    _, path = served
    client = HelperClient(path)
    assert client.call("ping")["pid"] == os.getpid()
    version = client.call("version")
    assert version["protocol"] == 1
    assert set(version["ops"]) >= {"ensure_bridge", "open_tap", "ensure_nat", "teardown_network"}


async def test_async_wrapper(served: tuple[HelperServer, Path]) -> None:
    _, path = served
    assert (await HelperClient(path).acall("ping"))["version"]


def test_socket_is_owner_only(served: tuple[HelperServer, Path]) -> None:
    _, path = served
    st = path.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()


def test_several_requests_per_connection_and_bad_lines_do_not_end_it(
    served: tuple[HelperServer, Path],
) -> None:
    _, path = served
    with connect(path) as sock:
        assert exchange(sock, b'{"id":1,"op":"ping","args":{}}\n')["ok"] is True
        bad = exchange(sock, b"not json\n")
        assert bad["ok"] is False and bad["id"] is None and "not a JSON line" in bad["error"]
        invalid = exchange(sock, b'{"id":"x","op":"open_tap","args":{"name":"$(x)"}}\n')
        assert invalid == {
            "id": "x",
            "ok": False,
            "error": "open_tap.args.name: must match bt-[a-z0-9-]{1,12}; "
            "open_tap.args.bridge: required",
            "hint": "this is a banger bug or a hostile caller",
            "bad_input": True,  # refused for what was asked: the client raises exit 2
        }
        reply = exchange(sock, b'{"id":4,"op":"version","args":{}}\n')
        assert reply["ok"] is True and reply["id"] == 4 and reply["fds"] == 0


def test_overlong_line_gets_an_error_and_the_connection_closes(
    served: tuple[HelperServer, Path],
) -> None:
    _, path = served
    with connect(path) as sock:
        sock.sendall(b"x" * (MAX_LINE + 10))
        reply = read_reply(sock)
        assert reply["ok"] is False and "longer than" in reply["error"]
        assert sock.recv(1) == b""


def test_connections_are_served_concurrently(served: tuple[HelperServer, Path]) -> None:
    _, path = served
    with connect(path) as idle, connect(path) as busy:
        idle.sendall(b'{"id":1,"op":')  # half a request, never finished
        assert exchange(busy, b'{"id":2,"op":"ping","args":{}}\n')["ok"] is True


def test_stop_ends_idle_connections_and_removes_the_socket(short_tmp: Path) -> None:
    path = short_tmp / "h.sock"
    server = make_server(path)
    server.bind()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    with connect(path) as sock:
        assert exchange(sock, b'{"id":1,"op":"ping","args":{}}\n')["ok"] is True
        server.stop()
        thread.join(15)
        assert not thread.is_alive()
        assert sock.recv(1) == b""
    assert not path.exists()


def test_stale_socket_is_replaced(short_tmp: Path) -> None:
    path = short_tmp / "h.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    server = make_server(path)
    server.bind()
    server.stop()
    server.serve_forever()  # returns at once: stop was requested
    assert not path.exists()


def test_refuses_to_replace_a_live_helper_or_a_file(served: tuple[HelperServer, Path]) -> None:
    _, path = served
    with pytest.raises(Conflict, match="already listening"):
        make_server(path).bind()
    other = path.parent / "plain"
    other.write_text("x")
    with pytest.raises(InvalidArgument, match="not a socket"):
        make_server(other).bind()
    assert other.read_text() == "x"


def test_client_errors(served: tuple[HelperServer, Path], short_tmp: Path) -> None:
    _, path = served
    with pytest.raises(HelperError, match=r"delete_tap\.args\.name: must match") as info:
        HelperClient(path).call("delete_tap", name="eth0")
    assert info.value.hint == "this is a banger bug or a hostile caller"
    with pytest.raises(HelperError, match="cannot reach the root helper") as info:
        HelperClient(short_tmp / "absent.sock").call("ping")
    assert info.value.hint == UNREACHABLE_HINT


def test_a_long_or_broken_path_is_refused_and_the_connection_lives_on(
    served: tuple[HelperServer, Path],
) -> None:
    """Paths that once made a checker raise OSError (ENAMETOOLONG) get a field error."""

    _, path = served
    with connect(path) as sock:
        for hostile in (
            f"{path.parent}/tmp/" + "x" * 300,
            f"{path.parent}/" + "/".join(["y"] * 2100),
        ):
            request = {"id": 7, "op": "remove_staging", "args": {"path": hostile}}
            reply = exchange(sock, json.dumps(request).encode() + b"\n")
            assert reply["ok"] is False and reply["id"] == 7, reply
            assert reply["error"].startswith("remove_staging.args.path: must be shorter"), reply
        assert exchange(sock, b'{"id": 8, "op": "ping", "args": {}}\n')["ok"] is True
