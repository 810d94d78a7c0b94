"""A hostile owner racing the root helper's filesystem ops (issue #16).

The attack that was reported: two concurrent ``image_pull`` requests; while
the second waits for the pull lock, the owner swaps ``<out_dir>/tmp`` and
then ``build-<id>`` (and its ``tree``) for symlinks, and root writes the
flattened layer — a setuid-root file among it — wherever they point.

Here the real op (``banger.helper.image_pull.image_pull``, in this root
process, as the helper runs it) flattens a layer of a few thousand files
with a setuid-root ``rootid-<token>`` in it, twice at a time, while the
owner (a throwaway user, :mod:`tests.reliability.owner_racer`) swaps every
path component it can for symlinks to decoy directories, round after round.
Whatever each op answers, nothing may be written outside the staging
directories, no ``rootid-<token>`` may appear outside them, the owner must
never get a write into root's stage, and what the helper hands over must be
deletable by the owner.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.errors import BangerError
from banger.helper import image_pull, rootstage, staging
from banger.helper.optable import op_specs, op_table
from banger.helper.validate import Context, RequestInvalid, validate_request
from tests.registry import Entry, directory, file, layer_tar
from tests.reliability.budget import examples, fuzz_settings
from tests.reliability_counts import ReliabilityCounts
from tests.support import User, needs_root, throwaway_user

pytestmark = [pytest.mark.root, needs_root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: Small files that make flatten take long enough to be raced.
FILLER_FILES = 2000


#: The helper's op table, as banger-helper builds it.
SPECS = op_specs(op_table(None))


@dataclass
class World:
    owner: User
    state: Path
    decoy: Path  # the owner's own directory
    victim: Path  # a root-owned directory the owner must never get root to write into
    token: str
    blob: bytes
    digest: str

    def pull_dir(self) -> Path:
        """What the daemon prepares: ``tmp/pull-<hex>`` with ``layers/`` and ``daemon.lock``."""
        out = self.state / "tmp" / f"pull-{secrets.token_hex(4)}"
        (out / image_pull.LAYERS_DIR).mkdir(parents=True)
        (out / image_pull.LAYERS_DIR / self.digest.removeprefix("sha256:")).write_bytes(self.blob)
        (out / image_pull.DAEMON_LOCK).touch()
        for path in (out, *out.rglob("*"), out.parent):
            os.chown(path, self.owner.uid, self.owner.gid)
        return out

    def as_owner(self, *argv: str) -> list[str]:
        return ["setpriv", f"--reuid={self.owner.uid}", f"--regid={self.owner.gid}",
                "--clear-groups", "--", *argv]  # fmt: skip


def layer(token: str) -> bytes:
    entries: list[Entry] = [
        directory("usr/sbin"),
        directory("usr/bin"),
        directory("lib/systemd"),
        # Enough for finalize to accept the tree without installing anything.
        directory("bin"),
        file("bin/sh", b"ELF", 0o755),
        file("usr/sbin/sshd", b"ELF", 0o755),
        file("usr/bin/tmux", b"ELF", 0o755),
        file("lib/systemd/systemd", b"ELF", 0o755),
        file(f"usr/local/bin/rootid-{token}", b"#!/bin/sh\nid -u\n", 0o4755),
        directory("srv/filler"),
    ]
    entries += [file(f"srv/filler/f{i}", b"x") for i in range(FILLER_FILES)]
    return layer_tar(entries)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    import hashlib

    with throwaway_user("bgr") as owner:
        state = owner.home / "state"
        decoy = owner.home / "decoy"
        for path in (state / "tmp", decoy):
            path.mkdir(parents=True)
        (decoy / "anchor").write_text("owner's\n")
        for path in (state, state / "tmp", decoy, decoy / "anchor"):
            os.chown(path, owner.uid, owner.gid)
        victim = Path(tempfile.mkdtemp(prefix="bg-victim-"))
        victim.chmod(0o755)
        token = secrets.token_hex(6)
        blob = layer(token)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        try:
            yield World(owner, state, decoy, victim, token, blob, digest)
        finally:
            shutil.rmtree(victim, ignore_errors=True)


def run_pull(w: World, out: Path) -> dict[str, Any] | str:
    """One ``image_pull`` as the helper runs it: validation, then the op.

    The daemon's side is played too: it holds ``daemon.lock`` while it waits.
    Returns the reply, or the one-line refusal.
    """
    request = {
        "id": 1,
        "op": image_pull.OP,
        "args": {
            "out_dir": str(out),
            "name": "raced",
            "source": f"127.0.0.1:5000/raced:1@{w.digest}",
            "layers": [w.digest],
            "config": {"Env": [], "WorkingDir": "/", "User": ""},
            "max_unpacked": 1 << 30,
        },
    }
    try:
        args = validate_request(Context((w.state,)), request, SPECS).args
        assert isinstance(args, image_pull.ImagePullArgs)
        with open(out / image_pull.DAEMON_LOCK, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return image_pull.image_pull(args, w.owner.uid)
    except (RequestInvalid, BangerError, OSError) as exc:
        text = str(getattr(exc, "message", exc))
        assert "\n" not in text
        return text


def owner_removes(w: World, path: Path) -> None:
    """The daemon deletes the staging directory as the owner: it must be able to."""
    subprocess.run(w.as_owner("rm", "-rf", "--", str(path)), check=False)
    assert not path.exists(), f"the owner cannot delete {path}: root left something in it"


def stray_copies(w: World) -> list[str]:
    """Every ``rootid-<token>`` file, and every setuid file, where the owner's symlinks
    could lead (its home, the victim, the shared temporary directories).

    Checked once the ops are over: by then the tree root flattened is gone
    (it lives on only inside the published rootfs.ext4), so any copy is a leak.
    """

    def find(*argv: str) -> list[str]:
        return subprocess.run(["find", *argv, "-print"], capture_output=True, text=True,
                              check=False).stdout.split()  # fmt: skip

    # Other tests (and other runs) keep image trees with setuid files under /tmp:
    # there only this test's token counts.
    return find(str(w.owner.home), str(w.victim), "-xdev", "(", "-name", f"rootid-{w.token}*",
                "-o", "-perm", "-4000", ")") + find(
        "/tmp", "/var/tmp", "-xdev", "-name", f"rootid-{w.token}*")  # fmt: skip


def assert_nothing_escaped(w: World) -> None:
    assert sorted(p.name for p in w.decoy.iterdir()) == ["anchor"]
    assert list(w.victim.iterdir()) == []
    assert stray_copies(w) == []


def test_two_pulls_raced_by_the_owner_write_nothing_outside_the_stage(
    world: World, reliability_counts: ReliabilityCounts
) -> None:
    w = world
    rounds = max(3, examples() // 6)
    successes, refusals, swaps = 0, [], 0
    for _ in range(rounds):
        outs = [w.pull_dir(), w.pull_dir()]
        stop = w.state.parent / f"stop-{secrets.token_hex(4)}"
        plan = w.owner.home / "plan.json"
        plan.write_text(json.dumps({
            "staging_dirs": [str(o) for o in outs],
            "decoys": [str(w.decoy), str(w.victim)],
            "stop_file": str(stop),
        }))  # fmt: skip
        racer = subprocess.Popen(
            w.as_owner(sys.executable, "-m", "tests.reliability.owner_racer", str(plan)),
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        results: dict[Path, dict[str, Any] | str] = {}

        def pull(out: Path, into: dict[Path, dict[str, Any] | str] = results) -> None:
            into[out] = run_pull(w, out)

        threads = [threading.Thread(target=pull, args=(o,)) for o in outs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.touch()
        report = json.loads(racer.communicate(timeout=60)[0])
        stop.unlink()
        assert report["stage_writes"] == 0, report  # root's stage took no owner write
        swaps += report["swaps"]
        for out, result in results.items():
            if isinstance(result, dict):
                successes += 1
                built = out / result["dir"] / "images" / result["id"]
                assert built.stat().st_uid == w.owner.uid
                assert {p.stat().st_uid for p in built.iterdir()} == {w.owner.uid}
            else:
                refusals.append(result)
        assert_nothing_escaped(w)
        for out in outs:
            owner_removes(w, out)
        reliability_counts.hostile(2)
    assert swaps > 0
    # The op did its work under attack, not only refuse: otherwise nothing was tested.
    assert successes >= 1, refusals


# -- a property: any component swapped at any moment ------------------------------------

#: What the owner can swap: paths relative to a staging directory (".." is its tmp/).
COMPONENTS = ["..", ".", "layers", "daemon.lock", "layers/<blob>", "root-*"]
KINDS = ["symlink-decoy", "symlink-victim", "owner-dir", "fifo", "rename-away"]


def swap(w: World, out: Path, component: str, kind: str) -> None:
    """Do, as the owner, one hostile change to ``component`` of ``out``."""
    if component == "root-*":
        stages = [p for p in out.glob("root-*")]
        if not stages:
            return
        target = stages[0]
    elif component == "layers/<blob>":
        target = out / "layers" / w.digest.removeprefix("sha256:")
    else:
        target = (out / component) if component != ".." else out.parent
    script = {
        "symlink-decoy": f"mv -T {target} {target}.aside; ln -s {w.decoy} {target}",
        "symlink-victim": f"mv -T {target} {target}.aside; ln -s {w.victim} {target}",
        "owner-dir": f"mv -T {target} {target}.aside; mkdir {target}",
        "fifo": f"mv -T {target} {target}.aside; mkfifo {target}",
        "rename-away": f"mv -T {target} {target}.aside",
    }[kind]
    subprocess.run(w.as_owner("sh", "-c", script), check=False, capture_output=True)


def undo(w: World, out: Path) -> None:
    """Put the owner's tmp/ back so the next example starts from a sane tree (as the owner)."""
    tmp = w.state / "tmp"
    if tmp.is_symlink() or not tmp.is_dir():
        subprocess.run(w.as_owner("sh", "-c", f"rm -rf {tmp}; mv -T {tmp}.aside {tmp}"),
                       check=False, capture_output=True)  # fmt: skip
    for aside in w.state.glob("tmp/*.aside"):
        owner_removes(w, aside)


