"""The real banger-helper process, run as root inside a throwaway network namespace.

Everything it creates lives in that namespace (no uplink); the test talks to it
over its Unix socket from outside, as the client in bangerd would.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetNS

from banger.errors import HelperError
from banger.helper.client import HelperClient
from tests.helper_launch import helper_command_line, helper_paths
from tests.helper_launch import start_helper as launch_helper
from tests.support import Netns, User, netns, short_tmpdir, throwaway_user, wait_until

pytestmark = [pytest.mark.root]

VNET_HDR = bytes(10)  # struct virtio_net_hdr, no offloads (the default header size)


@dataclass(frozen=True)
class RunningHelper:
    ns: Netns
    pid: int
    socket: Path
    log: Path

    @property
    def client(self) -> HelperClient:
        return HelperClient(self.socket, timeout=30)


StartHelper = Callable[..., RunningHelper]


@pytest.fixture
def start_helper() -> Iterator[StartHelper]:
    """Start banger-helper (detached, as in production) in a fresh namespace."""
    started: list[RunningHelper] = []
    with contextlib.ExitStack() as stack:

        def start(owner_uid: int = 0, owner_gid: int | None = None) -> RunningHelper:
            ns = stack.enter_context(netns("bgh"))
            tmp = stack.enter_context(short_tmpdir("bgh-"))
            tmp.chmod(0o711)  # throwaway users must reach the socket inside
            paths = helper_paths(tmp)
            paths.runtime_dir.chmod(0o711)
            extra = [] if owner_gid is None else ["--owner-gid", str(owner_gid)]
            pid = launch_helper(paths, owner_uid, ns=ns, extra=extra)
            helper = RunningHelper(ns, pid, paths.helper_socket, paths.helper_log)
            stack.callback(stop, helper)
            started.append(helper)
            return helper

        yield start


def stop(helper: RunningHelper) -> None:
    """SIGTERM, wait on a pidfd (it is not our child), check it cleaned up."""
    pidfd = os.pidfd_open(helper.pid)
    try:
        os.kill(helper.pid, signal.SIGTERM)
        ready, _, _ = select.select([pidfd], [], [], 60)  # a hang bound, not a speed claim
        if not ready:
            os.kill(helper.pid, signal.SIGKILL)
            pytest.fail("banger-helper did not stop within 60s of SIGTERM")
    finally:
        os.close(pidfd)
    assert not helper.socket.exists(), "helper left its socket behind"
    assert "stopped" in helper.log.read_text()


def arp_request(src_mac: bytes) -> bytes:
    """A broadcast ARP who-has 172.30.0.1, padded to the 60-byte minimum."""
    payload = bytes.fromhex("0001080006040001") + src_mac + bytes([172, 30, 0, 9])
    payload += bytes(6) + bytes([172, 30, 0, 1])
    frame = b"\xff" * 6 + src_mac + b"\x08\x06" + payload
    return frame.ljust(60, b"\0")


# Runs inside the namespace: sees our frame arrive on the bridge, answers with its own.
SNIFFER = r"""
import select, socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
print("ready", flush=True)
want, reply = bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
while True:
    if not select.select([s], [], [], 10)[0]:
        print("timeout", flush=True); sys.exit(1)
    frame = s.recv(4096)
    if frame[6:12] == want[6:12]:
        print(frame.hex(), flush=True)
        break
