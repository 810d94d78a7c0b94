"""A built Debian image for tests, cached across runs.

``cached_debian_image()`` returns a directory holding ``rootfs.ext4``,
``work-seed.ext4`` and ``image.json`` (a published image directory). The
first call builds it with the real pipeline (mmdebstrap through the host's apt
mirror, about a minute); later calls, in this run or the next, reuse it. The
cache key hashes everything that changes the result: suite, package list, the
finalize/ext4/work-seed sources and the fast-init script. A file lock makes
concurrent test processes build it once.

Needs root (the build does). Callers must not modify the returned files:
copy them (``cp --sparse=always``) or use a qcow2 overlay.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from banger.images.build import build_image
from banger.images.distro import DEFAULT_PACKAGES
from banger.images.publish import read_image
from banger.paths import Paths

CACHE_ROOT = Path(os.environ.get("BANGER_TEST_CACHE", "/var/cache/banger-test"))
SUITE = "bookworm"
_KEYED_SOURCES = (
    "banger-fast-init.sh",
    "finalize.py",
    "treepath.py",
    "ext4build.py",
    "workseed.py",
    "publish.py",
    "build.py",
    "distro.py",
)


def image_key(suite: str = SUITE) -> str:
    digest = hashlib.sha256()
    digest.update(f"suite={suite}\n".encode())
    digest.update(("packages=" + ",".join(DEFAULT_PACKAGES) + "\n").encode())
    package = resources.files("banger.images")
    for name in _KEYED_SOURCES:
        digest.update(f"--- {name}\n".encode())
        digest.update((package / name).read_bytes())
    return digest.hexdigest()[:16]


def cached_debian_image(suite: str = SUITE) -> Path:
    """The cached image directory for ``debian:<suite>``, built on first use."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
    target = CACHE_ROOT / f"image-{suite}-{image_key(suite)}"
    with open(CACHE_ROOT / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "image.json").is_file():
            return target
        home = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE_ROOT))
        try:
            paths = Paths.from_env({"BANGER_HOME": str(home)})
            log = (home / "build.log").open("w")
            with log:
                entry = build_image(
                    f"debian:{suite}",
                    paths=paths,
                    mirror=os.environ.get("BANGER_TEST_DEBIAN_MIRROR") or None,
                    progress=lambda line: print(line, file=log, flush=True),
                )
            if target.exists():
                shutil.rmtree(target)
            entry.path.rename(target)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        read_image(target)  # sanity: the moved directory still parses
        return target
