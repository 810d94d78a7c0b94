"""VM names in DNS, `vm set` and `vm stats`, end to end against booted guests.

The namespace has no uplink: "the internet" is the test's own DNS server on
127.0.0.1:53 inside the namespace, and the config's ``network.dns_upstreams``
points the VM resolver at it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.errors import Conflict, InvalidArgument
from tests.e2e.harness import Banger, banger_env, daemon_pid
from tests.support import VENV_BIN, assert_refusal, needs_root, stop_pid

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

MIB = 1024 * 1024

# Inside the namespace: answers example.test A 192.0.2.1, NXDOMAIN otherwise; logs each name.
UPSTREAM = r"""
import socket, dns.message, dns.rcode, dns.rrset
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(4096)
    q = dns.message.from_wire(data)
    name = q.question[0].name
    print(name, flush=True)
    r = dns.message.make_response(q)
    if str(name).lower() == "example.test." and q.question[0].rdtype == 1:
        r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.1"))
    else:
        r.set_rcode(dns.rcode.NXDOMAIN)
    s.sendto(r.to_wire(), addr)
"""

QUERY = r"""
import sys, dns.message, dns.query
r = dns.query.udp(dns.message.make_query(sys.argv[2], "A"), sys.argv[1], timeout=5)
print(dns.rcode.to_text(r.rcode()), *[rr.to_text() for rrset in r.answer for rr in rrset])
"""


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with banger_env() as env:
        upstream = subprocess.Popen(
            env.ns.argv(sys.executable, "-c", UPSTREAM),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert upstream.stdout is not None
            assert upstream.stdout.readline().strip() == "ready"
            config = env.home / "config"
            config.mkdir(exist_ok=True)
            (config / "config.toml").write_text('[network]\ndns_upstreams = ["127.0.0.1"]\n')
            subprocess.run(["chown", "-R", f"{env.user.uid}:{env.user.gid}", str(config)])
            stop_pid(daemon_pid(env))  # the next CLI call starts bangerd with this config
            for name, memory in (("dns-a", "512"), ("dns-b", "512")):
                env.banger("vm", "create", "--name", name, "--init", "fast", "--start",
                           "--cpus", "1", "--memory", memory)  # fmt: skip
            yield env
        finally:
            upstream.kill()
            upstream.wait()
            if upstream.stdout is not None:
                upstream.stdout.close()


def ssh(b: Banger, vm: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return b.banger("vm", "ssh", vm, "--", *argv, check=check)


def show(b: Banger, vm: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(b.banger("vm", "show", vm, "--json").stdout)
    return data


def test_guests_resolve_each_other_and_forward_the_rest(b: Banger) -> None:
    ip_b = show(b, "dns-b")["ip"]
    assert ssh(b, "dns-a", "getent", "hosts", "dns-b.banger").stdout.split()[0] == ip_b
    assert ssh(b, "dns-a", "getent", "hosts", "DNS-B.banger").stdout.split()[0] == ip_b
    missing = ssh(b, "dns-a", "getent", "hosts", "nosuch.banger", check=False)
    assert missing.returncode == 2 and missing.stdout == ""  # 2: not found
    forwarded = ssh(b, "dns-a", "getent", "ahostsv4", "example.test").stdout
    assert forwarded.split()[0] == "192.0.2.1"


def test_host_namespace_queries_the_bridge(b: Banger) -> None:
    ip_a = show(b, "dns-a")["ip"]
    gateway = ".".join([*str(ip_a).split(".")[:3], "1"])
    out = b.host(str(VENV_BIN / "python"), "-c", QUERY, gateway, "dns-a.banger")
    assert out.stdout.split() == ["NOERROR", ip_a], out.stderr
    out = b.host(str(VENV_BIN / "python"), "-c", QUERY, gateway, "nosuch.banger")
    assert out.stdout.split() == ["NXDOMAIN"], out.stderr


def test_stats_json_is_plausible(b: Banger) -> None:
    data = json.loads(b.banger("vm", "stats", "dns-a", "--json").stdout)
    host, guest = data["host"], data["guest"]
    assert data["guest_error"] is None
    assert host["process"]["rss_bytes"] > 64 * MIB
    assert host["process"]["uptime_seconds"] > 0
    assert host["disks"]["root"]["format"] == "qcow2"
    work = host["disks"]["work"]
    assert work["allocated_bytes"] < work["virtual_bytes"] == data["work_disk_size"]
    assert host["net"]["rx_packets"] > 0 and host["net"]["tx_packets"] > 0
    # the guest sees its configured memory, minus what the kernel keeps for itself
    assert 0.8 * 512 * MIB < guest["mem_total_bytes"] <= 512 * MIB
    assert guest["cpus"] == 1
    assert {d["path"] for d in guest["disks"]} == {"/", "/root"}
    text = b.banger("vm", "stats", "dns-a", "--no-guest").stdout
    assert "vmm rss" in text and "work disk" in text


def test_set_applies_at_restart_and_refuses_shrink_and_running_growth(b: Banger) -> None:
    size = show(b, "dns-b")["work_disk_size"]
    assert isinstance(size, int)
    grown = size + 512 * MIB
    running = b.banger("vm", "set", "dns-b", "--disk", f"{grown // MIB}M", check=False)
    assert_refusal(running, Conflict.exit_code, "while it is stopped")
    shrink = b.banger("vm", "set", "dns-b", "--disk", f"{size // MIB - 64}M", check=False)
    assert_refusal(shrink, InvalidArgument.exit_code, "shrinking")
    too_many = b.banger("vm", "set", "dns-b", "--cpus", "999", check=False)
    assert_refusal(too_many, InvalidArgument.exit_code, "cpus")

    before = int(ssh(b, "dns-b", "df", "-Pk", "/root").stdout.splitlines()[1].split()[1])
    b.banger("vm", "set", "dns-b", "--cpus", "2", "--memory", "768")
    assert ssh(b, "dns-b", "nproc").stdout.strip() == "1"  # recorded, not applied yet
    b.banger("vm", "stop", "dns-b")
    b.banger("vm", "set", "dns-b", "--disk", f"{grown // MIB}M")
    b.banger("vm", "start", "dns-b")
    assert ssh(b, "dns-b", "nproc").stdout.strip() == "2"
    meminfo = ssh(b, "dns-b", "cat", "/proc/meminfo").stdout
    total_kib = int(
        next(line for line in meminfo.splitlines() if line.startswith("MemTotal")).split()[1]
    )
    assert 0.8 * 768 * 1024 < total_kib <= 768 * 1024
    after = int(ssh(b, "dns-b", "df", "-Pk", "/root").stdout.splitlines()[1].split()[1])
    assert after - before > 400 * 1024  # KiB: the 512 MiB growth, less ext4 overhead
    assert show(b, "dns-b")["work_disk_size"] == grown


def test_set_restart_applies_now(b: Banger) -> None:
    out = json.loads(b.banger("vm", "set", "dns-b", "--cpus", "1", "--restart", "--json").stdout)
    assert out["operation"]["kind"] == "vm.restart" and out["operation"]["state"] == "succeeded"
    assert (out["vm"]["vcpus"], out["vm"]["state"]) == (1, "running")
    assert ssh(b, "dns-b", "nproc").stdout.strip() == "1"


def test_doctor_reports_the_resolver_serving(b: Banger) -> None:
    gateway = ".".join([*str(show(b, "dns-a")["ip"]).split(".")[:3], "1"])
    checks = json.loads(b.banger("doctor", "--json", check=False).stdout)
    dns = next(c for c in checks if c["name"] == "vm dns")
    assert f"bangerd answers for <vm>.banger on {gateway}:53" in dns["detail"]
    if Path("/run/systemd/resolve").is_dir():  # the helper linked systemd-resolved
        assert dns["status"] == "pass", dns
    else:
        assert dns["status"] == "warn", dns
        assert "systemd-resolved is not running" in dns["detail"]
        assert f"server=/banger/{gateway}" in dns["fix"]
