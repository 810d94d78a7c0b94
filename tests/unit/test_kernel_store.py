"""Publishing, reading, verifying and importing kernel entries on a real filesystem."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from banger.errors import Conflict, InvalidArgument
from banger.kernels import (
    KernelCorrupt,
    KernelEntry,
    import_kernel,
    list_kernels,
    parse_source,
    publish_kernel,
    read_kernel,
    verify_kernel,
)
from banger.kernels.store import sha256_file
from banger.paths import Paths


def bzimage(path: Path, version: str = "9.9.9-test") -> Path:
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x800 - 0x200).to_bytes(2, "little")
    data[0x800 : 0x800 + len(version) + 1] = version.encode() + b"\0"
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "cfg", tmp_path / "state", tmp_path / "cache", tmp_path / "run")


def publish(paths: Paths, tmp_path: Path, name: str = "k1") -> KernelEntry:
    initrd = tmp_path / "initrd.in"
    initrd.write_bytes(b"initramfs bytes")
    return publish_kernel(
        paths.kernels_dir,
        paths.tmp_dir,
        name,
        bzimage(tmp_path / "vmlinuz.in"),
        initrd,
        None,
        {"source": "debian:1.0-1", "version": "9.9.9-test", "package": "linux-image-x"},
    )


def test_publish_writes_a_whole_entry_and_leaves_no_staging(paths: Paths, tmp_path: Path) -> None:
    modules = tmp_path / "build" / "9.9.9-test"
    (modules / "kernel").mkdir(parents=True)
    (modules / "modules.dep").write_text("")
    entry = publish_kernel(
        paths.kernels_dir,
        paths.tmp_dir,
        "k1",
        bzimage(tmp_path / "vmlinuz.in"),
        None,
        modules,
        {"source": "debian:1.0-1", "version": "9.9.9-test", "package": "linux-image-x"},
    )
    assert entry.path == paths.kernels_dir / entry.id
    assert sorted(p.name for p in entry.path.iterdir()) == ["kernel.json", "modules", "vmlinuz"]
    assert (entry.path / "modules" / "9.9.9-test" / "modules.dep").is_file()
    assert not modules.exists()  # moved, not copied: it was a build directory
    assert list(paths.tmp_dir.iterdir()) == []
    data = json.loads((entry.path / "kernel.json").read_text())
    assert data["name"] == "k1"
    assert data["source"] == "debian:1.0-1"
    assert data["version"] == "9.9.9-test"
    assert data["package"] == "linux-image-x"
    assert data["sha256"] == {"vmlinuz": sha256_file(entry.kernel_path)}
    assert data["created_at"].endswith("+00:00")
    assert stat.S_IMODE(entry.kernel_path.stat().st_mode) == 0o444
    assert read_kernel(entry.path) == entry
    assert list_kernels(paths.kernels_dir) == [entry]


def test_verify_detects_a_changed_file(paths: Paths, tmp_path: Path) -> None:
    entry = publish(paths, tmp_path)
    verify_kernel(read_kernel(paths.kernels_dir / entry.id))
    initrd = paths.kernels_dir / entry.id / "initrd.img"
    initrd.chmod(0o644)
    initrd.write_bytes(b"tampered")
    with pytest.raises(KernelCorrupt, match=r"initrd\.img"):
        verify_kernel(read_kernel(initrd.parent))
    initrd.unlink()
    with pytest.raises(KernelCorrupt, match="missing"):
        verify_kernel(read_kernel(initrd.parent))


def test_same_name_twice_is_a_conflict(paths: Paths, tmp_path: Path) -> None:
    publish(paths, tmp_path)
    with pytest.raises(Conflict, match="'k1' exists"):
        publish(paths, tmp_path)
    assert len(list_kernels(paths.kernels_dir)) == 1
    assert list(paths.tmp_dir.iterdir()) == []


def test_failure_midway_leaves_nothing(paths: Paths, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        publish_kernel(
            paths.kernels_dir,
            paths.tmp_dir,
            "k1",
            bzimage(tmp_path / "vmlinuz.in"),
            tmp_path / "no-such-initrd",
            None,
            {"source": "x"},
        )
    assert list(paths.kernels_dir.iterdir()) == []
    assert list(paths.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a b", "x" * 65, "../k"])
def test_bad_names_are_refused(paths: Paths, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^name: "):
        publish(paths, tmp_path, name=name)


def test_import_refuses_what_is_not_a_kernel(paths: Paths, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a kernel" * 100)
    with pytest.raises(InvalidArgument, match="neither a bzImage nor an ELF"):
        import_kernel(junk, paths=paths)
    with pytest.raises(InvalidArgument, match=r"^path: "):
        import_kernel(tmp_path / "missing", paths=paths)


def test_import_bzimage_with_initrd(paths: Paths, tmp_path: Path) -> None:
    initrd = tmp_path / "my-initrd"
    initrd.write_bytes(b"x")
    entry = import_kernel(bzimage(tmp_path / "bz"), paths=paths, initrd=initrd)
    assert entry.name == "9.9.9-test"  # from the setup header's version string
    assert entry.version == "9.9.9-test"
    assert entry.kernel == "vmlinuz"
    assert entry.initrd_path is not None and entry.initrd_path.read_bytes() == b"x"
    assert entry.source.startswith("import:")
    verify_kernel(entry)


def test_import_elf_vmlinux(paths: Paths, tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"\x7fELF" + b"\0" * 100)
    entry = import_kernel(vmlinux, paths=paths, name="fc-kernel")
    assert entry.kernel == "vmlinux" and entry.initrd is None and entry.version is None


def test_import_builds_an_initramfs_from_modules(paths: Paths, tmp_path: Path) -> None:
    release = tmp_path / "lib/modules/9.9.9-test"
    dep_lines = []
    for mod in ("virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_net", "ext4"):
        (release / "kernel").mkdir(parents=True, exist_ok=True)
        (release / "kernel" / f"{mod}.ko").write_bytes(f"module {mod}".encode())
        dep_lines.append(f"kernel/{mod}.ko:")
    dep_lines[1] += " kernel/virtio_ring.ko"
    dep_lines[2] += " kernel/virtio.ko kernel/virtio_ring.ko"  # virtio_mmio needs the core
    (release / "modules.dep").write_text("\n".join(dep_lines) + "\n")
    entry = import_kernel(bzimage(tmp_path / "bz"), paths=paths, modules=release)
    assert entry.initrd == "initrd.img"
    assert entry.meta["initramfs_modules"] == [
        "virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_net", "ext4",
    ]  # fmt: skip
    with pytest.raises(InvalidArgument, match=r"^initrd: "):
        import_kernel(bzimage(tmp_path / "bz"), paths=paths, modules=release, initrd=tmp_path)
    with pytest.raises(InvalidArgument, match=r"^modules: "):
        import_kernel(bzimage(tmp_path / "bz"), paths=paths, modules=tmp_path, name="other")


@pytest.mark.parametrize(
    ("source", "version"), [("debian", None), ("debian:6.1.192-2", "6.1.192-2")]
)
def test_parse_source(source: str, version: str | None) -> None:
    assert parse_source(source) == version


@pytest.mark.parametrize("source", ["ubuntu", "debian:", "debian:-rf", "debian:a b", "", "file:x"])
def test_bad_sources_name_the_argument(source: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^source: ") as info:
        parse_source(source)
    assert info.value.hint is not None and "debian:<version>" in info.value.hint
