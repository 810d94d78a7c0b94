"""Re-identification: a guest restored from a snapshot becomes a VM of its own.

The saved memory holds the source's identity: its MAC and address (the kernel
configured them at boot), hostname, machine-id and random state. So that one
snapshot can become many VMs at once — also while its source still runs — a
restored guest (QEMU, or Firecracker with the vsock agent) is re-identified
before anyone can reach it:

1. QEMU loads the state with the NIC's link held down (QMP ``set_link`` off,
   after the load — the incoming device state would reset an earlier one —
   and before ``cont``): the guest runs but nothing it sends reaches the bridge.
   Firecracker (no ``set_link``) loads onto a tap the root helper made
   detached — on no bridge, down — the same effect (:mod:`.snapshot_restore`).
2. Through the guest agent (no network needed): a thaw when the snapshot was
   taken frozen; host random bytes written to ``/dev/urandom`` (on QEMU's
   ``microvm`` the ``vmgenid`` device is inert, so the kernel would not reseed
   by itself), then one ``guest-exec`` of :data:`SCRIPT`: the VM's own MAC
   (``ip link set address``; the saved virtio-net state carries the source's
   MAC whatever the command line says, and QEMU follows the guest's change —
   ``query-rx-filter`` shows it), address, default route, resolv.conf,
   hostname and machine-id, the CRNG forced to reseed (``RNDRESEEDCRNG``, with
   python3 when the image has it) and systemd's saved random seed removed. The
   same script ends the source's **held-connection processes**
   (:data:`STALE_SCRIPT`): the saved memory holds sshd's processes for every
   SSH connection the source had (bangerd's held one, logins) and banger's
   command runner on the held one, whose peer is gone for this guest; left
   alone they would linger ~2 h (until sshd's TCP keepalive) in every child.
   Nothing else in the guest is touched.
3. The link comes up (QEMU) or the tap joins the bridge (Firecracker: the
   helper's ``attach_tap``); SSH to the new address confirms the guest (a new
   held connection, a new runner).

The sshd host key is the snapshot's (sshd holds it in memory): every VM
restored from one snapshot presents the same key, pinned under each VM's own
name and address. Regenerating it would mean restarting sshd in every clone.

Values reach the guest as ``sh -c SCRIPT`` positional arguments, never spliced
into the script text; each is validated first (a DNS label, a MAC, addresses).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import uuid
from dataclasses import dataclass

from banger.errors import BangerError, InvalidArgument
from banger.guest.agent import AgentEndpoint, AgentError, GuestAgent
from banger.guest.runner_guest import RUNNER_ARG
from banger.vmm.bootargs import check_hostname

log = logging.getLogger(__name__)

#: How long a restored guest's agent gets to answer (it was running when saved:
#: usually a tenth of a second; a busy emulated host is slower).
AGENT_TIMEOUT = 60.0
#: The re-identification script's bound (each ``ip`` call is ~0.2 s under TCG).
SCRIPT_TIMEOUT = 120.0
#: Bytes of host randomness mixed into the guest's pool.
ENTROPY_BYTES = 512
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_MACHINE_ID = re.compile(r"[0-9a-f]{32}")

#: Prints eth0's IPv4 addresses as /proc/net/tcp writes them (``%08X`` of the
#: network-order word read natively: byte-reversed on the little-endian guests banger
#: runs), each after a space: ``ip -4 addr show`` lines ``inet A.B.C.D/N …``
#: (iproute2's and busybox's alike).
OLD_AWK = (
    '$1 == "inet" { split($2, q, "[./]"); printf " %02X%02X%02X%02X", q[4], q[3], q[2], q[1] }'
)

#: The tail of :data:`SCRIPT`: ends the source's held-connection processes, with
#: ``$old`` the saved guest's addresses (:data:`OLD_AWK`). Never fails the script;
#: prints one ``stale …`` line that the daemon logs.
#:
#: Which processes: sshd processes (``sshd``, ``sshd-session``…) holding a connected
#: TCP socket whose local address is an old one — the guest's link has been down
#: since the restore, so no such connection is new; loopback logins and listeners
#: are kept, and other programs' sockets are not ours to close. TERM, so sshd
#: records the logout. banger's runner then reads the end of its channel and ends
#: the commands it was running, as on any lost connection; it is found by its last
#: argument (``python3 -I -S -c SOURCE banger-runner``, not inherited by the
#: commands it runs) and killed if still there after 2 s (or at once when no sshd
#: process was found to end: nothing will close its channel).
STALE_SCRIPT = (
    """set +e
