"""``banger kernel build``: a microVM kernel compiled from Debian's ``linux-source``.

Runs as the owner (no root), in the CLI's own process: the build is the
user's terminal job (progress there, Ctrl-C stops it), and only the finished
artifact is handed to bangerd to register. The steps:

1. the source: ``/usr/src/linux-source-6.1.tar.xz`` from the host's
   ``linux-source-6.1`` package (banger never runs apt; a missing package or
   build tool is one error with the one ``apt-get install`` line to run);
2. the cache key (:func:`build_inputs`): the tarball's sha256 and package
   version, the fragment's option hash, the compiler and linker versions and
   :data:`RECIPE`; a finished build for that key is reused at once;
3. under ``<cache>/kernel-builds/``: unpack, ``make tinyconfig``, merge
   :data:`~banger.kernels.kconfig.MICROVM_CONFIG`, ``make olddefconfig``,
   check that every requested option stuck, ``make -jN bzImage``;
4. ``bzImage``, the final ``.config`` and ``build.json`` are moved into
   ``kernel-builds/<key>/`` in one rename; the source tree is removed.

Nothing is half-done: a failure or Ctrl-C removes the work tree, and a key's
directory exists only whole. One build at a time per cache (a file lock).

Reproducibility: what the kernel bakes in besides its sources is fixed by
:func:`build_env`: the build user, host and number (``KBUILD_BUILD_*``), and the
build date, which is the source's own date, not the clock
(:func:`source_date_epoch`: the tarball's first entry, which Debian stamps with
the package's changelog date, the ``SOURCE_DATE_EPOCH`` convention). The tree
is built in place (``srctree`` is ``.``, so ``__FILE__`` and the objects carry
relative paths, and the kernel maps the rest with ``-fmacro-prefix-map``), with
no debug info, no module signing key and no randomized struct layout (the
fragment), and the bzImage's gzip runs with ``-n`` (no name, no time). So
the same inputs give the same ``bzImage``, and the ``vmlinux`` banger extracts
from it, whatever the cache's path, the user or the time of the build. Checked
(2026-12-07, 6.1.192-3, gcc 12.2.0, ld 2.40): two builds in caches at different
paths, started 25 minutes apart, gave the same sha256 for both; and a build of the
previous recipe (1970 as its date, another user, another path, 7 hours earlier)
differed from them only in the four timestamp strings and the GNU build ID, a
hash of the rest. Not covered by the cache key: ``gzip``'s version (it
compresses the bzImage's payload) and the host's ``make``/``perl``/``bc``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import lzma
import os
import platform
import re
import shutil
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from banger import proc
from banger.errors import BangerError, CommandError, InvalidArgument
from banger.kernels.binfmt import bzimage_version
from banger.kernels.kconfig import (
    MICROVM_CONFIG,
    config_hash,
    fragment_text,
    merge_config,
    parse_config,
    unmet_options,
    with_additions,
)
from banger.kernels.store import sha256_file
from banger.rmtree import discard_tree

#: The Debian package whose tarball is built, and where it puts it.
DEFAULT_VERSION = "6.1"
SOURCE_PACKAGE = f"linux-source-{DEFAULT_VERSION}"
DEFAULT_SOURCE = Path(f"/usr/src/linux-source-{DEFAULT_VERSION}.tar.xz")
_VERSION = re.compile(r"^[0-9]{1,2}\.[0-9]{1,3}$")
#: What a build needs on the host: program or header -> the Debian package providing it.
BUILD_TOOLS: dict[str, str] = {
    "gcc": "build-essential",
    "make": "build-essential",
    "bc": "bc",
    "bison": "bison",
    "flex": "flex",
    "perl": "perl",
    "tar": "tar",
    "xz": "xz-utils",
    "cpio": "cpio",
    "pahole": "dwarves",
}
BUILD_HEADERS: dict[str, str] = {
    "/usr/include/libelf.h": "libelf-dev",  # objtool (the ORC unwinder)
    "/usr/include/openssl/ssl.h": "libssl-dev",  # the kernel's certificate tools
}
#: Bumped when the steps below change in a way that changes the kernel.
RECIPE = (
    "banger-kernel-build/2: tinyconfig + fragment + olddefconfig; make bzImage; "
    "KBUILD_BUILD_TIMESTAMP from the source's date"
)
BUILDS_DIR = "kernel-builds"
BUILD_META = "build.json"
BZIMAGE = "bzImage"
FINAL_CONFIG = "config"
#: Fixed so the same inputs give the same kernel (these are baked into it); the
#: build date comes from the source (:func:`build_env`).
BUILD_ENV = {
    "KBUILD_BUILD_USER": "banger",
    "KBUILD_BUILD_HOST": "banger",
    "KBUILD_BUILD_VERSION": "1",
    # x86_64, not x86: with ARCH=x86 tinyconfig turns 64BIT off and picks 32-bit options.
    "ARCH": "x86_64",
    # Nothing the build runs may depend on the host's zone (the C locale is proc's).
    "TZ": "UTC",
}
#: How often a compile progress line is printed.
PROGRESS_EVERY = 15.0

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def apt_line(packages: list[str]) -> str:
    return "sudo apt-get install -y " + " ".join(sorted(set(packages)))


def source_package(version: str) -> tuple[str, Path]:
    """Debian's ``linux-source-<version>`` package and the tarball it installs."""
    if not _VERSION.match(version):
        raise InvalidArgument(
            f"version: {version!r} is not a kernel series such as {DEFAULT_VERSION}",
            field="version",
        )
    return f"linux-source-{version}", Path(f"/usr/src/linux-source-{version}.tar.xz")


