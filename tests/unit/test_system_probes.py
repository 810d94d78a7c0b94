"""Service probes against real Unix-socket servers started by the test."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from socketserver import UnixStreamServer
from typing import Any

from banger.system.probes import probe_daemon, probe_helper


@contextmanager
def line_server(
    path: Path, answer: Callable[[dict[str, Any]], bytes]
) -> Iterator[list[dict[str, Any]]]:
    """A one-thread JSON-lines server: reads a request line, writes ``answer(request)``."""
    received: list[dict[str, Any]] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    request = json.loads(data)
                    received.append(request)
                    conn.sendall(answer(request))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)


def test_helper_absent(short_tmp: Path) -> None:
    probe = probe_helper(short_tmp / "helper.sock")
    assert probe.state == "absent" and not probe.up


def test_helper_stale_socket(short_tmp: Path) -> None:
    path = short_tmp / "helper.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the file stays; nobody listens: what a crashed helper leaves
    probe = probe_helper(path)
    assert probe.state == "stale"
    assert "stale" in probe.detail


def test_helper_not_a_socket(short_tmp: Path) -> None:
    path = short_tmp / "helper.sock"
    path.write_text("")
    assert probe_helper(path).state == "error"


def test_helper_ping_ok_with_version(short_tmp: Path) -> None:
    path = short_tmp / "helper.sock"

    def answer(req: dict[str, Any]) -> bytes:
        return (
            json.dumps({"id": req["id"], "ok": True, "result": {"version": "0.1.0"}}).encode()
            + b"\n"
        )

    with line_server(path, answer) as received:
        probe = probe_helper(path)
    assert probe.up and probe.version == "0.1.0"
    assert received == [{"id": 1, "op": "ping", "args": {}}]


def test_helper_refusal_is_reported(short_tmp: Path) -> None:
    path = short_tmp / "helper.sock"

    def answer(req: dict[str, Any]) -> bytes:
        return b'{"id":1,"ok":false,"error":"uid 4242 is not the owner","hint":null}\n'

    with line_server(path, answer):
        probe = probe_helper(path)
    assert probe.state == "error"
    assert "uid 4242 is not the owner" in probe.detail


def test_helper_garbage_reply(short_tmp: Path) -> None:
    path = short_tmp / "helper.sock"
    with line_server(path, lambda req: b"not json\n"):
        probe = probe_helper(path)
    assert probe.state == "error" and "unexpected reply" in probe.detail


def test_helper_that_never_answers_times_out(short_tmp: Path) -> None:
    path = short_tmp / "helper.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()  # accepted by the kernel, never read: a hung helper
    try:
        probe = probe_helper(path)
    finally:
        listener.close()
    assert probe.state == "error" and "did not answer" in probe.detail


class _VersionHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"version": "0.1.0", "api": 1}).encode()
        status = 200 if self.path == "/v1/version" else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:  # Unix sockets have no peer address
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def http_server(path: Path) -> Iterator[None]:
    server = UnixStreamServer(str(path), _VersionHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_daemon_version(short_tmp: Path) -> None:
    path = short_tmp / "bangerd.sock"
    with http_server(path):
        probe = probe_daemon(path)
    assert probe.up and probe.version == "0.1.0"


def test_daemon_absent_and_stale(short_tmp: Path) -> None:
    path = short_tmp / "bangerd.sock"
    assert probe_daemon(path).state == "absent"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    assert probe_daemon(path).state == "stale"


def test_daemon_that_answers_errors(short_tmp: Path) -> None:
    # A server that is not bangerd: it answers 404 to /v1/version.
    class NotFoundHandler(_VersionHandler):
        def do_GET(self) -> None:
            self.path = "/elsewhere"
            super().do_GET()

    path = short_tmp / "bangerd.sock"
    server = UnixStreamServer(str(path), NotFoundHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        probe = probe_daemon(path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert probe.state == "error" and "404" in probe.detail
