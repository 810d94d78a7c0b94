"""Fetching Debian's amd64 kernel package.

Two ways, both verified against the archive's SHA256 for the package:

- **through the host's apt** (the default): ``apt-cache`` resolves the
  ``linux-image-amd64`` metapackage to the ``linux-image-<abi>-amd64`` package
  it depends on, and ``apt-get download`` fetches it as the current user, from
  whatever sources and proxies the host is configured with;
- **from a configured mirror** (config ``kernel.debian_mirror``): the suite's
  ``Packages.xz`` index and then the package, over HTTP(S) with httpx. This
  serves hosts without apt. No mirror is built in.

Downloads are cached under ``cache_dir/debs/<sha256>/<file>.deb``.
"""

from __future__ import annotations

import concurrent.futures
import lzma
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx

from banger import proc
from banger.errors import BangerError, CommandError, InvalidArgument
from banger.kernels.debian_control import first_dependency, parse_stanzas, version_key
from banger.kernels.store import sha256_file
from banger.rmtree import discard_tree

Progress = Callable[[str, int | None, int | None], None]

METAPACKAGE = "linux-image-amd64"
IMAGE_PREFIX = "linux-image-"
DEFAULT_SUITE = "bookworm"
APT_HINT = "run `sudo apt-get update` so apt knows Debian's kernel packages"
CHUNK = 1 << 16


@dataclass(frozen=True)
class DebianPackage:
    package: str  # linux-image-6.1.0-56-amd64
    version: str  # 6.1.192-2
    filename: str  # the archive path: pool/main/l/.../<name>_<version>_amd64.deb
    sha256: str
    size: int | None

    @property
    def deb_name(self) -> str:
        return PurePosixPath(self.filename).name


def _no_progress(stage: str, done: int | None, total: int | None) -> None:
    pass


def _pick_metapackage(stanzas: list[dict[str, str]], version: str | None, where: str) -> str:
    """The metapackage version to use: the one asked for, else the newest known."""
    known = sorted(
        {s["Version"] for s in stanzas if s.get("Package") == METAPACKAGE and "Version" in s},
        key=version_key,
    )
    if not known:
        raise BangerError(f"{where} knows no {METAPACKAGE} package", hint=APT_HINT)
    if version is None:
        return known[-1]
    if version not in known:
        raise InvalidArgument(
            f"source: Debian kernel version {version} not found in {where}",
            hint=f"known versions: {', '.join(known)}",
        )
    return version


def _image_of(meta: dict[str, str]) -> tuple[str, str]:
    dep = first_dependency(meta.get("Depends", ""), IMAGE_PREFIX)
    if dep is None:
        raise BangerError(
            f"{METAPACKAGE} {meta.get('Version')} depends on no {IMAGE_PREFIX}* package"
        )
    return dep[0], dep[1] or meta["Version"]


def _package_from(stanza: dict[str, str], where: str) -> DebianPackage:
    try:
        return DebianPackage(
            package=stanza["Package"],
            version=stanza["Version"],
            filename=stanza["Filename"],
            sha256=stanza["SHA256"].lower(),
            size=int(stanza["Size"]) if "Size" in stanza else None,
        )
    except KeyError as exc:
        raise BangerError(f"{where}: {stanza.get('Package')} has no {exc.args[0]} field") from exc


def _find(stanzas: list[dict[str, str]], package: str, version: str, where: str) -> DebianPackage:
    for s in stanzas:
        if s.get("Package") == package and s.get("Version") == version:
            return _package_from(s, where)
    raise BangerError(f"{where} has no {package} {version}", hint=APT_HINT)


# -- through apt ---------------------------------------------------------------


def _apt_cache(args: Sequence[str], apt_options: Sequence[str]) -> str:
    try:
        return proc.run(["apt-cache", *apt_options, *args]).out
    except CommandError as exc:
        if exc.not_found:
            raise BangerError(
                "apt-cache not found: this host has no apt to fetch Debian kernels with",
                hint="set kernel.debian_mirror in the config to a Debian mirror URL",
            ) from exc
        if exc.returncode == 100:  # "No packages found": the lists do not have it
            raise BangerError(f"apt knows no {args[-1]} package", hint=APT_HINT) from exc
        raise


def _apt_candidate(apt_options: Sequence[str]) -> str | None:
    for line in _apt_cache(["policy", METAPACKAGE], apt_options).splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate" and value.strip() not in ("", "(none)"):
            return value.strip()
    return None


