"""Pools of ready guests with real QEMU/TCG guests, through the CLI (issue #18 item 4).

One owner whose ``[[file_sync]]`` names ``~/token`` and who has a git identity.
``pool set p1 --size 2``: the filler boots a template guest, snapshots it and
restores a second; ``pool show`` says ready, ``vm list`` shows neither. Then the
host's token and git e-mail change, and ``vm create --pool p1 --name t1`` takes
a ready guest: it is running, answers as ``t1`` (hostname, /etc/hostname, its
DNS name through banger's resolver), holds the *new* token and e-mail (the
per-VM work is never stale), and the pool refills to two with guests of their
own addresses. ``vm run --pool p1 --rm`` runs a command in a taken guest and
leaves no VM. Refusals name their field and take nothing. Shrinking retires a
guest; a change of vCPUs replaces the template and every guest; ``pool rm``
leaves only the owner's VM. Last, bangerd killed -9 while it restores a pool's
second guest: the next start rolls the half-made guest back and the pool fills
again, leaving nothing behind, and the taken VM answers as before; a ready
guest whose QEMU is killed is replaced. In
between, the taken VM does what a booted one does: sessions, stats, workspace
prepare/export, a snapshot and its restore, a fork and a fork of that fork.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from banger.daemon.pools.service import REFILL_AFTER_TAKE
from banger.daemon.stage_delay import MARKER
from banger.errors import InvalidArgument, NotFound
from tests.e2e.census import census
from tests.e2e.harness import Banger, banger_env, js, seed_artifacts
from tests.e2e.leftovers import assert_nothing_left, vm_kept
from tests.image_cache import cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.reliability.faults import (
    DAEMON_LOG,
    STAGE_DELAY_ENV,
    kill9_daemon,
    log_offset,
    reconcile_report,
    restart_daemon,
    start_daemon,
)
from tests.support import assert_refusal, needs_root, wait_until

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

#: A fill boots one guest cold and restores the rest: minutes under emulation and load.
FILL_TIMEOUT = 1800.0
EMAIL_BEFORE = "pool-owner@example.test"
EMAIL_AFTER = "pool-owner-2@example.test"
#: Seconds the daemon holds a restored guest before re-identifying it (fault test only).
HOLD = 60


@dataclass
class Env:
    b: Banger
    home: Path


def as_owner(b: Banger, script: str) -> None:
    """A shell script run as the owner in their home (host side)."""
    argv = b.as_owner(["env", "-C", str(b.user.home), "sh", "-ec", script])
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with banger_env(seed=False) as b:
        home = b.user.home
        as_owner(
            b,
            "git config --global user.name 'Pool Owner'\n"
            f"git config --global user.email '{EMAIL_BEFORE}'\n"
            "printf 'v1\\n' > token\n",
        )
        config = b.home / "config"
        config.mkdir(mode=0o700, exist_ok=True)
        (config / "config.toml").write_text('[[file_sync]]\nhost = "~/token"\nguest = "~/.token"\n')
        for path in (config, config / "config.toml"):
            os.chown(path, b.user.uid, b.user.gid)
        seed_artifacts(b, cached_debian_kernel(), cached_debian_image())
        yield Env(b, home)


def guest(b: Banger, vm: str, script: str) -> list[str]:
    return b.banger("vm", "exec", vm, "--", "sh", "-c", script, timeout=300).stdout.splitlines()


def at(stamp: str) -> float:
    """An API timestamp as epoch seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def wait_ready(b: Banger, pool: str, size: int, what: str) -> dict[str, Any]:
    """The pool's filler is done: ``size`` guests ready (a failed fill fails the test)."""

    def done() -> dict[str, Any]:
        shown: dict[str, Any] = js(b, "pool", "show", pool)
        assert shown["state"] != "failed", shown
        return shown if shown["state"] == "ready" and len(shown["ready"]) == size else {}

    return wait_until(done, FILL_TIMEOUT, what)


