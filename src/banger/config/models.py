"""The typed, frozen configuration models (pydantic v2, unknown keys forbidden).

Every field carries a description: the README's config reference is generated
from these models, so the description is the documentation.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict
from pydantic import field_validator as _field_validator

from banger import limits
from banger.config import values as v
from banger.config.file_sync import FileSync

MIB = v.MIB
GIB = 1024 * MIB
TIB = 1024 * GIB

Word = Annotated[str, BeforeValidator(v.parse_word)]
Program = Annotated[str, BeforeValidator(v.parse_program)]
Url = Annotated[str, BeforeValidator(v.parse_url)]
DiskSize = Annotated[
    int,
    BeforeValidator(v.parse_size),
    AfterValidator(v.disk_size(limits.MIN_DISK_BYTES, limits.MAX_DISK_BYTES)),
]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VMSettings(Section):
    """Defaults for new VMs (each can be overridden on `banger vm create`)."""

    vcpus: Annotated[
        int, Strict(), AfterValidator(v.between(limits.MIN_VCPUS, limits.MAX_VCPUS))
    ] = Field(
        default=2, description=f"Virtual CPUs per VM ({limits.MIN_VCPUS}-{limits.MAX_VCPUS})."
    )
    memory_mib: Annotated[
        int,
        BeforeValidator(v.parse_memory_mib),
        AfterValidator(v.between(limits.MIN_MEMORY_MIB, limits.MAX_MEMORY_MIB, "MiB")),
    ] = Field(
        default=1024,
        description=f"Guest memory in MiB ({limits.MIN_MEMORY_MIB}-{limits.MAX_MEMORY_MIB}); "
        'a size string like "2G" works too.',
    )
    work_disk_size: DiskSize = Field(
        default=4 * GIB,
        description='Size of the persistent work disk (`/root`), e.g. "4G", "512M" or bytes.',
    )
    root_disk_size: DiskSize | None = Field(
        default=None,
        description="Grow each VM's root disk to this size; unset keeps the image's size.",
    )
    image: Word = Field(default="debian:bookworm", description="Image used when none is named.")
    kernel: Word = Field(default="debian", description="Kernel used when none is named.")
    init: Literal["systemd", "fast"] = Field(
        default="systemd",
        description='Guest init: "systemd", or "fast" (a tiny PID 1: sshd only, boots faster).',
    )


class NetworkSettings(Section):
    """The host bridge all VMs share, its subnet and the VM DNS domain."""

    bridge: Annotated[str, BeforeValidator(v.parse_ifname)] = Field(
        default="banger0", description="Name of the host bridge (1-15 characters)."
    )
    subnet: Annotated[IPv4Network, BeforeValidator(v.parse_subnet)] = Field(
        default=IPv4Network("172.30.0.0/24"),
        description=(
            "IPv4 subnet for VMs, prefix /16 to /29. The first host address is the "
            "bridge (gateway and DNS); VMs get the lowest free addresses after it."
        ),
    )
    dns_domain: Annotated[str, BeforeValidator(v.parse_dns_domain)] = Field(
        default="banger", description="VMs resolve as `<name>.<dns_domain>`."
    )
    dns_upstreams: tuple[Annotated[IPv4Address | IPv6Address, BeforeValidator(v.parse_ip)], ...] = (
        Field(
            default=(),
            description="Resolvers for names outside dns_domain; empty uses the host's resolvers.",
        )
    )

    @property
    def gateway(self) -> IPv4Address:
        """The bridge's own address: the subnet's first host."""
        return self.subnet.network_address + 1


class FirecrackerSettings(Section):
    binary: Program = Field(
        default="firecracker", description="Firecracker binary: a name on PATH or an absolute path."
    )
    jailer_binary: Program = Field(
        default="jailer", description="Jailer binary: a name on PATH or an absolute path."
    )
    jailer: Annotated[bool, Strict()] = Field(
        default=False, description="Run Firecracker under its jailer."
    )


class DaemonSettings(Section):
    stop_vms_on_shutdown: Annotated[bool, Strict()] = Field(
        default=False,
        description="Stop running VMs when bangerd shuts down (otherwise they keep running).",
    )
    ops_retention_days: Annotated[int, Strict(), AfterValidator(v.between(1, 3650))] = Field(
        default=7, description="Days to keep finished operations and their event logs."
    )


class ImageSettings(Section):
    debian_mirror: Url | None = Field(
        default=None,
        description="Debian mirror for distro image builds; unset uses the host's own apt sources.",
    )
    max_unpacked_size: DiskSize = Field(
        default=64 * GIB,
        description="Largest size an OCI image may unpack to; a pull whose layers expand"
        " past it is refused (a pull also stops before half the free disk space is used).",
    )


class KernelSettings(Section):
    debian_mirror: Url | None = Field(
        default=None,
        description="Debian mirror for kernel downloads; unset fetches through the host's apt-get.",
    )


class Config(Section):
    """The whole of config.toml."""

    vmm: Literal["auto", "firecracker", "qemu"] = Field(
        default="auto",
        description=(
            'VMM driver: "firecracker", "qemu", or "auto" (Firecracker when usable, else QEMU).'
        ),
    )
    vm: VMSettings = Field(default=VMSettings(), description="Defaults for new VMs.")
    network: NetworkSettings = Field(default=NetworkSettings(), description="Host networking.")
    firecracker: FirecrackerSettings = Field(
        default=FirecrackerSettings(), description="Firecracker binaries."
    )
    daemon: DaemonSettings = Field(default=DaemonSettings(), description="bangerd behaviour.")
    images: ImageSettings = Field(default=ImageSettings(), description="Image builds.")
    kernel: KernelSettings = Field(default=KernelSettings(), description="Kernel downloads.")
    file_sync: tuple[FileSync, ...] = Field(
        default=(),
        description="Host files copied onto every new VM's work disk ([[file_sync]] entries).",
    )

    @_field_validator("file_sync", mode="after")
    @classmethod
    def _distinct_targets(cls, entries: tuple[FileSync, ...]) -> tuple[FileSync, ...]:
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries):
            if entry.guest in seen:
                raise NestedProblem(
                    (index, "guest"),
                    f"same destination as file_sync[{seen[entry.guest]}] ({entry.guest_display})",
                )
            seen[entry.guest] = index
        return entries

    def to_json_dict(self) -> dict[str, Any]:
        """The effective config as JSON-ready data; loading it back gives an equal Config."""
        return self.model_dump(mode="json")


class NestedProblem(ValueError):
    """A problem found by a container-level check that belongs to a field below it."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
