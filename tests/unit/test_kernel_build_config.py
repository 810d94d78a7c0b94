"""``banger kernel build``'s pure parts: the Kconfig merge and check, the cache key,
the shipped fragment, and the metadata a registered build carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.kernels.build import (
    BUILD_META,
    BZIMAGE,
    RECIPE,
    BuiltKernel,
    apt_line,
    cache_key,
    default_name,
    kernel_meta,
    read_build,
)
from banger.kernels.kconfig import (
    config_hash,
    fragment_text,
    merge_config,
    parse_config,
    render_config,
    unmet_options,
)
from banger.kernels.store import NEEDS_INITRAMFS

TINY = """\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14) 12.2.0"
CONFIG_SLOB=y
# CONFIG_SLUB is not set
CONFIG_CC_OPTIMIZE_FOR_SIZE=y
# CONFIG_PCI is not set
CONFIG_NR_CPUS=8
"""


def test_parse_reads_set_and_unset_lines_and_ignores_the_rest() -> None:
    options = parse_config(TINY + "garbage line\n  CONFIG_X=y  \n# CONFIG_Y is not set\n")
    assert options["CONFIG_SLOB"] == "y"
    assert options["CONFIG_SLUB"] is None
    assert options["CONFIG_CC_VERSION_TEXT"] == '"gcc (Debian 12.2.0-14) 12.2.0"'
    assert options["CONFIG_NR_CPUS"] == "8"
    assert options["CONFIG_X"] == "y" and options["CONFIG_Y"] is None
    assert "Automatically" not in "".join(options)


def test_render_round_trips() -> None:
    options = parse_config(TINY)
    assert parse_config(render_config(options)) == options


def test_merge_lets_the_fragment_win_and_keeps_the_rest() -> None:
    fragment = "CONFIG_SLUB=y\n# CONFIG_SLOB is not set\nCONFIG_PCI=y\nCONFIG_NEW=m\n"
    merged = parse_config(merge_config(TINY, fragment))
    assert merged["CONFIG_SLUB"] == "y" and merged["CONFIG_SLOB"] is None
    assert merged["CONFIG_PCI"] == "y" and merged["CONFIG_NEW"] == "m"
    assert merged["CONFIG_NR_CPUS"] == "8"  # untouched by the fragment
    assert merged["CONFIG_CC_OPTIMIZE_FOR_SIZE"] == "y"


def test_the_check_lists_every_option_that_did_not_stick() -> None:
    requested = parse_config(
        'CONFIG_VMGENID=y\nCONFIG_PCI=y\n# CONFIG_MODULES is not set\nCONFIG_LOCALVERSION="-b"\n'
        "CONFIG_NR_CPUS=64\n# CONFIG_EFI is not set\n"
    )
    final = parse_config(
        # VMGENID dropped (absent), NR_CPUS changed, MODULES on; PCI and
        # LOCALVERSION as asked; EFI absent, which meets "is not set".
        'CONFIG_PCI=y\nCONFIG_LOCALVERSION="-b"\nCONFIG_NR_CPUS=8\nCONFIG_MODULES=y\n'
    )
    assert unmet_options(requested, final) == [
        "CONFIG_VMGENID=y (got not set)",
        "CONFIG_MODULES is not set (got CONFIG_MODULES=y)",
        "CONFIG_NR_CPUS=64 (got CONFIG_NR_CPUS=8)",
    ]
    assert unmet_options(requested, {**final, **requested}) == []


def test_the_shipped_fragment_asks_for_a_microvm_kernel() -> None:
    options = parse_config(fragment_text())
    for name in (
        "CONFIG_PVH", "CONFIG_VIRTIO_MMIO", "CONFIG_VIRTIO_BLK", "CONFIG_VIRTIO_NET",
        "CONFIG_VIRTIO_CONSOLE", "CONFIG_HW_RANDOM_VIRTIO", "CONFIG_SERIAL_8250_CONSOLE",
        "CONFIG_EXT4_FS", "CONFIG_IP_PNP", "CONFIG_DEVTMPFS_MOUNT", "CONFIG_CGROUPS",
        "CONFIG_PCI",  # ACPI tables do not load without it (see the fragment)
    ):  # fmt: skip
        assert options.get(name) == "y", name
    # Everything built in, nothing loaded: no modules, no initramfs.
    assert options["CONFIG_MODULES"] is None
    assert options["CONFIG_BLK_DEV_INITRD"] is None
    assert "=m" not in fragment_text()


def test_config_hash_ignores_comments_and_order_but_not_values() -> None:
    a = "# why\nCONFIG_A=y\nCONFIG_B=y\n"
    assert config_hash(a) == config_hash("CONFIG_B=y\n\n# other words\nCONFIG_A=y\n")
    assert config_hash(a) != config_hash("CONFIG_A=y\n# CONFIG_B is not set\n")
    assert config_hash(a) != config_hash(a + "CONFIG_C=y\n")


def test_cache_key_changes_with_every_input() -> None:
    base = dict(
        source_sha256="a" * 64, package_version="6.1.192-3", config_sha256="c" * 64,
        toolchain="gcc 12.2.0; ld 2.40",
    )  # fmt: skip
    key = cache_key(**base)
    assert key == cache_key(**base)
    assert len(key) == 20 and key.isalnum()
    for field, other in [
        ("source_sha256", "b" * 64),
        ("package_version", "6.1.193-1"),
        ("package_version", None),
        ("config_sha256", "d" * 64),
        ("toolchain", "gcc 13.1.0; ld 2.40"),
    ]:
        assert cache_key(**{**base, field: other}) != key, field  # type: ignore[arg-type]
    assert cache_key(**base, recipe=RECIPE + "x") != key


def _finished(tmp_path: Path, release: str = "6.1.192-banger-microvm") -> BuiltKernel:
    import hashlib
    import json

    build = tmp_path / "key1"
    build.mkdir()
    (build / BZIMAGE).write_bytes(b"not really a kernel")
    meta = {
        "key": "key1",
        "kernel_release": release,
        "package_version": "6.1.192-3",
        "bzimage_sha256": hashlib.sha256(b"not really a kernel").hexdigest(),
        "config_sha256": "c" * 64,
    }
    (build / BUILD_META).write_text(json.dumps(meta))
    return read_build(build)


def test_a_registered_build_says_it_needs_no_initramfs(tmp_path: Path) -> None:
    built = _finished(tmp_path)
    meta = kernel_meta(built)
    assert meta[NEEDS_INITRAMFS] is False
    assert meta["source"] == "build:linux-source-6.1=6.1.192-3"
    assert meta["version"] == "6.1.192-banger-microvm"
    assert meta["build"]["key"] == "key1"
    assert default_name(built) == "microvm-6.1.192"


def test_a_damaged_build_is_refused(tmp_path: Path) -> None:
    built = _finished(tmp_path)
    (built.path / BZIMAGE).write_bytes(b"changed")
    with pytest.raises(Exception, match="not a finished build"):
        read_build(built.path)


def test_the_apt_line_names_each_package_once() -> None:
    assert apt_line(["flex", "bison", "flex"]) == "sudo apt-get install -y bison flex"