def test_a_pool_hands_out_ready_guests_made_the_owners(env: Env) -> None:
    b = env.b
    made = js(b, "pool", "set", "p1", "--size", "2", "--init", "fast")
    assert (made["name"], made["size"], made["init"]) == ("p1", 2, "fast"), made
    pool = wait_ready(b, "p1", 2, "pool p1 filled to 2")
    first_ready = set(pool["ready"])
    assert pool["template"] and pool["template"].startswith("pool.p1."), pool
    # Ready guests are the pool's, not the owner's: vm list does not show them.
    assert js(b, "vm", "list") == []
    assert [p["name"] for p in js(b, "pool", "list")] == ["p1"]

    # The host side changes after the template was made: a take must not be stale.
    as_owner(b, f"printf 'v2\\n' > token\ngit config --global user.email '{EMAIL_AFTER}'\n")

    # Refusals: one line naming the field, nothing taken.
    refusals: list[tuple[tuple[str, ...], int, str]] = [
        (("vm", "create", "--pool", "p1", "--cpus", "2"), InvalidArgument.exit_code, "--pool"),
        (("vm", "create", "--pool", "nosuch"), NotFound.exit_code, "pool: no pool named"),
        (("vm", "create", "--pool", "p1", "--name", "Bad_Name"), 2, "name: 'Bad_Name'"),
        (("pool", "set", "p1", "--size", "17"), 2, "size: must be 0-16, got 17"),
    ]
    for args, code, says in refusals:
        assert_refusal(b.banger(*args, check=False), code, says)
    assert set(js(b, "pool", "show", "p1")["ready"]) == first_ready

    taken = b.banger("vm", "create", "--pool", "p1", "--name", "t1")
    assert "▸ take" in taken.stderr, taken.stderr  # no boot: the take's own stages
    shown = js(b, "vm", "show", "t1")
    assert shown["state"] == "running", shown
    assert [vm["name"] for vm in js(b, "vm", "list")] == ["t1"]
    domain = "banger"
    said = guest(
        b,
        "t1",
        "hostname; cat /etc/hostname; cat /root/.token; git config --global user.email; "
        f"getent hosts t1.{domain} | cut -d' ' -f1",
    )
    assert said == ["t1", "t1", "v2", EMAIL_AFTER, shown["ip"]], said
    # The template's held connection (sshd's processes, banger's runner) was ended in
    # the restored guest: one runner, its own; sshd serves t1's address only.
    assert census(b, "t1") == (1, [shown["ip"]])
    # The hostname went over the ready guest's held SSH connection, not the agent's
    # guest-exec (a tenth of a second against half of one).
    take = [o for o in js(b, "ops", "list", "--all") if o["target"] == "t1"][-1]
    events = b.banger("ops", "show", take["id"], "--follow", "--json").stdout
    assert "guest hostname t1 (over the held SSH connection)" in events, events

    # The pool refills to two, with guests other than the taken one, each its own address.
    refilled = wait_ready(b, "p1", 2, "pool p1 refilled after the take")
    # ... and the refill started no sooner than REFILL_AFTER_TAKE after the take.
    taken_at = at(take["created_at"])
    fills = [o for o in js(b, "ops", "list", "--all")
             if o["kind"] == "pool.fill" and at(o["created_at"]) > taken_at]  # fmt: skip
    assert fills, "no refill after the take"
    first_fill = min(at(o["created_at"]) for o in fills)
    assert first_fill - taken_at >= REFILL_AFTER_TAKE, (fills, take)
    assert len(set(refilled["ready"]) & first_ready) == 1, (refilled, first_ready)
    addresses = {shown["ip"]} | {js(b, "vm", "show", n)["ip"] for n in refilled["ready"]}
    assert len(addresses) == 3, addresses

    # vm run --pool --rm: the command runs in a taken guest, and no VM outlives it.
    ran = b.banger(
        "vm", "run", "--pool", "p1", "--rm", "--", "cat", "/etc/hostname", "/root/.token"
    )
    name, token = ran.stdout.split()
    assert token == "v2" and not name.startswith("p1-pool-"), ran.stdout
    assert re.fullmatch(r"[a-z0-9-]+", name), name
    assert [vm["name"] for vm in js(b, "vm", "list")] == ["t1"]
    wait_ready(b, "p1", 2, "pool p1 refilled after vm run --pool --rm")

    # Shrinking retires a guest; a change of vCPUs makes a new template and new guests.
    b.banger("pool", "set", "p1", "--size", "1")
    shrunk = wait_ready(b, "p1", 1, "pool p1 shrunk to 1")
    old_template = shrunk["template"]
    cpus = 1 if shrunk["vcpus"] != 1 else 2  # a real change whatever the default was
    b.banger("pool", "set", "p1", "--cpus", str(cpus))
    changed = wait_ready(b, "p1", 1, f"pool p1 remade with {cpus} vCPUs")
    assert changed["template"] != old_template, (changed, old_template)
    assert js(b, "vm", "show", changed["ready"][0])["vcpus"] == cpus
    # That template was provisioned with the host as it is now: a take writes nothing
    # over SSH, and the guest holds the current token all the same.
    b.banger("vm", "create", "--pool", "p1", "--name", "t3")
    take = [o for o in js(b, "ops", "list", "--all") if o["target"] == "t3"][-1]
    events = b.banger("ops", "show", take["id"], "--follow", "--json").stdout
    assert "unchanged since the guest was made" in events, events
    assert guest(b, "t3", "cat /root/.token; git config --global user.email") == [
        "v2",
        EMAIL_AFTER,
    ]
    b.banger("vm", "rm", "t3")
    wait_ready(b, "p1", 1, "pool p1 refilled after t3")
    snapshots = [s["name"] for s in js(b, "vm", "snapshots")]
    assert snapshots == [changed["template"]], snapshots

    # pool rm: its guests and template go; the owner's VM stays.
    b.banger("pool", "rm", "p1")
    assert js(b, "pool", "list") == []
    assert js(b, "vm", "snapshots") == []
    assert [vm["name"] for vm in js(b, "vm", "list")] == ["t1"]
    assert_nothing_left(b, [vm_kept(b, "t1")])
    assert js(b, "vm", "show", "t1")["state"] == "running"