stale=$(awk -v old="$old " 'FNR > 1 && $4 != "0A" && $10 != "0" {
    split($2, l, ":"); a = substr(l[1], length(l[1]) - 7)
    v4 = length(l[1]) == 8 || substr(l[1], 1, 24) == "0000000000000000FFFF0000"
    if (v4 && index(old, " " a " ")) print $10
}' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
runners() {
    for d in /proc/[0-9]*; do
        read -r comm 2>/dev/null <"$d/comm" || continue
        case $comm in python3*) ;; *) continue ;; esac
        case $(tr '\\0' ' ' 2>/dev/null <"$d/cmdline") in
            *" -c "*" """
    + RUNNER_ARG
    + """ ") printf ' %s' "${d#/proc/}" ;;
        esac
    done
}
found=$(runners)
ended=
for d in /proc/[0-9]*; do
    [ -n "$stale" ] || break
    read -r comm 2>/dev/null <"$d/comm" || continue
    case $comm in sshd*) ;; *) continue ;; esac
    fds=$(ls -l "$d/fd/" 2>/dev/null) || continue
    for i in $stale; do
        case $fds in *"socket:[$i]"*)
            kill -TERM "${d#/proc/}" 2>/dev/null && ended="$ended ${d#/proc/}"
            break ;;
        esac
    done
done
left=$found
n=0
while [ -n "$left" ] && [ -n "$ended" ] && [ "$n" -lt 20 ]; do
    sleep 0.1 2>/dev/null || sleep 1
    n=$((n + 1))
    left=$(runners)
done
[ -z "$left" ] || kill -KILL $left 2>/dev/null
echo "stale sshd:$ended runner:$found killed:$left"
"""
)

#: Runs as ``sh -c SCRIPT reident NAME MAC ADDR/PREFIX GATEWAY DNS MACHINE_ID``.
SCRIPT = (
    """set -e
name=$1 mac=$2 addr=$3 gw=$4 dns=$5 mid=$6
old=$(ip -4 addr show dev eth0 | awk '"""
    + OLD_AWK
    + """') || old=
ip link set dev eth0 down
ip link set dev eth0 address "$mac"
ip addr flush dev eth0
ip addr add "$addr" dev eth0
ip link set dev eth0 up
ip route replace default via "$gw" dev eth0
hostname "$name"
printf '%s\\n' "$name" >/etc/hostname
printf 'nameserver %s\\n' "$dns" >/etc/resolv.conf
printf '%s\\n' "$mid" >/etc/machine-id
rm -f /var/lib/systemd/random-seed
if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import fcntl; fcntl.ioctl(open("/dev/urandom", "wb"), 0x5207)' || true
fi
"""
    + STALE_SCRIPT
)


class AgentRequired(BangerError):
    """A restore under a new identity needs the guest agent, and it did not answer."""

    http_status = 409
    exit_code = 4


@dataclass(frozen=True)
class Identity:
    """What a restored guest takes on: the new VM's name, MAC and network settings."""

    hostname: str
    mac: str
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address
    dns: ipaddress.IPv4Address
    machine_id: str

    @classmethod
    def new(
        cls,
        hostname: str,
        mac: str,
        ip: ipaddress.IPv4Address,
        network: ipaddress.IPv4Network,
        gateway: ipaddress.IPv4Address,
        dns: ipaddress.IPv4Address,
    ) -> Identity:
        """Validated; a fresh random machine-id."""
        check_hostname(hostname)
        if not _MAC.fullmatch(mac):
            raise InvalidArgument(f"mac: not a lower-case MAC address: {mac!r}")
        if ip not in network or gateway not in network:
            raise InvalidArgument(f"ip: {ip} or gateway {gateway} outside {network}")
        return cls(
            hostname,
            mac,
            ipaddress.IPv4Interface(f"{ip}/{network.prefixlen}"),
            gateway,
            dns,
            uuid.uuid4().hex,
        )

    def argv(self) -> list[str]:
        """The ``guest-exec`` argv: the script and its positional arguments."""
        if not _MACHINE_ID.fullmatch(self.machine_id):
            raise InvalidArgument(f"machine_id: not 32 hex digits: {self.machine_id!r}")
        return [
            "/bin/sh",
            "-c",
            SCRIPT,
            "reident",
            self.hostname,
            self.mac,
            str(self.address),
            str(self.gateway),
            str(self.dns),
            self.machine_id,
        ]


