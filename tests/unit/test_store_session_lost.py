"""Schema v4: the ``lost`` session state, and the guest's end time kept by ``update_session``."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from banger.store import MIGRATIONS, SessionState, Store, migrate
from banger.store.errors import StoreError

NOW = "2024-01-01T00:00:00.000000+00:00"


def v3_database(path: Path) -> None:
    """A v3 store whose VM has a running session and a lost one (stored as ``failed``)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    assert migrate(conn, MIGRATIONS[:3]) == 3
    conn.execute(
        "INSERT INTO vms (id, name, state, vmm, init_mode, vcpus, memory_mib, work_disk_size,"
        " created_at, updated_at) VALUES ('v1', 'old', 'stopped', 'qemu', 'fast', 1, 256,"
        " 67108864, ?, ?)",
        (NOW, NOW),
    )
    for sid, name, state in (("s1", "agent", "running"), ("s2", "gone", "failed")):
        conn.execute(
            "INSERT INTO sessions (id, vm_id, name, command, state, started_at)"
            " VALUES (?, 'v1', ?, '[\"bash\"]', ?, ?)",
            (sid, name, state, NOW),
        )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE sessions SET state = 'lost' WHERE id = 's1'")
    conn.close()


def test_v4_turns_failed_sessions_into_lost_and_allows_lost(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    v3_database(path)
    with Store.open(path) as store:
        assert store.schema_version >= 4
        states = {s.name: s.state for s in store.list_sessions("v1")}
        assert states == {"agent": SessionState.RUNNING, "gone": SessionState.LOST}
        lost = store.update_session("s1", state=SessionState.LOST)
        assert lost.state is SessionState.LOST and lost.state.finished
        assert lost.ended_at is not None and lost.exit_status is None
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")  # sessions are still children of vms
    try:
        with pytest.raises(sqlite3.IntegrityError):  # the CHECK still refuses nonsense
            conn.execute("UPDATE sessions SET state = 'asleep' WHERE id = 's1'")
        conn.execute("DELETE FROM vms WHERE id = 'v1'")
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    finally:
        conn.close()


def test_v4_on_an_unexpected_table_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    v3_database(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = replace(sql, '''failed''))', '''failed'', ''x''))')"
        " WHERE name = 'sessions'"
    )
    conn.execute("PRAGMA writable_schema = OFF")
    conn.close()
    with pytest.raises(StoreError, match=r"schema version 4"):
        Store.open(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)
        assert conn.execute("SELECT state FROM sessions ORDER BY id").fetchall() == [
            ("running",),
            ("failed",),
        ]
    finally:
        conn.close()


def test_update_session_keeps_the_guests_end_time(tmp_path: Path) -> None:
    with Store.open(tmp_path / "b.db") as store:
        vm = store.create_vm(
            name="box", image_id=None, kernel_id=None, vmm="qemu", init_mode="fast",
            vcpus=1, memory_mib=256, work_disk_size=1 << 30,
        )  # fmt: skip
        session = store.create_session(vm.id, "job", ["make"])
        ended = datetime(2024, 3, 1, 9, 30, 15, 250000, tzinfo=UTC)
        done = store.update_session(
            session.id, state=SessionState.EXITED, exit_status=2, ended_at=ended
        )
        assert (done.state, done.exit_status, done.ended_at) == (SessionState.EXITED, 2, ended)
        assert store.get_session(session.id).ended_at == ended
        # without a time, reaching a finished state stamps "now" (the daemon's clock)
        other = store.create_session(vm.id, "other", ["make"])
        lost = store.update_session(other.id, state=SessionState.LOST)
        assert lost.ended_at is not None and lost.ended_at > ended
        with pytest.raises(ValueError, match="naive"):
            store.update_session(other.id, ended_at=datetime(2024, 3, 1))
