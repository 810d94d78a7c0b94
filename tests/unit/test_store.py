"""The SQLite store on a real file: migrations, WAL, repositories, leases, events."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from banger.errors import Conflict, InvalidArgument, NotFound
from banger.paths import Paths
from banger.store import (
    MIGRATIONS,
    Migration,
    OpState,
    SessionState,
    Store,
    StoreError,
    SubnetFull,
    VMConfig,
    VMRecord,
    VMState,
    latest_version,
    migrate,
)
from banger.store.db import Database


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "banger.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store.open(db_path) as opened:
        yield opened


def make_vm(store: Store, name: str = "box", **overrides: object) -> VMRecord:
    args: dict[str, object] = {
        "image_id": None,
        "kernel_id": None,
        "vmm": "qemu",
        "init_mode": "fast",
        "vcpus": 2,
        "memory_mib": 1024,
        "work_disk_size": 4 << 30,
    }
    args.update(overrides)
    return store.create_vm(name=name, **args)  # type: ignore[arg-type]


def schema_sql(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()
        return [(str(name), str(sql)) for name, sql in rows]
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


# -- opening and migrations -----------------------------------------------------------


def test_open_creates_dirs_and_migrates_from_empty(db_path: Path) -> None:
    with Store.open(db_path) as store:
        assert store.schema_version == latest_version() == len(MIGRATIONS)
        assert store.path == db_path
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    tables = {name for name, _ in schema_sql(db_path)}
    assert {
        "vms",
        "images",
        "kernels",
        "ip_leases",
        "operations",
        "op_events",
        "sessions",
    } <= tables


def test_open_at_paths_db(banger_home: Path) -> None:
    paths = Paths.from_env()
    with Store.open(paths.db) as store:
        assert store.path == paths.db
    assert paths.db.exists()


def test_connection_pragmas(db_path: Path) -> None:
    db = Database.connect(db_path)
    try:
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert db.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    finally:
        db.close()
    # WAL is persistent: a plain connection sees it too.
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_reopen_is_a_no_op(db_path: Path) -> None:
    with Store.open(db_path) as store:
        make_vm(store)
    before = schema_sql(db_path)
    with Store.open(db_path) as store:
        assert [vm.name for vm in store.list_vms()] == ["box"]
    assert schema_sql(db_path) == before


@pytest.mark.parametrize("start", range(1, len(MIGRATIONS)))
def test_migrate_from_each_earlier_version(tmp_path: Path, start: int) -> None:
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:start]) == start
    now = "2024-01-01T00:00:00.000000+00:00"
    conn.execute(
        "INSERT INTO images (id, name, source, size, created_at)"
        " VALUES ('i1', 'deb', 'oci:x', 7, ?)",
        (now,),
    )
    conn.execute(
        "INSERT INTO vms (id, name, state, image_id, vmm, init_mode, vcpus, memory_mib,"
        " work_disk_size, ip, created_at, updated_at)"
        " VALUES ('v1', 'old-vm', 'stopped', 'i1', 'qemu', 'systemd', 1, 256, 67108864,"
        " '172.30.0.2', ?, ?)",
        (now, now),
    )
    conn.execute("INSERT INTO ip_leases VALUES ('172.30.0.2', 'v1', ?)", (now,))
    # before v4 a lost session was stored as 'failed'
    conn.execute(
        "INSERT INTO sessions (id, vm_id, name, command, state, started_at)"
        " VALUES ('s1', 'v1', 'agent', '[\"bash\"]', ?, ?)",
        ("failed" if start < 4 else "lost", now),
    )
    conn.close()

    with Store.open(old) as store:
        assert store.schema_version == latest_version()
        vm = store.get_vm_by_name("old-vm")
        assert vm.state is VMState.STOPPED and vm.image_id == "i1"
        assert vm.ip == IPv4Address("172.30.0.2")
        assert vm.labels == {}  # v2 column, defaulted for old rows
        assert store.get_image("i1").size == 7
        assert [lease.vm_id for lease in store.list_leases()] == ["v1"]
        store.update_vm("v1", labels={"team": "infra"})
        assert store.get_vm("v1").labels == {"team": "infra"}
        assert store.get_session("s1").state is SessionState.LOST  # v4

    fresh = tmp_path / "fresh.db"
    Store.open(fresh).close()
    assert schema_sql(old) == schema_sql(fresh)


def test_failing_migration_leaves_schema_and_version(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    with Store.open(path) as store:
        make_vm(store, "keep")
    before = schema_sql(path)
    broken = (
        *MIGRATIONS,
        Migration(
            len(MIGRATIONS) + 1,
            "half-broken",
            "CREATE TABLE newthing (id TEXT PRIMARY KEY);\n"
            "ALTER TABLE vms ADD COLUMN colour TEXT;\n"
            "INSERT INTO no_such_table VALUES (1);",
        ),
    )
    with pytest.raises(StoreError, match=rf"schema version {len(MIGRATIONS) + 1} \(half-broken\)"):
        Store.open(path, migrations=broken)
    assert user_version(path) == len(MIGRATIONS)
    assert schema_sql(path) == before
    with Store.open(path) as store:
        assert [vm.name for vm in store.list_vms()] == ["keep"]


def test_failing_python_migration_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    Store.open(path).close()

    def bad_data_step(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE vms SET vcpus = 0")  # fine, no rows
        conn.execute("INSERT INTO vms (id) VALUES ('x')")  # NOT NULL constraint

    broken = (
        *MIGRATIONS,
        Migration(len(MIGRATIONS) + 1, "data", "CREATE TABLE t (x);", bad_data_step),
    )
    with pytest.raises(StoreError, match="NOT NULL constraint failed"):
        Store.open(path, migrations=broken)
    assert user_version(path) == len(MIGRATIONS)
    assert "t" not in {name for name, _ in schema_sql(path)}


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {latest_version() + 3}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this banger understands") as caught:
        Store.open(path)
    assert caught.value.hint and "upgrade banger" in caught.value.hint


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable banger database"):
        Store.open(path)


def test_unwritable_location(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the database"):
        Store.open(blocker / "banger.db")


def test_migration_list_must_be_contiguous(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    with pytest.raises(ValueError, match=r"1\.\.N"):
        migrate(conn, (MIGRATIONS[0], Migration(3, "gap", "")))
    conn.close()


# -- VMs, images, kernels --------------------------------------------------------------


def test_vm_crud(store: Store) -> None:
    image = store.create_image(
        name="debian", source="oci:debian:12", size=123, meta={"arch": "x86_64"}
    )
    kernel = store.create_kernel(name="debian", source="deb", version="6.1.0", sha256="ab" * 32)
    vm = make_vm(
        store,
        "alpha",
        image_id=image.id,
        kernel_id=kernel.id,
        config=VMConfig.from_json({"ssh": True}),
    )
    assert len(vm.id) == 12 and int(vm.id, 16) >= 0
    assert vm.state is VMState.CREATING
    assert vm.created_at.tzinfo is not None
    assert store.get_vm(vm.id) == vm
    assert store.get_vm_by_name("alpha") == vm
    assert store.resolve_vm("alpha") == vm
    assert store.resolve_vm(vm.id[:4]) == vm

    updated = store.update_vm(
        vm.id, state=VMState.RUNNING, pid=4242, pid_start_time=99, tap="tap-x"
    )
    assert (updated.state, updated.pid, updated.pid_start_time, updated.tap) == (
        VMState.RUNNING,
        4242,
        99,
        "tap-x",
    )
    assert updated.updated_at >= vm.updated_at
    assert store.list_vms(VMState.RUNNING) == [updated]
    assert store.list_vms(VMState.STOPPED) == []

    with pytest.raises(Conflict, match="already exists"):
        make_vm(store, "alpha")
    other = make_vm(store, "beta")
    with pytest.raises(Conflict, match="'alpha' already exists"):
        store.update_vm(other.id, name="alpha")
    with pytest.raises(Conflict, match="tap device"):
        store.update_vm(other.id, tap="tap-x")
    with pytest.raises(InvalidArgument, match="CHECK constraint"):
        store.update_vm(other.id, vcpus=0)
    with pytest.raises(NotFound):
        make_vm(store, "gamma", image_id="nope")
    with pytest.raises(TypeError):
        store.update_vm(other.id, ip="1.2.3.4")  # type: ignore[call-arg]

    store.delete_vm(other.id)
    with pytest.raises(NotFound):
        store.get_vm(other.id)
    with pytest.raises(NotFound):
        store.delete_vm(other.id)
    with pytest.raises(NotFound, match="no VM named 'zzz'"):
        store.resolve_vm("zzz")


def test_vm_with_caller_chosen_id(store: Store) -> None:
    vm = make_vm(store, "chosen", id="abcdef012345")
    assert store.get_vm("abcdef012345") == vm
    with pytest.raises(Conflict):
        make_vm(store, "other", id="abcdef012345")


def test_ambiguous_prefix(store: Store) -> None:
    make_vm(store, "one", id="aaaa11112222")
    make_vm(store, "two", id="aaaa33334444")
    with pytest.raises(Conflict, match="ambiguous"):
        store.resolve_vm("aaaa")
    assert store.resolve_vm("aaaa1").name == "one"


def test_images_and_kernels(store: Store) -> None:
    image = store.create_image(name="deb", source="oci:x", digest="sha256:1", size=10)
    assert store.get_image_by_name("deb") == image
    assert store.update_image(image.id, size=20, meta={"k": "v"}).size == 20
    assert store.get_image(image.id).meta == {"k": "v"}
    store.create_image(name="alpine", source="oci:y")
    assert [i.name for i in store.list_images()] == ["alpine", "deb"]
    with pytest.raises(Conflict, match="an image named 'deb' already exists"):
        store.create_image(name="deb", source="oci:z")

    kernel = store.create_kernel(name="k1", source="deb", version="6.1")
    assert store.update_kernel(kernel.id, version="6.2").version == "6.2"
    assert [k.name for k in store.list_kernels()] == ["k1"]

    vm = make_vm(store, "user", image_id=image.id, kernel_id=kernel.id)
    with pytest.raises(Conflict, match="used by VMs: user"):
        store.delete_image(image.id)
    with pytest.raises(Conflict, match="used by VMs: user"):
        store.delete_kernel(kernel.id)
    store.delete_vm(vm.id)
    store.delete_image(image.id)
    store.delete_kernel(kernel.id)
    with pytest.raises(NotFound):
        store.get_image_by_name("deb")
    with pytest.raises(NotFound):
        store.delete_kernel(kernel.id)


def test_records_are_frozen(store: Store) -> None:
    vm = make_vm(store)
    with pytest.raises(AttributeError):
        vm.name = "other"  # type: ignore[misc]


# -- transactions ---------------------------------------------------------------------


def test_transaction_commits_and_rolls_back_as_one(store: Store) -> None:
    with store.transaction():
        make_vm(store, "a")
        make_vm(store, "b")
    assert len(store.list_vms()) == 2

    with pytest.raises(Conflict), store.transaction():
        make_vm(store, "c")
        make_vm(store, "a")  # fails: the whole block rolls back, "c" included
    assert sorted(vm.name for vm in store.list_vms()) == ["a", "b"]


def test_failed_inner_call_keeps_outer_work(store: Store) -> None:
    with store.transaction():
        make_vm(store, "x")
        with pytest.raises(Conflict):
            make_vm(store, "x")  # rolled back to its savepoint only
        make_vm(store, "y")
    assert sorted(vm.name for vm in store.list_vms()) == ["x", "y"]


def test_other_connection_waits_for_write_lock(db_path: Path) -> None:
    with Store.open(db_path) as first, Store.open(db_path) as second:
        started = threading.Event()
        done = threading.Event()

        def writer() -> None:
            started.set()
            make_vm(second, "later")
            done.set()

        with first.transaction():
            make_vm(first, "earlier")
            thread = threading.Thread(target=writer)
            thread.start()
            started.wait()
            assert not done.wait(0.3)  # blocked by our BEGIN IMMEDIATE
        thread.join(60)  # a hang bound only
        assert done.is_set()
        assert [vm.name for vm in first.list_vms()] == ["earlier", "later"]


# -- IP leases ----------------------------------------------------------------------------


def test_allocate_lowest_free_address(store: Store) -> None:
    subnet = IPv4Network("10.9.0.0/29")  # .0 network, .1 gateway, .7 broadcast
    a, b, c = (make_vm(store, n) for n in "abc")
    assert store.allocate_ip(a.id, subnet, set()) == IPv4Address("10.9.0.2")
    assert store.allocate_ip(b.id, subnet, {IPv4Address("10.9.0.3")}) == IPv4Address("10.9.0.4")
    assert store.allocate_ip(a.id, subnet, set()) == IPv4Address("10.9.0.2")  # idempotent
    assert store.get_vm(a.id).ip == IPv4Address("10.9.0.2")
    assert store.release_ip(a.id) == IPv4Address("10.9.0.2")
    assert store.get_vm(a.id).ip is None
    assert store.release_ip(a.id) is None
    assert store.allocate_ip(c.id, subnet, set()) == IPv4Address("10.9.0.2")  # reused
    assert [(str(lease.ip), lease.vm_id) for lease in store.list_leases()] == [
        ("10.9.0.2", c.id),
        ("10.9.0.4", b.id),
    ]
    lease = store.get_lease(b.id)
    assert lease is not None and lease.allocated_at.tzinfo is not None
    store.delete_vm(b.id)  # the lease goes with the VM
    assert store.get_lease(b.id) is None
    with pytest.raises(NotFound):
        store.allocate_ip("nope", subnet, set())


def test_lease_moves_when_subnet_changes(store: Store) -> None:
    vm = make_vm(store)
    store.allocate_ip(vm.id, IPv4Network("10.1.0.0/24"), set())
    assert store.allocate_ip(vm.id, IPv4Network("10.2.0.0/24"), set()) == IPv4Address("10.2.0.2")
    assert len(store.list_leases()) == 1
    # A lease that became reserved moves too.
    assert store.allocate_ip(vm.id, IPv4Network("10.2.0.0/24"), {IPv4Address("10.2.0.2")}) == (
        IPv4Address("10.2.0.3")
    )


def test_subnet_full(store: Store) -> None:
    subnet = IPv4Network("10.9.0.0/29")  # 5 usable: .2-.6
    vms = [make_vm(store, f"vm{i}") for i in range(6)]
    got = [store.allocate_ip(vm.id, subnet, {IPv4Address("10.9.0.6")}) for vm in vms[:4]]
    assert [str(ip) for ip in got] == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"]
    with pytest.raises(SubnetFull, match=r"no free address in 10.9.0.0/29: 4 leased, 1 reserved"):
        store.allocate_ip(vms[4].id, subnet, {IPv4Address("10.9.0.6")})
    assert store.get_lease(vms[4].id) is None


def test_concurrent_allocation_never_shares_an_address(db_path: Path) -> None:
    subnet = IPv4Network("10.8.0.0/28")  # 13 usable addresses (.2-.14)
    threads_count, per_thread = 8, 3  # 24 requests for 13 addresses
    with Store.open(db_path) as setup:
        vm_ids = [
            [make_vm(setup, f"t{t}-{i}").id for i in range(per_thread)]
            for t in range(threads_count)
        ]

    results: list[tuple[str, IPv4Address]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads_count)

    def worker(ids: list[str]) -> None:
        with Store.open(db_path) as own:  # one connection per thread, like separate processes
            barrier.wait()
            for vm_id in ids:
                try:
                    ip = own.allocate_ip(vm_id, subnet, set())
                except BaseException as exc:
                    with lock:
                        failures.append(exc)
                else:
                    with lock:
                        results.append((vm_id, ip))

    threads = [threading.Thread(target=worker, args=(ids,)) for ids in vm_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    ips = [ip for _, ip in results]
    assert len(ips) == 13
    assert len(set(ips)) == 13
    assert set(ips) == set(list(subnet.hosts())[1:])
    assert len(failures) == threads_count * per_thread - 13
    assert all(isinstance(exc, SubnetFull) for exc in failures), failures
    with Store.open(db_path) as check:
        assert sorted(lease.ip for lease in check.list_leases()) == sorted(ips)
        assert {vm.ip for vm in check.list_vms() if vm.ip} == set(ips)


def test_shared_store_across_threads(store: Store) -> None:
    """One Store used from many threads (asyncio.to_thread) stays consistent."""
    subnet = IPv4Network("10.7.0.0/24")
    vms = [make_vm(store, f"s{i}") for i in range(40)]
    threads = [
        threading.Thread(target=store.allocate_ip, args=(vm.id, subnet, set())) for vm in vms
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len({lease.ip for lease in store.list_leases()}) == 40


# -- operations and events ----------------------------------------------------------------


def test_operation_lifecycle(store: Store) -> None:
    op = store.create_operation("vm.start", "box")
    assert op.state is OpState.PENDING and op.finished_at is None
    op = store.update_operation(op.id, stage="network", state=OpState.RUNNING)
    assert (op.stage, op.state) == ("network", OpState.RUNNING)
    op = store.update_operation(op.id, state=OpState.FAILED, error="tap busy", hint="retry")
    assert op.finished_at is not None and op.error == "tap busy" and op.hint == "retry"
    assert op.stage == "network"  # unchanged
    with pytest.raises(Conflict, match="already failed"):
        store.update_operation(op.id, state=OpState.RUNNING)
    with pytest.raises(NotFound):
        store.update_operation("nope", stage="x")


def test_event_sequence(store: Store) -> None:
    op = store.create_operation("image.pull")
    other = store.create_operation("image.pull")
    for i in range(5):
        event = store.append_event(op.id, "progress", "download", f"step {i}", {"i": i})
        assert event.seq == i + 1
    assert store.append_event(other.id, "log").seq == 1
    events = store.events_since(op.id)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.data["i"] for e in events] == [0, 1, 2, 3, 4]
    assert [e.seq for e in store.events_since(op.id, after_seq=3)] == [4, 5]
    assert [e.seq for e in store.events_since(op.id, after_seq=1, limit=2)] == [2, 3]
    assert store.events_since(op.id, after_seq=5) == []
    with pytest.raises(NotFound):
        store.append_event("nope", "log")
    with pytest.raises(NotFound):
        store.events_since("nope")


def test_concurrent_events_get_distinct_gapless_seqs(db_path: Path) -> None:
    with Store.open(db_path) as setup:
        op_id = setup.create_operation("vm.start").id

    def worker(n: int) -> None:
        with Store.open(db_path) as own:
            for i in range(10):
                own.append_event(op_id, "log", message=f"{n}-{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with Store.open(db_path) as check:
        events = check.events_since(op_id)
    assert [e.seq for e in events] == list(range(1, 41))
    assert len({e.message for e in events}) == 40
    assert [e.at for e in events] == sorted(e.at for e in events)


def test_list_and_prune_operations(db_path: Path) -> None:
    clock = FakeClock()
    with Store.open(db_path, clock=clock) as store:
        old_done = store.create_operation("a")
        store.append_event(old_done.id, "log")
        store.update_operation(old_done.id, state=OpState.SUCCEEDED)
        old_running = store.create_operation("b")
        store.update_operation(old_running.id, state=OpState.RUNNING)
        clock.advance(days=10)
        new_done = store.create_operation("c")
        store.update_operation(new_done.id, state=OpState.FAILED, error="x")
        clock.advance(seconds=1)
        pending = store.create_operation("d")

        assert [op.id for op in store.list_operations()] == [pending.id, old_running.id]
        assert [op.id for op in store.list_operations(include_finished=True)] == [
            pending.id,
            new_done.id,
            old_running.id,
            old_done.id,
        ]
        assert len(store.list_operations(include_finished=True, limit=2)) == 2

        assert store.prune_operations(clock() - timedelta(days=7)) == 1
        with pytest.raises(NotFound):
            store.get_operation(old_done.id)
        with pytest.raises(NotFound):
            store.events_since(old_done.id)
        # Unfinished operations are never pruned, however old.
        assert store.get_operation(old_running.id).state is OpState.RUNNING
        assert store.prune_operations(clock() + timedelta(days=1)) == 1  # new_done
        assert {op.id for op in store.list_operations(include_finished=True)} == {
            old_running.id,
            pending.id,
        }
        with pytest.raises(ValueError, match="naive"):
            store.prune_operations(datetime(2024, 1, 1))


# -- sessions ------------------------------------------------------------------------------


def test_sessions(store: Store) -> None:
    vm = make_vm(store)
    session = store.create_session(vm.id, "agent", ["claude", "--resume"])
    assert session.command == ("claude", "--resume")
    assert session.state is SessionState.STARTING and session.ended_at is None
    assert store.get_session_by_name(vm.id, "agent") == session
    with pytest.raises(Conflict, match="already has a session named 'agent'"):
        store.create_session(vm.id, "agent", ["bash"])
    with pytest.raises(NotFound):
        store.create_session("nope", "x", ["bash"])
    running = store.update_session(session.id, state=SessionState.RUNNING)
    assert running.state is SessionState.RUNNING and running.ended_at is None
    done = store.update_session(session.id, state=SessionState.EXITED, exit_status=3)
    assert done.exit_status == 3 and done.ended_at is not None
    second = store.create_session(vm.id, "shell", ["bash"])
    assert [s.name for s in store.list_sessions(vm.id)] == ["agent", "shell"]
    store.delete_session(second.id)
    with pytest.raises(NotFound):
        store.get_session(second.id)
    store.delete_vm(vm.id)  # cascades to its sessions
    assert store.list_sessions() == []
