"""bangerd as a real process: socket, pid file, root policy, signals, restarts."""

from __future__ import annotations

import os
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.store import OpState, Store
from tests.integration.bangerd_harness import (
    home_env,
    home_paths,
    running_daemon,
    spawn_daemon,
    wait_ready,
)
from tests.support import IS_ROOT, short_tmpdir, wait_until


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmpdir() as path:
        yield path


def test_socket_is_owner_only_and_version_answers(home: Path) -> None:
    with running_daemon(home) as daemon, daemon.client() as client:
        sock = daemon.paths.daemon_socket
        st = sock.lstat()
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.getuid()
        assert stat.S_IMODE(daemon.paths.runtime_dir.stat().st_mode) == 0o700
        info = client.version()
        assert info.pid == daemon.proc.pid
        assert info.uid == os.getuid()
        assert info.api == 1
        assert (daemon.paths.runtime_dir / "bangerd.pid").read_text().strip() == str(info.pid)


def test_no_third_party_warning_reaches_the_log(home: Path) -> None:
    """Issue #15: a dependency's import-time deprecation (asyncssh touching
    cryptography's DSA classes) is not shown to users in bangerd.log."""
    with running_daemon(home) as daemon, daemon.client() as client:
        client.version()
        import asyncssh  # noqa: F401  (what bangerd imported too)

        text = daemon.log() + daemon.stderr()
    assert "Warning" not in text, text
    assert "DSA" not in text, text


def test_sigterm_stops_cleanly_and_removes_socket(home: Path) -> None:
    with running_daemon(home) as daemon:
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        assert not daemon.paths.daemon_socket.exists()
        assert not (daemon.paths.runtime_dir / "bangerd.pid").exists()
        log = daemon.log()
        assert "received SIGTERM: draining" in log
        assert log.rstrip().endswith("bangerd stopped")


def test_sigint_also_stops_cleanly(home: Path) -> None:
    with running_daemon(home) as daemon:
        daemon.signal(signal.SIGINT)
        assert daemon.wait() == 0
        assert not daemon.paths.daemon_socket.exists()


def test_second_daemon_on_same_home_refuses(home: Path) -> None:
    with running_daemon(home) as first:
        second = spawn_daemon(home, "--allow-root")
        assert second.wait() == 4
        err = second.stderr()
        assert f"bangerd is already running on {first.paths.daemon_socket}" in err
        assert f"pid {first.proc.pid}" in err
        assert "Traceback" not in err
        with first.client() as client:  # the first one is untouched
            assert client.version().pid == first.proc.pid


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="the refusal is for root")
def test_root_refused_without_allowance(home: Path) -> None:
    daemon = spawn_daemon(home)
    assert daemon.wait() == 2
    err = daemon.stderr()
    assert "refusing to run as root" in err
    assert "--allow-root" in err
    assert not home_paths(home).daemon_socket.exists()


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="the allowance is for root")
def test_root_allowed_by_environment(home: Path) -> None:
    daemon = spawn_daemon(home, env=home_env(home, BANGER_ALLOW_ROOT="1"))
    try:
        wait_ready(daemon)
    finally:
        assert daemon.stop() == 0


def test_stale_socket_from_a_crash_is_replaced(home: Path) -> None:
    paths = home_paths(home)
    paths.runtime_dir.mkdir(parents=True, mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(paths.daemon_socket))
    stale.close()  # the file stays, nobody listens: what a SIGKILLed daemon leaves
    assert paths.daemon_socket.exists()
    with running_daemon(home) as daemon, daemon.client() as client:
        assert client.version().pid == daemon.proc.pid
        assert stat.S_IMODE(paths.daemon_socket.lstat().st_mode) == 0o600


def test_invalid_config_refuses_with_every_problem(home: Path) -> None:
    paths = home_paths(home)
    paths.config_dir.mkdir(parents=True)
    paths.config_file.write_text('vmm = "nope"\nbogus = 1\n')
    daemon = spawn_daemon(home, "--allow-root")
    assert daemon.wait() == 2
    err = daemon.stderr()
    assert "vmm:" in err
    assert "bogus: unknown key" in err
    assert not paths.daemon_socket.exists()


def test_sigterm_lets_a_running_operation_finish(home: Path) -> None:
    with running_daemon(home) as daemon, daemon.client() as client:
        op = client.selftest(delay_ms=300)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    with Store.open(home_paths(home).db) as store:
        record = store.get_operation(op.id)
    assert record.state == OpState.SUCCEEDED
    assert record.stage == "finish"


def test_grace_expiry_cancels_and_records_it(home: Path) -> None:
    with running_daemon(home, "--grace", "0.3") as daemon, daemon.client() as client:
        op = client.selftest(delay_ms=5000)  # 4 stages of 5 s: far past the grace
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        assert "cancelled 1 running operation(s)" in daemon.log()
    # Cancelled in its first stage, not finished: the grace, not the op, ended it.
    with Store.open(home_paths(home).db) as store:
        record = store.get_operation(op.id)
        events = store.events_since(op.id)
    assert record.state == OpState.FAILED
    assert record.error is not None and record.error.startswith("cancelled")
    assert record.stage == "read_store"
    assert events[-1].kind == "failed"


def test_second_signal_forces(home: Path) -> None:
    # The op (4 stages of 5 s) fits in the grace: only the second signal can fail it.
    with running_daemon(home, "--grace", "600") as daemon, daemon.client() as client:
        op = client.selftest(delay_ms=5000)
        daemon.signal(signal.SIGTERM)
        wait_until(lambda: "draining" in daemon.log(), 60, "bangerd draining")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(60) == 1
        assert "forcing shutdown" in daemon.log()
        assert not daemon.paths.daemon_socket.exists()
    with Store.open(home_paths(home).db) as store:
        record = store.get_operation(op.id)
    assert record.state == OpState.FAILED
    assert record.error is not None and record.error.startswith("cancelled"), record.error


def test_operations_interrupted_by_a_crash_are_failed_on_restart(home: Path) -> None:
    with running_daemon(home) as daemon, daemon.client() as client:
        op = client.selftest(delay_ms=5000)
        daemon.signal(signal.SIGKILL)
        daemon.wait()
    with running_daemon(home) as daemon, daemon.client() as client:
        record = client.get_op(op.id)
        assert record.state == "failed"
        assert record.error is not None and record.error.startswith("interrupted")
        events = list(client.stream_events(op.id))  # ends: the op is not live
        assert events[-1].kind == "failed"
