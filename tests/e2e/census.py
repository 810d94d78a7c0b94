"""What a guest runs for banger's held connection, counted inside the guest (issue #18
item 5): a VM restored from a snapshot must not keep the source's copies."""

from __future__ import annotations

from tests.e2e.harness import Banger

#: Runs in the guest: "RUNNERS ADDR…" — how many banger runners there are, and the
#: local addresses of the TCP connections sshd processes serve (IPv4, or v4-mapped).
CENSUS = r"""
import os
socks = {}
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        rows = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for row in rows:
        f = row.split()
        if f[3] != "0A":  # not a listener
            h = f[1].split(":")[0][-8:]
            socks[f[9]] = ".".join(str(int(h[i : i + 2], 16)) for i in (6, 4, 2, 0))
runners, served = 0, set()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open("/proc/" + pid + "/cmdline", "rb").read().split(b"\0")
        comm = open("/proc/" + pid + "/comm").read().strip()
        fds = [os.readlink("/proc/" + pid + "/fd/" + n) for n in os.listdir("/proc/" + pid + "/fd")]
    except OSError:
        continue
    if argv[:4] == [b"python3", b"-I", b"-S", b"-c"]:
        runners += 1
    if comm.startswith("sshd"):
        served |= {socks[x[8:-1]] for x in fds if x.startswith("socket:[") and x[8:-1] in socks}
print(runners, *sorted(served))
"""


def census(b: Banger, vm: str) -> tuple[int, list[str]]:
    """(How many banger runners run in ``vm``, the local addresses sshd serves)."""
    out = b.banger("vm", "exec", vm, "--", "python3", "-c", CENSUS, timeout=300).stdout
    runners, *served = out.split()
    return int(runners), served
