"""OCI images for the real-guest image tests: a bootable base layer, a registry, a push.

The base layer is the cached test image's root tree (systemd, sshd, tmux, banger's
fast init) as one uncompressed tar; the registry is Debian's ``docker-registry``
started *inside* the harness's namespace (where bangerd and the helper live, so its
127.0.0.1 is theirs); skopeo pushes a layout written by :func:`tests.registry.write_layout`.
Shared by tests/e2e/test_images_e2e.py and test_image_config_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.harness import Banger
from tests.image_cache import cached_debian_image
from tests.registry import REGISTRY_BIN, LocalRegistry

REGISTRY_PORT = 5000


def base_layer_tar(out: Path) -> Path:
    """The cached test image's root tree as one uncompressed tar (owners, modes, xattrs)."""
    rootfs = cached_debian_image() / "rootfs.ext4"
    mnt = Path(tempfile.mkdtemp(prefix="bgi-mnt-"))
    subprocess.run(["mount", "-o", "loop,ro", str(rootfs), str(mnt)], check=True)
    try:
        names = sorted(os.listdir(mnt))
        subprocess.run(["tar", "-C", str(mnt), "--numeric-owner", "--xattrs",
                        "--xattrs-include=*", "--format=posix", "-cf", str(out), "--", *names],
                       check=True)  # fmt: skip
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        mnt.rmdir()
    return out


@contextmanager
def registry_in(b: Banger, workdir: Path) -> Iterator[LocalRegistry]:
    """docker-registry on the namespace's own 127.0.0.1 (where bangerd and the helper are)."""
    storage = workdir / "registry-data"
    storage.mkdir(parents=True)
    config = workdir / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: 127.0.0.1:{REGISTRY_PORT}\n"
    )
    proc = subprocess.Popen(b.ns.argv(REGISTRY_BIN, "serve", str(config)),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    registry = LocalRegistry(proc, REGISTRY_PORT)
    try:
        registry.wait_ready()
        yield registry
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def push(b: Banger, registry: LocalRegistry, layout: Path, repo: str, tag: str = "v1") -> str:
    ref = f"{registry.host}/{repo}:{tag}"
    b.ns.run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{tag}",
             f"docker://{ref}")  # fmt: skip
    return ref
