"""Images end to end: pull from a real registry, bundles, promote, rm — booted for real.

One seeded installation (namespace, owner, helper, daemon; tests/e2e/harness)
and one ``docker-registry`` started *inside* that namespace (the daemon and
the helper live there, and the namespace's loopback is its own) are shared by
the module. Images are built here as OCI layouts: the base layer is the
cached test image's tree (bootable: systemd, sshd, tmux, banger's fast init),
the layers above add whiteouts, an opaque directory, a hard link across
layers, a setuid file, a file capability and files owned by another user.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import suppress
from pathlib import Path

import pytest

from banger.errors import Conflict, InvalidArgument
from banger.images.bundle import BundleCorrupt
from tests.e2e.harness import REPO, Banger, banger_env
from tests.e2e.oci_images import base_layer_tar, push, registry_in
from tests.registry import (
    CAP_NET_RAW_EP,
    Entry,
    LocalRegistry,
    directory,
    file,
    file_digest,
    hardlink,
    opaque,
    symlink,
    whiteout,
)
from tests.registry import write_layout as build_layout
from tests.reliability.faults import kill9_helper, restart_helper, stop_daemon
from tests.support import VENV_BIN, assert_refusal, needs_root, wait_until

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

LOWER = [
    directory("etc/banger-test"),
    file("etc/banger-test/keep", b"keep\n"),
    file("etc/banger-test/deleted", b"bye\n"),
    directory("srv/data"),
    file("srv/data/lower-only", b"lower\n"),
    file("usr/local/bin/suid-tool", b"#!/bin/sh\necho suid\n", 0o4755),
    file(
        "usr/local/bin/capped",
        b"#!/bin/sh\necho cap\n",
        0o755,
        xattrs={"security.capability": CAP_NET_RAW_EP},
    ),
    file("usr/local/lib/big.so", b"L" * 4096),
    directory("home/dev", 0o750, uid=1000, gid=1000),
    file("home/dev/notes", b"notes\n", 0o640, uid=1000, gid=1000),
]
UPPER = [
    whiteout("etc/banger-test/deleted"),
    whiteout("etc/motd"),  # a file of the base layer
    directory("srv/data"),
    opaque("srv/data"),
    file("srv/data/upper", b"upper\n"),
    opaque("usr/share/doc/bash"),  # a directory of the base layer, replaced
    file("usr/share/doc/bash/README.banger", b"replaced\n"),
    hardlink("usr/local/lib/big-link.so", "usr/local/lib/big.so"),
]
CONFIG = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "APP_MODE=e2e"], "WorkingDir": "/srv",
          "User": "root"}  # fmt: skip


# -- building and serving images -------------------------------------------------------
def write_layout(
    layout: Path, base_tar: Path | None, layers: Sequence[Sequence[Entry]], tag: str = "v1"
) -> list[str]:
    """An OCI layout: ``base_tar`` (an uncompressed tar file, moved in) then ``layers``;
    the layer digests. The suite's one writer (tests.registry) with this module's config."""
    built = build_layout(layout, layers, tag=tag, config=CONFIG, base_tar=base_tar)
    return built.layer_digests


# -- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bgi-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", "--", str(path)], check=False)


@pytest.fixture(scope="module")
def registry(b: Banger, work: Path) -> Iterator[LocalRegistry]:
    with registry_in(b, work / "registry") as reg:
        yield reg


@pytest.fixture(scope="module")
def features_ref(b: Banger, registry: LocalRegistry, work: Path) -> tuple[str, list[str]]:
    """A bootable four-layer image in the registry: (reference, layer digests)."""
    layout = work / "features"
    digests = write_layout(layout, base_layer_tar(work / "base.tar"), [LOWER, UPPER])
    return push(b, registry, layout, "test/features"), digests


# -- helpers --------------------------------------------------------------------------
def images(b: Banger) -> dict[str, dict[str, object]]:
    return {i["name"]: i for i in json.loads(b.banger("image", "list", "--json").stdout)}


def pull_leftovers(b: Banger) -> list[str]:
    """Everything under the owner's tmp dir and the OCI cache's per-pull layouts."""
    found = []
    for d in (b.state_dir / "tmp", b.home / "cache" / "oci" / "pulls"):
        if d.is_dir():
            found += [str(p) for p in d.iterdir()]
    return found


def guest(b: Banger, vm: str, script: str) -> str:
    return b.banger("vm", "ssh", vm, "--", "sh", "-c", script).stdout


def debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


# -- tests ----------------------------------------------------------------------------
def test_pull_boots_with_oci_semantics_and_rm_is_refused_while_used(
    b: Banger, features_ref: tuple[str, list[str]]
) -> None:
    ref, _digests = features_ref
    pulled = b.banger("image", "pull", ref, "--json")
    info = json.loads(pulled.stdout)
    assert info["name"] == "test-features-v1"
    assert info["digest"] and info["source"] == f"{ref}@{info['digest']}"
    assert info["config"] == CONFIG
    assert info["rootfs_size"] > 0 and info["work_seed_size"] > 0 and info["created_at"]
    shown = b.banger("image", "show", "test-features-v1").stdout
    assert "APP_MODE=e2e" in shown and "WorkingDir" not in shown.splitlines()[0]
    assert "working dir" in shown and "/srv" in shown and info["digest"] in shown
    assert pull_leftovers(b) == []
    # The file capability is in the published ext4 (the guest may lack getcap).
    rootfs = Path(info["rootfs"])
    assert "security.capability" in debugfs(rootfs, "ea_list /usr/local/bin/capped")

    b.banger("vm", "create", "--name", "oci", "--image", "test-features-v1", "--init", "fast",
             "--start")  # fmt: skip
    try:
        checks = guest(b, "oci", "; ".join([
            "test ! -e /etc/banger-test/deleted && echo deleted-gone",
            "test ! -e /etc/motd && echo base-file-gone",
            "cat /etc/banger-test/keep",
            "ls /srv/data | tr '\\n' ' '; echo",
            "ls /usr/share/doc/bash | tr '\\n' ' '; echo",
            "stat -c '%a %u:%g' /usr/local/bin/suid-tool /home/dev/notes /home/dev",
            "stat -c '%i %h' /usr/local/lib/big.so /usr/local/lib/big-link.so",
        ])).splitlines()  # fmt: skip
        assert checks[:5] == ["deleted-gone", "base-file-gone", "keep", "upper ",
                              "README.banger "]  # fmt: skip
        assert checks[5:8] == ["4755 0:0", "640 1000:1000", "750 1000:1000"]
        (ino1, links1), (ino2, links2) = (line.split() for line in checks[8:10])
        assert ino1 == ino2 and links1 == links2 == "2"

        refused = b.banger("image", "rm", "test-features-v1", check=False)
        assert "oci" in assert_refusal(refused, Conflict.exit_code, "used by")
        assert "test-features-v1" in images(b)
    finally:
        b.banger("vm", "rm", "--force", "oci")
    b.banger("image", "rm", "test-features-v1")
    assert "test-features-v1" not in images(b)
    assert not rootfs.parent.exists()


def test_hostile_layer_is_refused_through_the_cli(
    b: Banger, registry: LocalRegistry, work: Path
) -> None:
    sentinel = Path(tempfile.mkdtemp(prefix="bgi-sentinel-", dir=work))
    sentinel.chmod(0o777)
    layout = work / "hostile"
    digests = write_layout(layout, None, [[file("bin/sh", b"#!fake\n", 0o755)],
                                          [symlink("etc/evil", str(sentinel))],
                                          [file("etc/evil/pwned", b"x")]])  # fmt: skip
    ref = push(b, registry, layout, "test/hostile")
    result = b.banger("image", "pull", ref, "--name", "hostile", check=False)
    # bad input, not a helper fault (#22 item 5)
    assert_refusal(result, InvalidArgument.exit_code, digests[2])
    assert list(sentinel.iterdir()) == []
    assert "hostile" not in images(b)
    assert pull_leftovers(b) == []
    assert not (b.state_dir / "images").exists() or all(
        (p / "image.json").is_file() for p in (b.state_dir / "images").iterdir()
    )


def test_promote_keeps_root_and_work_disk_changes(b: Banger) -> None:
    b.banger("vm", "create", "--name", "src", "--init", "fast", "--start")
    try:
        guest(b, "src", "echo from-root > /etc/promoted-marker; echo from-work > /root/marker")
        refused = b.banger("image", "promote", "src", "promoted", check=False)
        assert_refusal(refused, Conflict.exit_code, "promote needs it stopped", hint="vm stop src")
        b.banger("vm", "stop", "src")
        info = json.loads(b.banger("image", "promote", "src", "promoted", "--with-work-disk",
                                   "--json").stdout)  # fmt: skip
        assert info["source"] == "vm:src"
        seed = Path(info["work_seed"])
        assert debugfs(seed, "cat /marker").strip() == "from-work"
        assert "authorized_keys" not in debugfs(seed, "ls -l /.ssh")
        assert "ssh_host" not in debugfs(seed, "ls -l /.banger")
        plain = json.loads(b.banger("image", "promote", "src", "promoted-root", "--json").stdout)
    finally:
        b.banger("vm", "rm", "--force", "src")
    b.banger("vm", "create", "--name", "dst", "--image", "promoted", "--init", "fast", "--start")
    try:
        out = guest(b, "dst", "cat /etc/promoted-marker /root/marker")
        assert out == "from-root\nfrom-work\n"
    finally:
        b.banger("vm", "rm", "--force", "dst")
    ran = b.banger(
        "vm",
        "run",
        "--image",
        plain["name"],
        "--init",
        "fast",
        "--rm",
        "--",
        "sh",
        "-c",
        "cat /etc/promoted-marker; test -e /root/marker || echo no-work",
    )
    assert ran.stdout == "from-root\nno-work\n"
    b.banger("image", "rm", "promoted", "promoted-root")
    assert pull_leftovers(b) == []


def test_bundle_round_trip_between_two_homes(b: Banger, work: Path) -> None:
    outdir = Path(tempfile.mkdtemp(prefix="bgi-bundles-", dir=work))
    outdir.chmod(0o777)
    bundle = outdir / "img.bundle"
    b.banger("image", "export", "debian-bookworm", "-o", str(bundle))
    assert bundle.is_file() and not [p for p in outdir.iterdir() if p.name.endswith(".partial")]
    source = json.loads(b.banger("image", "show", "debian-bookworm", "--json").stdout)
    bundle.chmod(0o644)
    corrupt = outdir / "corrupt.bundle"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x10
    corrupt.write_bytes(bytes(data))
    corrupt.chmod(0o644)
    with banger_env(seed=False) as other:
        bad = other.banger("image", "pull", f"bundle:{corrupt}", check=False)
        assert_refusal(bad, BundleCorrupt.exit_code, "is corrupt or incomplete")
        assert images(other) == {} and pull_leftovers(other) == []
        got = json.loads(other.banger("image", "pull", f"bundle:{bundle}", "--json").stdout)
        assert got["name"] == "debian-bookworm" and got["source"] == f"bundle:{bundle}"
        for key in ("rootfs", "work_seed"):
            assert file_digest(Path(got[key])) == file_digest(Path(source[key]))
        assert pull_leftovers(other) == []


def pull_until_flattening(b: Banger, ref: str, name: str) -> subprocess.Popen[str]:
    """``image pull`` in the background, returned while the helper flattens its layers."""
    pull = subprocess.Popen(b.as_owner([str(VENV_BIN / "banger"), "image", "pull", ref,
                                        "--name", name]),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip

    def flattening() -> bool:
        # The helper's progress log says it applies a layer: flatten has begun, and
        # every later progress line (finalize, mkfs, publish) is still ahead of it.
        assert pull.poll() is None, "the pull ended before the helper flattened"
        for log in (b.state_dir / "tmp").glob("pull-*/progress.log"):
            with suppress(FileNotFoundError):
                if "applying layer" in log.read_text():
                    return True
        return False

    try:
        wait_until(flattening, 300, "the helper flattening the pulled layers")
    except BaseException:
        pull.kill()
        pull.communicate()
        raise
    return pull


def test_daemon_killed_mid_pull_leaves_no_image_and_no_temp_files(
    b: Banger, features_ref: tuple[str, list[str]]
) -> None:
    ref, _ = features_ref
    pull = pull_until_flattening(b, ref, "killed")
    try:
        daemon_pid = int((b.runtime_dir / "bangerd.pid").read_text().split()[0])
        os.kill(daemon_pid, signal.SIGKILL)
    finally:
        pull.kill()
        pull.communicate()
    # The next command starts a new daemon: no half image, and the helper's
    # directory goes once the helper has noticed and let go.
    assert "killed" not in images(b)
    with suppress(AssertionError):  # the assert below names what stayed
        wait_until(lambda: not pull_leftovers(b), 180, "the killed pull's files removed")
    assert pull_leftovers(b) == []
    assert "killed" not in images(b)
    # The helper noticed the daemon's lock was released and dropped its work.
    assert "the daemon that asked for this pull is gone" in (b.state_dir / "helper.log").read_text()
    assert not any(
        json.loads((p / "image.json").read_text())["name"] == "killed"
        for p in (b.state_dir / "images").iterdir()
    )
    # The helper is fine: the same image pulls cleanly now.
    assert json.loads(b.banger("image", "pull", ref, "--name", "again", "--json").stdout)
    b.banger("image", "rm", "again")


def test_helper_killed_mid_pull_leaves_nothing_after_a_restart(
    b: Banger, features_ref: tuple[str, list[str]]
) -> None:
    """The helper dies inside flatten: root's half tree stays until the restarted pair cleans."""
    ref, _ = features_ref
    pull = pull_until_flattening(b, ref, "helperless")
    try:
        kill9_helper(b)
        _out, err = pull.communicate(timeout=120)
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.wait()
    assert pull.returncode != 0 and "helper" in err and "Traceback" not in err, err
    assert "helperless" not in images(b)
    # The owner's daemon could not delete root's half-flattened tree.
    [left] = list((b.state_dir / "tmp").glob("pull-*"))
    assert any(p.lstat().st_uid == 0 for p in left.rglob("*")), "no root-owned leftovers"

    restart_helper(b)
    stop_daemon(b)  # the next command starts a daemon; its reconciliation asks the helper
    assert "helperless" not in images(b)
    assert pull_leftovers(b) == []
    repaired = json.loads((b.state_dir / "reconcile.json").read_text())["repaired"]
    assert f"tmp/{left.name}: removed by the helper (root's files of an interrupted image op)" in (
        repaired
    ), repaired
    assert json.loads(b.banger("image", "pull", ref, "--name", "again", "--json").stdout)
    b.banger("image", "rm", "again")


