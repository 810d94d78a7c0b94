"""8. Per-command latency on a running VM: ``vm exec``, the client library, a fresh ``ssh``.

One VM (fast init) in the e2e harness, interleaved round by round:

- ``banger vm exec NAME -- true``: the CLI as the owner in the namespace (its
  start-up, the exec WebSocket, bangerd's held connection);
- the Python SDK, ``vm.run(["true"])`` (over ``BangerClient.exec``), timed inside one
  long-lived Python process of the owner (what a program driving sandboxes
  pays per command);
- a fresh ``ssh … true`` with banger's key and pinned host key (what every
  guest command cost before issue #17: key exchange, sshd re-exec, session);
- the sshd floor: one channel running the daemon's own script for ``true`` on
  an asyncssh connection that is already open (a long-lived root process in
  the namespace, no daemon, no WebSocket): the guest's sshd session, its login
  shell and the exec. The best any sshd session per command can do, kept as
  the reference since execs moved to the runner;
- the runner floor: ``true`` through banger's command runner
  (:mod:`banger.daemon.runner`) on a connection and runner already started,
  from the same kind of process. What the library case costs above it is
  banger's (client, socket, daemon); the floor itself is a frame each way and
  the runner's spawn of ``true`` in the guest.

Both CLI cases pay the same ``ip netns exec``/``setpriv`` wrapper.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.e2e.harness import banger_env
from tests.support import VENV_BIN

from banger.guest.ssh import SSHTarget, ssh_argv
from bench.context import BenchContext
from bench.guests import banger_paths, timed_cli, vm_row
from bench.model import BenchResult, Measurement, Ratio, Target
from bench.stats import median, ratio
from bench.timing import interleaved

NAME = "exec_latency"
TITLE = "8. Per-command latency on a running VM (vm exec, SDK, fresh ssh)"
VM = "lat"
#: the issue's goal: the library call at least this many times faster than a fresh ssh
LIBRARY_GOAL = 10.0
#: library calls per round (one process; the first of each round is not counted)
CALLS = 5

#: A long-lived owner process: one line in ("go"), CALLS timings out (JSON), until EOF.
LIBRARY_LOOP = f"""
import json, sys, time
from banger.sdk import Banger
vm = Banger().get({VM!r})
vm.run(["true"])  # warm: imports, first connection
for _ in sys.stdin:
    times = []
    for _ in range({CALLS}):
        start = time.perf_counter()
        result = vm.run(["true"])
        times.append(time.perf_counter() - start)
        assert result.exit_code == 0, result
    print(json.dumps(times), flush=True)
