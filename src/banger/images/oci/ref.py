"""Image references for ``banger image pull``, validated before skopeo sees them.

Accepted shapes (anything else is an :class:`~banger.errors.InvalidArgument`):

- a registry reference in Docker's grammar, with or without ``docker://``:
  ``debian:bookworm`` (Docker Hub, ``library/`` implied), ``ubuntu``
  (``:latest``), ``localhost:5000/x:y``, ``registry.example/o/r@sha256:<hex>``;
- ``oci-archive:/abs/path.tar`` and ``docker-archive:/abs/path.tar`` (the
  daemon's cwd is not the user's: the CLI makes the path absolute).

Why so strict: the string becomes an argument of ``skopeo`` run by the root
helper. A reference is matched against the grammar as a whole (so ``-x`` or
``--authfile=...`` can never reach skopeo as an option), only these
transports are allowed (``dir:``, ``docker-daemon:``, ``containers-storage:``
would read host state), and control characters are refused everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from banger.errors import InvalidArgument

DOCKER_HUB = "docker.io"
ARCHIVE_TRANSPORTS = ("oci-archive", "docker-archive")
#: skopeo transports refused with a specific hint instead of a grammar error.
REFUSED_TRANSPORTS = ("dir", "oci", "docker-daemon", "containers-storage", "ostree", "sif",
                      "tarball")  # fmt: skip

# distribution/reference grammar (reference/regexp.go), IPv6 hosts left out.
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*(?::[0-9]{{1,5}})?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[0-9a-f]{64}"
_REFERENCE_RE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_DIGEST_RE = re.compile(_DIGEST)


@dataclass(frozen=True)
class RegistryRef:
    """A fully qualified registry reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def host(self) -> str:
        return self.domain.rsplit(":", 1)[0]

    def with_digest(self, digest: str) -> RegistryRef:
        if not _DIGEST_RE.fullmatch(digest):
            raise InvalidArgument(f"digest {digest!r} is not sha256:<64 hex digits>")
        return RegistryRef(self.domain, self.path, self.tag, digest)

    @property
    def transport_name(self) -> str:
        """What skopeo gets: the digest alone when pinned (it refuses tag plus digest)."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag}"

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


@dataclass(frozen=True)
class ArchiveRef:
    """An image archive on the local filesystem (``oci-archive:`` / ``docker-archive:``)."""

    transport: str
    path: str

    def __str__(self) -> str:
        return f"{self.transport}:{self.path}"


OciRef = RegistryRef | ArchiveRef


def _bad(ref: str, why: str, hint: str | None = None) -> InvalidArgument:
    return InvalidArgument(
        f"image reference {ref!r} is invalid: {why}",
        hint=hint
        or "for example: debian:bookworm, localhost:5000/team/app:1.2, oci-archive:/srv/app.tar",
    )


def parse_registry_ref(text: str, original: str | None = None) -> RegistryRef:
    """A Docker-style reference, normalised (Docker Hub and ``library/`` filled in)."""
    ref = original or text
    match = _REFERENCE_RE.fullmatch(text)
    if match is None:
        raise _bad(ref, "not a registry reference (name[:tag][@sha256:digest])")
    domain, path = match["domain"], match["path"]
    # "name/x" is Docker Hub user "name" unless the first part looks like a host.
    if domain is not None and not ("." in domain or ":" in domain or domain == "localhost"):
        path = f"{domain}/{path}"
        domain = None
    if domain is None:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if len(path) > 255:
        raise _bad(ref, "the repository name is longer than 255 characters")
    tag = match["tag"]
    if tag is None and match["digest"] is None:
        tag = "latest"
    return RegistryRef(domain, path, tag, match["digest"])


def parse_ref(ref: str) -> OciRef:
    """Parse and validate a pull reference (see the module docstring)."""
    if not ref:
        raise _bad(ref, "it is empty")
    if ref.startswith("-"):
        raise _bad(ref, "it starts with '-'")
    if any(ord(c) < 0x20 or c == "\x7f" or c.isspace() for c in ref):
        raise _bad(ref, "it contains whitespace or control characters")
    if ref.startswith("docker://"):
        return parse_registry_ref(ref.removeprefix("docker://"), ref)
    transport, sep, rest = ref.partition(":")
    if sep and transport in ARCHIVE_TRANSPORTS:
        path = PurePosixPath(rest)
        if not path.is_absolute():
            raise _bad(ref, "the archive path must be absolute")
        if ":" in rest:
            # skopeo reads "archive:PATH:REF"; an image inside a multi-image
            # archive is not supported, and a colon would be read as that.
            raise _bad(ref, "the archive path must not contain ':'")
        return ArchiveRef(transport, str(path))
    if sep and transport in REFUSED_TRANSPORTS:
        # Also shadows Docker Hub images called "dir", "oci", ...: those are
        # still reachable as docker.io/library/<name>:<tag>.
        raise _bad(
            ref,
            f"transport {transport!r} is not supported",
            hint="pull from a registry (docker.io/library/NAME:TAG for a Hub image of that"
            " name), an oci-archive: or a docker-archive: file",
        )
    return parse_registry_ref(ref)


def image_name_for(ref: OciRef) -> str:
    """A default banger image name: ``debian-bookworm``, ``team-app-1.2``, ``app`` …"""
    if isinstance(ref, ArchiveRef):
        stem = PurePosixPath(ref.path).name.split(".")[0]
        base = stem
    else:
        repo = ref.path.removeprefix("library/")
        base = repo.replace("/", "-")
        if ref.tag:
            base += f"-{ref.tag}"
        elif ref.digest:
            base += f"-{ref.digest.removeprefix('sha256:')[:12]}"
    name = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-._")[:63]
    return name or "oci-image"
