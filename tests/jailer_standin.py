"""A STAND-IN for Firecracker's ``jailer`` (tests only; it is NOT the jailer).

The real jailer cannot run here: there is no Firecracker release (its jailer
only ever execs a Firecracker binary), and no hardware KVM for it to hand to
one. This script does the parts of the jailer that banger's ``start_jailer``
helper op depends on, the way the jailer documents them
(``../shared/reference/firecracker.md``):

- parses the jailer's command line (``--id``, ``--exec-file``, ``--uid``,
  ``--gid``, ``--chroot-base-dir``, ``--cgroup-version``, ``--parent-cgroup``,
  ``--cgroup``, ``--netns``, ``--daemonize``, ``--`` then Firecracker's own
  arguments) and refuses an id outside ``[A-Za-z0-9-]{1,64}``;
- the chroot is ``<chroot-base>/<exec-file name>/<id>/root``; it copies the
  exec file in as ``/<exec-file name>``;
- with ``--daemonize``: forks, starts a new session, sends stdio to /dev/null,
  writes ``<root>/<exec-file name>.pid`` and the parent exits 0;
- enters the chroot and drops to ``--uid``/``--gid`` (``setpriv``), then execs
  ``/<exec-file name>`` with ``--id <id>`` (the jailer passes its id on) and
  Firecracker's arguments.

What it does NOT do: cgroups (limits are only passed through), ``/dev/kvm``
and ``/dev/net/tun`` nodes, pivot_root, new PID/network namespaces, seccomp.
Because the exec file here is itself a stand-in (a Python program), the
chroot gets read-only bind mounts of ``/usr`` and of this repository inside a
private mount namespace (``unshare --mount``) so that the interpreter runs
inside it; the real jailer's chroot holds only the static Firecracker binary.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_VALUE = {"--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir", "--cgroup-version",
          "--parent-cgroup", "--netns"}  # fmt: skip


def parse(argv: list[str]) -> tuple[dict[str, str], list[str], list[str], bool]:
    opts: dict[str, str] = {}
    cgroups: list[str] = []
    daemonize = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return opts, cgroups, argv[i + 1 :], daemonize
        if arg == "--daemonize":
            daemonize = True
        elif arg == "--cgroup":
            i += 1
            cgroups.append(argv[i])
        elif arg in _VALUE:
            i += 1
            opts[arg] = argv[i]
        else:
            raise SystemExit(f"jailer stand-in: unexpected argument {arg!r}")
        i += 1
    return opts, cgroups, [], daemonize


def main(argv: list[str]) -> int:  # returns only as the daemonizing parent
    opts, _cgroups, fc_args, daemonize = parse(argv)
    for required in ("--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir"):
        if required not in opts:
            raise SystemExit(f"jailer stand-in: missing {required}")
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", opts["--id"]):
        raise SystemExit(f"jailer stand-in: invalid id {opts['--id']!r}")
    exec_file = Path(opts["--exec-file"])
    name = exec_file.name
    root = Path(opts["--chroot-base-dir"]) / name / opts["--id"] / "root"
    if not root.is_dir():
        raise SystemExit(f"jailer stand-in: {root} is not a directory")
    shutil.copy2(exec_file, root / name)
    if daemonize and os.fork() > 0:
        return 0
    if daemonize:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
    (root / f"{name}.pid").write_text(f"{os.getpid()}\n")
    binds = []
    for src in ("/usr", str(REPO)):
        target = root / src.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        binds.append(f"mount --bind {src} {target} && mount -o remount,bind,ro {target}")
    for link in ("bin", "lib", "lib64"):
        if Path("/" + link).is_symlink() and not (root / link).exists():
            (root / link).symlink_to(os.readlink("/" + link))
    script = " && ".join([*binds, 'exec chroot "$0" "$@"'])
    setpriv = ["/usr/bin/setpriv", f"--reuid={opts['--uid']}", f"--regid={opts['--gid']}",
               "--clear-groups"]  # fmt: skip
    # unshare (without --fork), sh and chroot all exec: the pid written above stays right.
    os.execvp(
        "unshare",
        ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script,
         str(root), *setpriv, f"/{name}", "--id", opts["--id"], *fc_args],
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
