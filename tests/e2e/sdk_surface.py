"""The SDK's whole surface against one real VM, run as the e2e owner (tests/e2e/test_sdk_e2e.py).

Run as a program inside the test's namespace as the owner user (the daemon
socket is the owner's): ``python -m tests.e2e.sdk_surface NAME``. It drives
:mod:`banger.sdk` (and a little of :mod:`banger.sdk.aio`) and prints one JSON
object of what it saw; the test asserts on that, so a failure shows the value.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from banger.errors import BangerError
from banger.sdk import VM, Banger, aio
from tests.support import wait_until

SLEEP_MARK = "sleep 3171"


def guest_count(vm: VM, pattern: str) -> int:
    """Guest processes whose command line starts with ``pattern`` (a regex)."""
    r = vm.run(f"ps -eo args | grep -c -- '^{pattern}' || true")
    return int(r.stdout.strip() or "0")


def error(fn: Any) -> dict[str, Any]:
    try:
        fn()
    except BangerError as exc:
        return {"type": type(exc).__name__, "message": exc.message, "field": exc.field}
    return {"type": None}


def commands(vm: VM) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    r = vm.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=120)
    seen["argv"] = [r.exit_code, r.stdout, r.stderr]
    r = vm.run(["echo", "$HOME;", "a|b"])  # an argv: no shell sees it
    seen["argv_literal"] = r.stdout
    r = vm.run("echo $((6*7)) | tr 4 X")  # a string: a shell command
    seen["shell"] = r.stdout
    r = vm.run(["cat"], stdin=b"round trip")
    seen["stdin"] = r.stdout
    r = vm.run(["sh", "-c", 'echo "$A|$PWD"'], env={"A": "x y"}, cwd="/tmp")
    seen["env_cwd"] = r.stdout
    r = vm.run(["sleep", "300"], timeout=3)
    seen["timeout"] = [r.exit_code, r.signal, r.timed_out]
    later = vm.run("echo bg; exit 5", background=True)
    seen["background_wait"] = [later.wait(120).exit_code, later.wait().stdout]
    lines: list[str] = []
    handle = vm.run(f"echo started; {SLEEP_MARK}", background=True, on_stdout=lines.append)
    wait_until(lambda: "started" in lines, 120, "the background command's first line")
    seen["running_before_kill"] = guest_count(vm, f"[{SLEEP_MARK[0]}]{SLEEP_MARK[1:]}")
    killed = handle.kill()
    seen["kill"] = [killed.exit_code, killed.signal, lines]
    wait_until(
        lambda: guest_count(vm, f"[{SLEEP_MARK[0]}]{SLEEP_MARK[1:]}") == 0,
        120,
        "no sleep left in the guest after kill()",
    )
    times = []
    for _ in range(5):
        start = time.monotonic()
        vm.run(["true"])
        times.append(time.monotonic() - start)
    seen["true_median_s"] = statistics.median(times)
    return seen


#: A program that runs a command through the SDK until it is interrupted (Ctrl-C).
INTERRUPTED = """
import sys
from banger.sdk import Banger
with Banger() as bg:
    bg.get(sys.argv[1]).run("echo up; sleep 3173", on_stdout=print)
"""


def interruptions(vm: VM) -> dict[str, Any]:
    """Ctrl-C in a blocking run(), and closing Banger with a background command running."""
    seen: dict[str, Any] = {}
    with Banger() as other:
        other.get(vm.name).run("sleep 3172", background=True)
        wait_until(lambda: guest_count(vm, "[s]leep 3172") == 1, 120, "the background sleep")
    # leaving the with block closed its exec connection: bangerd killed the command
    wait_until(lambda: guest_count(vm, "[s]leep 3172") == 0, 120, "no sleep left after close")
    seen["closed"] = True
    child = subprocess.Popen(
        [sys.executable, "-u", "-c", INTERRUPTED, vm.name], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    try:
        seen["child_first_line"] = child.stdout.readline()
        child.send_signal(signal.SIGINT)
        seen["child_status"] = child.wait(120)
    finally:
        # A child that outlived its Ctrl-C must not outlive the test: it holds the
        # pipes this run's caller reads to their end.
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    wait_until(lambda: guest_count(vm, "[s]leep 3173") == 0, 120, "no sleep left after Ctrl-C")
    seen["interrupted"] = True
    return seen


def files(vm: VM) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    vm.files.write("/root/in.txt", b"hi")
    seen["read"] = vm.files.read("/root/in.txt").decode()
    seen["listed"] = "in.txt" in [e.name for e in vm.files.list("/root")]
    vm.files.write("/root/deep/er/f.txt", "ünïcode\n", parents=True, mode=0o600)
    entry = vm.files.stat("/root/deep/er/f.txt")
    seen["stat"] = [entry.type, entry.size, oct(entry.mode)]
    vm.files.rename("/root/deep/er/f.txt", "/root/deep/g.txt")
    seen["renamed"] = vm.files.read_text("/root/deep/g.txt")
    vm.files.remove("/root/deep", recursive=True)
    seen["exists_after_remove"] = vm.files.exists("/root/deep")
    seen["missing"] = error(lambda: vm.files.read("/root/no-such-file"))
    return seen


def sessions(vm: VM) -> dict[str, Any]:
    s = vm.sessions.start("agent", ["bash", "-l"])
    s.send("echo hello-from-$((40+2))\n")
    wait_until(lambda: "hello-from-42" in s.logs(), 120, "the session's output in its log")
    listed = [x.name for x in vm.sessions.list()]
    stopped = s.stop(timeout=10)
    return {"listed": listed, "state": s.info().get("state"), "stop": stopped.get("outcome")}


async def concurrent(bg_paths: Any, name: str) -> list[str]:
    async with await aio.Banger.connect(bg_paths) as bg:
        vm = await bg.get(name)
        results = await asyncio.gather(*(vm.run(["echo", str(i)]) for i in range(8)))
        return [r.stdout for r in results]


def main() -> None:
    name = sys.argv[1]
    seen: dict[str, Any] = {}
    with Banger() as bg:
        vm = bg.create(name, init="fast", memory="512M")
        seen["list"] = [v.name for v in bg.list()]
        seen["get"] = bg.get(name).name
        seen["state"] = vm.state
        seen["commands"] = commands(vm)
        seen["interruptions"] = interruptions(vm)
        seen["files"] = files(vm)
        seen["sessions"] = sessions(vm)
        seen["aio"] = asyncio.run(concurrent(bg.paths, name))
        snap = vm.snapshot("ready")
        seen["snapshot"] = [snap.get("name"), snap.get("vm")]
        seen["state_after_snapshot"] = vm.state
        vm.stop()
        seen["stopped"] = vm.state
        seen["run_when_stopped"] = error(lambda: vm.run(["true"]))
        vm.delete()
        seen["get_deleted"] = error(lambda: bg.get(name))
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