async def connect_restored(
    endpoint: AgentEndpoint, snapshot: str, timeout: float = AGENT_TIMEOUT
) -> GuestAgent:
    """The restored guest's agent (QEMU's virtio-serial socket or Firecracker's vsock,
    as its driver says), polled until it answers; :class:`AgentRequired` if never."""
    last = "no answer"
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    agent = await endpoint.connect(timeout=5.0)
                    await agent.ping()
                    return agent
                except AgentError as exc:
                    last = exc.message
                    await asyncio.sleep(0.5)
    except TimeoutError:
        pass
    raise AgentRequired(
        f"snapshot {snapshot}: the restored guest's agent did not answer within {timeout:g}s "
        f"({last}); a restore takes on a new address, MAC and hostname through the guest "
        "agent, so the snapshot's image needs qemu-guest-agent running",
        hint="install qemu-guest-agent in the image (banger's images have it), "
        "boot, snapshot again",
    )


async def reidentify(agent: GuestAgent, identity: Identity, *, thaw: bool) -> int:
    """Thaw (when frozen), reseed, re-address; how many filesystems were thawed."""
    thawed = await agent.fsfreeze_thaw(timeout=60.0) if thaw else 0
    await agent.write_file("/dev/urandom", os.urandom(ENTROPY_BYTES))
    result = await agent.run(identity.argv(), timeout=SCRIPT_TIMEOUT)
    check_ran("re-identifying the restored guest", result.exitcode, result.stdout, result.stderr)
    report_stale(identity.hostname, result.stdout)
    return thawed


_STALE_LINE = re.compile(
    r"stale sshd:(?P<sshd>[\d ]*) runner:(?P<runner>[\d ]*) killed:(?P<killed>[\d ]*)"
)


@dataclass(frozen=True)
class StaleReport:
    """Pids (in the guest) of the source's held-connection processes a restore ended."""

    sshd: list[str]
    runner: list[str]
    killed: list[str]


def report_stale(hostname: str, stdout: bytes) -> StaleReport | None:
    """Log what :data:`STALE_SCRIPT` ended (a runner that had to be killed: a warning)."""
    line = next(
        (x for x in stdout.decode(errors="replace").splitlines() if x.startswith("stale ")),
        None,
    )
    if line is None:
        log.warning("VM %s: the source's stale SSH processes were not looked for", hostname)
        return None
    said = _STALE_LINE.fullmatch(line.strip())
    if said is None:
        log.warning("VM %s: unexpected report on stale SSH processes: %s", hostname, line)
        return None
    report = StaleReport(*(said[k].split() for k in ("sshd", "runner", "killed")))
    (log.warning if report.killed else log.info)(
        "VM %s: ended the source's stale SSH processes: sshd %s, runner %s%s",
        hostname,
        ",".join(report.sshd) or "none",
        ",".join(report.runner) or "none",
        f" (killed: it outlived its channel: {','.join(report.killed)})" if report.killed else "",
    )
    return report


#: Runs as ``sh -c RENAME_SCRIPT rename NAME``: a pool's guest taking its owner's name.
RENAME_SCRIPT = """set -e
hostname "$1"
printf '%s\\n' "$1" >/etc/hostname
"""
#: The rename's bound, whichever way it reaches the guest.
RENAME_TIMEOUT = 60.0


def rename_argv(hostname: str) -> list[str]:
    """The rename as an argv (``hostname`` validated first, passed as ``$1``): run over
    the guest agent's ``guest-exec`` or a held SSH connection alike."""
    check_hostname(hostname)
    return ["/bin/sh", "-c", RENAME_SCRIPT, "rename", hostname]


def check_ran(doing: str, exitcode: int, stdout: bytes, stderr: bytes) -> None:
    """A guest script that exited non-zero is one line: what it was doing, its exit
    status and the last line it said (stderr, else stdout)."""
    if exitcode != 0:
        said = (stderr or stdout).decode(errors="replace").strip()
        raise BangerError(
            f"{doing} failed (exit {exitcode}): {said.splitlines()[-1] if said else 'no output'}"
        )


def check_renamed(hostname: str, exitcode: int, stdout: bytes, stderr: bytes) -> None:
    """A rename that exited non-zero is one line naming the hostname and the guest's words."""
    check_ran(f"setting the guest's hostname to {hostname}", exitcode, stdout, stderr)


async def rename(agent: GuestAgent, hostname: str) -> None:
    """The guest's hostname (kernel and /etc/hostname) becomes ``hostname``, validated."""
    result = await agent.run(rename_argv(hostname), timeout=RENAME_TIMEOUT)
    check_renamed(hostname, result.exitcode, result.stdout, result.stderr)
