"""``banger-helper``: the root helper's command line.

    banger-helper --socket PATH --owner-uid UID [--owner-gid GID]
                  --allow-root DIR [--allow-root DIR ...] [--log FILE] [--foreground]
                  [--jailer PATH --firecracker PATH [--jail-base DIR]]

Without ``--foreground`` the helper binds its socket first and only then
detaches (double fork, new session), printing the daemon's pid: when the
command returns, the socket is already accepting connections, so callers never
poll for it.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
from pathlib import Path

from banger.errors import BangerError, InvalidArgument
from banger.helper import op_delay
from banger.helper.jailer_ops import policy_from_flags
from banger.helper.ops import Operations
from banger.helper.optable import op_table
from banger.helper.server import HelperServer
from banger.helper.validate import Context

log = logging.getLogger("banger.helper")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="banger-helper", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True, help="Unix socket to listen on")
    parser.add_argument("--owner-uid", type=int, required=True, help="the only uid served")
    parser.add_argument(
        "--owner-gid", type=int, help="make the socket 0660 with this group (default 0600)"
    )
    parser.add_argument(
        "--allow-root",
        type=Path,
        action="append",
        required=True,
        help="a directory path arguments must lie in (repeatable)",
    )
    parser.add_argument("--log", type=Path, help="append the log here (default: stderr)")
    parser.add_argument(
        "--jailer", type=Path, help="Firecracker's jailer, for start_jailer (with --firecracker)"
    )
    parser.add_argument("--firecracker", type=Path, help="the Firecracker binary the jailer runs")
    parser.add_argument(
        "--jail-base",
        type=Path,
        metavar="DIR",
        help="the jailer's chroot base (default /srv/jailer): root's alone, every directory "
        "from / root-owned and not group/other-writable, no symlink; created if only the last "
        "is missing; on the filesystem of the state directory (the jail hard-links VM files)",
    )
    parser.add_argument("--foreground", action="store_true", help="do not detach")
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    return parser.parse_args(argv)


def open_log(path: Path) -> logging.Handler:
    """Open the log without following symlinks: it may sit in the owner's directory."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise InvalidArgument(f"--log {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise InvalidArgument(f"--log {path}: must be a regular file with one link")
    return logging.StreamHandler(os.fdopen(fd, "a", buffering=1, encoding="utf-8"))


def setup_logging(path: Path | None, debug: bool) -> None:
    handler = open_log(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s banger-helper[%(process)d] %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def detach() -> None:
    """Double fork into a new session; the first parent exits after printing the pid."""
    if os.fork() > 0:
        os.wait()
        os._exit(0)
    os.setsid()
    pid = os.fork()
    if pid > 0:
        print(pid, flush=True)
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.chdir("/")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if os.geteuid() != 0:
            raise BangerError(
                "banger-helper must run as root", hint="start it with sudo or as a system service"
            )
        setup_logging(args.log, args.debug)
        op_delay.configure_from_env()  # test-only hook, read once, here
        context = Context.from_dirs(args.allow_root)
        table = op_table(
            policy_from_flags(
                args.jailer,
                args.firecracker,
                context.allow_roots,
                args.owner_uid,
                args.owner_gid,
                args.jail_base,
            )
        )
        server = HelperServer(
            args.socket,
            owner_uid=args.owner_uid,
            owner_gid=args.owner_gid,
            context=context,
            operations=Operations(args.owner_uid, table),
        )
        server.bind()
    except BangerError as exc:
        print(f"banger-helper: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    if not args.foreground:
        detach()
    server.install_signal_handlers()
    log.info("banger-helper ready (pid %d, allow roots: %s)", os.getpid(), context.allow_roots)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
