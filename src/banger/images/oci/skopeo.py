"""skopeo command lines (pure builders) and the two calls banger makes.

banger never talks to registries itself: skopeo brings registry protocols,
auth (the user's ``containers-auth.json`` / ``~/.docker/config.json`` through
its default lookup, or ``--authfile`` when configured), TLS, mirrors from
``registries.conf`` and platform selection. Two calls:

- ``inspect`` resolves a registry reference to its manifest digest (no
  blobs fetched), so the copy that follows is pinned to that digest even if
  the tag moves meanwhile;
- ``copy`` writes the image, for linux/amd64, into an OCI layout.

Loopback registries (``localhost``, ``127.0.0.0/8``, ``[::1]``) are reached
without TLS verification, as Docker itself does by default; every other
registry is verified unless listed in ``insecure_registries``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from banger import proc
from banger.errors import InvalidArgument
from banger.images.oci.ref import ArchiveRef, OciRef, RegistryRef

OS = "linux"
ARCH = "amd64"
#: A big image over a slow link; skopeo has its own per-request timeouts.
COPY_TIMEOUT = 3 * 3600.0
INSPECT_TIMEOUT = 300.0


@dataclass(frozen=True)
class SkopeoOptions:
    """How to reach registries: an explicit auth file and registries without TLS checks."""

    authfile: Path | None = None
    insecure_registries: frozenset[str] = frozenset()


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def source_arg(ref: OciRef) -> str:
    """The skopeo source image name of ``ref`` (always with an explicit transport)."""
    if isinstance(ref, ArchiveRef):
        return f"{ref.transport}:{ref.path}"
    return f"docker://{ref.transport_name}"


def _registry_flags(ref: OciRef, options: SkopeoOptions, direction: str) -> list[str]:
    flags: list[str] = []
    if not isinstance(ref, RegistryRef):
        return flags
    if options.authfile is not None:
        if not options.authfile.is_absolute():
            raise InvalidArgument(f"auth file {options.authfile} must be an absolute path")
        flags.append(f"--{direction}authfile={options.authfile}")
    if is_loopback_host(ref.host) or ref.domain in options.insecure_registries:
        flags.append(f"--{direction}tls-verify=false")
    return flags


def platform_flags() -> list[str]:
    return ["--override-os", OS, "--override-arch", ARCH]


def inspect_digest_argv(ref: RegistryRef, options: SkopeoOptions) -> list[str]:
    """``skopeo inspect`` printing only the manifest digest of ``ref`` for linux/amd64."""
    return ["skopeo", *platform_flags(), "inspect", "--format", "{{.Digest}}",
            *_registry_flags(ref, options, ""), source_arg(ref)]  # fmt: skip


def copy_argv(ref: OciRef, layout: Path, tag: str, options: SkopeoOptions) -> list[str]:
    """``skopeo copy`` of ``ref`` (linux/amd64) into the OCI layout ``layout`` as ``tag``."""
    if not layout.is_absolute():
        raise InvalidArgument(f"OCI layout {layout} must be an absolute path")
    if ":" in str(layout):
        raise InvalidArgument(f"OCI layout path {layout} must not contain ':'")
    return ["skopeo", *platform_flags(), "copy", "--quiet",
            *_registry_flags(ref, options, "src-"), source_arg(ref),
            f"oci:{layout}:{tag}"]  # fmt: skip


def inspect_digest(ref: RegistryRef, options: SkopeoOptions) -> str:
    """The manifest digest ``ref`` resolves to now (``sha256:…``)."""
    out = proc.run(inspect_digest_argv(ref, options), timeout=INSPECT_TIMEOUT).out.strip()
    return ref.with_digest(out).digest or out


def copy_to_layout(ref: OciRef, layout: Path, tag: str, options: SkopeoOptions) -> None:
    proc.run(copy_argv(ref, layout, tag, options), timeout=COPY_TIMEOUT)
