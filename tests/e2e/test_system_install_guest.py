"""``banger system install`` under a real systemd: inside a banger guest (issue #22).

These machines have no systemd as PID 1, so ``systemctl`` cannot run banger's
two units here (tests/e2e/test_system_units_e2e.py runs their ExecStart lines
by hand instead). A banger guest booted with the default init *is* a systemd
machine, so this test installs banger there, the way a user does:

1. On the host: banger's wheel, built from the working tree, and an offline
   wheelhouse of its locked runtime dependencies (tests/wheelhouse.py: fetched
   once, hash-checked against requirements.lock, cached by the lock's digest).
   Both go into the guest with ``banger vm cp``; the guest has no network.
2. In the guest, as root over the exec API (one SDK program as the host owner
   runs every guest command over bangerd's held connection): a venv (Debian's
   python3 has no ensurepip: ``--without-pip``), the lock's own installer
   (``uv pip sync --require-hashes``, offline, as ``make deps`` does) for
   ``runtime.txt``, then banger's wheel, byte-compiled as pip would; an owner
   user whose config moves banger's bridge off the guest's own subnet.
3. ``banger system install --owner <user>`` and, with the real systemd: both
   units active and enabled; ``banger system status`` healthy as the owner; a
   second install writes nothing and restarts nothing; ``banger system
   restart`` restarts the helper first (systemd's own timestamps); the units'
   sandboxing really applied (the helper's capability bounding set and
   NoNewPrivs from /proc/PID/status, ProtectSystem and ProtectHome refusing a
   write made inside the unit's own mount namespace with ``nsenter``, the
   daemon with no capabilities at all); the helper creating the owner's
   bridge in the guest when asked the request bangerd makes before every VM
   start (``ensure_bridge``, sent by the owner over the helper socket);
   ``system uninstall`` leaving the owner's data and ``--purge`` removing
   what it promises, and never the owner's config.

Booting VMs inside the guest is not attempted: nested emulation under TCG is
far too slow. The VM paths through the installed layout are covered by
test_system_units_e2e.py. The guest's rootfs has no kernel modules (banger's
initramfs loads the few it boots with), so the test loads bridge, stp and llc
from the kernel's own package with finit_module, which is what the kernel's
module autoload does on a real host.

Wall time is dominated by emulation: the systemd boot, ~40 MB over SSH into
the guest, byte-compiling the venv, and Python services that take tens of
seconds to import under TCG (each wait for a healthy status is a wait for that,
never a sleep). 9 to 15 minutes on 2 cores under the suite's usual load of ~10.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Banger, banger_env
from tests.image_cache import CACHE_ROOT
from tests.kernel_cache import cached_debian_kernel
from tests.support import VENV_BIN, needs_root, wait_until
from tests.wheelhouse import RUNTIME_TXT, build_banger_wheel, cached_wheelhouse, uv_wheel

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

VM = "sysd"
OWNER = "carol"
VENV = "/opt/banger"
PAYLOAD = "/var/tmp/banger-payload"
WHEELS = f"{PAYLOAD}/wheels"
UNIT_DIR = "/etc/systemd/system"
HELPER = "banger-helper.service"
DAEMON = "bangerd.service"
INSTALLED = (f"{UNIT_DIR}/{HELPER}", f"{UNIT_DIR}/{DAEMON}", "/etc/banger/install.toml")
HOME = f"/home/{OWNER}"
STATE = f"{HOME}/.local/state/banger"
CACHE = f"{HOME}/.cache/banger"
CONFIG = f"{HOME}/.config/banger/config.toml"
HELPER_LOG_DIR = "/var/log/banger"
RUNTIME = "/run/banger"
#: Not the guest's own subnet (the outer bridge's): the inner bridge would take
#: the outer gateway's address and cut the test's own connection to the guest.
BRIDGE = "bgin0"
SUBNET = "10.213.7.0/24"
GATEWAY_CIDR = "10.213.7.1/24"
#: The helper unit's CapabilityBoundingSet by number (linux/capability.h), written
#: out here so the check does not reuse the code under test.
HELPER_CAPS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_SETGID": 6,
               "CAP_SETUID": 7, "CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}  # fmt: skip
#: Bridge and what it needs, dependencies first (bridge needs stp, stp needs llc).
BRIDGE_MODULES = ("net/llc/llc.ko", "net/802/stp.ko", "net/bridge/bridge.ko")
#: Under TCG on a loaded machine, a Python service takes tens of seconds to start.
SERVICE_TIMEOUT = 600
COMMAND_TIMEOUT = 900

#: Runs as the host owner: one guest command per stdin line (a JSON argv), its
#: result as one JSON line, over the SDK's held connection (a CLI process per
#: command costs seconds of Python start-up under this load).
DRIVER = """\
import json, sys
from banger.sdk import Banger
with Banger(autostart=False) as bg:
    vm = bg.get(sys.argv[1])
    for line in sys.stdin:
        r = vm.run(json.loads(line), timeout=float(sys.argv[2]))
        print(json.dumps({"exit": r.exit_code, "signal": r.signal,
                          "out": r.stdout, "err": r.stderr}), flush=True)
