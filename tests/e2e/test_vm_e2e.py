"""banger end to end: real guests through CLI → bangerd (owner) → banger-helper (root).

One seeded installation (namespace, owner user, helper, daemon) is shared by
the module; each test uses its own VMs and leaves none behind. At most two
guests run at once; most use the fast init, the lifecycle test uses systemd.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.errors import Conflict, InvalidArgument, NotFound
from banger.kernels.initramfs import build_initramfs
from tests.e2e.harness import Banger
from tests.e2e.leftovers import assert_nothing_left as assert_no_leftovers
from tests.e2e.leftovers import vm_kept
from tests.kernel_cache import cached_debian_kernel
from tests.support import assert_refusal, needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]


def assert_nothing_left(b: Banger) -> None:
    """The full leftover check (records, taps, leases, NAT, processes, files), and no
    host key left pinned for a VM that is gone."""
    assert_no_leftovers(b)
    known = b.state_dir / "ssh" / "known_hosts"
    assert not known.exists() or known.read_text().strip() == ""


def test_run_returns_the_guest_kernel_and_exit_status(b: Banger) -> None:
    result = b.banger("vm", "run", "--init", "fast", "--rm", "--", "uname", "-a")
    assert result.stdout.startswith("Linux "), result.stdout
    assert "6.1.0" in result.stdout and "x86_64" in result.stdout
    assert "software emulation (TCG)" in result.stderr  # said once, on stderr
    assert result.stderr.count("software emulation") == 1
    assert_nothing_left(b)


def test_run_propagates_a_failing_command_status(b: Banger) -> None:
    result = b.banger(
        "vm", "run", "--init", "fast", "--rm", "--", "sh", "-c", "exit 7", check=False
    )
    assert result.returncode == 7, result.stderr
    assert_nothing_left(b)


def test_systemd_lifecycle_and_guest_contract(b: Banger) -> None:
    b.banger("vm", "create", "--name", "life", "--init", "systemd", "--cpus", "2")
    shown = json.loads(b.banger("vm", "show", "life", "--json").stdout)
    assert shown["state"] == "stopped" and shown["root_strategy"] == "qcow2"
    assert shown["init_mode"] == "systemd"
    b.banger("vm", "start", "life")
    shown = json.loads(b.banger("vm", "show", "life", "--json").stdout)
    assert shown["state"] == "running" and shown["accelerator"] == "tcg"
    assert shown["tap"] in b.taps()

    b.banger("vm", "ssh", "life", "--", "sh", "-c", "echo hi > /root/f")
    # A key the user adds in the guest survives the restart (issue #21 item 3).
    user_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUSERADDEDKEYINTHEGUEST me@laptop"
    b.banger("vm", "ssh", "life", "--", "sh", "-c",
             f"echo '{user_key}' >> /root/.ssh/authorized_keys")  # fmt: skip
    # Guest contract: the hardened sshd drop-in, StrictModes on, /root 0755 root:root.
    sshd = b.banger("vm", "ssh", "life", "--", "sshd", "-T").stdout.lower().splitlines()
    for directive in (
        "permitrootlogin without-password",
        "pubkeyauthentication yes",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "authorizedkeysfile /root/.ssh/authorized_keys",
        "strictmodes yes",
    ):
        assert directive in sshd or directive.replace("without", "prohibit") in sshd, directive
    mode = b.banger("vm", "ssh", "life", "--", "stat", "-c", "%a %U:%G", "/root").stdout
    assert mode.strip() == "755 root:root"
    # No banner: a shell session prints exactly what it is told to.
    shell = b.banger("vm", "ssh", "life", input="echo marker\n")
    assert shell.stdout == "marker\n" and shell.stderr == ""

    b.banger("vm", "stop", "life")
    shown = json.loads(b.banger("vm", "show", "life", "--json").stdout)
    assert shown["state"] == "stopped" and shown["pid"] is None
    assert b.taps() == [] and b.owner_processes("qemu-system") == []
    b.banger("vm", "start", "life")
    assert b.banger("vm", "ssh", "life", "--", "cat", "/root/f").stdout == "hi\n"
    keys = b.banger("vm", "ssh", "life", "--", "cat", "/root/.ssh/authorized_keys").stdout
    assert keys.splitlines().count(user_key) == 1, keys
    assert len(keys.splitlines()) == 2, keys  # banger's key once, the user's kept
    status = b.banger("vm", "ssh", "life", "--", "sh", "-c", "exit 3", check=False)
    assert status.returncode == 3
    # COMMAND's words are its argv, as documented (issue #21 item 16): one string
    # with a ';' is one program's name; shell syntax goes through sh -c.
    one = b.banger("vm", "ssh", "life", "--", "echo a; echo b", check=False)
    assert one.returncode == 127 and one.stdout == "", one
    both = b.banger("vm", "ssh", "life", "--", "sh", "-c", "echo a; echo b")
    assert both.stdout == "a\nb\n"

    b.banger("vm", "rm", "life")
    assert_nothing_left(b)


def test_two_vms_get_distinct_addresses_and_reach_each_other(b: Banger) -> None:
    for name in ("one", "two"):
        b.banger("vm", "create", "--name", name, "--init", "fast", "--start")
    try:
        ips = {
            n: json.loads(b.banger("vm", "show", n, "--json").stdout)["ip"] for n in ("one", "two")
        }
        assert ips["one"] != ips["two"]
        ping = b.banger("vm", "ssh", "one", "--", "ping", "-c", "1", "-W", "5", ips["two"])
        assert "1 received" in ping.stdout
        assert len(b.taps()) == 2
    finally:
        b.banger("vm", "rm", "one", "two")
    assert_nothing_left(b)


def test_a_broken_kernel_fails_naming_the_stage_and_leaves_nothing(b: Banger) -> None:
    # The real kernel with an initramfs that has no modules: it cannot find the
    # root disk, says so on the console and powers off.
    kernel = cached_debian_kernel()
    broken = b.home / "broken-initrd.img"
    build_initramfs(None, broken)
    broken.chmod(0o644)
    b.banger(
        "kernel", "import", str(kernel / "vmlinuz"), "--initrd", str(broken), "--name", "broken"
    )
    try:
        result = b.banger(
            "vm", "run", "--kernel", "broken", "--init", "fast", "--rm", "--", "true", check=False
        )
        assert result.returncode != 0
        assert "failed at stage wait_ssh" in result.stderr, result.stderr
        assert "console" in result.stderr
        assert "initramfs" in result.stderr or "vda" in result.stderr, result.stderr
        assert_nothing_left(b)
    finally:
        b.banger("kernel", "rm", "broken")


BAD = InvalidArgument.exit_code
MISSING = NotFound.exit_code
TAKEN = Conflict.exit_code


@pytest.mark.parametrize(
    ("args", "status", "needle"),
    [
        (["--name", "Bad_Name"], BAD, "name:"),
        (["--name", "-x"], BAD, "name:"),
        (["--image", "nope"], MISSING, "image:"),
        (["--kernel", "nope"], MISSING, "kernel:"),
        (["--cpus", "0"], BAD, "cpus:"),
        (["--cpus", "4096"], BAD, "cpus:"),
        (["--memory", "0"], BAD, "memory:"),
        (["--memory", "64T"], BAD, "memory:"),
        (["--name", "dup"], TAKEN, "name:"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(
    b: Banger, args: list[str], status: int, needle: str, dup: None
) -> None:
    result = b.banger("vm", "create", *args, check=False)
    assert_refusal(result, status, needle)
    assert_no_leftovers(b, [vm_kept(b, "dup")])


@pytest.fixture(scope="module")
def dup(b: Banger) -> Iterator[None]:
    """A stopped VM named ``dup`` (creating one boots nothing)."""
    b.banger("vm", "create", "--name", "dup", "--init", "fast")
    yield
    b.banger("vm", "rm", "dup")


def test_image_and_kernel_in_use_cannot_be_removed(b: Banger, dup: None) -> None:
    for kind in ("image", "kernel"):
        result = b.banger(kind, "rm", "debian-test" if kind == "kernel" else "debian-bookworm",
                          check=False)  # fmt: skip
        assert_refusal(result, TAKEN, "dup")


def test_listing_shows_the_seeded_artifacts(b: Banger) -> None:
    kernels = json.loads(b.banger("kernel", "list", "--json").stdout)
    assert [k["name"] for k in kernels if k["default"]] == ["debian-test"]
    images = json.loads(b.banger("image", "list", "--json").stdout)
    image = next(i for i in images if i["name"] == "debian-bookworm")
    assert image["default"] and Path(image["rootfs"]).is_file()
    assert set(image["init_modes"]) == {"systemd", "fast"}
