"""An offline wheelhouse: banger's wheel and its locked runtime dependencies.

For installing banger where there is no network (a test guest). Two parts:

- ``cached_wheelhouse()``: the wheels of banger's *runtime* dependencies at the
  versions ``requirements.lock`` pins, downloaded with the lock's sha256 hashes
  (``pip download --require-hashes``), plus ``runtime.txt`` (those lock entries,
  hashes included, for a hash-checked offline install) and the lock's uv wheel
  to install them with, as ``make deps`` does (the guest's python3 has no pip,
  and pip run from its wheel under emulation takes minutes). Cached under the test
  cache directory, keyed by the lock's digest and the target interpreter, so the
  index is asked only when the lock changes; a lock change builds a new one.
- ``build_banger_wheel(out)``: banger's own wheel from the working tree, built
  the way ``make build`` does (``uv build --wheel --no-build-isolation``, the
  build backend from the lock) from a copy of the sources, so the shared tree
  gets no ``build/`` or ``*.egg-info``.

Which lock entries are runtime ones is read from the installed distributions'
metadata (the test virtualenv is the lock, installed): the closure of banger's
``Requires-Dist`` without extras, markers evaluated for the target. A version
installed here that differs from the lock's pin is an error, not a guess.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.image_cache import CACHE_ROOT
from tests.support import VENV_BIN

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
#: The interpreter the wheels are for: the test image's python3 (Debian bookworm's 3.11).
TARGET_PYTHON = "3.11"
TARGET_ABI = "cp311"
#: manylinux tags bookworm (glibc 2.36) accepts, the ones the locked wheels use.
TARGET_PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64",
                    "manylinux_2_34_x86_64", "linux_x86_64")  # fmt: skip
RUNTIME_TXT = "runtime.txt"
DOWNLOAD_TIMEOUT = 600


def lock_entries(text: str) -> dict[str, str]:
    """Each lock entry (``name==version`` and its hash lines), by canonical name."""
    entries: dict[str, str] = {}
    for match in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+.*?(?=^\S|\Z)", text, re.M | re.S):
        block = "\n".join(
            line for line in match.group(0).splitlines() if not line.strip().startswith("#")
        )
        entries[canonicalize_name(match.group(1))] = block.rstrip(" \\\n") + "\n"
    return entries


def runtime_closure(root: str = "banger") -> dict[str, str]:
    """``{canonical name: installed version}`` of what ``root`` needs at run time."""
    env = {k: str(v) for k, v in default_environment().items()}
    env |= {"python_version": TARGET_PYTHON, "extra": ""}
    found: dict[str, str] = {}
    todo = [root]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    del found[canonicalize_name(root)]
    return found


def runtime_requirements() -> str:
    """The lock's entries for banger's runtime dependencies, hashes included."""
    entries = lock_entries(LOCK.read_text())
    out: list[str] = []
    for name, version in sorted(runtime_closure().items()):
        entry = entries.get(name)
        assert entry is not None, f"{name} (a runtime dependency) is not in {LOCK.name}"
        pinned = entry.split("==", 1)[1].split()[0]
        assert pinned == version, (
            f"{name}: {version} installed, {pinned} locked; run `make deps` to sync the venv"
        )
        out.append(entry)
    return "".join(out)


def wheelhouse_key() -> str:
    digest = hashlib.sha256(LOCK.read_bytes())
    target = f"{TARGET_PYTHON} {TARGET_ABI} {' '.join(TARGET_PLATFORMS)} +uv"
    digest.update(target.encode())
    return digest.hexdigest()[:16]


def _download(args: list[str], dest: Path) -> None:
    target = ["--python-version", TARGET_PYTHON, "--implementation", "cp", "--abi", TARGET_ABI,
              "--abi", "abi3", "--abi", "none"]  # fmt: skip
    for platform in TARGET_PLATFORMS:
        target += ["--platform", platform]
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", *target, "--dest", str(dest), *args],
        capture_output=True, text=True, check=False, timeout=DOWNLOAD_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, f"pip download {' '.join(args)}:\n{result.stderr[-2000:]}"


def cached_wheelhouse() -> Path:
    """The cached directory of dependency wheels, ``runtime.txt`` and uv's wheel."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True, mode=0o755)
    target = CACHE_ROOT / f"wheelhouse-{wheelhouse_key()}"
    with open(CACHE_ROOT / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / RUNTIME_TXT).is_file():
            return target
        work = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=CACHE_ROOT))
        try:
            requirements = runtime_requirements()
            (work / RUNTIME_TXT).write_text(requirements)
            # Hash-checked against the lock: what lands here is what the lock says.
            _download(["--require-hashes", "-r", str(work / RUNTIME_TXT)], work)
            # The installer: the lock's uv, hash-checked too (not part of runtime.txt).
            uv = work / "uv.txt"
            uv.write_text(lock_entries(LOCK.read_text())["uv"])
            _download(["--require-hashes", "-r", str(uv)], work)
            uv.unlink()
            work.chmod(0o755)
            for path in work.iterdir():
                path.chmod(0o644)
            if target.exists():
                shutil.rmtree(target)
            work.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def uv_wheel(wheelhouse: Path) -> Path:
    [wheel] = wheelhouse.glob("uv-*.whl")
    return wheel


def build_banger_wheel(out: Path) -> Path:
    """banger's wheel from a copy of the working tree's sources; the wheel's path."""
    with tempfile.TemporaryDirectory(prefix="banger-src-") as tmp:
        src = Path(tmp)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (REPO / name).exists():
                shutil.copy2(REPO / name, src / name)
        shutil.copytree(REPO / "src", src / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
        result = subprocess.run(
            [str(VENV_BIN / "uv"), "build", "--wheel", "--no-build-isolation", "--offline",
             "--python", str(VENV_BIN / "python"), "--out-dir", str(out), str(src)],
            capture_output=True, text=True, check=False, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 0, f"uv build:\n{result.stderr[-2000:]}"
    [wheel] = out.glob("banger-*.whl")
    return wheel