"""
#: finit_module(2) (313 on x86_64) for each path; EEXIST (17): already loaded.
LOAD_MODULES = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    if libc.syscall(313, fd, b"", 0) != 0 and ctypes.get_errno() != 17:
        raise OSError(ctypes.get_errno(), "finit_module " + path)
    os.close(fd)
"""
UNZIP_UV = """\
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    [name] = [n for n in z.namelist() if n.endswith(".data/scripts/uv")]
    with open(sys.argv[2], "wb") as out:
        out.write(z.read(name))
os.chmod(sys.argv[2], 0o755)
"""
#: The request bangerd sends before every VM start, sent by the owner.
ENSURE_BRIDGE = """\
import json, sys
from pathlib import Path
from banger.helper.client import HelperClient
result = HelperClient(Path(sys.argv[1])).call("ensure_bridge", name=sys.argv[2], cidr=sys.argv[3])
print(json.dumps(result))
"""
SHOW_PROPS = ("MainPID", "ActiveState", "LoadState", "UnitFileState", "InvocationID",
              "ExecMainStartTimestampMonotonic", "InactiveEnterTimestampMonotonic")  # fmt: skip


@dataclass(frozen=True)
class Result:
    exit: int | None
    out: str
    err: str


class Guest:
    """Commands in the guest as root, through :data:`DRIVER`."""

    def __init__(self, b: Banger) -> None:
        self.b = b
        src = VENV_BIN.parent.parent / "src"
        argv = b.as_owner(["env", f"PYTHONPATH={src}", str(VENV_BIN / "python"), "-c", DRIVER,
                           VM, str(COMMAND_TIMEOUT)])  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)  # fmt: skip

    def run(self, argv: list[str], check: bool = True) -> Result:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the exec driver ended (exit {self.proc.poll()}) during {argv}"
        reply = json.loads(line)
        result = Result(reply["exit"], reply["out"], reply["err"])
        if check:
            assert result.exit == 0, (
                f"guest: {argv}: exit {result.exit}\n{result.out}\n{result.err}"
            )
        return result

    def sh(self, script: str, *args: str, check: bool = True) -> Result:
        """``sh -c script`` as root (arguments as $1…)."""
        return self.run(["sh", "-c", script, "sh", *args], check=check)

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()  # the driver's loop ends, its SDK connection closes
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    # -- banger in the guest --------------------------------------------------------

    def banger(self, *args: str, check: bool = True) -> Result:
        """The installed ``banger`` as root (as ``sudo banger …`` runs it)."""
        return self.run([f"{VENV}/bin/banger", *args], check=check)

    def as_owner(self, *argv: str, check: bool = True) -> Result:
        """``argv`` as the guest's owner, with an ordinary user's clean environment."""
        return self.run(["setpriv", f"--reuid={OWNER}", f"--regid={OWNER}", "--init-groups",
                         "env", "-i", f"HOME={HOME}", f"PATH={VENV}/bin:/usr/bin:/bin",
                         "LANG=C.UTF-8", *argv], check=check)  # fmt: skip

    def status(self) -> dict[str, Any]:
        """``banger system status --json`` as the owner."""
        result = self.as_owner("banger", "system", "status", "--json", check=False)
        assert result.out.startswith("{"), result.err
        report: dict[str, Any] = json.loads(result.out)
        assert result.exit == (0 if report["healthy"] else 1), result
        return report

    def healthy(self) -> dict[str, Any]:
        """Wait for a healthy status (the daemon binds its socket after its imports)."""
        last: list[object] = []

        def check() -> bool:
            report = self.status()
            last[:] = [report["problems"]]
            return bool(report["healthy"])

        try:
            wait_until(check, SERVICE_TIMEOUT, "banger system status healthy")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {last}") from None
        return self.status()

    def units(self) -> dict[str, dict[str, str]]:
        """``systemctl show`` of both units: {unit: {property: value}}."""
        out = self.run(["systemctl", "show", "-p", ",".join(SHOW_PROPS), HELPER, DAEMON]).out
        blocks = out.strip().split("\n\n")
        assert len(blocks) == 2, out
        return {
            unit: dict(line.split("=", 1) for line in block.splitlines())
            for unit, block in zip((HELPER, DAEMON), blocks, strict=True)
        }

    def proc_status(self, pid: str) -> dict[str, str]:
        out = self.sh('grep -E "^(Cap|NoNewPrivs|Uid)" /proc/"$1"/status', pid).out
        return {k: v.strip() for k, v in (line.split(":", 1) for line in out.splitlines())}

    def exists(self, *paths: str) -> dict[str, bool]:
        return {p: self.sh('test -e "$1" || test -L "$1"', p, check=False).exit == 0
                for p in paths}  # fmt: skip

    def mtimes(self, *paths: str) -> str:
        return self.run(["stat", "-c", "%n %Y %i", *paths]).out

    def banger_processes(self) -> str:
        return self.sh("pgrep -a -f '/opt/banger/bin/(bangerd|banger-helper)' || true").out