def resolve_with_apt(version: str | None, apt_options: Sequence[str] = ()) -> DebianPackage:
    """The kernel package for ``linux-image-amd64`` at ``version`` (default: apt's candidate).

    ``apt_options`` (``-o Key=Value`` pairs) go to every apt command; the tests
    use them to point apt at empty lists.
    """
    metas = parse_stanzas(_apt_cache(["show", METAPACKAGE], apt_options))
    if version is None:
        version = _apt_candidate(apt_options)
    meta_version = _pick_metapackage(metas, version, "apt")
    meta = next(
        s for s in metas if s.get("Package") == METAPACKAGE and s["Version"] == meta_version
    )
    package, package_version = _image_of(meta)
    stanzas = parse_stanzas(_apt_cache(["show", package], apt_options))
    return _find(stanzas, package, package_version, "apt")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def download_with_apt(
    pkg: DebianPackage, workdir: Path, progress: Progress, apt_options: Sequence[str] = ()
) -> Path:
    """``apt-get download`` into ``workdir`` as the current user, reporting bytes as they land."""
    argv = ["apt-get", *apt_options, "download", f"{pkg.package}={pkg.version}"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        job = pool.submit(proc.run, argv, cwd=workdir)
        while True:
            try:
                job.result(timeout=0.5)
                break
            except concurrent.futures.TimeoutError:
                progress("download", _dir_bytes(workdir), pkg.size)
    path = workdir / pkg.deb_name
    if not path.is_file():
        raise BangerError(f"apt-get download did not produce {pkg.deb_name}")
    size = path.stat().st_size
    progress("download", size, size)
    return path


# -- from a mirror -------------------------------------------------------------


def resolve_from_mirror(
    mirror: str, version: str | None, suite: str = DEFAULT_SUITE, client: httpx.Client | None = None
) -> DebianPackage:
    """The kernel package from ``<mirror>/dists/<suite>/main/binary-amd64/Packages.xz``."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/main/binary-amd64/Packages.xz"
    with _http(client) as http:
        response = http.get(url)
        if response.status_code != 200:
            raise BangerError(
                f"kernel.debian_mirror: {url} answered HTTP {response.status_code}",
                hint="check the mirror URL and the suite",
            )
    text = lzma.decompress(response.content).decode("utf-8", "replace")
    # Only the kernel stanzas matter; skipping the rest keeps parsing fast.
    stanzas = parse_stanzas(
        "\n\n".join(s for s in text.split("\n\n") if f"Package: {IMAGE_PREFIX}" in s)
    )
    meta_version = _pick_metapackage(stanzas, version, url)
    meta = next(
        s for s in stanzas if s.get("Package") == METAPACKAGE and s["Version"] == meta_version
    )
    package, package_version = _image_of(meta)
    return _find(stanzas, package, package_version, url)


def download_from_mirror(
    mirror: str,
    pkg: DebianPackage,
    workdir: Path,
    progress: Progress,
    client: httpx.Client | None = None,
) -> Path:
    url = f"{mirror.rstrip('/')}/{pkg.filename}"
    path = workdir / pkg.deb_name
    with _http(client) as http, http.stream("GET", url) as response:
        if response.status_code != 200:
            raise BangerError(f"kernel.debian_mirror: {url} answered HTTP {response.status_code}")
        total = int(response.headers.get("content-length", 0)) or pkg.size
        done = 0
        with open(path, "wb") as out:
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)
                done += len(chunk)
                progress("download", done, total)
    return path


@contextmanager
def _http(client: httpx.Client | None) -> Iterator[httpx.Client]:
    """The caller's client, or a short-lived one of our own."""
    if client is not None:
        yield client
        return
    with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0)) as own:
        yield own


# -- cache and verification ----------------------------------------------------


def cached_deb_path(cache_dir: Path, pkg: DebianPackage) -> Path:
    return cache_dir / "debs" / pkg.sha256 / pkg.deb_name


def fetch_kernel_deb(
    version: str | None,
    *,
    cache_dir: Path,
    mirror: str | None = None,
    suite: str = DEFAULT_SUITE,
    progress: Progress | None = None,
    apt_options: Sequence[str] = (),
) -> tuple[DebianPackage, Path]:
    """Resolve, download (unless cached) and verify the kernel package."""
    report = progress or _no_progress
    report("resolve", None, None)
    if mirror:
        pkg = resolve_from_mirror(mirror, version, suite)
    else:
        pkg = resolve_with_apt(version, apt_options)
    target = cached_deb_path(cache_dir, pkg)
    if target.is_file() and sha256_file(target) == pkg.sha256:
        report("download", pkg.size, pkg.size)
        return pkg, target
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir = target.parent / f".download-{secrets.token_hex(4)}"
    workdir.mkdir()
    try:
        if mirror:
            path = download_from_mirror(mirror, pkg, workdir, report)
        else:
            path = download_with_apt(pkg, workdir, report, apt_options)
        report("verify", None, None)
        actual = sha256_file(path)
        if actual != pkg.sha256:
            raise BangerError(
                f"{pkg.deb_name}: SHA256 {actual} does not match the archive's {pkg.sha256}",
                hint="the download is corrupt or tampered with; try again or use another mirror",
            )
        path.replace(target)
    finally:
        discard_tree(workdir)
    return pkg, target
