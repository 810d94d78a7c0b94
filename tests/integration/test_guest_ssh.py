"""Guest SSH against a real sshd on loopback, started by the test (never a system service)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from banger.guest import ssh as guest_ssh
from banger.guest.ssh import (
    HostKeyMismatch,
    KeyRefused,
    SSHTimeout,
    open_connection,
    run,
    run_on,
    ssh_argv,
    wait_for_ssh,
)
from tests.sshd import (
    Sshd,
    keygen,
    make_sshd,
    needs_sshd,
    sshd_fixture,  # noqa: F401 (provides the sshd fixture)
)
from tests.support import needs_root

pytestmark = [pytest.mark.root, needs_root, needs_sshd]


async def test_wait_for_ssh_retries_until_sshd_starts(short_tmp: Path) -> None:
    server = make_sshd(short_tmp)
    loop = asyncio.get_running_loop()
    loop.call_later(1.0, server.start)  # the "guest" boots after we start waiting
    try:
        began = time.monotonic()
        await wait_for_ssh(server.target, timeout=60)  # returning at all is the success
        # The wait is the behaviour, so a lower bound only: it outlasted the boot.
        assert time.monotonic() - began >= 1.0
    finally:
        server.stop()


async def test_run_propagates_status_and_output(sshd: Sshd) -> None:
    await wait_for_ssh(sshd.target, timeout=30)
    result = await run(sshd.target, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.exit_status, result.out, result.err) == (7, "out\n", "err\n")
    ok = await run(sshd.target, "true")
    assert ok.exit_status == 0


async def test_argv_arrives_intact(sshd: Sshd) -> None:
    await wait_for_ssh(sshd.target, timeout=30)
    args = ["it's", '"double"', "$HOME", "`id`", "a\nb", "ünïcödé ☃", "", "*", "; true"]
    result = await run(sshd.target, ["printf", "%s\\n", *args])
    assert result.exit_status == 0
    assert result.out == "".join(f"{a}\n" for a in args)


async def test_env_cwd_stdin_and_connection_reuse(sshd: Sshd) -> None:
    await wait_for_ssh(sshd.target, timeout=30)
    async with open_connection(sshd.target) as conn:
        result = await run_on(
            conn,
            ["sh", "-c", 'printf "%s|%s|" "$PWD" "$GREETING"; cat'],
            env={"GREETING": "hi $there"},
            cwd=str(sshd.dir),
            stdin="from stdin ✓",
        )
        assert result.out == f"{sshd.dir}|hi $there|from stdin ✓"
        missing = await run_on(conn, ["true"], cwd="/nonexistent-dir")
        assert missing.exit_status == 1
        killed = await run_on(conn, "kill -KILL $$")
        assert killed.exit_status == -9


async def test_wrong_pinned_host_key_is_refused(
    sshd: Sshd, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = keygen(short_tmp / "other_host")
    (sshd.dir / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    attempts: list[str] = []
    real_connect = guest_ssh._connect

    def counting_connect(*args: Any, **kwargs: Any) -> Any:
        attempts.append("connect")
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(guest_ssh, "_connect", counting_connect)
    with pytest.raises(HostKeyMismatch, match="does not match the key pinned"):
        await wait_for_ssh(sshd.target, timeout=60)
    assert attempts == ["connect"], "a mismatch is final, not retried until timeout"
    monkeypatch.undo()
    with pytest.raises(HostKeyMismatch):
        await run(sshd.target, ["true"])


async def test_unknown_host_is_refused_no_tofu(sshd: Sshd) -> None:
    (sshd.dir / "known_hosts").write_text("")
    with pytest.raises(HostKeyMismatch):
        await wait_for_ssh(sshd.target, timeout=30)


async def test_refused_client_key(sshd: Sshd) -> None:
    (sshd.dir / "authorized_keys").write_text("")
    with pytest.raises(KeyRefused, match="refused banger's key"):
        await wait_for_ssh(sshd.target, timeout=30)


async def test_timeout_carries_console_tail(short_tmp: Path) -> None:
    server = make_sshd(short_tmp)  # configured, never started: nothing listens
    console = short_tmp / "console.log"
    console.write_text("".join(f"boot line {i}\n" for i in range(40)) + "initramfs: panic\n")
    began = time.monotonic()
    with pytest.raises(SSHTimeout) as info:
        await wait_for_ssh(server.target, timeout=1.5, console_log=console)
    # The wait is the behaviour, so a lower bound only (SSHTimeout is the outcome).
    assert time.monotonic() - began >= 1.5
    message = info.value.message
    assert message.startswith(f"guest 127.0.0.1:{server.port} did not answer SSH within 1.5s")
    assert "boot line 20" not in message
    assert "boot line 21\n" in message and message.endswith("boot line 39\ninitramfs: panic")
    assert info.value.hint == f"see the full console log: {console}"


@pytest.mark.skipif(shutil.which("ssh") is None, reason="openssh-client missing")
def test_system_ssh_argv_pins_the_key_and_propagates_status(sshd: Sshd, short_tmp: Path) -> None:
    asyncio.run(wait_for_ssh(sshd.target, timeout=30))
    env = {**os.environ, "HOME": str(short_tmp)}  # no stray ~/.ssh influence
    done = subprocess.run(
        ssh_argv(sshd.target, ["sh", "-c", "printf '%s' \"$1\"; exit 3", "sh", "a 'b' $c"]),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (3, b"a 'b' $c"), done.stderr
    other = keygen(short_tmp / "other_host")
    (sshd.dir / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    refused = subprocess.run(
        ssh_argv(sshd.target, ["true"]),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 255
    assert b"Host key verification failed" in refused.stderr