# -- setting the guest up ---------------------------------------------------------


def bridge_modules(out: Path) -> list[Path]:
    """bridge, stp and llc from the cached kernel's own .deb, into ``out``."""
    kernel = json.loads((cached_debian_kernel() / "kernel.json").read_text())
    [deb] = (CACHE_ROOT / "debs" / kernel["package_sha256"]).glob("*.deb")
    prefix = f"./lib/modules/{kernel['version']}/kernel/"
    wanted = {prefix + m: Path(m).name for m in BRIDGE_MODULES}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                          stdout=subprocess.PIPE) as dpkg:  # fmt: skip
        assert dpkg.stdout is not None
        with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
            for member in tar:
                source = tar.extractfile(member) if member.name in wanted else None
                if source is not None:
                    (out / wanted[member.name]).write_bytes(source.read())
    assert dpkg.returncode == 0
    found = [out / Path(m).name for m in BRIDGE_MODULES]
    assert all(p.is_file() for p in found), f"{deb} lacks one of {BRIDGE_MODULES}"
    return found


def copy_in(b: Banger, wheelhouse: Path) -> str:
    """banger's wheel and the modules, then the wheelhouse, into the guest; the wheel's path."""
    payload = Path(tempfile.mkdtemp(prefix="bgsys-", dir="/tmp"))
    try:
        wheel = build_banger_wheel(payload)
        bridge_modules(payload)
        payload.chmod(0o755)  # the owner's CLI reads it
        for path in payload.iterdir():
            path.chmod(0o644)
        b.banger("vm", "cp", str(payload), f"{VM}:{PAYLOAD}", timeout=COMMAND_TIMEOUT)
        b.banger("vm", "cp", str(wheelhouse), f"{VM}:{WHEELS}", timeout=COMMAND_TIMEOUT)
        return f"{PAYLOAD}/{wheel.name}"
    finally:
        shutil.rmtree(payload, ignore_errors=True)


def install_banger(g: Guest, wheel: str, uv: str) -> None:
    """A venv, the locked dependencies (hash-checked, offline), then banger's wheel."""
    g.run(["python3", "-c", UNZIP_UV, f"{WHEELS}/{uv}", f"{PAYLOAD}/uv"])
    g.run(["python3", "-m", "venv", "--without-pip", VENV])
    offline = [f"{PAYLOAD}/uv", "pip", "--offline", "--no-cache", "--python", f"{VENV}/bin/python"]
    g.run([*offline[:2], "sync", *offline[2:], "--no-index", "--find-links", WHEELS,
           "--require-hashes", "--compile-bytecode", f"{WHEELS}/{RUNTIME_TXT}"])  # fmt: skip
    g.run([*offline[:2], "install", *offline[2:], "--no-index", "--no-deps", "--compile-bytecode",
           wheel])  # fmt: skip
    config = f'[network]\nbridge = "{BRIDGE}"\nsubnet = "{SUBNET}"\n'
    g.sh('useradd --create-home --shell /bin/sh "$1" && '
         'install -d -o "$1" -g "$1" -m 0700 "$2" "$2/banger" && '
         'printf "%s" "$3" > "$2/banger/config.toml" && chown "$1:$1" "$2/banger/config.toml"',
         OWNER, f"{HOME}/.config", config)  # fmt: skip


