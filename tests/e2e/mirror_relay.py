"""Reach the host's Debian mirror from inside a test namespace that has no uplink.

Inside the namespace a relay listens on a loopback port and passes each
connection through a Unix socket to a relay on the host, which connects to the
mirror's server. apt, told to use the inside relay as its HTTP proxy, sends it
absolute-form requests (``GET http://mirror/...``), which an HTTP/1.1 server
must accept, so a plain byte relay is enough and no name is resolved in the
namespace. Only this port on the namespace's loopback leads out, and only to
the mirror: guests (on the bridge) cannot reach it, nothing else is routed.
The build traffic is what the test image cache's ``banger image build`` sends
from the host namespace.

Run as a program: ``inside PORT SOCKET`` (in the namespace) or ``outside
SOCKET HOST PORT`` (on the host).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _serve(listener: socket.socket, connect: object) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = connect()  # type: ignore[operator]
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def main(argv: list[str]) -> None:
    if argv[0] == "inside":
        port, path = int(argv[1]), argv[2]
        listener = socket.create_server(("127.0.0.1", port))

        def connect() -> socket.socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s

    else:
        path, host, port = argv[1], argv[2], int(argv[3])
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(64)

        def connect() -> socket.socket:
            return socket.create_connection((host, port), timeout=60)

    print("ready", flush=True)
    _serve(listener, connect)


if __name__ == "__main__":
    main(sys.argv[1:])