def missing_packages(*, source: Path | None = None, version: str = DEFAULT_VERSION) -> list[str]:
    """The Debian packages a build lacks: for its tools, and the source when it is a package's."""
    missing = [pkg for tool, pkg in BUILD_TOOLS.items() if proc.which(tool) is None]
    missing += [pkg for header, pkg in BUILD_HEADERS.items() if not Path(header).is_file()]
    package, tarball = source_package(version)
    if source is None and not tarball.is_file():
        missing.append(package)
    return sorted(set(missing))


def user_fragment(config: str | None) -> str:
    """The fragment to build: banger's (``None`` or ``"microvm"``), or banger's plus the
    options of the file ``config`` names (additions only: :func:`with_additions`)."""
    base = fragment_text(MICROVM_CONFIG)
    if config is None or config == "microvm":
        return base
    path = Path(config)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            f"config: cannot read {config}: {getattr(exc, 'strerror', None) or exc}",
            field="config",
        ) from None
    try:
        return with_additions(base, text, str(path))
    except ValueError as exc:
        raise InvalidArgument(f"config: {exc}", field="config") from None


def check_host(source: Path | None, version: str = DEFAULT_VERSION) -> Path:
    """The source tarball to build, after checking the host can build it; else one clear error."""
    if platform.machine() != "x86_64":
        raise BangerError(
            f"kernel build: builds x86_64 guest kernels on an x86_64 host, this is "
            f"{platform.machine()}"
        )
    if source is not None and not source.is_file():
        raise InvalidArgument(f"source: {source} is not a file", field="source")
    _package, tarball = source_package(version)
    missing = missing_packages(source=source, version=version)
    if missing:
        raise BangerError(
            f"kernel build: missing {', '.join(missing)}",
            hint=f"install them: {apt_line(missing)}",
        )
    return source if source is not None else tarball


def _first_line(argv: list[str]) -> str:
    return proc.run(argv).out.splitlines()[0].strip()


def toolchain() -> str:
    """The compiler and linker that build the kernel, as they name themselves."""
    return f"{_first_line(['gcc', '--version'])}; {_first_line(['ld', '--version'])}"