@pytest.fixture(scope="module")
def g() -> Iterator[Guest]:
    wheelhouse = cached_wheelhouse()
    with banger_env() as b:
        # The default init (systemd); memory for a daemon and a helper on top of it.
        b.banger("vm", "create", "--name", VM, "--memory", "1024", "--start", timeout=1800)
        guest = Guest(b)
        try:
            assert guest.run(["cat", "/proc/1/comm"]).out.strip() == "systemd"
            wheel = copy_in(b, wheelhouse)
            install_banger(guest, wheel, uv_wheel(wheelhouse).name)
            yield guest
        finally:
            guest.close()


def installed(g: Guest) -> dict[str, Any]:
    """``banger system install --owner`` as root; its JSON report."""
    report: dict[str, Any] = json.loads(
        g.banger("system", "install", "--owner", OWNER, "--json").out
    )
    return report


# -- the tests (in order: each leaves the install in place for the next) ----------


def test_install_starts_both_units_and_a_second_install_changes_nothing(g: Guest) -> None:
    first = installed(g)
    assert first["started"] and first["owner"] == OWNER, first
    assert sorted(first["written"]) == sorted(INSTALLED), first
    before = g.units()
    for unit, props in before.items():
        assert (props["ActiveState"], props["UnitFileState"]) == ("active", "enabled"), unit
        assert props["MainPID"] != "0", unit
    report = g.healthy()
    assert {u["name"]: (u["active"], u["enabled"]) for u in report["units"]} == {
        HELPER: ("active", "enabled"), DAEMON: ("active", "enabled")}  # fmt: skip
    assert not report["version_mismatch"], report["versions"]
    sockets = {s["name"]: s for s in report["sockets"]}
    assert all(s["layout_ok"] and s["answering"] for s in sockets.values()), sockets
    # No errors in either log; the helper's is root's, unreadable to the owner by
    # design, which is not an error either.
    assert report["log_errors"] == {"helper": [], "daemon": []}, report["log_errors"]

    files = g.mtimes(*INSTALLED)
    second = installed(g)
    assert second["written"] == [] and sorted(second["unchanged"]) == sorted(INSTALLED), second
    assert g.mtimes(*INSTALLED) == files  # not even rewritten in place
    after = g.units()
    for unit in (HELPER, DAEMON):  # not restarted either
        assert after[unit]["InvocationID"] == before[unit]["InvocationID"], unit
        assert after[unit]["MainPID"] == before[unit]["MainPID"], unit


def test_restart_restarts_the_helper_first(g: Guest) -> None:
    installed(g)
    before = g.units()
    assert g.banger("system", "restart").out.strip() == "restarted banger-helper and bangerd"
    after = g.units()
    for unit in (HELPER, DAEMON):
        assert after[unit]["ActiveState"] == "active", after
        assert after[unit]["InvocationID"] != before[unit]["InvocationID"], unit
        assert after[unit]["MainPID"] != before[unit]["MainPID"], unit
    # systemd's own clock: the new helper was started before the old daemon was stopped.
    helper_started = int(after[HELPER]["ExecMainStartTimestampMonotonic"])
    daemon_stopped = int(after[DAEMON]["InactiveEnterTimestampMonotonic"])
    assert 0 < helper_started < daemon_stopped, after
    g.healthy()


