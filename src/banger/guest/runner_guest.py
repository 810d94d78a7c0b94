"""banger's command runner: runs INSIDE the guest, under the guest's ``python3``.

bangerd starts it once per held connection, on one long-lived SSH channel
(``python3 -I -S -c <this file>``), and runs each non-terminal exec through it
instead of opening an sshd session per command: a session costs sshd a fork,
PAM credentials and root's login shell before the command even starts (93% of
an exec of ``true`` under emulation). Standard library only; nothing is
installed in the image.

Framing, both directions, over the channel's stdin/stdout: a 9-byte header
``>IBI`` (payload length, frame type, exec number) then the payload. The types
and the flow control are in :mod:`banger.daemon.runner`, which speaks the
other end. The runner's own stderr goes to the daemon's log.

Per exec: the argv is spawned directly (a new session, so it is its own
process group), with pipes for stdin, stdout and stderr; output is read only
while the exec has credit (:data:`WINDOW` bytes sent and not yet acknowledged),
so a slow client blocks the command's writes instead of growing buffers here.
A signal goes to the command's group and to every process group led by a
process carrying the exec's mark (``BANGER_EXEC_ID``), as the daemon's
kill-by-mark does. When the channel dies, every exec's processes are killed.

Needs Python 3.7 or later (older: the start fails and bangerd uses sshd sessions).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import signal
import struct
import subprocess
from typing import IO, Any

HEADER = struct.Struct(">IBI")
WINDOW = 256 * 1024
CHUNK = 64 * 1024
MAX_FRAME = 1024 * 1024
MARK = "BANGER_EXEC_ID"
#: The runner's own last argument (``python3 -I -S -c SOURCE banger-runner``): how a
#: guest restored from a snapshot finds the copy of the source's runner, whose channel
#: is gone (:mod:`banger.daemon.vms.reident`). An argument, not an environment
#: variable: the commands the runner spawns must not carry it.
RUNNER_ARG = "banger-runner"
# daemon -> runner
START, STDIN, EOF, SIGNAL, ACK = 1, 2, 3, 4, 5
# runner -> daemon
HELLO, STARTED, STDOUT, STDERR, STDIN_ACK, EXIT = 16, 17, 18, 19, 20, 21
VERSION = 1


def send(kind: int, number: int, payload: bytes = b"") -> None:
    data = HEADER.pack(len(payload), kind, number) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def marked(mark: str) -> list[int]:
    """Pids whose environment carries ``mark`` (as the daemon's kill script finds them)."""
    want = (MARK + "=" + mark).encode()
    found = []
    for name in os.listdir("/proc"):  # noqa: PTH208 (pathlib: a slower start-up)
        if name.isdigit():
            try:
                with open("/proc/" + name + "/environ", "rb") as f:
                    if want in f.read().split(b"\0"):
                        found.append(int(name))
            except OSError:
                pass
    return found


def kill_mark(pid: int, mark: str, sig: int) -> None:
    """``sig`` to the command's group and to every group/process carrying the mark."""
    for p in [pid, *marked(mark)]:
        for target in (-p, p):
            with contextlib.suppress(OSError):
                os.kill(target, sig)


class Exec:
    def __init__(self, number: int, proc: subprocess.Popen[bytes], mark: str) -> None:
        self.number = number
        self.proc = proc
        self.mark = mark
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        #: fd -> (stream, its file object: closed through it, never by fd number alone)
        self.outs: dict[int, tuple[int, IO[bytes]]] = {
            proc.stdout.fileno(): (STDOUT, proc.stdout),
            proc.stderr.fileno(): (STDERR, proc.stderr),
        }
        self.watched: set[int] = set()
        self.stdin = proc.stdin.fileno()
        os.set_blocking(self.stdin, False)
        self.pending = bytearray()
        self.eof = False
        self.stdin_watched = False
        self.outstanding = 0


class Runner:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.execs: dict[int, Exec] = {}
        self.inbuf = bytearray()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.wake = wake_r
        self.sel.register(0, selectors.EVENT_READ, "channel")
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")

    def run(self) -> None:
        send(HELLO, 0, json.dumps({"version": VERSION, "pid": os.getpid()}).encode())
        try:
            while True:
                for key, _ in self.sel.select():
                    what = key.data
                    if what == "channel":
                        data = os.read(0, 256 * 1024)
                        if not data:
                            return
                        self.inbuf += data
                        self.frames()
                    elif what == "wake":
                        while True:
                            try:
                                if not os.read(self.wake, 512):
                                    break
                            except BlockingIOError:
                                break
                        for ex in list(self.execs.values()):
                            self.maybe_done(ex)
                    else:
                        # An earlier event of this same wake-up may have stopped watching
                        # this fd (the window closed, stdin done): its event is stale.
                        kind, ex = what
                        if kind == "out" and key.fd in ex.watched:
                            self.read_output(ex, key.fd)
                        elif kind == "in" and ex.stdin_watched:
                            self.write_stdin(ex)
        finally:
            for ex in self.execs.values():
                kill_mark(ex.proc.pid, ex.mark, signal.SIGKILL)

    def frames(self) -> None:
        while len(self.inbuf) >= HEADER.size:
            length, kind, number = HEADER.unpack_from(self.inbuf)
            if length > MAX_FRAME:
                raise SystemExit("banger runner: frame of " + str(length) + " bytes")
            end = HEADER.size + length
            if len(self.inbuf) < end:
                return
            payload = bytes(self.inbuf[HEADER.size : end])
            del self.inbuf[:end]
            self.frame(kind, number, payload)

    def frame(self, kind: int, number: int, payload: bytes) -> None:
        if kind == START:
            self.start(number, json.loads(payload))
            return
        ex = self.execs.get(number)
        if ex is None:
            return  # already ended: a late ack, stdin or signal
        if kind == STDIN:
            ex.pending += payload
            self.write_stdin(ex)
        elif kind == EOF:
            ex.eof = True
            self.write_stdin(ex)
        elif kind == ACK:
            ex.outstanding = max(0, ex.outstanding - struct.unpack(">I", payload)[0])
            self.watch(ex)
        elif kind == SIGNAL:
            sig = getattr(signal, "SIG" + payload.decode(), None)
            if isinstance(sig, int):
                kill_mark(ex.proc.pid, ex.mark, sig)

    def start(self, number: int, req: dict[str, Any]) -> None:
        env = dict(os.environ)
        env.update(req.get("env") or {})
        env[MARK] = req["mark"]
        cwd = req.get("cwd")
        if cwd is not None:
            env["PWD"] = cwd
        argv = req["argv"]
        try:
            proc = subprocess.Popen(  # an argv from the daemon, no shell
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            # As the shell the sshd path runs would say it: cd fails 1, exec 126/127.
            if cwd is not None and exc.filename == cwd:
                message, code = "cd: " + cwd + ": " + exc.strerror, 1
            else:
                code = 127 if exc.errno == errno.ENOENT else 126
                message = str(argv[0]) + ": " + (exc.strerror or str(exc))
            send(STDERR, number, message.encode() + b"\n")
            send(STDERR, number)
            send(STDOUT, number)
            send(EXIT, number, json.dumps({"exit_code": code, "signal": None}).encode())
            return
        ex = Exec(number, proc, req["mark"])
        self.execs[number] = ex
        send(STARTED, number, json.dumps({"pid": proc.pid}).encode())
        self.watch(ex)

    def watch(self, ex: Exec) -> None:
        """Read the command's output only while the daemon has room for it."""
        want = ex.outstanding < WINDOW
        for fd in ex.outs:
            if want and fd not in ex.watched:
                self.sel.register(fd, selectors.EVENT_READ, ("out", ex))
                ex.watched.add(fd)
            elif not want and fd in ex.watched:
                self.sel.unregister(fd)
                ex.watched.discard(fd)

    def read_output(self, ex: Exec, fd: int) -> None:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            data = b""
        stream, file = ex.outs[fd]
        if not data:
            self.sel.unregister(fd)
            ex.watched.discard(fd)
            del ex.outs[fd]
            file.close()
            send(stream, ex.number)  # empty: that stream's end
            self.maybe_done(ex)
            return
        ex.outstanding += len(data)
        send(stream, ex.number, data)
        self.watch(ex)

    def write_stdin(self, ex: Exec) -> None:
        if ex.stdin < 0:
            ex.pending.clear()
            return
        written = 0
        while ex.pending:
            try:
                n = os.write(ex.stdin, ex.pending[:CHUNK])
            except BlockingIOError:
                break
            except OSError:  # the command closed its stdin: drop what it will never read
                written += len(ex.pending)
                ex.pending.clear()
                break
            del ex.pending[:n]
            written += n
        if written:
            send(STDIN_ACK, ex.number, struct.pack(">I", written))
        if ex.pending and not ex.stdin_watched:
            self.sel.register(ex.stdin, selectors.EVENT_WRITE, ("in", ex))
            ex.stdin_watched = True
        elif not ex.pending and ex.stdin_watched:
            self.sel.unregister(ex.stdin)
            ex.stdin_watched = False
        if not ex.pending and ex.eof:
            self.close_stdin(ex)

    def close_stdin(self, ex: Exec) -> None:
        if ex.stdin >= 0:
            if ex.stdin_watched:
                self.sel.unregister(ex.stdin)
                ex.stdin_watched = False
            if ex.proc.stdin is not None:
                ex.proc.stdin.close()
            ex.stdin = -1

    def maybe_done(self, ex: Exec) -> None:
        status = ex.proc.poll()
        if status is None or ex.outs:
            return
        self.close_stdin(ex)
        del self.execs[ex.number]
        result: dict[str, int | str | None]
        if status < 0:
            result = {"exit_code": None, "signal": signal.Signals(-status).name[3:]}
        else:
            result = {"exit_code": status, "signal": None}
        send(EXIT, ex.number, json.dumps(result).encode())


def main() -> None:
    with contextlib.suppress(BrokenPipeError):  # the channel is gone; run() killed everything
        Runner().run()


if __name__ == "__main__":
    main()