"""

#: The same loop over one held asyncssh connection, without bangerd (argv: ip, known_hosts, key).
CHANNEL_LOOP = f"""
import asyncio, json, sys, time
from pathlib import Path
from banger.daemon.guestexec import ExecSpec
from banger.guest.ssh import SSHTarget, connect
SCRIPT = ExecSpec(["true"]).script("0" * 32)
async def main():
    target = SSHTarget(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
    conn = await connect(target, 60)
    await conn.run(SCRIPT, check=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        times = []
        for _ in range({CALLS}):
            start = time.perf_counter()
            await conn.run(SCRIPT, check=True)
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)
    conn.close()
asyncio.run(main())
"""
FLOOR = "sshd floor: one channel on an open connection"

#: The same loop through the guest's runner on a held connection, without bangerd.
RUNNER_LOOP = f"""
import asyncio, json, sys, time
from pathlib import Path
from banger.daemon.runner import RunnerChannel
from banger.guest import runner_guest as proto
from banger.guest.ssh import SSHTarget, connect
async def once(runner):
    rx = await runner.open(["true"], mark="0" * 32)
    rx.write_eof()
    while await rx.read(proto.STDOUT):
        pass
    while await rx.read(proto.STDERR):
        pass
    await rx.wait()
    assert rx.exit_code == 0, (rx.exit_code, rx.signal, rx.lost)
async def main():
    target = SSHTarget(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
    conn = await connect(target, 60)
    runner = await RunnerChannel.start("bench", conn)
    await once(runner)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        times = []
        for _ in range({CALLS}):
            start = time.perf_counter()
            await once(runner)
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)
    conn.close()
asyncio.run(main())
"""
RUNNER_FLOOR = "runner floor: true through the runner on an open connection"


@contextmanager
def loop_process(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A long-lived process answering each "go" line with a JSON list of timings."""
    child = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield child
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(60)


def batch(child: subprocess.Popen[str], into: list[float]) -> float:
    """One round of a :func:`loop_process`: its timings go to ``into``; their median."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    line = child.stdout.readline()
    if not line:
        raise RuntimeError("the timing process ended")
    times = [float(t) for t in json.loads(line)]
    into.extend(times)
    return median(times)


def run(ctx: BenchContext) -> BenchResult:
    library: list[float] = []
    floor: list[float] = []
    runner_floor: list[float] = []
    with banger_env() as b:
        b.banger("vm", "create", "--name", VM, "--init", "fast", "--start", timeout=600)
        paths = banger_paths(b)
        target = SSHTarget(str(vm_row(b, VM)["ip"]), paths.known_hosts, paths.ssh_key)
        ssh = b.as_owner(ssh_argv(target, ["true"]))

        def exec_case() -> float:
            r = timed_cli(b, "vm", "exec", VM, "--", "true", timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"vm exec exited {r.returncode}: {r.stderr[-300:]}")
            return r.seconds

        def ssh_case() -> float:
            start = time.perf_counter()
            done = subprocess.run(ssh, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=120, check=False)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"ssh exited {done.returncode}: {done.stderr[-300:]!r}")
            return time.perf_counter() - start

        library_argv = b.as_owner([str(VENV_BIN / "python"), "-c", LIBRARY_LOOP])
        where = [target.host, str(target.known_hosts), str(target.client_key)]
        floor_argv = b.ns.argv(str(VENV_BIN / "python"), "-c", CHANNEL_LOOP, *where)
        runner_argv = b.ns.argv(str(VENV_BIN / "python"), "-c", RUNNER_LOOP, *where)
        with (
            loop_process(library_argv) as lib,
            loop_process(floor_argv) as chan,
            loop_process(runner_argv) as run_floor,
        ):
            runs = interleaved(
                {
                    "fresh `ssh … true`": ssh_case,
                    "banger vm exec NAME -- true": exec_case,
                    "SDK vm.run(['true'])": lambda: batch(lib, library),
                    FLOOR: lambda: batch(chan, floor),
                    RUNNER_FLOOR: lambda: batch(run_floor, runner_floor),
                },
                ctx.rounds(7, 2),
                warmup=1,
            )
        b.banger("vm", "rm", "--force", VM, timeout=300)
    notes = [f"{case} FAILED: {error[:300]}" for case, error in runs.failures.items()]
    ssh_s = runs.samples.get("fresh `ssh … true`", [])
    exec_s = runs.samples.get("banger vm exec NAME -- true", [])
    if not ssh_s or not exec_s or not library:
        return BenchResult(NAME, TITLE, notes=tuple(notes) or ("no round finished",))
    ssh_m, exec_m, lib_m = median(ssh_s), median(exec_s), median(library)
    notes.append(
        f"per command: fresh ssh {ssh_m * 1000:.0f} ms, vm exec {exec_m * 1000:.0f} ms "
        f"(CLI start-up included), library {lib_m * 1000:.0f} ms"
    )
    measurements = [
        Measurement.of("fresh `ssh … true`", ssh_s),
        Measurement.of("banger vm exec NAME -- true", exec_s),
        Measurement.of(f"SDK vm.run(['true']) (x{CALLS} per round)", library),
    ]
    ratios = [
        Ratio("fresh ssh / vm exec", ratio(ssh_m, exec_m)),
        Ratio("fresh ssh / SDK vm.run", ratio(ssh_m, lib_m)),
    ]
    why = (
        "the library call is one WebSocket over the daemon socket plus one exec through "
        "the guest's command runner on the held connection"
    )
    if floor:
        floor_m = median(floor)
        measurements.append(Measurement.of(f"{FLOOR} (x{CALLS} per round)", floor))
        ratios.append(
            Ratio("fresh ssh / sshd floor (best any SSH session can do)", ratio(ssh_m, floor_m))
        )
        notes.append(
            f"an sshd session per command (channel, PAM, the login shell, the exec of true) "
            f"costs {floor_m * 1000:.0f} ms even on an open connection: "
            f"{ratio(ssh_m, floor_m):.2f}x at best, the reason execs go through the runner"
        )
    if runner_floor:
        runner_m = median(runner_floor)
        measurements.append(Measurement.of(f"{RUNNER_FLOOR} (x{CALLS} per round)", runner_floor))
        ratios.append(Ratio("fresh ssh / runner floor", ratio(ssh_m, runner_m)))
        own = lib_m - runner_m
        banger_part = (
            f"{own * 1000:.0f} ms banger's own (SDK, daemon socket, WebSocket, bangerd)"
            if own >= 0
            else "banger's own part (SDK, daemon socket, WebSocket, bangerd) within this "
            "run's noise (the two medians differ by less than their spread)"
        )
        notes.append(
            f"library {lib_m * 1000:.0f} ms = the runner's exec {runner_m * 1000:.0f} ms "
            f"(a frame each way, the spawn of true in the guest) + {banger_part}"
        )
        why += f"; the runner's own part is {runner_m * 1000:.0f} ms of {lib_m * 1000:.0f} ms"
    return BenchResult(
        NAME,
        TITLE,
        measurements=tuple(measurements),
        ratios=tuple(ratios),
        targets=(
            Target(
                "SDK vm.run at least 10x faster than a fresh ssh",
                ratio(ssh_m, lib_m),
                LIBRARY_GOAL,
                ">=",
                "x",
                why,
            ),
        ),
        notes=tuple(notes),
    )