s.send(reply)
print("sent", flush=True)
"""


def read_frame_from(fd: int, src_mac: bytes) -> bytes:
    while True:
        ready, _, _ = select.select([fd], [], [], 10)
        assert ready, "no frame arrived on the tap descriptor"
        data = os.read(fd, 65536)
        if data[10 + 6 : 10 + 12] == src_mac:
            return data


def link(ns: Netns, name: str) -> Any:
    with NetNS(ns.name) as ipr:
        indexes = ipr.link_lookup(ifname=name)
        return ipr.get_links(indexes[0])[0] if indexes else None


def link_names(ns: Netns) -> set[str]:
    with NetNS(ns.name) as ipr:
        return {m.get("ifname") for m in ipr.get_links()}


def nft_table(ns: Netns) -> dict[str, Any] | None:
    tables = json.loads(ns.run("nft", "-j", "list", "tables", "ip").stdout)
    if not any(t.get("table", {}).get("name") == "banger" for t in tables["nftables"]):
        return None
    listing: dict[str, Any] = json.loads(
        ns.run("nft", "-j", "list", "table", "ip", "banger").stdout
    )
    return listing


def masqueraded(listing: dict[str, Any]) -> set[str]:
    """ "<bridge> <subnet>" for every masquerade rule in the table."""
    found = set()
    for item in listing["nftables"]:
        rule = item.get("rule")
        if rule and rule["chain"] == "postrouting":
            assert any("masquerade" in e for e in rule["expr"])
            found.add(rule["comment"].removeprefix("banger-nat "))
    return found


def test_bridge_tap_nat_lifecycle(start_helper: StartHelper) -> None:
    helper = start_helper()
    ns, client = helper.ns, helper.client
    st = helper.socket.lstat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0

    # Bridge: created once, then left alone; exactly our address; up; marked.
    assert client.call("ensure_bridge", name="bgbr0", cidr="172.30.0.1/24")["created"] is True
    assert client.call("ensure_bridge", name="bgbr0", cidr="172.30.0.1/24")["created"] is False
    br = link(ns, "bgbr0")
    assert br.get(("linkinfo", "kind")) == "bridge" and br.get("ifalias") == "banger-managed"
    assert br.get("state") == "up"
    with NetNS(ns.name) as ipr:
        addrs = {
            (a.get("address"), a["prefixlen"]) for a in ipr.get_addr(family=2, index=br["index"])
        }
    assert addrs == {("172.30.0.1", 24)}

    # Tap: a persistent vnet-hdr tap on the bridge, and a working descriptor.
    result, fds = client.call_with_fds("open_tap", name="bt-0001", bridge="bgbr0")
    assert result["created"] is True and result["vnet_hdr"] is True and len(fds) == 1
    (fd,) = fds
    try:
        tap = link(ns, "bt-0001")
        assert tap.get("master") == br["index"] and tap.get("state") == "up"
        tun = dict(tap.get(("linkinfo", "data"))["attrs"])
        assert tun["IFLA_TUN_TYPE"] == 2  # IFF_TAP
        assert tun["IFLA_TUN_PI"] == 0 and tun["IFLA_TUN_VNET_HDR"] == 1
        assert tun["IFLA_TUN_PERSIST"] == 1

        # While this descriptor is open, nobody else can take the tap.
        with pytest.raises(HelperError, match="already open in another process"):
            client.call_with_fds("open_tap", name="bt-0001", bridge="bgbr0")

        ours, theirs = bytes.fromhex("525400aabb01"), bytes.fromhex("525400aabb02")
        sniffer = subprocess.Popen(
            ns.argv(sys.executable, "-c", SNIFFER, "bgbr0", arp_request(ours).hex(),
                    arp_request(theirs).hex()),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert sniffer.stdout is not None
            assert sniffer.stdout.readline().strip() == "ready"
            os.write(fd, VNET_HDR + arp_request(ours))  # guest -> bridge
            seen = sniffer.stdout.readline().strip()
            assert bytes.fromhex(seen)[:60] == arp_request(ours)
            assert sniffer.stdout.readline().strip() == "sent"
            got = read_frame_from(fd, theirs)  # bridge -> guest
            assert got[10:70] == arp_request(theirs)
        finally:
            sniffer.kill()
            sniffer.communicate()
    finally:
        os.close(fd)

    # Closing the descriptor keeps the (persistent) tap; reopening attaches to it.
    assert "bt-0001" in link_names(ns)
    result, fds = client.call_with_fds("open_tap", name="bt-0001", bridge="bgbr0")
    assert result["created"] is False
    os.close(fds[0])

    # NAT: idempotent, and entries for several bridges compose.
    assert client.call("ensure_nat", cidr="172.30.0.0/24", bridge="bgbr0")["changed"] is True
    assert client.call("ensure_nat", cidr="172.30.0.0/24", bridge="bgbr0")["changed"] is False
    client.call("ensure_bridge", name="bgbr1", cidr="10.77.0.1/16")
    client.call("ensure_nat", cidr="10.77.0.0/16", bridge="bgbr1")
    listing = nft_table(ns)
    assert listing is not None
    assert masqueraded(listing) == {"bgbr0 172.30.0.0/24", "bgbr1 10.77.0.0/16"}
    assert ns.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"

    # delete_tap is idempotent.
    _, fds = client.call_with_fds("open_tap", name="bt-0002", bridge="bgbr0")
    os.close(fds[0])
    assert client.call("delete_tap", name="bt-0002")["deleted"] is True
    assert client.call("delete_tap", name="bt-0002")["deleted"] is False
    with pytest.raises(HelperError, match="must match bt-"):
        client.call("delete_tap", name="lo")

    # Teardown: bridge 0 with its taps and NAT entry; bridge 1 untouched.
    down = client.call("teardown_network", bridge="bgbr0")
    assert down == {
        "bridge": "bgbr0",
        "taps_deleted": ["bt-0001"],
        "bridge_deleted": True,
        "nat_removed": ["172.30.0.0/24"],
        "nat_table_deleted": False,  # bgbr1's entry is still in it
    }
    listing = nft_table(ns)
    assert listing is not None and masqueraded(listing) == {"bgbr1 10.77.0.0/16"}
    assert link_names(ns) == {"lo", "bgbr1"}
    last = client.call("teardown_network", bridge="bgbr1")
    assert last["bridge_deleted"] is True and last["nat_table_deleted"] is True
    assert nft_table(ns) is None
    # Idempotent: the second teardown finds nothing and changes nothing.
    before = nft_ruleset(ns)
    again = client.call("teardown_network", bridge="bgbr1")
    assert again == {
        "bridge": "bgbr1",
        "taps_deleted": [],
        "bridge_deleted": False,
        "nat_removed": [],
        "nat_table_deleted": False,
    }
    assert nft_ruleset(ns) == before
    assert link_names(ns) == {"lo"}

    log = helper.log.read_text()
    for line in ("created bridge bgbr0", "open_tap: bt-0001 on bgbr0", "masquerading 172.30.0.0/24",
                 "deleted tap bt-0001", "deleted bridge bgbr0"):  # fmt: skip
        assert line in log


def test_helper_refuses_foreign_interfaces_and_overlaps(start_helper: StartHelper) -> None:
    helper = start_helper()
    helper.ns.run("ip", "link", "add", "foreign0", "type", "bridge")
    helper.ns.run("ip", "addr", "add", "192.168.50.1/24", "dev", "lo")
    with pytest.raises(HelperError, match="not a banger bridge"):
        helper.client.call("ensure_bridge", name="foreign0", cidr="172.30.0.1/24")
    with pytest.raises(HelperError, match="not a banger bridge"):
        helper.client.call("teardown_network", bridge="foreign0")
    with pytest.raises(HelperError, match=r"overlaps 192\.168\.50\.0/24 on lo"):
        helper.client.call("ensure_bridge", name="bgbr0", cidr="192.168.0.1/16")
    with pytest.raises(HelperError, match="bridge bgbr0 does not exist"):
        helper.client.call_with_fds("open_tap", name="bt-1", bridge="bgbr0")
    assert link_names(helper.ns) == {"lo", "foreign0"}


def nft_ruleset(ns: Netns) -> str:
    return ns.run("nft", "list", "ruleset").stdout


def ip_forward(ns: Netns) -> str:
    return ns.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()


NOT_OURS = "ensure_nat.args.bridge: interface {} exists and is not a banger bridge"


@pytest.mark.parametrize(
    ("bridge", "setup", "error"),
    [
        ("lo", [], NOT_OURS.format("lo")),
        # An uplink as a host has one: named eth0, up, with an address and the default
        # route. A veth whose peer stays in the namespace: no frame can leave it.
        (
            "eth0",
            [
                ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"],
                ["ip", "addr", "add", "192.168.77.2/24", "dev", "eth0"],
                ["ip", "link", "set", "eth0-peer", "up"],
                ["ip", "link", "set", "eth0", "up"],
                ["ip", "route", "add", "default", "via", "192.168.77.1"],
            ],
            NOT_OURS.format("eth0"),
        ),
        (
            "foreign0",
            [["ip", "link", "add", "foreign0", "type", "bridge"]],
            NOT_OURS.format("foreign0"),
        ),
        ("bgbr9", [], "ensure_nat.args.bridge: interface bgbr9 does not exist"),
    ],
    ids=["lo", "uplink", "foreign-bridge", "missing"],
)
def test_ensure_nat_only_for_banger_bridges(
    start_helper: StartHelper, bridge: str, setup: list[list[str]], error: str
) -> None:
    helper = start_helper()
    ns, client = helper.ns, helper.client
    # banger's own bridge and NAT are in place; the refusal must leave them as they are.
    client.call("ensure_bridge", name="bgbr0", cidr="172.30.0.1/24")
    client.call("ensure_nat", cidr="172.30.0.0/24", bridge="bgbr0")
    ns.run("sysctl", "-qw", "net.ipv4.ip_forward=0")  # this namespace's own setting
    for argv in setup:
        ns.run(*argv)
    before = nft_ruleset(ns)
    assert "banger-nat bgbr0 172.30.0.0/24" in before

    with pytest.raises(HelperError) as refused:
        client.call("ensure_nat", cidr="10.99.0.0/24", bridge=bridge)
    assert refused.value.message == error

    assert nft_ruleset(ns) == before
    assert ip_forward(ns) == "0"
    assert "masquerading 10.99.0.0/24" not in helper.log.read_text()


def as_user(user: User, *argv: str) -> list[str]:
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", *argv]


def test_qemu_accepts_the_tap_descriptor_as_the_owner(start_helper: StartHelper) -> None:
    with throwaway_user() as owner:
        helper = start_helper(owner_uid=owner.uid)
        helper.client.call("ensure_bridge", name="bgbr0", cidr="172.30.0.1/24")
        _, (fd,) = helper.client.call_with_fds("open_tap", name="bt-q", bridge="bgbr0")
        try:
            argv = as_user(
                owner,
                "qemu-system-x86_64", "-M", "microvm", "-nodefaults", "-display", "none", "-S",
                "-netdev", f"tap,id=n0,fd={fd}",  # vnet_hdr: qemu probes the fd
                "-device", "virtio-net-device,netdev=n0",
                "-qmp", "stdio",
            )  # fmt: skip
            commands = [
                {"execute": "qmp_capabilities"},
                {"execute": "human-monitor-command", "arguments": {"command-line": "info network"}},
                {"execute": "quit"},
            ]
            qemu = subprocess.run(
                argv,
                input="".join(json.dumps(c) + "\n" for c in commands),
                capture_output=True,
                text=True,
                pass_fds=(fd,),
                timeout=60,
                env={"PATH": os.environ["PATH"], "HOME": str(owner.home)},
            )
        finally:
            os.close(fd)
    assert qemu.returncode == 0, qemu.stderr
    replies = [json.loads(line) for line in qemu.stdout.splitlines() if line.strip()]
    info = next(r["return"] for r in replies if isinstance(r.get("return"), str))
    assert "n0:" in info and "type=tap" in info, info


CLIENT = r"""
import json, sys
from pathlib import Path
from banger.errors import HelperError
from banger.helper.client import HelperClient
try:
    print(json.dumps({"ok": HelperClient(Path(sys.argv[1])).call("ping")}))
