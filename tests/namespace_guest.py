"""A stand-in *guest* for re-identification tests: the real ``qemu-ga`` in namespaces.

The Firecracker stand-in boots nothing, so the guest that a restore re-identifies
is played by the host's own ``qemu-ga`` (Debian's qemu-guest-agent) running, as
``nobody``, inside new user, network, UTS, mount and PID namespaces:

- ``eth0`` is a veth (this kernel has no dummy driver) carrying the "saved"
  guest's MAC and address, so the re-identification script's ``ip`` calls act
  on a real interface;
- ``/etc/hostname``, ``/etc/resolv.conf``, ``/etc/machine-id`` and
  ``/var/lib/systemd`` are bind mounts of files in the guest's directory, so the
  script's writes land there and the test reads them; the hostname is the UTS
  namespace's;
- its own ``/proc`` (PID namespace), so the script's search for stale sshd and
  runner processes sees only the guest's.

Everything runs as ``nobody`` outside the namespaces: nothing the script or the
agent does can reach the host's files, interfaces or processes. Commands that
would act on the host anyway are blocked (``guest-set-time``, freeze/thaw,
``guest-shutdown``); ``guest-exec`` is allowed — it is what re-identification
uses. Not a real guest kernel: the vsock transport and the guest's virtio-net
are not exercised (no KVM here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.qga import QEMU_GA, stop_qemu_ga
from tests.support import wait_until

NOBODY = 65534
BLOCKED = "guest-set-time,guest-fsfreeze-freeze,guest-fsfreeze-thaw,guest-shutdown"
FILES = ("hostname", "resolv.conf", "machine-id")

#: Runs as ``sh -c SETUP guest DIR SOCKET MAC ADDR NAME ETH0`` inside the namespaces.
SETUP = r"""set -e
d=$1 sock=$2 mac=$3 addr=$4 name=$5 eth0=$6
if [ "$eth0" = yes ]; then
    ip link add eth0 type veth peer name peer0
    ip link set dev eth0 address "$mac"
    ip addr add "$addr" dev eth0
    ip link set dev peer0 up
    ip link set dev eth0 up
fi
hostname "$name"
for f in hostname resolv.conf machine-id; do mount --bind "$d/$f" "/etc/$f"; done
mount --bind "$d/systemd" /var/lib/systemd
exec "$QEMU_GA" -m unix-listen -p "$sock" -t "$d/state" -b "$BLOCKED"
"""


@dataclass(frozen=True)
class SavedIdentity:
    """What the "saved" guest has before a restore re-identifies it."""

    mac: str = "02:aa:00:00:00:01"
    address: str = "172.30.0.99/24"
    hostname: str = "saved"


@dataclass(frozen=True)
class NamespaceGuest:
    dir: Path
    socket: Path

    def file(self, name: str) -> str:
        """``/etc/<name>`` as the guest wrote it."""
        return (self.dir / name).read_text()


@contextmanager
def namespace_guest(
    d: Path, socket: Path, saved: SavedIdentity = SavedIdentity(), *, eth0: bool = True
) -> Iterator[NamespaceGuest]:
    """The guest's agent listening on ``socket`` (``eth0=False``: a guest without one,
    whose re-identification fails) for the block; stopped, namespaces gone, after it."""
    for tool in ("setpriv", "unshare", "ip"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            raise RuntimeError(f"{tool} is missing (util-linux / iproute2)")
    d.mkdir(mode=0o755)
    for name in FILES:
        (d / name).write_text("old\n")
    (d / "systemd").mkdir()
    (d / "state").mkdir()
    socket.unlink(missing_ok=True)
    socket.parent.chmod(0o777)  # the guest creates its socket as nobody
    for path in (d, *d.iterdir()):
        os.chown(path, NOBODY, NOBODY)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C",
        "QEMU_GA": QEMU_GA,
        "BLOCKED": BLOCKED,
    }
    argv = [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "unshare", "--map-root-user", "--net", "--uts", "--mount", "--pid", "--fork",
        "--mount-proc", "--kill-child",
        "sh", "-c", SETUP, "guest", str(d), str(socket), saved.mac, saved.address,
        saved.hostname, "yes" if eth0 else "no",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: socket.exists() or proc.poll() is not None, 60, "the guest's agent")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield NamespaceGuest(d, socket)
    finally:
        stop_qemu_ga(proc)
        socket.unlink(missing_ok=True)
