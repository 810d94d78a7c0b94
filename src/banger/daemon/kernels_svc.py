"""KernelService: the daemon's side of ``banger kernel …``.

A kernel exists twice: as a published directory ``kernels/<id>/`` (the files,
:mod:`banger.kernels.store`) and as a store row with the same id (what VMs
reference, so a kernel in use cannot be deleted). Every change writes the
directory first, then the row; a failure in between removes the directory.

Which kernel a VM gets: ``--kernel REF`` (a name, an id, or a source such as
``debian`` / ``debian:<version>``); otherwise the kernel marked default
(``banger kernel default NAME``); otherwise ``vm.kernel`` from the config,
resolved the same way, pulled on first use when it names a source.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from banger.api_models import (
    KernelBuildRegisterRequest,
    KernelCapability,
    KernelImportRequest,
    KernelInfo,
)
from banger.daemon.artifacts_svc import DEFAULT_KEY, ArtifactService
from banger.daemon.ops import OpHandle
from banger.daemon.progress import ThreadProgress
from banger.errors import BangerError, InvalidArgument, NotFound
from banger.kernels.pull import import_kernel, parse_source, pull_kernel
from banger.kernels.store import KernelEntry, publish_kernel, read_kernel
from banger.rmtree import discard_tree
from banger.store import KernelRecord

log = logging.getLogger(__name__)


def kernel_capability_list(entry: KernelEntry) -> list[KernelCapability]:
    """Which VMMs can boot ``entry``; a failed vmlinux extraction says why Firecracker cannot."""
    from banger.kernels.vmlinux import kernel_capabilities

    found = kernel_capabilities(entry.path)
    out = []
    for vmm, (ok, reason) in sorted(found.items()):
        error = entry.meta.get("vmlinux_error")
        if vmm == "firecracker" and not ok and isinstance(error, str):
            reason = f"{reason} (extraction failed: {error})"
        out.append(KernelCapability(vmm=vmm, ok=ok, reason=reason))
    return out


def pvh_boot(entry: KernelEntry) -> bool:
    """Whether QEMU boots ``entry`` through its PVH ``vmlinux`` (else the bzImage or the ELF)."""
    from banger.kernels.vmlinux import qemu_pvh_image

    return qemu_pvh_image(entry.path) is not None


def _absolute(field: str, value: str | None) -> Path | None:
    if value is None:
        return None
    if "\0" in value:
        raise InvalidArgument(f"{field}: a path cannot contain a NUL byte: {value!r}")
    path = Path(value)
    if not path.is_absolute():
        raise InvalidArgument(f"{field}: must be an absolute path: {value}")
    return path


class KernelService(ArtifactService[KernelRecord, KernelInfo]):
    noun = "kernel"
    a_noun = "a kernel"

    # -- rows ------------------------------------------------------------------------
    def _rows(self) -> list[KernelRecord]:
        return self.store.list_kernels()

    def _row(self, artifact_id: str) -> KernelRecord:
        return self.store.get_kernel(artifact_id)

    def _update_meta(self, artifact_id: str, meta: dict[str, Any]) -> None:
        self.store.update_kernel(artifact_id, meta=meta)

    def _delete_row(self, artifact_id: str) -> None:
        self.store.delete_kernel(artifact_id)

    def _remove_directory(self, artifact_id: str) -> None:
        discard_tree(self.paths.kernel_dir(artifact_id))

    def _configured_default(self) -> str:
        return self.config.vm.kernel

    # -- reading ---------------------------------------------------------------------
    def entry(self, record: KernelRecord) -> KernelEntry:
        return read_kernel(self.paths.kernel_dir(record.id))

    def info(self, record: KernelRecord, *, capabilities: bool = False) -> KernelInfo:
        """``capabilities`` reads the ELF kernel (tens of MB): ``show`` asks, ``list`` does not."""
        entry = self.entry(record)
        users = [vm.name for vm in self.store.list_vms() if vm.kernel_id == record.id]
        vmlinux = entry.vmlinux_path
        return KernelInfo(
            vmlinux=vmlinux.name if vmlinux is not None else None,
            pvh=pvh_boot(entry) if capabilities else None,
            capabilities=kernel_capability_list(entry) if capabilities else [],
            id=record.id,
            name=record.name,
            source=record.source,
            version=record.version,
            kernel=entry.kernel,
            initrd=entry.initrd,
            path=str(entry.path),
            default=bool(record.meta.get(DEFAULT_KEY)),
            needs_initramfs=entry.needs_initramfs,
            created_at=record.created_at,
            used_by=users,
        )

    def find(self, ref: str) -> KernelRecord | None:
        """A kernel by name, id, or source (``debian`` = the newest Debian one)."""
        records = self.store.list_kernels()
        for record in records:
            if ref in (record.name, record.id):
                return record
        if ref == "debian" or ref.startswith("debian:"):
            matching = [
                r
                for r in records
                if r.source == ref or (ref == "debian" and r.source.startswith("debian:"))
            ]
            if matching:
                return max(matching, key=lambda r: r.created_at)
        return None

    def get(self, ref: str) -> KernelRecord:
        record = self.find(ref)
        if record is None:
            raise NotFound(
                f"kernel: no kernel named {ref!r}",
                hint="`banger kernel list` shows them; `banger kernel pull debian` fetches one",
            )
        return record

    async def show(self, ref: str) -> KernelInfo:
        return await asyncio.to_thread(lambda: self.info(self.get(ref), capabilities=True))

    # -- resolving for a VM ------------------------------------------------------------
    def resolve_now(self, ref: str | None) -> KernelRecord | None:
        """The kernel for a new VM if it exists already; None if the default must be pulled.

        An explicit ``ref`` that is neither known nor a pullable source is an error.
        """
        if ref is not None:
            record = self.find(ref)
            if record is None:
                try:
                    parse_source(ref)
                except InvalidArgument:
                    raise NotFound(
                        f"kernel: no kernel named {ref!r}",
                        hint="`banger kernel list` shows them",
                    ) from None
            return record
        return self.default_record()

    async def ensure(self, ref: str | None, op: OpHandle) -> KernelRecord:
        """The VM's kernel, pulling it when the reference names a source not yet here."""
        record = await asyncio.to_thread(self.resolve_now, ref)
        if record is not None:
            return record
        source = ref or self.config.vm.kernel
        await op.event("notice", f"kernel {source} is not here yet: pulling it")
        info = await self.pull(source, None, op)
        return await asyncio.to_thread(self.store.get_kernel, info.id)

    # -- changing ------------------------------------------------------------------
    def _record(self, entry: KernelEntry) -> KernelRecord:
        return self._row_for_directory(
            lambda: self.store.create_kernel(
                id=entry.id,
                name=entry.name,
                source=entry.source,
                version=entry.version,
                sha256=entry.sha256.get(entry.kernel),
                meta={"kernel": entry.kernel, "initrd": entry.initrd},
            ),
            entry.path,
        )

    def _check_name_free(self, name: str | None) -> None:
        if name is not None:
            self._check_row_free(name)

    async def import_(self, request: KernelImportRequest) -> KernelInfo:
        path = _absolute("path", request.path)
        assert path is not None
        initrd = _absolute("initrd", request.initrd)
        modules = _absolute("modules", request.modules)

        def work() -> KernelInfo:
            self._check_name_free(request.name)
            entry = import_kernel(
                path, paths=self.paths, initrd=initrd, modules=modules, name=request.name
            )
            return self.info(self._record(entry))

        async with self.publish_lock:
            return await asyncio.to_thread(work)

    def _registered_build(self, key: str, name: str | None) -> KernelRecord | None:
        """The kernel a build with ``key`` was registered as already (under ``name``, if given)."""
        for record in self.store.list_kernels():
            if name is not None and record.name != name:
                continue
            build = self.entry(record).meta.get("build")
            if isinstance(build, dict) and build.get("key") == key:
                return record
        return None

    async def register_build(self, request: KernelBuildRegisterRequest) -> KernelInfo:
        """Publish a finished ``banger kernel build`` (the CLI compiled it as the owner).

        The same build asked for again is the kernel registered already: a second
        ``kernel build`` with the same inputs changes nothing.
        """
        from banger.kernels.build import default_name, kernel_meta, read_build
        from banger.kernels.store import check_kernel_name

        build_dir = _absolute("build", request.build)
        assert build_dir is not None
        if request.name is not None:
            check_kernel_name(request.name)

        def work() -> KernelInfo:
            try:
                built = read_build(build_dir)
            except BangerError as exc:  # the request named something else: bad input
                raise InvalidArgument(f"build: {exc.message}", hint=exc.hint) from exc
            existing = self._registered_build(str(built.meta.get("key")), request.name)
            if existing is not None:
                return self.info(existing)
            name = request.name or default_name(built)
            if request.name is None and self.find(name) is not None:
                # Another build (other inputs) has the plain name: the key tells them apart.
                name = f"{name}-{str(built.meta.get('key'))[:8]}"
            self._check_name_free(name)
            entry = publish_kernel(
                self.paths.kernels_dir,
                self.paths.tmp_dir,
                name,
                built.bzimage,
                None,
                None,
                kernel_meta(built),
            )
            return self.info(self._record(entry))

        async with self.publish_lock:
            return await asyncio.to_thread(work)

    async def pull(self, source: str, name: str | None, op: OpHandle) -> KernelInfo:
        parse_source(source)
        await op.stage("pull_kernel", f"pulling kernel {source}")
        progress = ThreadProgress(op, asyncio.get_running_loop())

        def work() -> KernelInfo:
            self._check_name_free(name)
            entry = pull_kernel(
                source,
                paths=self.paths,
                mirror=self.config.kernel.debian_mirror,
                progress=progress.counted,
                name=name,
            )
            return self.info(self._record(entry))

        async with self.publish_lock:
            info = await asyncio.to_thread(work)
        await op.event("info", f"kernel {info.name} ({info.version}) ready", {"kernel": info.id})
        return info
