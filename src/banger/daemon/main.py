"""``bangerd``: the owner daemon's entry point.

Start-up order matters: refuse root unless allowed, create the owner's
directories, log to the daemon log, load the config (an invalid config is a
clear refusal, not a half-working daemon), take the pid-file lock (one daemon
per socket), bind the 0600 socket, open the store, and serve until a signal.

Exit status: 0 stopped cleanly, 1 unexpected failure or forced stop, 2 refused
(root without allowance, invalid config), 4 another daemon is running.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from banger import __version__
from banger.errors import BangerError
from banger.paths import Paths, check_private_dir

log = logging.getLogger("banger.daemon")

#: Set to 1 to let bangerd run as root (the owner is root: CI, containers, tests).
ALLOW_ROOT_ENV = "BANGER_ALLOW_ROOT"
DEFAULT_GRACE = 10.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bangerd", description="banger's owner daemon (normally started by `banger`)."
    )
    parser.add_argument(
        "--allow-root",
        action="store_true",
        help=f"run even as root (only when the owner IS root; {ALLOW_ROOT_ENV}=1 does the same)",
    )
    parser.add_argument("--debug", action="store_true", help="debug logging, access log")
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE,
        help="seconds running operations get to finish on SIGTERM (default %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"bangerd {__version__}")
    return parser.parse_args(argv)


def root_allowed(args: argparse.Namespace, env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return bool(args.allow_root) or env.get(ALLOW_ROOT_ENV) == "1"


def setup_logging(log_path: Path, debug: bool) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    handlers: list[logging.Handler] = [logging.FileHandler(log_path, encoding="utf-8")]
    # When auto-started, stderr already IS the log file; don't write every line twice.
    if not _same_file(sys.stderr, log_path):
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def _same_file(stream: object, path: Path) -> bool:
    try:
        fd_stat = os.fstat(stream.fileno())  # type: ignore[attr-defined]
        file_stat = path.stat()
    except (AttributeError, OSError, ValueError):
        return False
    return (fd_stat.st_dev, fd_stat.st_ino) == (file_stat.st_dev, file_stat.st_ino)


def refuse(message: str, hint: str | None, code: int) -> int:
    print(f"bangerd: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    if logging.getLogger().handlers:  # once logging is set up, the log says it too
        log.error("%s", message)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() == 0 and not root_allowed(args):
        return refuse(
            "refusing to run as root: bangerd runs as the owner user; "
            "only banger-helper needs root",
            f"run banger as your own user; if the owner really is root, pass --allow-root "
            f"or set {ALLOW_ROOT_ENV}=1",
            2,
        )
    try:
        paths = Paths.from_env()
        check_private_dir(paths.runtime_dir)  # before ensure(): never build inside a trap
        paths.ensure()
        check_private_dir(paths.runtime_dir)
        socket_path = paths.daemon_socket
    except BangerError as exc:
        return refuse(exc.message, exc.hint, exc.exit_code)
    setup_logging(paths.daemon_log, args.debug)
    try:
        from banger.daemon.lifecycle import run_daemon

        return run_daemon(paths, socket_path, grace=args.grace, debug=args.debug)
    except BangerError as exc:
        return refuse(exc.message, exc.hint, exc.exit_code)


if __name__ == "__main__":
    sys.exit(main())