@fuzz_settings()
@given(
    component=st.sampled_from(COMPONENTS),
    kind=st.sampled_from(KINDS),
    moment=st.sampled_from(["before-validation", "after-validation", "mid-op"]),
)
def test_any_component_swapped_at_any_moment_writes_nothing_outside(
    world: World, reliability_counts: ReliabilityCounts, component: str, kind: str, moment: str
) -> None:
    """image_pull with one component swapped by the owner before validation, between
    validation and use, or while the op runs (when its stage exists); and then
    remove_staging on what is left. Each may refuse (one line) or succeed."""
    w = world
    out = w.pull_dir()
    request = {"id": 1, "op": image_pull.OP, "args": {
        "out_dir": str(out), "name": "raced", "source": f"127.0.0.1:5000/r:1@{w.digest}",
        "layers": [w.digest], "config": {"Env": [], "WorkingDir": "/", "User": ""},
        "max_unpacked": 1 << 30}}  # fmt: skip
    if moment == "before-validation":
        swap(w, out, component, kind)
    result: dict[str, Any] | str
    try:
        args = validate_request(Context((w.state,)), request, SPECS).args
        assert isinstance(args, image_pull.ImagePullArgs)
        if moment == "after-validation":
            swap(w, out, component, kind)
        lock_path = out / image_pull.DAEMON_LOCK
        lock_fd = os.open(lock_path, os.O_RDONLY | os.O_NONBLOCK) if lock_path.is_file() else -1
        try:
            if lock_fd >= 0:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            done = threading.Event()
            if moment == "mid-op":

                def later() -> None:
                    while not done.is_set() and not list(out.glob("root-*")):
                        done.wait(0.001)
                    swap(w, out, component, kind)

                swapper = threading.Thread(target=later)
                swapper.start()
            try:
                result = image_pull.image_pull(args, w.owner.uid)
            finally:
                done.set()
                if moment == "mid-op":
                    swapper.join()
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)
    except (RequestInvalid, BangerError, OSError) as exc:
        result = str(getattr(exc, "message", exc))
        assert "\n" not in result
    reliability_counts.hostile()
    assert_nothing_escaped(w)
    # What the helper's reconciliation removes (a pull dir root may have left half done).
    undo(w, out)
    if out.is_dir() and not out.is_symlink():
        try:
            staging.remove_staging(
                staging.RemoveStagingArgs(out), w.owner.uid
            )  # the validated shape: tmp/pull-<8 hex>
        except BangerError as exc:
            assert "\n" not in exc.message
    assert_nothing_escaped(w)
    if out.exists() or out.is_symlink():
        owner_removes(w, out)


def test_the_stage_is_roots_until_handed_over_and_empty_after_a_failure(world: World) -> None:
    """While an op works the stage is root's, 0700; a failed op leaves it empty, the owner's."""
    w = world
    out = w.pull_dir()
    fd = rootstage.open_owner_dir(out, w.owner.uid, "out_dir")
    try:
        stage = rootstage.RootStage.create(fd, (w.owner.uid, w.owner.gid), out)
        with stage:
            assert stage.path.stat().st_uid == 0
            assert oct(stage.path.stat().st_mode & 0o777) == oct(0o700)
            (stage.path / "made-by-root").write_text("x")
        # A failed op (no hand_over): emptied and given to the owner.
        left = out / stage.name
        assert left.stat().st_uid == w.owner.uid and list(left.iterdir()) == []
    finally:
        os.close(fd)
    owner_removes(w, out)
