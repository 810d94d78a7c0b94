"""A real local registry (Debian's ``docker-registry``) and OCI images built by hand.

``LocalRegistry`` starts ``/usr/bin/docker-registry`` on ``127.0.0.1:<free
port>`` with a private config and storage directory, waits for its
"listening on" log line (no polling), and keeps every log line so tests can
count blob downloads. ``push`` uploads an OCI layout with skopeo.

The layout writer builds images from tar entries written here with
``tarfile`` (whiteouts, opaque dirs, hard links, setuid, file capabilities
as ``SCHILY.xattr.*`` PAX records), computing every digest itself, so the
tests control each byte a layer holds — hostile ones included.

``BOOT_FILES``, ``LOWER`` and ``UPPER`` are sample layers (the first passes
banger's guest-contract checks, the other two exercise whiteouts, opaque dirs,
hard links, setuid and capabilities) and :func:`build` writes a layout of them
with ``CONFIG``; shared by the OCI registry and image prune tests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

REGISTRY_BIN = "/usr/bin/docker-registry"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

#: ``setcap cap_net_raw+ep``: VFS_CAP_REVISION_2, permitted+effective CAP_NET_RAW (13).
CAP_NET_RAW_EP = bytes.fromhex("0100000200200000000000000000000000000000")


# -- tar entries ----------------------------------------------------------------------
def _info(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = 1_700_000_000
    return info


@dataclass(frozen=True)
class Entry:
    info: tarfile.TarInfo
    data: bytes = b""


def file(name: str, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0,
         xattrs: dict[str, bytes] | None = None) -> Entry:  # fmt: skip
    info = _info(name, tarfile.REGTYPE, mode, uid, gid)
    info.size = len(data)
    if xattrs:
        info.pax_headers = {
            f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()
        }
    return Entry(info, data)


def directory(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_info(name, tarfile.DIRTYPE, mode, uid, gid))


def symlink(name: str, target: str) -> Entry:
    info = _info(name, tarfile.SYMTYPE, 0o777)
    info.linkname = target
    return Entry(info)


def hardlink(name: str, target: str) -> Entry:
    info = _info(name, tarfile.LNKTYPE, 0o644)
    info.linkname = target
    return Entry(info)


def chardev(name: str, major: int, minor: int, mode: int = 0o666) -> Entry:
    info = _info(name, tarfile.CHRTYPE, mode)
    info.devmajor, info.devminor = major, minor
    return Entry(info)


def whiteout(path: str) -> Entry:
    parent, _, base = path.rpartition("/")
    return file(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def opaque(dir_path: str) -> Entry:
    return file(f"{dir_path.rstrip('/')}/.wh..wh..opq")


def layer_tar(entries: Sequence[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            tar.addfile(entry.info, io.BytesIO(entry.data) if entry.info.isreg() else None)
    return buf.getvalue()


def compress(tar: bytes, media_type: str) -> bytes:
    if media_type == LAYER_GZIP:
        return gzip.compress(tar, mtime=0)
    if media_type == LAYER_ZSTD:
        return zstandard.ZstdCompressor().compress(tar)
    return tar


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- OCI layouts ----------------------------------------------------------------------
@dataclass
class BuiltImage:
    layout: Path
    tag: str
    manifest_digest: str
    layer_digests: list[str] = field(default_factory=list)


def put_blob(layout: Path, data: bytes) -> str:
    digest = digest_of(data)
    path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def write_layout(
    layout: Path,
    layers: Sequence[Sequence[Entry]],
    *,
    tag: str = "latest",
    media_type: str = LAYER_GZIP,
    config: dict[str, Any] | None = None,
    raw_layers: Sequence[bytes] = (),
    base_tar: Path | None = None,
) -> BuiltImage:
    """An OCI image layout in ``layout`` holding one image: ``layers`` in order.

    The suite's one OCI layout writer. ``raw_layers`` are appended as
    already-built (uncompressed) tar bytes, for layers ``tarfile`` refuses to
    write. ``base_tar``: an uncompressed tar file (a whole root filesystem, too
    big to hold in memory) moved in as the first layer, before ``layers``.
    """
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    tars = [layer_tar(entries) for entries in layers] + list(raw_layers)
    descs: list[dict[str, Any]] = []
    diff_ids: list[str] = []
    if base_tar is not None:
        digest = file_digest(base_tar)
        size = base_tar.stat().st_size
        blob_path = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
        blob_path.parent.mkdir(parents=True, exist_ok=True)
        base_tar.rename(blob_path)
        descs.append({"mediaType": LAYER_TAR, "digest": digest, "size": size})
        diff_ids.append(digest)
    for tar in tars:
        blob = compress(tar, media_type)
        descs.append({"mediaType": media_type, "digest": put_blob(layout, blob),
                      "size": len(blob)})  # fmt: skip
        diff_ids.append(digest_of(tar))
    config_doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_blob = json.dumps(config_doc).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put_blob(layout, config_blob), "size": len(config_blob)},
        "layers": descs,
    }  # fmt: skip
    manifest_blob = json.dumps(manifest).encode()
    manifest_digest = put_blob(layout, manifest_blob)
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": len(manifest_blob),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index))
    return BuiltImage(layout, tag, manifest_digest, [str(d["digest"]) for d in descs])


# -- the registry ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None  # stderr (app log) merged into it
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line)
            if "listening on" in line:
                self._ready.set()
        self._ready.set()  # exited: wake the waiter, which checks the process

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            raise RuntimeError("docker-registry did not start:\n" + "".join(self.lines[-20:]))

    def blob_gets(self, digest: str) -> int:
        """Successful GETs of blob ``digest`` (from the access log)."""
        pattern = re.compile(rf'"GET /v2/[^ ]+/blobs/{re.escape(digest)} HTTP/[0-9.]+" 200 ')
        with self._lock:
            return sum(1 for line in self.lines if pattern.search(line))

    def push(self, image: BuiltImage, repo: str, tag: str | None = None) -> str:
        """Push an OCI layout; returns the registry reference ``127.0.0.1:port/repo:tag``."""
        ref = f"{self.host}/{repo}:{tag or image.tag}"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
             f"oci:{image.layout}:{image.tag}", f"docker://{ref}"],
            check=True, capture_output=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return ref


@contextmanager
def local_registry(workdir: Path) -> Iterator[LocalRegistry]:
    """A registry on loopback for the duration of the block; its data under ``workdir``."""
    port = free_port()
    storage = workdir / "registry-data"
    storage.mkdir(parents=True)
    config = workdir / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        [REGISTRY_BIN, "serve", str(config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    registry = LocalRegistry(proc, port)
    try:
        registry.wait_ready()
        yield registry
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        registry._reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


# --- sample images ---------------------------------------------------------------------

#: Just enough for the guest-contract checks: banger's finalize looks for these.
BOOT_FILES = [
    file("bin/sh", b"#!fake\n", 0o755),
    file("usr/sbin/sshd", b"#!fake\n", 0o755),
    file("usr/bin/tmux", b"#!fake\n", 0o755),
    file("lib/systemd/systemd", b"#!fake\n", 0o755),
    directory("etc/ssh"),
    file("etc/ssh/ssh_host_ed25519_key", b"image key", 0o600),
    directory("root", 0o700),
    file("root/.bashrc", b"# image bashrc\n"),
]
LOWER = [
    directory("etc"),
    file("etc/keep", b"keep"),
    file("etc/deleted", b"bye"),
    directory("srv/data"),
    file("srv/data/lower-only", b"lower"),
    file("usr/bin/passwd", b"ELF passwd", 0o4755),
    file("usr/bin/ping", b"ELF ping", 0o755, xattrs={"security.capability": CAP_NET_RAW_EP}),
    file("usr/lib/libbig.so", b"L" * 4096),
    file("home/dev/notes", b"notes", 0o640, uid=1000, gid=1000),
    symlink("lib64", "usr/lib"),
]
UPPER = [
    whiteout("etc/deleted"),
    directory("srv/data"),
    opaque("srv/data"),
    file("srv/data/upper", b"upper"),
    hardlink("usr/lib/libbig-link.so", "usr/lib/libbig.so"),
]
CONFIG = {"Env": ["PATH=/usr/bin:/bin", "APP_MODE=test"], "WorkingDir": "/srv", "User": "dev"}


def build(tmp: Path, layers: list[list[Entry]], **kw: object) -> BuiltImage:
    return write_layout(tmp / "layout", layers, config=CONFIG, **kw)  # type: ignore[arg-type]
