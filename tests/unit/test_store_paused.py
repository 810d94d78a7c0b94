"""Schema v3: the ``paused`` VM state, added by rebuilding ``vms`` on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from banger.store import MIGRATIONS, Store, VMState, migrate
from banger.store.errors import StoreError

NOW = "2024-01-01T00:00:00.000000+00:00"


def v2_database(path: Path) -> None:
    """A v2 store holding a VM with an IP lease and a session (children of ``vms``)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    assert migrate(conn, MIGRATIONS[:2]) == 2
    conn.execute(
        "INSERT INTO vms (id, name, state, vmm, init_mode, vcpus, memory_mib, work_disk_size,"
        " ip, created_at, updated_at, labels)"
        " VALUES ('v1', 'old', 'running', 'firecracker', 'fast', 2, 256, 67108864,"
        " '172.30.0.2', ?, ?, '{\"k\": \"v\"}')",
        (NOW, NOW),
    )
    conn.execute("INSERT INTO ip_leases VALUES ('172.30.0.2', 'v1', ?)", (NOW,))
    conn.execute(
        "INSERT INTO sessions (id, vm_id, name, command, state, started_at)"
        " VALUES ('s1', 'v1', 'main', '[\"bash\"]', 'running', ?)",
        (NOW,),
    )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE vms SET state = 'paused' WHERE id = 'v1'")
    conn.close()


def test_v3_allows_paused_and_keeps_rows_children_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    v2_database(path)
    with Store.open(path) as store:
        assert store.schema_version >= 3
        vm = store.update_vm("v1", state=VMState.PAUSED)
        assert vm.state is VMState.PAUSED and vm.vmm == "firecracker"
        assert vm.labels == {"k": "v"}
        assert [lease.vm_id for lease in store.list_leases()] == ["v1"]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT vm_id FROM sessions").fetchall() == [("v1",)]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"vms_by_image", "vms_by_kernel"} <= names
        assert "vms_before_v3" not in names
        # The children still reference vms (not the renamed copy): a delete cascades.
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("DELETE FROM vms WHERE id = 'v1'")
        assert conn.execute("SELECT count(*) FROM ip_leases").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
        with pytest.raises(sqlite3.IntegrityError):  # the CHECK still refuses nonsense
            conn.execute(
                "INSERT INTO vms (id, name, state, vmm, init_mode, vcpus, memory_mib,"
                " work_disk_size, created_at, updated_at)"
                " VALUES ('v2', 'x', 'asleep', 'qemu', 'fast', 1, 1, 1, ?, ?)",
                (NOW, NOW),
            )
    finally:
        conn.close()


def test_v3_on_an_unexpected_table_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    v2_database(path)
    conn = sqlite3.connect(path, isolation_level=None)
    # Someone's hand-edited schema: the CHECK list is not v1's, so v3 must refuse.
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = replace(sql, '''deleting'')', '''deleting'', ''x'')')"
        " WHERE name = 'vms'"
    )
    conn.execute("PRAGMA writable_schema = OFF")
    conn.close()
    with pytest.raises(StoreError, match=r"schema version 3"):
        Store.open(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
        assert conn.execute("SELECT state FROM vms").fetchall() == [("running",)]
    finally:
        conn.close()
