"""The guest stats script (run for real under the host's sh and busybox sh) and its parser."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from banger.guest.stats import STATS_SCRIPT, GuestDisk, parse_guest_stats

SAMPLE = """\
load=0.08 0.03 0.01
cpus=2
uptime=123.45
mem_total_kib=1004604
mem_available_kib=873512
df /=2031440 1190164 736464 /
df /root=4062912 24 3836504 /root
"""


def test_parse_sample() -> None:
    stats = parse_guest_stats(SAMPLE)
    assert stats.load == (0.08, 0.03, 0.01)
    assert stats.cpus == 2
    assert stats.uptime_seconds == 123.45
    assert stats.mem_total_bytes == 1004604 * 1024
    assert stats.mem_available_bytes == 873512 * 1024
    assert stats.mem_used_bytes == (1004604 - 873512) * 1024
    assert stats.disk("/root") == GuestDisk(
        "/root", "/root", 4062912 * 1024, 24 * 1024, 3836504 * 1024
    )
    assert stats.disk("/") is not None
    assert stats.disk("/nope") is None


def test_missing_and_malformed_pieces_are_none() -> None:
    stats = parse_guest_stats(
        "load=1 2\ncpus=two\nmem_total_kib=100\ndf /=1 2 x /\ndf /root=1 2 3\nnoise\n=\nfuture=1\n"
    )
    assert stats.load is None
    assert stats.cpus is None
    assert stats.uptime_seconds is None
    assert stats.mem_total_bytes == 102400
    assert stats.mem_available_bytes is None
    assert stats.mem_used_bytes is None
    assert stats.disks == ()


def test_mount_points_with_spaces_survive() -> None:
    stats = parse_guest_stats("df /root=10 5 5 /mnt/my disk\n")
    assert stats.disk("/root") == GuestDisk("/root", "/mnt/my disk", 10240, 5120, 5120)


def run_script(shell: list[str]) -> str:
    out = subprocess.run(
        [*shell, "-c", STATS_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
        env={"PATH": os.environ["PATH"]},
        timeout=30,
    )
    assert out.stderr == ""
    return out.stdout


def meminfo_kib(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(key)


SHELLS = [["sh"]]
if shutil.which("busybox"):
    SHELLS.append(["busybox", "sh"])


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: " ".join(s))
def test_script_runs_for_real(shell: list[str]) -> None:
    stats = parse_guest_stats(run_script(shell))
    assert stats.cpus == os.cpu_count()
    assert stats.load is not None and all(x >= 0 for x in stats.load)
    assert stats.uptime_seconds is not None and stats.uptime_seconds > 0
    assert stats.mem_total_bytes == meminfo_kib("MemTotal") * 1024
    assert stats.mem_available_bytes is not None
    assert 0 < stats.mem_available_bytes <= stats.mem_total_bytes
    root = stats.disk("/")
    assert root is not None and root.mount == "/"
    vfs = os.statvfs("/")
    assert root.total_bytes == pytest.approx(vfs.f_blocks * vfs.f_frsize, rel=0.01)
    assert root.used_bytes + root.available_bytes <= root.total_bytes
    work = stats.disk("/root")
    assert work is not None  # on this host /root lives on some mount, maybe "/"
    assert work.total_bytes > 0


def test_script_parses_as_sh() -> None:
    subprocess.run(["sh", "-n", "-c", STATS_SCRIPT], check=True)


def test_script_has_no_bashisms() -> None:
    # devscripts is in scripts/test-packages.txt (make test installs it); without it
    # the check cannot run, and -ra says so instead of a silent pass.
    if shutil.which("checkbashisms") is None:
        pytest.skip("checkbashisms is not installed (Debian package devscripts: make testdeps)")
    subprocess.run(["checkbashisms", "-"], input=STATS_SCRIPT, text=True, check=True)
