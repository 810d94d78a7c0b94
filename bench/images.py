"""7. Image pipeline: OCI pull + flatten + ext4 vs ``skopeo copy`` + ``tar -x`` + ``mkfs.ext4 -d``.

The image is real and multi-layer: the test image's Debian root filesystem
(systemd, sshd, tmux: nothing for banger to install) cut into three zstd
layers (``usr``; ``etc`` + ``var``; the rest) plus a small fourth layer that
changes a file and deletes one with a whiteout. It is pushed to a local
``docker-registry`` on loopback (``tests/registry.py``) once; then each round,
interleaved:

- banger: :func:`banger.images.oci.pull.pull_image` into an empty
  BANGER_HOME (so every blob is downloaded): fetch, flatten (whiteouts,
  owners, xattrs), finalize, ``mkfs.ext4 -d``, work seed, publish;
- by hand: ``skopeo copy docker://… oci:…``, ``tar -x`` of each layer in
  order (whiteouts are not applied: tar does not know them), ``mkfs.ext4 -d``
  of the same size.

Distro build time: :func:`banger.images.build.build_image` of
``debian:bookworm`` once (mmdebstrap through the host's apt mirror, so this
runs in the host's network namespace; it creates no bridge). Skipped with
``--quick``.

zstd rather than gzip layers: building the layers is untimed set-up, and
gzip's level 9 (what the layout writer uses) took minutes here; both sides
decompress the same blobs, so the ratio is unaffected.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.image_cache import cached_debian_image
from tests.registry import LAYER_ZSTD, file, layer_tar, local_registry, whiteout, write_layout

from banger.images.build import DEFAULT_ROOTFS_SIZE, build_image
from banger.images.oci.pull import pull_image
from banger.paths import Paths
from bench.context import BenchContext
from bench.model import BenchResult, Measurement, Ratio
from bench.stats import median, ratio
from bench.timing import interleaved, stopwatch

NAME = "images"
TITLE = "7. Image pipeline (OCI pull vs skopeo + tar + mkfs.ext4 -d; distro build)"
TAR_META = ["--xattrs", "--xattrs-include=*", "--numeric-owner"]


@contextmanager
def mounted(image: Path, where: Path) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(image), str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def layer_tars(rootfs: Path, scratch: Path) -> list[bytes]:
    """The root filesystem as three tar layers (``usr``; ``etc``+``var``; the rest) + a top one."""
    with mounted(rootfs, scratch / "mnt") as mnt:
        plans = [
            ["./usr"],
            ["./etc", "./var"],
            ["--exclude=./usr", "--exclude=./etc", "--exclude=./var",
             "--exclude=./lost+found", "."],
        ]  # fmt: skip
        tars = []
        for plan in plans:
            tars.append(
                subprocess.run(["tar", *TAR_META, "-C", str(mnt), "-cf", "-", *plan],
                               check=True, capture_output=True).stdout
            )  # fmt: skip
    top = layer_tar([file("etc/motd", b"pulled by bench/images.py\n"), whiteout("etc/issue.net")])
    return [*tars, top]


def by_hand(ref: str, scratch: Path) -> float:
    """``skopeo copy`` + ``tar -x`` of each layer + ``mkfs.ext4 -d``: the timed part."""
    layout, tree, image = scratch / "layout", scratch / "tree", scratch / "rootfs.ext4"
    tree.mkdir()
    with stopwatch() as lap:
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                        f"docker://{ref}", f"oci:{layout}:latest"],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
        index = json.loads((layout / "index.json").read_text())
        manifest = _blob(layout, index["manifests"][0]["digest"])
        for layer in json.loads(manifest)["layers"]:
            blob = layout / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
            subprocess.run(
                ["tar", *TAR_META, "--zstd", "-xf", str(blob), "-C", str(tree)], check=True
            )
        with open(image, "wb") as f:
            f.truncate(DEFAULT_ROOTFS_SIZE)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image)], check=True)
    return lap.seconds


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def banger_pull(ref: str, scratch: Path, index: int) -> float:
    paths = Paths.from_env({"BANGER_HOME": str(scratch / "home")})
    with stopwatch() as lap:
        pull_image(ref, paths=paths, name=f"bench-{index}", install_missing=False)
    return lap.seconds


def fresh(parent: Path, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def run(ctx: BenchContext) -> BenchResult:
    source = cached_debian_image()
    counter = iter(range(1000))
    with local_registry(ctx.workdir / "registry") as registry:
        built = write_layout(ctx.workdir / "layout", [],
                             raw_layers=layer_tars(source / "rootfs.ext4", ctx.workdir),
                             media_type=LAYER_ZSTD)  # fmt: skip
        ref = registry.push(built, "bench/debian")
        blobs = built.layout / "blobs" / "sha256"
        sizes = [(blobs / d.removeprefix("sha256:")).stat().st_size for d in built.layer_digests]
        layer_mib = sum(sizes) / (1 << 20)

        def case(fn: str) -> float:
            scratch = fresh(ctx.workdir, f"{fn}-")
            try:
                if fn == "banger":
                    return banger_pull(ref, scratch, next(counter))
                return by_hand(ref, scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

        runs = interleaved(
            {"banger: pull + flatten + finalize + ext4": lambda: case("banger"),
             "by hand: skopeo copy + tar -x + mkfs.ext4 -d": lambda: case("hand")},
            ctx.rounds(3, 1),
        )  # fmt: skip
    measurements = [Measurement.of(k, v) for k, v in runs.samples.items() if runs.ok(k)]
    notes = [f"{case} FAILED: {error[:300]}" for case, error in runs.failures.items()]
    notes.append(f"4 zstd layers, {layer_mib:.0f} MiB compressed; ext4 of "
                 f"{DEFAULT_ROOTFS_SIZE >> 20} MiB both ways")  # fmt: skip
    notes.append(
        "banger does more than the hand-made pipeline: it applies whiteouts and checks every "
        "entry (hostile paths, owners, xattrs) in Python rather than tar's C, verifies each "
        "blob's digest, finalizes the tree (sshd drop-in, fstab, fast init), builds the work "
        "seed ext4 and publishes atomically; the hand-made rootfs is not bootable by banger"
    )
    ratios = []
    pull, hand = runs.samples.values()
    if pull and hand:
        ratios.append(Ratio("banger pull / by hand", ratio(median(pull), median(hand))))
    if ctx.quick:
        notes.append("distro build: skipped with --quick")
    else:
        build = distro_build(ctx.workdir)
        if isinstance(build, float):
            measurements.append(Measurement.of("distro build: debian:bookworm (once)", [build]))
        else:
            notes.append(f"distro build FAILED: {build[:300]}")
    return BenchResult(NAME, TITLE, measurements=tuple(measurements), ratios=tuple(ratios),
                       notes=tuple(notes))  # fmt: skip


def distro_build(workdir: Path) -> float | str:
    paths = Paths.from_env({"BANGER_HOME": str(fresh(workdir, "build-"))})
    try:
        with stopwatch() as lap:
            build_image("debian:bookworm", paths=paths, mirror=None, name="bench-build")
    except Exception as exc:  # reported in the results, the pull numbers still count
        return f"{type(exc).__name__}: {exc}"
    return lap.seconds