def test_the_units_sandboxing_is_applied(g: Guest) -> None:
    installed(g)
    units = g.units()
    helper_pid, daemon_pid = units[HELPER]["MainPID"], units[DAEMON]["MainPID"]
    helper = g.proc_status(helper_pid)
    expected = sum(1 << bit for bit in HELPER_CAPS.values())
    assert int(helper["CapBnd"], 16) == expected, helper
    assert int(helper["CapEff"], 16) == expected, helper  # root, but only these
    assert helper["NoNewPrivs"] == "1" and helper["Uid"].split()[0] == "0", helper
    daemon = g.proc_status(daemon_pid)
    for key in ("CapBnd", "CapEff", "CapPrm", "CapAmb", "CapInh"):
        assert int(daemon[key], 16) == 0, daemon
    assert daemon["NoNewPrivs"] == "1" and daemon["Uid"].split()[0] != "0", daemon

    def write_in(pid: str, path: str) -> Result:
        """``touch path`` as root in the unit's own mount namespace."""
        return g.run(["nsenter", "-t", pid, "-m", "touch", path], check=False)

    # ProtectSystem=strict (helper), =full (daemon): read-only even for root, there.
    probes = ("/usr/banger-probe", "/etc/banger-probe")
    for pid, path in [(pid, path) for pid in (helper_pid, daemon_pid) for path in probes]:
        refused = write_in(pid, path)
        assert refused.exit != 0 and "Read-only file system" in refused.err, (pid, path, refused)
    # ProtectHome=read-only, but ReadWritePaths= the owner's state.
    refused = write_in(helper_pid, f"{HOME}/banger-probe")
    assert refused.exit != 0 and "Read-only file system" in refused.err, refused
    write_in(helper_pid, f"{STATE}/banger-probe")
    g.run(["rm", f"{STATE}/banger-probe"])
    # The same writes outside the units' namespaces work: the refusals are the units'.
    g.run(["touch", "/usr/banger-probe", f"{HOME}/banger-probe"])
    g.run(["rm", "/usr/banger-probe", f"{HOME}/banger-probe"])


def test_the_helper_makes_the_owners_bridge_in_the_guest(g: Guest) -> None:
    installed(g)
    g.healthy()
    modules = [f"{PAYLOAD}/{Path(m).name}" for m in BRIDGE_MODULES]
    g.run(["python3", "-c", LOAD_MODULES, *modules])
    assert g.sh('ip link show "$1" 2>&1', BRIDGE, check=False).exit != 0  # not there yet
    reply = g.as_owner(f"{VENV}/bin/python", "-c", ENSURE_BRIDGE, f"{RUNTIME}/helper.sock",
                       BRIDGE, GATEWAY_CIDR)  # fmt: skip
    assert json.loads(reply.out)["created"] is True, reply
    [link] = json.loads(g.run(["ip", "-j", "-d", "addr", "show", BRIDGE]).out)
    assert link["linkinfo"]["info_kind"] == "bridge", link
    assert link.get("ifalias") == "banger-managed", link
    addresses = {(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"}
    assert addresses == {(GATEWAY_CIDR.split("/")[0], 24)}, link


def test_uninstall_keeps_data_and_purge_removes_what_it_promises(g: Guest) -> None:
    installed(g)
    g.healthy()
    g.banger("system", "uninstall")
    for unit, props in g.units().items():
        assert (props["LoadState"], props["ActiveState"]) == ("not-found", "inactive"), unit
    assert g.banger_processes() == ""
    kept = (STATE, f"{STATE}/banger.db", CACHE, CONFIG, f"{HELPER_LOG_DIR}/helper.log")
    removed = (*INSTALLED, "/etc/banger", RUNTIME)  # the runtime dir, empty now, is no data
    assert g.exists(*removed, *kept) == {**dict.fromkeys(removed, False),
                                         **dict.fromkeys(kept, True)}  # fmt: skip
    gone = g.as_owner("banger", "system", "status", check=False)
    assert gone.exit == 1 and "not installed" in gone.out, gone

    # Again, then --purge: the owner's banger state, cache, runtime and log dirs go;
    # the owner's config stays (it is theirs).
    installed(g)  # running again (the daemon may still be starting: no matter)
    assert g.exists(f"{UNIT_DIR}/{HELPER}")[f"{UNIT_DIR}/{HELPER}"]
    g.banger("system", "uninstall", "--purge", "--yes")
    assert g.banger_processes() == ""
    purged = (STATE, CACHE, RUNTIME, HELPER_LOG_DIR, *INSTALLED, "/etc/banger")
    assert g.exists(*purged, CONFIG) == {**dict.fromkeys(purged, False), CONFIG: True}
