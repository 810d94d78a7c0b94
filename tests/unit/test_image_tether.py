"""banger.images.tether on real processes: a command dies with the process that ran it.

Each case starts a Python process that runs a command through the wrapper
(from a worker thread, as the helper does), kills that process with SIGKILL,
and watches the command's processes (and, for the group wrapper, its mounts).
The group wrapper makes namespaces: those cases need root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from banger.errors import CommandError
from banger.images import tether
from tests.support import needs_root, wait_until

#: Runs ``tether.<func>(argv)`` in a thread, like the helper's connection thread.
RUNNER = """
import json, sys, threading
from banger.images import tether
func, argv = sys.argv[1], json.loads(sys.argv[2])
def go():
    if func == "run":
        tether.run(argv)
    else:
        tether.run_streaming_group(argv, lambda line: print(line, flush=True))
t = threading.Thread(target=go)
t.start()
t.join()
"""


def pids_with(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (a unique word of the test's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker in cmdline and "RUNNER" not in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@contextmanager
def runner(func: str, argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    import json

    child = subprocess.Popen(
        [sys.executable, "-c", RUNNER, func, json.dumps(argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


def test_argv_wrappers() -> None:
    assert tether.dies_with_caller(["mkfs.ext4", "-q"]) == [
        "setpriv", "--pdeathsig", "TERM", "--", "mkfs.ext4", "-q",
    ]  # fmt: skip
    assert tether.group_dies_with_caller(["mmdebstrap", "bookworm"]) == [
        "setpriv", "--pdeathsig", "KILL", "--",
        "unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--",
        "mmdebstrap", "bookworm",
    ]  # fmt: skip


def test_a_command_dies_with_its_killed_caller() -> None:
    marker = f"tether-one-{os.getpid()}"
    with runner("run", ["sh", "-c", f"exec sleep 300 # {marker}", marker]) as child:
        wait_until(lambda: pids_with(marker), 30, "the command starts")
        child.send_signal(signal.SIGKILL)
        child.wait()
        wait_until(lambda: not pids_with(marker), 30, "every process of the command is gone")


@needs_root
@pytest.mark.root
def test_a_process_tree_dies_with_its_killed_caller_even_one_ignoring_term() -> None:
    # The shell waits for its children, like mmdebstrap's main process waits for
    # its setup child; the second shell ignores SIGTERM, like mmdebstrap's main.
    marker = f"tether-group-{os.getpid()}"
    script = f"sleep 301 & sh -c 'trap \"\" TERM; sleep 302; sleep 303' {marker} & echo up; wait"
    with runner("group", ["sh", "-c", script, marker]) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "up"
        wait_until(lambda: len(pids_with(marker)) >= 2, 30, "both children start")
        child.send_signal(signal.SIGKILL)
        child.wait()
        wait_until(lambda: not pids_with(marker), 30, "every process of the command is gone")


@needs_root
@pytest.mark.root
def test_mounts_of_a_group_command_never_reach_the_host(tmp_path: Path) -> None:
    target = tmp_path / "proc"
    target.mkdir()
    script = f'mount -t tmpfs tether "{target}" && grep -c " {target} " /proc/self/mountinfo'
    with runner("group", ["sh", "-c", script]) as child:
        out, _ = child.communicate(timeout=30)
    assert child.returncode == 0
    assert out.strip() == "1"  # mounted inside its namespace...
    assert f" {target} " not in Path("/proc/self/mountinfo").read_text()  # ...never here


@needs_root
@pytest.mark.root
def test_a_failure_names_the_wrapped_command(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as failed:
        tether.run(["sh", "-c", "echo broken >&2; exit 3"])
    assert failed.value.message == "sh failed with exit status 3: broken"
    with pytest.raises(CommandError) as missing:
        tether.run([str(tmp_path / "no-such-tool"), "-q"])
    assert missing.value.not_found
    assert missing.value.message == f"command not found: {tmp_path / 'no-such-tool'}"
    with pytest.raises(CommandError) as missing_group:
        tether.run_streaming_group(["no-such-banger-tool"], lambda _line: None)
    assert missing_group.value.message == "command not found: no-such-banger-tool"


@needs_root
@pytest.mark.root
def test_a_bound_directory_is_seen_at_the_mount_point_only_inside(tmp_path: Path) -> None:
    """bindexec: the command sees the directory (reached through /proc/<pid>/fd/<n>,
    as the helper's stage is) at /mnt under its own canonical name; the host does not."""
    stage = tmp_path / "stage"
    (stage / "tmp" / "build" / "tree").mkdir(parents=True)
    (stage / "tmp" / "build" / "tree" / "marker").write_text("inside\n")
    fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
    try:
        lines: list[str] = []
        tether.run_streaming_group(
            ["sh", "-c", "cat /mnt/tree/marker; readlink -f /mnt/tree; echo made > /mnt/tree/out"],
            lines.append,
            bind=(f"/proc/{os.getpid()}/fd/{fd}/tmp/build", "/mnt"),
        )
    finally:
        os.close(fd)
    assert lines == ["inside", "/mnt/tree"]  # canonical: the mount point, not our path
    assert (stage / "tmp" / "build" / "tree" / "out").read_text() == "made\n"
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    assert "/mnt" not in {line.split()[4] for line in mounts}
    assert not (Path("/mnt") / "tree" / "marker").exists()


def test_bindexec_refuses_to_mount_in_its_callers_namespace() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "banger.helper.bindexec", tether.mount_namespace(), "/", "/mnt",
         "--", "true"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 126
    assert result.stderr.strip() == (
        "bindexec: refusing to mount outside a private mount namespace"
    )
