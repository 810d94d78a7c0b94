"""The helper's Unix socket server: peer check, framing, one thread per connection.

Threads rather than asyncio: every op is blocking work (netlink through
pyroute2's sync API, tun ioctls, ``nft`` via :func:`banger.proc.run`), replies
carry descriptors with ``sendmsg``/``recvmsg`` (which asyncio's stream API does
not expose), and the load is a handful of connections from one daemon. Ops
still run one at a time (see :class:`~banger.helper.ops.Operations`).

Shutdown (SIGTERM/SIGINT, or :meth:`HelperServer.stop`): stop accepting,
remove the socket, half-close every connection for reading so idle ones end at
once while an op in flight still finishes and sends its reply, then wait a
bounded grace period.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.errors import BangerError, Conflict, InvalidArgument
from banger.helper.ops import Operations, Outcome
from banger.helper.protocol import LineReader, ProtocolError, decode, send_line
from banger.helper.validate import Context, RequestInvalid, check_id, validate_request
from banger.paths import check_socket_path

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
SHUTDOWN_GRACE = 10.0
_LOG_HINT = "see the helper log for details"
#: Seconds (and bytes, below) a refused peer's already-sent request is read and dropped.
REFUSAL_DRAIN = 1.0
_DRAIN_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"


def peer_of(conn: socket.socket) -> Peer:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def error_reply(request_id: object, exc: BaseException) -> dict[str, Any]:
    """The one-line refusal; ``bad_input`` says it is about what was asked (the
    error's exit status is 2: a hostile layer, an invalid field), not a fault here."""
    if isinstance(exc, BangerError):
        message, hint = exc.message, exc.hint
    else:
        message, hint = f"{type(exc).__name__}: {exc}", _LOG_HINT
    bad_input = isinstance(exc, BangerError) and exc.exit_code == InvalidArgument.exit_code
    return {"id": request_id, "ok": False, "error": " ".join(message.split()), "hint": hint,
            "bad_input": bad_input}  # fmt: skip


def _discard_input(conn: socket.socket, timeout: float) -> None:
    """Read and drop what a refused peer already sent, then let it see EOF.

    Closing a Unix socket with unread input resets the connection: the peer's
    next read fails with ECONNRESET before it reaches the refusal line we just
    sent, so a client that sends its request straight after connecting (every
    real one) would see "connection reset" instead of "permission denied".
    Bounded in time and bytes: a refused peer cannot hold the thread.
    """
    conn.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + timeout
    total = 0
    while total < _DRAIN_LIMIT:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        conn.settimeout(remaining)
        chunk = conn.recv(4096)
        if not chunk:
            return
        total += len(chunk)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class HelperServer:
    def __init__(
        self,
        socket_path: Path,
        *,
        owner_uid: int,
        owner_gid: int | None,
        context: Context,
        operations: Operations,
    ) -> None:
        self.socket_path = check_socket_path(socket_path)
        self.owner_uid = owner_uid
        self.owner_gid = owner_gid
        self.context = context
        self.operations = operations
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        # Signals and stop() wake the accept loop through this pair (made by bind()).
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._stopping = threading.Event()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._conns_lock = threading.Lock()

    # -- setup -----------------------------------------------------------------
    def bind(self) -> None:
        """Create the listening socket: owner-only from the first instant."""
        self._remove_stale_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        # The umask gives the socket its final mode at bind time, and lchown
        # never follows a symlink: no chmod on a path the owner's directory
        # could have swapped under us.
        old_umask = os.umask(0o117 if self.owner_gid is not None else 0o177)
        try:
            sock.bind(os.fspath(self.socket_path))
        finally:
            os.umask(old_umask)
        if self.owner_gid is not None:
            # The system-install layout: root:<owner's group> 0660. The owner
            # reaches it through its group and cannot change its mode; the
            # peer-uid check below still refuses everyone but the owner.
            os.chown(self.socket_path, 0, self.owner_gid, follow_symlinks=False)
        else:
            os.chown(self.socket_path, self.owner_uid, -1, follow_symlinks=False)
        sock.listen(16)
        self._listener = sock
        self._inode = os.lstat(self.socket_path).st_ino
        self._wake = socket.socketpair()
        self._wake[1].setblocking(False)
        log.info(
            "listening on %s (owner uid %d%s)",
            self.socket_path,
            self.owner_uid,
            f", group {self.owner_gid}" if self.owner_gid is not None else "",
        )

    def _remove_stale_socket(self) -> None:
        try:
            st = os.lstat(self.socket_path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise InvalidArgument(f"--socket {self.socket_path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(os.fspath(self.socket_path))
        except OSError:
            self.socket_path.unlink()
            log.info("removed stale socket %s", self.socket_path)
            return
        finally:
            probe.close()
        raise Conflict(
            f"another helper is already listening on {self.socket_path}",
            hint="stop it first (systemctl stop banger-helper, or kill its pid)",
        )

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the server (main thread only)."""
        assert self._wake is not None, "bind() first"
        signal.set_wakeup_fd(self._wake[1].fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self._stopping.set()

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return (from any thread)."""
        self._stopping.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                self._wake[1].send(b"\0")

    # -- main loop -------------------------------------------------------------
    def serve_forever(self) -> None:
        if self._listener is None:
            self.bind()
        assert self._listener is not None and self._wake is not None
        wake = self._wake[0]
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ, "accept")
            sel.register(wake, selectors.EVENT_READ, "wake")
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.data == "wake":
                        wake.recv(64)
                    elif not self._stopping.is_set():
                        self._accept()
        self._shutdown()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except OSError as exc:
            log.warning("accept failed: %s", exc)
            return
        with self._conns_lock:
            if len(self._conns) >= MAX_CONNECTIONS:
                log.warning("refusing connection: %d connections open", len(self._conns))
                self._refuse(conn, Conflict("too many connections to the helper"))
                return
            thread = threading.Thread(target=self._serve_conn, args=(conn,), daemon=True)
            self._conns[conn] = thread
        thread.start()

    def _refuse(self, conn: socket.socket, exc: BangerError, *, drain: float = 0.0) -> None:
        with contextlib.suppress(OSError):
            send_line(conn, error_reply(None, exc))
            if drain:
                _discard_input(conn, drain)
        conn.close()

    def _serve_conn(self, conn: socket.socket) -> None:
        try:
            peer = peer_of(conn)
            if peer.uid not in (self.owner_uid, 0):
                log.warning(
                    "refused connection from %s: not the owner uid %d", peer, self.owner_uid
                )
                self._refuse(
                    conn,
                    BangerError(
                        f"permission denied: uid {peer.uid} is not this helper's owner",
                        hint="banger-helper serves only the user it was installed for",
                    ),
                    drain=REFUSAL_DRAIN,
                )
                return
            log.debug("connection from %s", peer)
            self._serve_requests(conn, peer)
        except Exception:
            log.exception("connection handler failed")
        finally:
            with self._conns_lock:
                self._conns.pop(conn, None)
            conn.close()

    def _serve_requests(self, conn: socket.socket, peer: Peer) -> None:
        reader = LineReader(conn, accept_fds=False)
        while True:
            try:
                item = reader.read()
            except ProtocolError as exc:
                log.warning("protocol error from %s: %s", peer, exc)
                with contextlib.suppress(OSError):
                    send_line(conn, error_reply(None, InvalidArgument(str(exc))))
                return
            except OSError:
                return
            if item is None:
                return
            reply, fds = self.handle_line(item[0], peer)
            try:
                send_line(conn, reply, fds)
            except OSError as exc:
                log.warning("could not reply to %s: %s", peer, exc)
                return
            finally:
                for fd in fds:
                    os.close(fd)

    def handle_line(self, line: bytes, peer: Peer) -> tuple[dict[str, Any], list[int]]:
        """One request line to one reply (and the descriptors it hands over)."""
        request_id: object = None
        try:
            message = decode(line)
            with contextlib.suppress(ValueError):
                request_id = check_id(message.get("id"))
            request = validate_request(self.context, message, self.operations.specs)
        except (ProtocolError, RequestInvalid) as exc:
            log.warning("rejected request from %s: %s", peer, exc)
            err = exc if isinstance(exc, RequestInvalid) else InvalidArgument(str(exc))
            return error_reply(request_id, err), []
        except Exception as exc:  # a checker's bug costs one refusal, never the connection
            log.exception("validating a request from %s failed", peer)
            err = InvalidArgument(f"request refused: validation failed ({type(exc).__name__})")
            return error_reply(request_id, err), []
        log.info("request %r from %s: %s %s", request.id, peer, request.op, request.args)
        try:
            outcome: Outcome = self.operations.run(request)
        except BangerError as exc:
            log.warning("%s failed: %s", request.op, exc)
            return error_reply(request.id, exc), []
        except Exception as exc:
            log.exception("%s failed unexpectedly", request.op)
            return error_reply(request.id, exc), []
        reply = {"id": request.id, "ok": True, "result": outcome.result, "fds": len(outcome.fds)}
        return reply, list(outcome.fds)

    # -- shutdown --------------------------------------------------------------
    def _shutdown(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._unlink_own_socket()
        with self._conns_lock:
            conns = dict(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)
        for thread in conns.values():
            thread.join(SHUTDOWN_GRACE)
            if thread.is_alive():
                log.warning(
                    "connection thread still busy after %.0fs; exiting anyway", SHUTDOWN_GRACE
                )
        if self._wake is not None:
            signal_fd = signal.set_wakeup_fd(-1) if _in_main_thread() else -1
            if signal_fd not in (-1, self._wake[1].fileno()):
                signal.set_wakeup_fd(signal_fd)  # not ours: put it back
            for sock in self._wake:
                sock.close()
            self._wake = None
        log.info("stopped")

    def _unlink_own_socket(self) -> None:
        """Remove the socket, unless a newer helper has replaced it meanwhile."""
        try:
            if os.lstat(self.socket_path).st_ino == self._inode:
                self.socket_path.unlink()
        except FileNotFoundError:
            pass