except HelperError as exc:
    print(json.dumps({"error": exc.message, "hint": exc.hint}))
"""


def test_only_the_owner_is_served(start_helper: StartHelper) -> None:
    with throwaway_user("bgo") as owner, throwaway_user("bgx") as stranger:
        # root:<owner's group> 0660, and the stranger is in that group too: it may
        # open the socket, so only SO_PEERCRED stands between it and the ops.
        helper = start_helper(owner_uid=owner.uid, owner_gid=owner.gid)
        st = helper.socket.lstat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, owner.gid, 0o660)

        def ping_as(user: User) -> dict[str, Any]:
            argv = [
                "setpriv", f"--reuid={user.uid}", f"--regid={user.gid}",
                f"--groups={owner.gid}", sys.executable, "-c", CLIENT, str(helper.socket),
            ]  # fmt: skip
            out = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                check=True,
                env={"PATH": os.environ["PATH"], "HOME": str(user.home)},
            )
            reply: dict[str, Any] = json.loads(out.stdout)
            return reply

        refused = ping_as(stranger)
        assert (
            refused["error"] == f"permission denied: uid {stranger.uid} is not this helper's owner"
        )
        assert "installed for" in refused["hint"]
        assert ping_as(owner)["ok"]["version"]
        assert helper.client.call("ping")["version"]  # root (uid 0) for admin and tests
        log = helper.log.read_text()
        assert "refused connection from pid=" in log
        assert f"uid={stranger.uid} gid={stranger.gid}: not the owner uid {owner.uid}" in log


def test_foreground_helper_stops_cleanly_on_sigint() -> None:
    with netns("bgh") as ns, short_tmpdir("bgh-") as tmp:
        paths = helper_paths(tmp)
        sock, log = paths.helper_socket, paths.helper_log
        argv = helper_command_line(paths, 0, ["--foreground"])  # it logs to --log
        with subprocess.Popen(ns.argv(*argv), stderr=subprocess.PIPE, text=True) as proc:

            def ready() -> bool:
                assert proc.poll() is None, f"helper exited early: {proc.communicate()[1]}"
                return log.exists() and "banger-helper ready" in log.read_text()

            wait_until(ready, 60, "banger-helper ready in its log")
            assert HelperClient(sock).call("ping")["version"]
            proc.send_signal(signal.SIGINT)
            stderr = proc.communicate(timeout=60)[1]  # a hang bound
        assert proc.returncode == 0, stderr
        rest = log.read_text()
        assert "received SIGINT" in rest and "stopped" in rest
        assert not sock.exists()