# -- a foreign image ------------------------------------------------------------------
def finalized_minbase() -> Path:
    """The cached Debian minbase tree (no systemd/sshd/tmux) after banger's foreign
    finalize installed them with apt in a chroot, cached; built on the host because
    apt needs the mirror and the test namespace has no uplink."""
    import fcntl

    from banger.images.foreign import finalize_foreign
    from tests.image_cache import CACHE_ROOT, cached_minbase

    minbase = cached_minbase()
    key = hashlib.sha256((REPO / "src/banger/images/foreign.py").read_bytes()).hexdigest()[:12]
    target = CACHE_ROOT / f"{minbase.parent.name}-foreign-{key}"
    with open(CACHE_ROOT / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "tree/usr/sbin/sshd").is_file():
            staging = Path(tempfile.mkdtemp(prefix="foreign-", dir=CACHE_ROOT))
            try:
                subprocess.run(["cp", "-a", "--no-target-directory", str(minbase),
                                str(staging / "tree")], check=True)  # fmt: skip
                assert finalize_foreign(staging / "tree")  # it installed something
                subprocess.run(["rm", "-rf", "--", str(target)], check=True)
                staging.rename(target)
            finally:
                subprocess.run(["rm", "-rf", "--", str(staging)], check=False)
    return target / "tree"


def test_foreign_minbase_image_finalized_by_banger_boots(
    b: Banger, registry: LocalRegistry, work: Path
) -> None:
    tree = finalized_minbase()
    base = work / "foreign.tar"
    subprocess.run(["tar", "-C", str(tree), "--numeric-owner", "--xattrs", "--xattrs-include=*",
                    "--format=posix", "-cf", str(base), "--", *sorted(os.listdir(tree))],
                   check=True)  # fmt: skip
    ref = push(b, registry, write_layout_dir(work / "foreign", base), "test/minbase")
    info = json.loads(b.banger("image", "pull", ref, "--name", "foreign", "--json").stdout)
    assert info["name"] == "foreign"
    ran = b.banger("vm", "run", "--image", "foreign", "--init", "fast", "--rm", "--", "sh", "-c",
                   "dpkg-query -W -f='${Status}\\n' openssh-server tmux systemd-sysv")  # fmt: skip
    assert ran.stdout.splitlines() == ["install ok installed"] * 3
    b.banger("image", "rm", "foreign")
    assert pull_leftovers(b) == []


def write_layout_dir(layout: Path, base: Path) -> Path:
    write_layout(layout, base, [])
    return layout
