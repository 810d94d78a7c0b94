"""A built Debian image for tests, cached across runs, built the way users get it.

``cached_debian_image()`` returns a directory holding ``rootfs.ext4``,
``work-seed.ext4`` and ``image.json`` (a published image directory). The
first call builds it through the production path — ``banger image build
debian:<suite>`` run by an unprivileged throwaway owner: the CLI auto-starts
``bangerd`` as that owner, whose ImageService asks a real ``banger-helper``
(root) for its ``image_build`` op (mmdebstrap through the host's apt mirror,
about a minute or two), then adopts the result the helper handed over — so
the image every guest test boots is one the real first-use path made. Later
calls, in this run or the next, reuse it. The cache key hashes everything that
changes the result or how it is made: suite, package list, every source of
``banger.images`` and the helper and daemon modules that run the build (see
``_KEYED_PACKAGES``). A file lock makes concurrent test processes build it once.

Helper and daemon run in the host network namespace: the build needs the
package mirror, and neither creates a bridge, tap or NAT rule for it.

Needs root (it creates a user and runs the helper). Callers must not modify
the returned files: copy them (``cp --sparse=always``) or use a qcow2 overlay.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from contextlib import suppress
from importlib import resources
from pathlib import Path
from typing import TextIO

from banger.images.aptsources import resolve_debian_mirror
from banger.images.distro import DEFAULT_PACKAGES, build_debian_rootfs, mmdebstrap_argv
from banger.images.publish import read_image
from banger.paths import Paths
from tests.helper_launch import start_helper
from tests.support import VENV_BIN, User, package_sources, stop_pid, throwaway_user

CACHE_ROOT = Path(os.environ.get("BANGER_TEST_CACHE", "/var/cache/banger-test"))
SUITE = "bookworm"
#: What the key covers, as a rule rather than a hand-picked list (a list goes
#: stale as the build grows modules): every file of the image-building package,
#: recursively (``.py`` and the init script alike), plus the modules outside it
#: that run the build: the root helper's op and the staging and exec code it runs
#: with, the daemon's ImageService that drives it and adopts its result, and the
#: ext4 editing the daemon applies to the work seed. A change to any of them
#: rebuilds the image, so a warm cache cannot hide a build regression. Generic
#: plumbing (banger.proc, errors, the helper's request table) is left out: a
#: regression there fails far more than the image build.
_KEYED_PACKAGES = ("banger.images",)
_KEYED_MODULES = (
    ("banger.helper", "image_build.py"),
    ("banger.helper", "rootstage.py"),
    ("banger.helper", "bindexec.py"),
    ("banger.helper", "staging.py"),
    ("banger.daemon", "images_svc.py"),
    ("banger.disk", "ext4.py"),
    ("banger.disk", "debugfs_script.py"),
)
BUILD_TIMEOUT = 1800


def image_key(suite: str = SUITE) -> str:
    digest = hashlib.sha256()
    digest.update(f"suite={suite}\nvia=banger image build\n".encode())
    digest.update(("packages=" + ",".join(DEFAULT_PACKAGES) + "\n").encode())
    for label, data in keyed_sources():
        digest.update(f"--- {label}\n".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def keyed_sources() -> list[tuple[str, bytes]]:
    """(label, bytes) of every source the image key covers, in a stable order."""
    found = [source for package in _KEYED_PACKAGES for source in package_sources(package)]
    for package, name in _KEYED_MODULES:
        found.append((f"{package}/{name}", (resources.files(package) / name).read_bytes()))
    return found


def cached_debian_image(suite: str = SUITE) -> Path:
    """The cached image directory for ``debian:<suite>``, built on first use."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
    target = CACHE_ROOT / f"image-{suite}-{image_key(suite)}"
    with open(CACHE_ROOT / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "image.json").is_file():
            return target
        # Short: the owner's sockets live under it (108-byte sun_path limit).
        home = Path(tempfile.mkdtemp(prefix="bi-", dir=CACHE_ROOT))
        log_path = CACHE_ROOT / f"{target.name}.build.log"
        try:
            with log_path.open("w") as log:
                built = build_as_owner(suite, home, log)
            if target.exists():
                shutil.rmtree(target)
            built.rename(target)
            # The throwaway owner is gone: hand the files to root, readable by all.
            for path in (target, *target.iterdir()):
                os.chown(path, 0, 0, follow_symlinks=False)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        read_image(target)  # sanity: the moved directory still parses
        return target


def build_as_owner(suite: str, home: Path, log: TextIO) -> Path:
    """``banger image build debian:<suite>`` as a throwaway owner; the published image dir."""
    with throwaway_user("bgi") as user:
        paths = Paths.from_env({"BANGER_HOME": str(home)})
        for d in (home, paths.state_dir, paths.runtime_dir, paths.config_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chown(d, user.uid, user.gid)
        mirror = os.environ.get("BANGER_TEST_DEBIAN_MIRROR")
        if mirror:
            paths.config_file.write_text(f'[images]\ndebian_mirror = "{mirror}"\n')
            os.chown(paths.config_file, user.uid, user.gid)
        helper = _start_helper(paths, user)
        try:
            result = subprocess.run(
                _as_owner(user, home, "image", "build", f"debian:{suite}"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        finally:
            with suppress(OSError, ValueError):
                stop_pid(int(paths.daemon_pidfile.read_text().split()[0]))
            stop_pid(helper)
        if result.returncode != 0:
            raise AssertionError(
                f"banger image build debian:{suite} exited {result.returncode}; see {log.name}"
            )
        [built] = list(paths.images_dir.iterdir())
        return built


def _start_helper(paths: Paths, user: User) -> int:
    """The helper in the host namespace (the build needs the mirror), serving ``user``."""
    return start_helper(paths, user.uid)


def _as_owner(user: User, home: Path, *args: str) -> list[str]:
    env = {
        "HOME": str(user.home),
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "BANGER_HOME": str(home),
        "LANG": "C.UTF-8",
    }
    return [
        "setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
        "env", "-i", *(f"{k}={v}" for k, v in env.items()),
        str(VENV_BIN / "banger"), *args,
    ]  # fmt: skip


def cached_minbase() -> Path:
    """A Debian minbase tree (mmdebstrap, no systemd/sshd/tmux), built once and cached.

    Keyed by the mmdebstrap argv; callers copy it (``cp -a``) before changing it.
    """
    mirror = resolve_debian_mirror(os.environ.get("BANGER_TEST_DEBIAN_MIRROR") or None)
    argv = mmdebstrap_argv(SUITE, Path("/out"), mirror=mirror, packages=())
    key = hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]
    CACHE_ROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
    target = CACHE_ROOT / f"minbase-{SUITE}-{key}"
    with open(CACHE_ROOT / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "tree/etc/debian_version").is_file():
            work = Path(tempfile.mkdtemp(prefix="minbase-", dir=CACHE_ROOT))
            try:
                build_debian_rootfs(SUITE, work / "tree", mirror=mirror, packages=())
                if target.exists():
                    shutil.rmtree(target)
                work.rename(target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return target / "tree"