def test_a_taken_guest_does_everything_a_booted_one_does(env: Env) -> None:
    """t1 (taken from p1 above) with sessions, stats, workspace prepare/export, a
    snapshot and its restore, a fork and a fork of the fork (#18 item 5)."""
    b = env.b
    b.banger("session", "start", "t1", "--name", "s", "--", "sh", "-c", "echo hi; sleep 100000")
    assert {s["name"]: s["state"] for s in js(b, "session", "list", "t1")} == {"s": "running"}
    stats = js(b, "vm", "stats", "t1")
    assert stats["guest_error"] is None and stats["guest"]["cpus"] >= 1, stats

    as_owner(
        b,
        "git init -q -b main repo && cd repo && echo one > f && git add f && git commit -qm init",
    )
    repo = str(env.home / "repo")
    b.banger("workspace", "prepare", "t1", repo)
    guest(b, "t1", "cd /root/repo && echo two >> f && git commit -qam 'from the guest'")
    b.banger("workspace", "export", "t1", repo)
    as_owner(b, "git -C repo log --format=%s banger/t1 | grep -qx 'from the guest'")

    b.banger("vm", "snapshot", "t1", "--name", "t1-snap")
    b.banger("vm", "create", "t1r", "--from-snapshot", "t1-snap")
    assert guest(b, "t1r", "hostname; cat /root/repo/f") == ["t1r", "one", "two"]
    forked = js(b, "vm", "fork", "t1", "--name", "tf")["children"]
    assert [c["name"] for c in forked] == ["tf-1"], forked
    again = js(b, "vm", "fork", "tf-1", "--name", "tg")["children"]
    assert [c["name"] for c in again] == ["tg-1"], again
    for name in ("tf-1", "tg-1"):
        assert guest(b, name, "hostname; cat /root/.token") == [name, "v2"]
        assert {s["name"]: s["state"] for s in js(b, "session", "list", name)} == {"s": "running"}
    b.banger("vm", "rm", "t1r", "tf-1", "tg-1")
    b.banger("vm", "snapshot-rm", "t1-snap")
    assert js(b, "vm", "snapshots") == []
    assert guest(b, "t1", "hostname") == ["t1"]
    assert_nothing_left(b, [vm_kept(b, "t1")])


def test_a_killed_bangerd_mid_refill_leaves_whole_guests_only(env: Env) -> None:
    b = env.b
    kept = [vm_kept(b, "t1")]
    restart_daemon(b, **{STAGE_DELAY_ENV: f"reidentify:{HOLD}"})
    offset = log_offset(b)
    b.banger("pool", "set", "p2", "--size", "2", "--init", "fast")
    wait_until(lambda: holds(b, offset) >= 1, FILL_TIMEOUT, "pool p2's second guest held")
    kill9_daemon(b)
    start_daemon(b)  # no hold this time
    report = reconcile_report(b)
    assert any("p2-pool-" in line for line in report["repaired"]), report
    pool = wait_ready(b, "p2", 2, "pool p2 filled after bangerd was killed mid-restore")
    # The owner's VM from a pool came through the crash: re-attached, answering.
    assert guest(b, "t1", "hostname") == ["t1"]
    # A ready guest made before the restart has no held SSH connection (a new login
    # costs a key exchange): a take renames the oldest, that one, through the agent.
    b.banger("vm", "create", "--pool", "p2", "--name", "t2")
    take = [o for o in js(b, "ops", "list", "--all") if o["target"] == "t2"][-1]
    events = b.banger("ops", "show", take["id"], "--follow", "--json").stdout
    assert "guest hostname t2 (through the guest agent)" in events, events
    assert guest(b, "t2", "hostname; cat /etc/hostname") == ["t2", "t2"]
    b.banger("vm", "rm", "t2")
    pool = wait_ready(b, "p2", 2, "pool p2 refilled after t2")
    # A ready guest whose QEMU dies is replaced (the VMM watch wakes the pool).
    dead = pool["ready"][0]
    os.kill(int(js(b, "vm", "show", dead)["pid"]), signal.SIGKILL)

    def replaced() -> dict[str, Any]:
        shown = wait_ready(b, "p2", 2, "pool p2 full")
        return shown if dead not in shown["ready"] else {}

    pool = wait_until(replaced, FILL_TIMEOUT, f"pool p2's dead guest {dead} replaced")
    assert_nothing_left(b, kept + [vm_kept(b, name) for name in pool["ready"]])
    b.banger("pool", "rm", "p2")
    assert js(b, "vm", "snapshots") == []
    assert_nothing_left(b, kept)


def holds(b: Banger, offset: int) -> int:
    """How many times, since ``offset``, the daemon held a guest before re-identifying it."""
    text = (b.state_dir / DAEMON_LOG).read_bytes()[offset:].decode(errors="replace")
    return sum(MARKER in line and "reidentify" in line for line in text.splitlines())