def package_of(source: Path) -> str | None:
    """``linux-source-<series>`` when ``source`` is where that package puts its tarball."""
    m = re.fullmatch(r"/usr/src/linux-source-([0-9]{1,2}\.[0-9]{1,3})\.tar\.xz", str(source))
    return f"linux-source-{m.group(1)}" if m else None


def package_version(source: Path) -> str | None:
    """The ``linux-source-<series>`` package version when ``source`` is its tarball."""
    package = package_of(source)
    if package is None:
        return None
    try:
        return proc.run(["dpkg-query", "-W", "-f=${Version}", package]).out.strip() or None
    except CommandError:
        return None


def source_date_epoch(source: Path) -> int:
    """The source's own date (seconds since the epoch): its tarball's first entry's mtime.

    Debian's ``linux-source`` tarball is made under ``SOURCE_DATE_EPOCH``, the
    package's changelog date, which its top directory carries (6.1.192-3: Thu, 26
    Nov 2026 18:12:56 +0100 both); any other tarball's top entry is as good a date
    for what is in it (a ``git archive`` stamps the commit's). Part of the tarball's
    bytes, so already under the cache key's source hash. Reads one header.
    """
    try:
        with tarfile.open(source, "r|*") as tar:
            first = tar.next()
    except (OSError, EOFError, tarfile.TarError, lzma.LZMAError, zlib.error) as exc:
        raise BangerError(f"kernel build: {source} is not a readable tarball: {exc}") from exc
    if first is None:
        raise BangerError(f"kernel build: {source} is an empty tarball")
    return max(0, int(first.mtime))


def build_timestamp(epoch: int) -> str:
    """``epoch`` as ``date -u`` prints it, the form the kernel expects in
    ``KBUILD_BUILD_TIMESTAMP`` (``uname -v``); English names whatever the locale."""
    when = datetime.fromtimestamp(epoch, UTC)
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # fmt: skip
    return (
        f"{days[when.weekday()]} {months[when.month - 1]} {when.day:2d} "
        f"{when:%H:%M:%S} UTC {when.year}"
    )


def build_env(epoch: int) -> dict[str, str]:
    """The environment of every ``make`` of a build whose source is dated ``epoch``:
    :data:`BUILD_ENV` and that date as the kernel's build time (``SOURCE_DATE_EPOCH``
    too, for any tool that honours the convention)."""
    return {
        **BUILD_ENV,
        "KBUILD_BUILD_TIMESTAMP": build_timestamp(epoch),
        "SOURCE_DATE_EPOCH": str(epoch),
    }


@dataclass(frozen=True)
class BuildInputs:
    """Everything that decides the built kernel's bytes, and the key they hash to."""

    source: Path
    source_sha256: str
    package_version: str | None
    fragment: str
    toolchain: str
    #: The build date baked into the kernel (a function of the source's bytes).
    source_date_epoch: int = 0
    recipe: str = RECIPE

    @property
    def config_sha256(self) -> str:
        return config_hash(self.fragment)

    @property
    def key(self) -> str:
        return cache_key(
            self.source_sha256, self.package_version, self.config_sha256, self.toolchain,
            self.recipe,
        )  # fmt: skip


