"""``banger vm exec NAME [-i] [-t] [-e K=V]… [-w DIR] -- CMD…`` (issue #17 item 4).

The command runs through the daemon's exec WebSocket on the VM's held
connection (no SSH handshake per command). Its exit status is ours (128 + N
when signal N ended it). Ctrl-C, SIGTERM and SIGHUP are sent on to the remote
command; with ``-t`` the guest gets a terminal, this one is put in raw mode
(Ctrl-C then travels as a keystroke), window size changes follow (SIGWINCH),
and the terminal is restored on every exit path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from banger.cli.state import get_state
from banger.errors import InvalidArgument

if TYPE_CHECKING:
    import asyncio  # imported where it runs: `banger vm list` must not pay for it

#: Stdin chunks queued before the reader thread waits for the daemon.
STDIN_QUEUE = 16
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidArgument(f"--env: expected K=V, got {pair!r}")
        env[name] = value
    return env


def terminal_size(fd: int) -> tuple[int, int]:
    size = os.get_terminal_size(fd)
    return size.lines, size.columns


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """This terminal in raw mode for the block; its settings restored however it ends."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


async def stream_exec(
    socket_path: Path,
    vm: str,
    request: Mapping[str, Any],
    *,
    interactive: bool,
    tty: bool,
) -> int:
    """Run the command with this process's stdin/stdout/stderr; its status."""
    import asyncio

    from banger.exec_client import open_exec

    loop = asyncio.get_running_loop()
    handle = await open_exec(socket_path, vm, request)
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async with handle:
        if interactive:
            queue: asyncio.Queue[bytes] = asyncio.Queue(STDIN_QUEUE)

            def read_stdin() -> None:  # a thread: works for ttys, pipes and files alike
                fd = sys.stdin.fileno()
                while True:
                    try:
                        data = os.read(fd, 65536)
                    except OSError:
                        data = b""
                    try:
                        asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
                    except (RuntimeError, asyncio.CancelledError):
                        return  # the command ended (the loop is gone): this input is not ours
                    if not data:
                        return

            async def feed() -> None:
                while data := await queue.get():
                    await handle.write(data)
                await handle.close_stdin()

            threading.Thread(target=read_stdin, daemon=True).start()
            spawn(feed())
        else:
            await handle.close_stdin()

        def forward(sig: signal.Signals) -> None:
            spawn(handle.signal(sig.name[3:]))

        for sig in FORWARDED:
            loop.add_signal_handler(sig, forward, sig)
        if tty and sys.stdout.isatty():
            fd = sys.stdout.fileno()
            loop.add_signal_handler(
                signal.SIGWINCH, lambda: spawn(handle.resize(*terminal_size(fd)))
            )
        try:
            async for stream, data in handle.events():
                _write_all(1 if stream == "stdout" else 2, data)
        finally:
            for sig in (*FORWARDED, signal.SIGWINCH):
                loop.remove_signal_handler(sig)
            for task in list(tasks):
                task.cancel()
    result = handle.result
    assert result is not None
    if result.timed_out:
        print(f"banger: the command timed out (killed: SIG{result.signal})", file=sys.stderr)
    return result.status


def run_exec_cli(
    vm: str,
    command: Sequence[str] | str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    user: str | None = None,
    interactive: bool = False,
    tty: bool = False,
    timeout: float | None = None,
) -> int:
    """Run ``command`` in ``vm`` attached to this terminal; the daemon is started if needed."""
    from banger.exec_client import DaemonGone, exec_request

    state = get_state()
    pty = None
    if tty:
        if not sys.stdin.isatty():
            raise InvalidArgument("-t: stdin is not a terminal", hint="drop -t, or run it in one")
        pty = terminal_size(sys.stdin.fileno())
    term = os.environ.get("TERM", "xterm-256color") or "xterm-256color"
    request = exec_request(
        command, env=env, cwd=cwd, user=user, pty=pty, term=term, timeout=timeout
    )
    socket_path = state.paths.daemon_socket

    def go() -> int:
        import asyncio

        with raw_terminal(sys.stdin.fileno()) if tty else contextlib.nullcontext():
            return asyncio.run(
                stream_exec(socket_path, vm, request, interactive=interactive, tty=tty)
            )

    try:
        return go()
    except DaemonGone:
        state.call(lambda c: c.version())  # starts the daemon like every other command
        return go()


@click.command(
    name="exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("name")
@click.option("-i", "--interactive", is_flag=True, help="Send this stdin to the command.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal (raw mode here).")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V", help="Set a variable.")
@click.option("-w", "--workdir", metavar="DIR", help="Run in DIR (default: image's WorkingDir).")
@click.option("-u", "--user", metavar="USER", help="Run as USER (default: image's User, or root).")
@click.option("--timeout", type=float, metavar="SECONDS", help="Kill the command after this.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(
    name: str,
    interactive: bool,
    tty: bool,
    env: tuple[str, ...],
    workdir: str | None,
    user: str | None,
    timeout: float | None,
    command: tuple[str, ...],
) -> int:
    """Run COMMAND in a running VM over bangerd's held connection; exit status is COMMAND's.

    COMMAND's words are its argv (quoted for the guest, as `docker exec` does);
    for shell syntax run a shell: `banger vm exec NAME -- sh -c 'a | b'`.
    """
    args = list(command)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise InvalidArgument("command: missing", hint="banger vm exec NAME -- CMD")
    return run_exec_cli(
        name,
        args,
        env=parse_env(env),
        cwd=workdir,
        user=user,
        interactive=interactive,
        tty=tty,
        timeout=timeout,
    )


def register(group: click.Group) -> None:
    group.add_command(exec_cmd)
