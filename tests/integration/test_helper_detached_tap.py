"""``open_tap_detached`` and ``attach_tap``: the real banger-helper in a throwaway namespace.

A restored guest (issue #18 item 2, Firecracker) runs on a tap that is on no
bridge and down until it has been re-identified; then ``attach_tap`` puts the
tap on banger's bridge and brings it up. The helper must touch nothing but its
own: a name outside ``bt-…``, a bridge that is not banger's, a tap of another
uid or one already on another interface are refused.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from banger.errors import HelperError
from tests.integration.test_helper_netns import (
    SNIFFER,
    VNET_HDR,
    StartHelper,
    arp_request,
    link,
    read_frame_from,
    start_helper,
)

__all__ = ["start_helper"]  # the fixture, used by name below

pytestmark = [pytest.mark.root]


def test_a_detached_tap_joins_the_bridge_only_when_attached(start_helper: StartHelper) -> None:
    helper = start_helper()
    ns, client = helper.ns, helper.client
    client.call("ensure_bridge", name="bgbr0", cidr="172.30.0.1/24")
    bridge = link(ns, "bgbr0")

    result, fds = client.call_with_fds("open_tap_detached", name="bt-0001")
    assert result["created"] is True and result["bridge"] is None and len(fds) == 1
    (fd,) = fds
    try:
        tap = link(ns, "bt-0001")
        assert tap.get("master") is None and tap.get("state") == "down"
        tun = dict(tap.get(("linkinfo", "data"))["attrs"])
        assert tun["IFLA_TUN_TYPE"] == 2 and tun["IFLA_TUN_VNET_HDR"] == 1
        assert tun["IFLA_TUN_OWNER"] == 0 and tun["IFLA_TUN_PERSIST"] == 1
        assert "bt-0001" not in ns.run("ip", "-o", "link", "show", "master", "bgbr0").stdout
        # Down, the kernel takes no frame from the VMM's side at all (not even into the
        # host's own stack): a restored guest's frames with the source's MAC go nowhere.
        with pytest.raises(OSError) as refused:
            os.write(fd, VNET_HDR + arp_request(bytes.fromhex("525400aabb01")))
        assert refused.value.errno == errno.EIO

        assert client.call("attach_tap", name="bt-0001", bridge="bgbr0")["attached"] is True
        tap = link(ns, "bt-0001")
        assert tap.get("master") == bridge["index"] and tap.get("state") == "up"
        # Idempotent on a tap already on that bridge.
        client.call("attach_tap", name="bt-0001", bridge="bgbr0")

        # Attached, the descriptor carries frames both ways through the bridge.
        ours, theirs = bytes.fromhex("525400aabb01"), bytes.fromhex("525400aabb02")
        sniffer = subprocess.Popen(
            ns.argv(sys.executable, "-c", SNIFFER, "bgbr0", arp_request(ours).hex(),
                    arp_request(theirs).hex()),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert sniffer.stdout is not None
            assert sniffer.stdout.readline().strip() == "ready"
            os.write(fd, VNET_HDR + arp_request(ours))
            assert bytes.fromhex(sniffer.stdout.readline().strip())[:60] == arp_request(ours)
            assert sniffer.stdout.readline().strip() == "sent"
            assert read_frame_from(fd, theirs)[10:70] == arp_request(theirs)
        finally:
            sniffer.kill()
            sniffer.communicate()
    finally:
        os.close(fd)

    # open_tap_detached on an existing attached tap takes it off the bridge again.
    result, fds = client.call_with_fds("open_tap_detached", name="bt-0001")
    os.close(fds[0])
    assert result["created"] is False
    tap = link(ns, "bt-0001")
    assert tap.get("master") is None and tap.get("state") == "down"
    assert client.call("delete_tap", name="bt-0001")["deleted"] is True


def test_attach_tap_touches_only_the_owner_s_banger_taps(start_helper: StartHelper) -> None:
    helper = start_helper()
    ns, client = helper.ns, helper.client
    client.call("ensure_bridge", name="bgbr0", cidr="172.30.0.1/24")
    ns.run("ip", "link", "add", "foreign0", "type", "bridge")
    ns.run("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")

    # Not a banger name: refused by validation, before any netlink call.
    with pytest.raises(HelperError, match=r"attach_tap.args.name: must match bt-"):
        client.call("attach_tap", name="veth0", bridge="bgbr0")
    with pytest.raises(HelperError, match=r"open_tap_detached.args.name: must match bt-"):
        client.call_with_fds("open_tap_detached", name="veth0")
    # Not banger's bridge.
    _, fds = client.call_with_fds("open_tap_detached", name="bt-0002")
    os.close(fds[0])
    with pytest.raises(HelperError, match="foreign0 exists and is not a banger bridge"):
        client.call("attach_tap", name="bt-0002", bridge="foreign0")
    with pytest.raises(HelperError, match="bridge nobr0 does not exist"):
        client.call("attach_tap", name="bt-0002", bridge="nobr0")
    # A tap of another uid, in banger's name space: not the owner's to attach.
    ns.run("ip", "tuntap", "add", "dev", "bt-other", "mode", "tap", "user", "4242")
    with pytest.raises(HelperError, match="owned by uid 4242, not the owner"):
        client.call("attach_tap", name="bt-other", bridge="bgbr0")
    # The owner's tap, but already a port of another bridge.
    ns.run("ip", "tuntap", "add", "dev", "bt-elsewh", "mode", "tap", "user", "0")
    ns.run("ip", "link", "set", "bt-elsewh", "master", "foreign0")
    with pytest.raises(HelperError, match="already enslaved to interface index"):
        client.call("attach_tap", name="bt-elsewh", bridge="bgbr0")
    # A bt- name that is not a tap at all.
    ns.run("ip", "link", "add", "bt-veth", "type", "veth", "peer", "name", "bt-veth1")
    with pytest.raises(HelperError, match="bt-veth exists and is not a tap"):
        client.call("attach_tap", name="bt-veth", bridge="bgbr0")
    with pytest.raises(HelperError, match="tap bt-none does not exist"):
        client.call("attach_tap", name="bt-none", bridge="bgbr0")

    # Nothing was attached anywhere by the refusals.
    for name in ("bt-0002", "bt-other"):
        assert link(ns, name).get("master") is None
    assert link(ns, "bt-elsewh").get("master") == link(ns, "foreign0")["index"]
    assert link(ns, "veth0").get("master") is None
