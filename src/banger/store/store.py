"""The Store: one SQLite database, migrated on open, with typed repository methods."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from banger.store.db import Clock, Database, utcnow
from banger.store.migrations import MIGRATIONS, Migration, migrate, schema_version
from banger.store.repo_artifacts import ArtifactRepo
from banger.store.repo_leases import LeaseRepo
from banger.store.repo_ops import OperationRepo
from banger.store.repo_pools import PoolRepo
from banger.store.repo_sessions import SessionRepo
from banger.store.repo_snapshots import SnapshotRepo
from banger.store.repo_vms import VMRepo


class Store(VMRepo, ArtifactRepo, LeaseRepo, OperationRepo, SessionRepo, SnapshotRepo, PoolRepo):
    """Synchronous and thread-safe; the daemon calls it via ``asyncio.to_thread``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        clock: Clock = utcnow,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> Store:
        """Open (creating directories and file as needed) and migrate to the newest schema."""
        db = Database.connect(path, clock=clock)
        try:
            with db.reading() as conn:
                migrate(conn, migrations)
        except BaseException:
            db.close()
            raise
        return cls(db)

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def schema_version(self) -> int:
        with self._db.reading() as conn:
            return schema_version(conn)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several repository calls into one ``BEGIN IMMEDIATE`` transaction."""
        with self._db.transaction():
            yield

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
