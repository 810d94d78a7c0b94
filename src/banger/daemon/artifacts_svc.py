"""What ImageService and KernelService share.

Images and kernels are the same kind of thing to the daemon: a published
directory plus a store row with the same id, one of them marked default in its
row's meta, names unique among the rows. This base class holds that logic once;
the subclasses say how their rows are read and changed, how a reference is
resolved, and what their info looks like.
"""

from __future__ import annotations

import asyncio
import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from banger.config import Config
from banger.errors import InvalidArgument
from banger.paths import Paths
from banger.rmtree import discard_tree
from banger.store import Store

#: The row meta key marking the default artifact of its kind.
DEFAULT_KEY = "default"


class _Row(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def meta(self) -> dict[str, Any]: ...


Row = TypeVar("Row", bound=_Row)
Info = TypeVar("Info")


class ArtifactService(ABC, Generic[Row, Info]):
    #: The noun in messages and commands ("image", "kernel") and its article.
    noun: str
    a_noun: str

    def __init__(
        self, paths: Paths, config: Config, store: Store, publish_lock: asyncio.Lock
    ) -> None:
        self.paths = paths
        self.config = config
        self.store = store
        self.publish_lock = publish_lock

    # -- what a kind supplies ------------------------------------------------------
    @abstractmethod
    def _rows(self) -> builtins.list[Row]: ...

    @abstractmethod
    def _row(self, artifact_id: str) -> Row: ...

    @abstractmethod
    def _update_meta(self, artifact_id: str, meta: dict[str, Any]) -> None: ...

    @abstractmethod
    def _configured_default(self) -> str:
        """The reference the config names when no row is marked default."""

    @abstractmethod
    def find(self, ref: str) -> Row | None: ...

    @abstractmethod
    def get(self, ref: str) -> Row: ...

    @abstractmethod
    def info(self, record: Row) -> Info: ...

    @abstractmethod
    def _delete_row(self, artifact_id: str) -> None:
        """Delete the row; the store refuses, naming the VMs, while a VM uses it."""

    @abstractmethod
    def _remove_directory(self, artifact_id: str) -> None: ...

    # -- listing and removing ----------------------------------------------------------
    async def list(self) -> builtins.list[Info]:
        return await asyncio.to_thread(lambda: [self.info(r) for r in self._rows()])

    async def remove(self, ref: str) -> Info:
        def work() -> Info:
            record = self.get(ref)
            info = self.info(record)
            # The row goes first: its refusal while a VM uses the artifact keeps the files.
            self._delete_row(record.id)
            self._remove_directory(record.id)
            return info

        async with self.publish_lock:
            return await asyncio.to_thread(work)

    # -- the default ---------------------------------------------------------------
    def default_record(self) -> Row | None:
        marked = [r for r in self._rows() if r.meta.get(DEFAULT_KEY)]
        if marked:
            return marked[0]
        return self.find(self._configured_default())

    async def set_default(self, ref: str) -> Info:
        def work() -> Info:
            chosen = self.get(ref)
            with self.store.transaction():
                for record in self._rows():
                    meta = dict(record.meta)
                    if record.id == chosen.id:
                        meta[DEFAULT_KEY] = True
                    else:
                        meta.pop(DEFAULT_KEY, None)
                    if meta != record.meta:
                        self._update_meta(record.id, meta)
            return self.info(self._row(chosen.id))

        return await asyncio.to_thread(work)

    async def get_default(self) -> Info | None:
        def work() -> Info | None:
            record = self.default_record()
            return None if record is None else self.info(record)

        return await asyncio.to_thread(work)

    # -- rows that follow directories ------------------------------------------------
    def _row_for_directory(self, create: Callable[[], Row], directory: Path) -> Row:
        """``create`` the row of a just-published ``directory``; the directory goes if it fails."""
        try:
            return create()
        except BaseException:
            discard_tree(directory)
            raise

    def _check_row_free(self, name: str) -> None:
        if any(r.name == name for r in self._rows()):
            raise InvalidArgument(
                f"name: {self.a_noun} named {name!r} exists already",
                hint=f"remove it first (banger {self.noun} rm {name}) or pick another name",
            )
