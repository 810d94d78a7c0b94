"""Extracting kernel packages: real ar + tar archives built here, hostile ones included."""

from __future__ import annotations

import io
import lzma
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from banger.kernels.deb import UnsafeArchive, ar_members, extract_kernel_deb

VERSION = "9.9.9-1-amd64"


def fake_bzimage() -> bytes:
    data = bytearray(0x400)
    data[0x202:0x206] = b"HdrS"
    return bytes(data)


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n"
        out += header.encode() + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def directory(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def kernel_members() -> list[tarfile.TarInfo | tuple[str, bytes]]:
    return [
        directory("./"),
        directory("./boot/"),
        ("./boot/vmlinuz-" + VERSION, fake_bzimage()),
        ("./boot/config-" + VERSION, b"CONFIG_EXT4_FS=m\n"),
        ("./boot/System.map-" + VERSION, b"ffffffff81000000 T _text\n"),
        ("./boot/unrelated", b"no"),
        directory("./lib/modules/" + VERSION + "/kernel/fs/ext4/"),
        ("./lib/modules/" + VERSION + "/kernel/fs/ext4/ext4.ko", b"\x7fELF ext4"),
        ("./lib/modules/" + VERSION + "/modules.order", b"kernel/fs/ext4/ext4.ko\n"),
        link("./lib/modules/" + VERSION + "/build", "/usr/src/linux-headers-" + VERSION),
        ("./usr/share/doc/linux-image/changelog.gz", b"doc"),
    ]


def deb(
    tmp_path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], compression: str = "xz"
) -> Path:
    raw = tar_bytes(members)
    if compression == "xz":
        name, payload = "data.tar.xz", lzma.compress(raw)
    elif compression == "zst":
        name, payload = "data.tar.zst", zstandard.ZstdCompressor().compress(raw)
    else:
        name, payload = "data.tar", raw
    path = tmp_path / "linux-image-test_1_amd64.deb"
    control = tar_bytes([("./control", b"Package: linux-image-test\n")])
    path.write_bytes(
        ar_archive(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar.xz", lzma.compress(control)),
                (name, payload),
            ]
        )
    )
    return path


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


@pytest.mark.parametrize("compression", ["xz", "zst", "none"])
def test_only_the_kernel_parts_are_extracted(tmp_path: Path, compression: str) -> None:
    dest = tmp_path / "out"
    stages: list[tuple[str, int | None, int | None]] = []
    kernel = extract_kernel_deb(
        deb(tmp_path, kernel_members(), compression), dest, lambda *a: stages.append(a)
    )
    assert kernel.version == VERSION
    assert kernel.vmlinuz.read_bytes() == fake_bzimage()
    assert kernel.config is not None and kernel.system_map is not None
    assert files_under(dest) == {
        f"boot/vmlinuz-{VERSION}",
        f"boot/config-{VERSION}",
        f"boot/System.map-{VERSION}",
        f"lib/modules/{VERSION}/kernel/fs/ext4/ext4.ko",
        f"lib/modules/{VERSION}/modules.order",
    }
    assert not (kernel.modules_dir / "build").exists()  # links are never created
    assert stages[-1][0] == "extract" and stages[-1][1] == stages[-1][2]


def test_our_ar_reader_agrees_with_binutils(tmp_path: Path) -> None:
    path = deb(tmp_path, kernel_members())
    listed = subprocess.run(["ar", "t", path], capture_output=True, check=True, text=True)
    with open(path, "rb") as f:
        assert [m.name for m in ar_members(f)] == listed.stdout.split()


def test_merged_usr_modules_land_in_lib_modules(tmp_path: Path) -> None:
    members: list[tarfile.TarInfo | tuple[str, bytes]] = [
        ("./boot/vmlinuz-" + VERSION, fake_bzimage()),
        ("./usr/lib/modules/" + VERSION + "/kernel/x.ko", b"x"),
    ]
    kernel = extract_kernel_deb(deb(tmp_path, members), tmp_path / "out")
    assert (kernel.modules_dir / "kernel/x.ko").read_bytes() == b"x"


@pytest.mark.parametrize(
    "evil",
    [
        ("../evil", b"x"),
        ("./lib/modules/../../../evil", b"x"),
        ("/tmp/evil-absolute", b"x"),
        ("./boot/../../evil", b"x"),
    ],
)
def test_escaping_member_rejects_the_archive(tmp_path: Path, evil: tuple[str, bytes]) -> None:
    dest = tmp_path / "a" / "out"
    members = [*kernel_members(), evil]
    with pytest.raises(UnsafeArchive, match="unsafe path in archive"):
        extract_kernel_deb(deb(tmp_path, members), dest)
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "a" / "evil").exists()
    assert not Path("/tmp/evil-absolute").exists()


def test_symlink_then_file_through_it_stays_inside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [
        *kernel_members(),
        link("./lib/modules/" + VERSION + "/escape", str(outside)),
        ("./lib/modules/" + VERSION + "/escape/planted", b"x"),
        link("./lib/modules/" + VERSION + "/hard", "/etc/passwd", tarfile.LNKTYPE),
    ]
    dest = tmp_path / "out"
    extract_kernel_deb(deb(tmp_path, members), dest)
    assert list(outside.iterdir()) == []
    assert (dest / "lib/modules" / VERSION / "escape" / "planted").is_file()
    assert not (dest / "lib/modules" / VERSION / "hard").exists()


def test_package_without_kernel_is_an_error(tmp_path: Path) -> None:
    from banger.errors import BangerError

    with pytest.raises(BangerError, match="modules for one kernel version"):
        extract_kernel_deb(deb(tmp_path, [("./usr/bin/x", b"x")]), tmp_path / "out")


def test_not_a_deb_is_an_error(tmp_path: Path) -> None:
    from banger.errors import BangerError

    path = tmp_path / "x.deb"
    path.write_bytes(b"hello")
    with pytest.raises(BangerError, match="not a Debian package"):
        extract_kernel_deb(path, tmp_path / "out")