def cache_key(
    source_sha256: str,
    package_version: str | None,
    config_sha256: str,
    toolchain: str,
    recipe: str = RECIPE,
) -> str:
    """The build cache key: any input that changes the kernel changes it."""
    material = json.dumps(
        {
            "recipe": recipe,
            "source_sha256": source_sha256,
            "package_version": package_version,
            "config_sha256": config_sha256,
            "toolchain": toolchain,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:20]


def build_inputs(
    source: Path | None = None, fragment: str | None = None, version: str = DEFAULT_VERSION
) -> BuildInputs:
    """The inputs of a build of ``source`` (default: ``linux-source-<version>``'s
    tarball), checked first."""
    tarball = check_host(source, version)
    return BuildInputs(
        source=tarball,
        source_sha256=sha256_file(tarball),
        package_version=package_version(tarball),
        fragment=fragment if fragment is not None else fragment_text(MICROVM_CONFIG),
        toolchain=toolchain(),
        source_date_epoch=source_date_epoch(tarball),
    )


@dataclass(frozen=True)
class BuiltKernel:
    """A finished build in the cache: ``bzImage``, its final ``config`` and ``build.json``."""

    path: Path
    meta: dict[str, Any]
    cached: bool

    @property
    def bzimage(self) -> Path:
        return self.path / BZIMAGE

    @property
    def release(self) -> str:
        return str(self.meta["kernel_release"])


def read_build(path: Path, *, cached: bool = True) -> BuiltKernel:
    """A finished build directory; an error naming it if it is not one."""
    try:
        meta = json.loads((path / BUILD_META).read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("kernel_release"), str):
            raise ValueError("no kernel_release")
        if sha256_file(path / BZIMAGE) != meta.get("bzimage_sha256"):
            raise ValueError(f"{BZIMAGE} does not match its recorded sha256")
    except (OSError, ValueError) as exc:
        raise BangerError(
            f"kernel build: {path} is not a finished build: {exc}",
            hint="remove it; `banger kernel build` builds it again",
        ) from exc
    return BuiltKernel(path, meta, cached)


def builds_dir(cache_dir: Path) -> Path:
    return cache_dir / BUILDS_DIR


def find_build(cache_dir: Path, key: str) -> BuiltKernel | None:
    path = builds_dir(cache_dir) / key
    return read_build(path) if (path / BUILD_META).is_file() else None


@contextmanager
def _build_lock(directory: Path, report: Report) -> Iterator[None]:
    """One build at a time in a cache (two would compete for 2 cores and the work tree)."""
    with open(directory / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report("another kernel build is running in this cache: waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _make(tree: Path, *targets: str, jobs: int = 1) -> list[str]:
    return ["make", "-C", str(tree), f"-j{jobs}", *targets]


class _CompileProgress:
    """``make``'s lines turned into a line every :data:`PROGRESS_EVERY` seconds."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.started = time.monotonic()
        self.last = self.started
        self.compiled = 0

    def __call__(self, line: str) -> None:
        if line.lstrip().startswith(("CC ", "AS ", "LD ")):
            self.compiled += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.report(f"compiling: {self.compiled} files, {_elapsed(now - self.started)}")


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def configure(tree: Path, fragment: str, env: dict[str, str]) -> list[str]:
    """tinyconfig + ``fragment`` + olddefconfig in ``tree``; the options that did not stick."""
    proc.run(_make(tree, "tinyconfig"), env=env)
    dot_config = tree / ".config"
    dot_config.write_text(merge_config(dot_config.read_text(), fragment))
    proc.run(_make(tree, "olddefconfig"), env=env)
    return unmet_options(parse_config(fragment), parse_config(dot_config.read_text()))


def _unpack(source: Path, tree: Path) -> None:
    tree.mkdir(parents=True)
    proc.run(["tar", "-xf", str(source), "-C", str(tree), "--strip-components=1"])
    if not (tree / "Makefile").is_file() or not (tree / "arch" / "x86").is_dir():
        raise BangerError(f"kernel build: {source} does not unpack to a Linux source tree")


def build_kernel(
    inputs: BuildInputs,
    cache_dir: Path,
    *,
    jobs: int | None = None,
    report: Report = _quiet,
) -> BuiltKernel:
    """The finished build for ``inputs``: from the cache, or compiled now (minutes)."""
    root = builds_dir(cache_dir)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = inputs.key
    found = find_build(cache_dir, key)
    if found is not None:
        return found
    with _build_lock(root, report):
        found = find_build(cache_dir, key)  # built by the one we waited for
        if found is not None:
            return found
        # The same path every time (under the lock): paths end up in the kernel.
        work = root / "work"
        staging = root / f"{key}.partial"
        discard_tree(work)
        discard_tree(staging)
        try:
            return _build(inputs, work, staging, root / key, jobs or os.cpu_count() or 1, report)
        finally:
            discard_tree(work)
            discard_tree(staging)


def _build(
    inputs: BuildInputs, work: Path, staging: Path, final: Path, jobs: int, report: Report
) -> BuiltKernel:
    started = time.monotonic()
    tree = work / "linux"
    report(f"unpacking {inputs.source}")
    _unpack(inputs.source, tree)
    report("configuring: tinyconfig + banger's microvm fragment + olddefconfig")
    env = build_env(inputs.source_date_epoch)
    unmet = configure(tree, inputs.fragment, env)
    if unmet:
        raise BangerError(
            f"kernel build: {len(unmet)} requested option(s) did not stick: " + "; ".join(unmet),
            hint="an option's dependency is off: add it to the fragment",
        )
    version = proc.run(_make(tree, "-s", "kernelversion"), env=env).out.strip()
    report(f"compiling Linux {version} with {jobs} job(s) (several minutes; Ctrl-C stops it)")
    proc.run_streaming(_make(tree, BZIMAGE, jobs=jobs), _CompileProgress(report), env=env)
    staging.mkdir(mode=0o755)
    shutil.copyfile(tree / "arch" / "x86" / "boot" / BZIMAGE, staging / BZIMAGE)
    # What `uname -r` will say, read from the image (make kernelrelease before the
    # build does not know CONFIG_LOCALVERSION yet).
    release = bzimage_version(staging / BZIMAGE) or version
    shutil.copyfile(tree / ".config", staging / FINAL_CONFIG)
    seconds = round(time.monotonic() - started, 1)
    meta = {
        "key": inputs.key,
        "recipe": inputs.recipe,
        "source": str(inputs.source),
        "source_sha256": inputs.source_sha256,
        "package": package_of(inputs.source) if inputs.package_version else None,
        "package_version": inputs.package_version,
        "config_sha256": inputs.config_sha256,
        "final_config_sha256": sha256_file(staging / FINAL_CONFIG),
        "toolchain": inputs.toolchain,
        "source_date_epoch": inputs.source_date_epoch,
        "kernel_release": release,
        "bzimage_sha256": sha256_file(staging / BZIMAGE),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": seconds,
        "jobs": jobs,
    }
    (staging / BUILD_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    staging.rename(final)
    report(f"built {release} in {_elapsed(seconds)}")
    return BuiltKernel(final, meta, cached=False)


_RELEASE = re.compile(r"^[0-9][A-Za-z0-9.+_-]*$")


def default_name(built: BuiltKernel) -> str:
    """``microvm-<release>``, e.g. ``microvm-6.1.192-banger-microvm`` shortened to its version."""
    release = built.release
    version = release.split("-", 1)[0] if _RELEASE.fullmatch(release) else "custom"
    return f"microvm-{version}"


def kernel_meta(built: BuiltKernel) -> dict[str, Any]:
    """kernel.json metadata for a registered build: where it came from, and that it
    needs no initramfs (every driver its guest uses is built in)."""
    from banger.kernels.store import NEEDS_INITRAMFS

    meta = built.meta
    version = meta.get("package_version")
    package = meta.get("package") or SOURCE_PACKAGE
    source = f"build:{package}={version}" if version else f"build:{meta.get('source')}"
    keys = ("key", "recipe", "source_sha256", "package_version", "config_sha256",
            "final_config_sha256", "toolchain", "source_date_epoch",
            "build_seconds")  # fmt: skip
    return {
        "source": source,
        "version": built.release,
        NEEDS_INITRAMFS: False,
        "build": {k: meta.get(k) for k in keys},
    }
