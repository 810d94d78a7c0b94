"""The subprocess choke point: real commands, each failure kind with its message."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from banger import proc
from banger.errors import CommandError


def test_run_captures_output_in_c_locale() -> None:
    result = proc.run(["sh", "-c", 'printf "%s" "$LC_ALL"'])
    assert result.returncode == 0
    assert result.out == "C"


def test_stdin_is_devnull() -> None:
    assert proc.run(["cat"], timeout=5).out == ""


def test_input_is_passed() -> None:
    assert proc.run(["cat"], input=b"hello").out == "hello"


def test_shell_string_refused() -> None:
    with pytest.raises(TypeError, match="never a shell string"):
        proc.run("echo hi")


def test_missing_binary_says_not_found() -> None:
    with pytest.raises(CommandError) as info:
        proc.run(["banger-no-such-binary-xyz", "--flag"])
    assert info.value.not_found
    assert "command not found: banger-no-such-binary-xyz" in str(info.value)


def test_nonzero_exit_names_command_status_and_stderr_tail() -> None:
    with pytest.raises(CommandError) as info:
        proc.run(["sh", "-c", "echo one >&2; echo two >&2; exit 3"])
    err = info.value
    assert err.returncode == 3
    assert str(err) == "sh failed with exit status 3: one | two"
    assert err.argv == ["sh", "-c", "echo one >&2; echo two >&2; exit 3"]


def test_signal_death_is_named() -> None:
    with pytest.raises(CommandError) as info:
        proc.run(["sh", "-c", "kill -KILL $$"])
    assert info.value.returncode == -9
    assert "killed by SIGKILL" in str(info.value)


def test_check_false_returns_status() -> None:
    assert proc.run(["sh", "-c", "exit 4"], check=False).returncode == 4


def test_timeout() -> None:
    with pytest.raises(CommandError) as info:
        proc.run(["sleep", "60"], timeout=0.2)
    assert info.value.timed_out


async def test_arun_matches_run() -> None:
    result = await proc.arun([sys.executable, "-c", "import os; print(os.environ['LC_ALL'])"])
    assert result.out.strip() == "C"
    with pytest.raises(CommandError) as info:
        await proc.arun(["sh", "-c", "echo bad >&2; exit 2"])
    assert str(info.value) == "sh failed with exit status 2: bad"
    with pytest.raises(CommandError) as nf:
        await proc.arun(["banger-no-such-binary-xyz"])
    assert nf.value.not_found
    with pytest.raises(CommandError) as sig:
        await proc.arun(["sh", "-c", "kill -TERM $$"])
    assert "killed by SIGTERM" in str(sig.value)


async def test_arun_timeout_kills_child(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as info:
        await proc.arun(["sleep", "60"], timeout=0.2)
    assert info.value.timed_out


async def test_arun_cancel_kills_child() -> None:
    task = asyncio.create_task(proc.arun(["sleep", "5"]))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_run_streaming_passes_lines_in_order_and_merges_stderr() -> None:
    lines: list[str] = []
    proc.run_streaming(["sh", "-c", "echo one; echo two >&2; echo; echo three"], lines.append)
    assert lines == ["one", "two", "three"]


def test_run_streaming_failure_carries_output_tail() -> None:
    with pytest.raises(CommandError) as info:
        proc.run_streaming(["sh", "-c", "echo progress; echo broken >&2; exit 5"], lambda _: None)
    assert str(info.value) == "sh failed with exit status 5: progress | broken"
    with pytest.raises(CommandError) as nf:
        proc.run_streaming(["banger-no-such-binary-xyz"], lambda _: None)
    assert nf.value.not_found


def test_system_tools_are_found_without_sbin_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #22: an ordinary Debian user's PATH lacks /usr/sbin, where e2fsck,
    mkfs.ext4 and debugfs live; banger finds them there all the same."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert shutil.which("e2fsck") is None  # the situation, as the user has it
    found = proc.which("e2fsck")
    assert found is not None and Path(found).parent.name == "sbin"
    result = proc.run(["e2fsck", "-V"])
    assert "e2fsck" in result.err
    assert asyncio.run(proc.arun(["mkfs.ext4", "-V"])).returncode == 0
    # The user's own directories come first; the system ones are only appended.
    assert proc.search_path("/opt/x:/usr/sbin").split(":") == [
        "/opt/x", "/usr/sbin", "/usr/local/sbin", "/sbin"]  # fmt: skip
