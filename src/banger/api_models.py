"""The daemon API's request and response bodies, shared by bangerd and the client.

Responses ignore unknown fields when parsed (a newer daemon may add some
without breaking an older CLI); requests forbid them (a typo in a field name is
a 400 naming that field, not a silently ignored option).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: Bumped when a response changes incompatibly; ``GET /v1/version`` reports it.
API_VERSION = 1

#: Operation states (the store's). A cancelled operation is ``failed`` with
#: error "cancelled: …", so there is one terminal failure state to check.
OP_PENDING = "pending"
OP_RUNNING = "running"
OP_SUCCEEDED = "succeeded"
OP_FAILED = "failed"
FINISHED_STATES = frozenset({OP_SUCCEEDED, OP_FAILED})


class Response(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorBody(Response):
    """Every non-2xx answer: one line, an optional hint, and the error's kind.

    ``kind`` is the :class:`~banger.errors.BangerError` class name, so the client
    can raise the same class (and the CLI exit with the same code).
    """

    error: str
    hint: str | None = None
    kind: str = "BangerError"


class VersionInfo(Response):
    version: str
    api: int
    pid: int
    uid: int
    started_at: datetime


class Operation(Response):
    """One long-running piece of work (VM start, image pull, …) and where it got to."""

    id: str
    kind: str
    target: str | None = None
    state: str
    stage: str | None = None
    error: str | None = None
    hint: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


class OpEvent(Response):
    """One progress event of an operation; ``seq`` increases by one per event."""

    op_id: str
    seq: int
    at: datetime
    kind: str
    stage: str | None = None
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class VMSummary(Response):
    id: str
    name: str
    state: str
    image: str | None = None
    kernel: str | None = None
    ip: str | None = None
    created_at: datetime | None = None


class SelftestRequest(Request):
    """``POST /v1/ops/selftest``: a harmless diagnostic operation.

    It runs a few real stages (read the store, check the runtime directory,
    emit events) so clients and ``banger doctor`` can exercise the whole
    operation path; ``fail_at`` makes it fail on purpose at that stage.
    """

    fail_at: str | None = Field(default=None, description="Stage at which to fail on purpose.")
    delay_ms: int = Field(default=50, ge=0, le=5000, description="Pause between stages.")


# -- kernels, images, VMs: the artifacts and the machines built from them -----------


class KernelCapability(Response):
    """Whether one VMM can boot a kernel entry, and why (not)."""

    vmm: str
    ok: bool
    reason: str


class KernelInfo(Response):
    id: str
    name: str
    source: str
    version: str | None = None
    kernel: str
    initrd: str | None = None
    path: str
    default: bool = False
    created_at: datetime | None = None
    used_by: list[str] = Field(default_factory=list)
    vmlinux: str | None = Field(
        default=None, description="The ELF kernel Firecracker boots (extracted from a bzImage)."
    )
    capabilities: list[KernelCapability] = Field(
        default_factory=list, description="Per VMM: can it boot this kernel, and why (not)."
    )
    pvh: bool | None = Field(
        default=None,
        description="QEMU boots the uncompressed vmlinux through its PVH entry (only with "
        "capabilities, i.e. kernel show).",
    )
    needs_initramfs: bool = Field(
        default=True,
        description="False for a `kernel build` kernel: every driver is built in, it boots "
        "without an initramfs and VMs get none.",
    )


class KernelImportRequest(Request):
    path: str = Field(description="Absolute path of a bzImage or ELF vmlinux.")
    initrd: str | None = Field(default=None, description="An initramfs to use as it is.")
    modules: str | None = Field(
        default=None, description="A lib/modules/<release> tree to build banger's initramfs from."
    )
    name: str | None = None


class KernelBuildRegisterRequest(Request):
    build: str = Field(
        description="Absolute path of a finished `banger kernel build` directory "
        "(bzImage, config, build.json) in the owner's cache."
    )
    name: str | None = None


class KernelPullRequest(Request):
    source: str = Field(description="`debian` or `debian:<package-version>`.")
    name: str | None = None


class ImageInfo(Response):
    id: str
    name: str
    source: str
    description: str = ""
    size: int = 0
    rootfs: str
    work_seed: str
    init_modes: list[str] = Field(default_factory=list)
    default: bool = False
    created_at: datetime | None = None
    used_by: list[str] = Field(default_factory=list)
    digest: str | None = Field(default=None, description="OCI manifest digest, for pulls.")
    rootfs_size: int = Field(default=0, description="Apparent size of rootfs.ext4 (bytes).")
    work_seed_size: int = 0
    config: dict[str, Any] = Field(
        default_factory=dict, description="OCI image config: Env, WorkingDir, User."
    )


class ImagePullRequest(Request):
    ref: str = Field(
        description="An OCI reference (debian:bookworm, localhost:5000/x:y, oci-archive:/p.tar)"
        " or bundle:/abs/path | bundle:https://…"
    )
    name: str | None = None


class ImageExportRequest(Request):
    output: str = Field(description="Absolute path of the bundle file to write.")


class ImagePromoteRequest(Request):
    vm: str
    name: str
    with_work_disk: bool = False
    #: keep what file_sync and git identity wrote in the work seed (left out by default)
    include_synced: bool = False


class ImageRegisterRequest(Request):
    path: str = Field(description="A banger image directory or a banger-finalized ext4 file.")
    name: str | None = None


class ImageBuildRequest(Request):
    ref: str = Field(default="debian:bookworm", description="`debian:<suite>`.")
    name: str | None = None


class ImagePruneRequest(Request):
    dry_run: bool = Field(default=False, description="Only say what would be removed.")


class PrunedBlobInfo(Response):
    digest: str
    size: int


class ImagePruneResult(Response):
    """What `image prune` removed (or, with dry_run, would remove) from the OCI cache."""

    dry_run: bool
    blobs: int = Field(description="Blobs no image needs.")
    bytes: int = Field(description="Their total size.")
    freed: int = Field(description="Bytes actually removed (0 with dry_run).")
    refs: int = Field(description="Reference records of images no longer kept.")
    kept_blobs: int
    kept_bytes: int
    images: int = Field(description="Images whose blobs are kept.")
    removed: list[PrunedBlobInfo] = Field(
        default_factory=list, description="The blobs (the first 1000)."
    )


class DefaultRequest(Request):
    name: str


class CreateWorkspaceRequest(Request):
    path: str = Field(description="Absolute host path inside the repository to copy in.")
    dest: str | None = Field(
        default=None,
        description="Guest directory under /root (absolute, or relative to it);"
        " default /root/<repo name>.",
    )


class VMCreateRequest(Request):
    name: str | None = Field(default=None, description="A DNS label; generated when absent.")
    image: str | None = None
    kernel: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    work_disk_size: int | None = Field(default=None, description="Bytes.")
    init: str | None = Field(default=None, description="`systemd` or `fast`.")
    start: bool = True
    pool: str | None = Field(
        default=None,
        description="Take a ready guest from this pool instead of booting one; image, kernel,"
        " vcpus, memory_mib, init and work_disk_size are the pool's and must be absent.",
    )
    workspace: CreateWorkspaceRequest | None = Field(
        default=None,
        description="A repository written onto the work disk before the first boot"
        " (as `workspace prepare` would copy it); the operation's `workspace` event says where.",
    )


class PoolSetRequest(Request):
    """``banger pool set``: what every guest of the pool is; absent fields keep their value
    (a new pool takes the defaults ``vm create`` would)."""

    image: str | None = None
    kernel: str | None = None
    size: int | None = Field(default=None, description="How many guests to keep ready (0-16).")
    vcpus: int | None = None
    memory_mib: int | None = None
    init: str | None = Field(default=None, description="`systemd` or `fast`.")


class PoolInfo(Response):
    """A pool: its spec, its template snapshot and its ready guests."""

    name: str
    image: str = Field(description="The image's name.")
    kernel: str = Field(description="The kernel's name.")
    size: int
    vcpus: int
    memory_mib: int
    init: str
    state: str = Field(
        description="`filling` (guests being made), `ready` (size guests ready), "
        "`failed` (the last fill failed: see error) or `empty` (size 0)."
    )
    ready: list[str] = Field(description="The ready guests' internal VM names.")
    template: str | None = Field(
        default=None, description="The template snapshot's name, once made."
    )
    error: str | None = Field(default=None, description="Why the last fill failed.")
    created_at: datetime
    updated_at: datetime | None = None


class VMForkRequest(Request):
    count: int = Field(default=1, description="How many children (1-16).")
    name: str | None = Field(
        default=None, description="Children are named PREFIX-1..N; default <source>-fork."
    )


class VMForkStarted(Response):
    operation: Operation
    children: list[str] = Field(description="The children's names, in the order made.")
    disk_copies: str = Field(description="`reflink` or `sparse copy`: how the disks are copied.")


class VMStopRequest(Request):
    timeout: float = Field(default=30.0, ge=0, le=600)


class BootPhase(Response):
    phase: str
    label: str
    seconds: float | None = Field(
        default=None, description="Wall seconds since the VMM started, when bangerd saw it."
    )
    kernel: float | None = Field(
        default=None, description="The printk timestamp of the phase's console line (guest clock)."
    )


class VMDetail(Response):
    id: str
    name: str
    state: str
    image: str | None = None
    image_name: str | None = None
    kernel: str | None = None
    kernel_name: str | None = None
    vmm: str
    vmm_reason: str | None = Field(
        default=None, description="Why the VM got its driver (chosen once, at create)."
    )
    accelerator: str | None = None
    agent: str | None = Field(
        default=None,
        description="The guest agent channel: available, not answering (SSH only), or none.",
    )
    init_mode: str
    vcpus: int
    memory_mib: int
    work_disk_size: int
    root_strategy: str | None = None
    ip: str | None = None
    mac: str | None = None
    tap: str | None = None
    pid: int | None = None
    created_at: datetime
    updated_at: datetime | None = None
    last_error: str | None = None
    console_log: str
    vm_dir: str
    boot_timeline: list[BootPhase] = Field(
        default_factory=list,
        description="The last cold boot's phases, from the VMM's start to the first SSH answer.",
    )


class SSHInfo(Response):
    """What the CLI needs to run the system ``ssh`` into a VM."""

    vm: str
    host: str
    port: int = 22
    user: str = "root"
    known_hosts: str
    client_key: str
    workdir: str | None = Field(
        default=None, description="The image's WorkingDir: where `vm ssh VM -- CMD` runs."
    )
    run_as: str | None = Field(
        default=None, description="The image's User (not root): who runs `vm ssh VM -- CMD`."
    )
