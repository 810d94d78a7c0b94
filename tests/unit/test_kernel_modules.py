"""Module resolution over a small synthetic kernel that mirrors Debian's shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.errors import BangerError
from banger.kernels.modules import (
    ModuleIndex,
    load_index,
    module_stem,
    parse_aliases,
    parse_modules_dep,
    parse_softdeps,
    resolve_modules,
)

MODULES_DEP = """\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/sound/unrelated.ko:
"""  # noqa: E501 (modules.dep lines are long)
MODULES_SOFTDEP = """\
# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep libcrc32c pre: crc32c
"""
MODULES_ALIAS = """\
# Aliases extracted from modules themselves.
alias crypto-crc32c crc32c_intel
alias crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias virtio:d00000002v* virtio_blk
"""
#: What ``depmod`` writes for the vsock modules of Debian's 6.1.0-57-amd64 (and the
#: siblings that must not come along: hv_sock, VMCI, loopback, diag).
VSOCK_DEP = """\
kernel/net/vmw_vsock/vsock_diag.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/hv_sock.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock_loopback.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_vmci_transport.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock.ko:
"""  # noqa: E501 (modules.dep lines are long)
#: guest-boot.md §1 step 5, the measured list.
RECIPE_ORDER = [
    "virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "failover", "net_failover",
    "virtio_net", "crc32c_generic", "crc32c-intel", "crc16", "mbcache", "jbd2", "ext4",
    "virtio-rng",
]  # fmt: skip


def index(dep: str = MODULES_DEP, builtin: frozenset[str] = frozenset()) -> ModuleIndex:
    paths, deps = parse_modules_dep(dep)
    return ModuleIndex(
        paths=paths,
        deps=deps,
        softdeps_pre=parse_softdeps(MODULES_SOFTDEP),
        aliases=parse_aliases(MODULES_ALIAS),
        builtin=builtin,
    )


def test_debian_shaped_kernel_gives_the_recipe_order() -> None:
    assert [m.stem for m in resolve_modules(index())] == RECIPE_ORDER


def test_the_virtio_vsock_transport_comes_with_its_dependencies() -> None:
    """A Firecracker guest's agent talks over vsock: a Debian kernel's initramfs loads
    the virtio transport, after ``vsock`` and the common part, and nothing else of
    net/vmw_vsock; the rest of the list is unchanged."""
    idx = index(MODULES_DEP + VSOCK_DEP)
    order = [m.stem for m in resolve_modules(idx)]
    vsock = ["vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"]
    assert order == RECIPE_ORDER + vsock
    names = [m.name for m in resolve_modules(idx)]
    for name in vsock:
        for dep in idx.deps[name]:
            assert names.index(dep) < names.index(name), (dep, name)
    # A kernel without them (or with vsock built in) builds the same initramfs as before.
    assert [m.stem for m in resolve_modules(index())] == RECIPE_ORDER


def test_every_module_comes_after_its_dependencies() -> None:
    idx = index()
    order = [m.name for m in resolve_modules(idx)]
    for position, name in enumerate(order):
        for dep in idx.deps[name]:
            assert order.index(dep) < position, (dep, name)


def test_paths_are_kept_relative_to_the_release_dir() -> None:
    by_stem = {m.stem: m.path for m in resolve_modules(index())}
    assert by_stem["crc32c-intel"] == "kernel/arch/x86/crypto/crc32c-intel.ko"


def test_softdep_alias_brings_generic_before_optimised() -> None:
    order = [m.stem for m in resolve_modules(index(), required=["ext4"], optional=[])]
    assert order == ["crc32c_generic", "crc32c-intel", "crc16", "mbcache", "jbd2", "ext4"]


def test_optional_modules_missing_from_the_kernel_are_skipped() -> None:
    dep = "\n".join(
        line
        for line in MODULES_DEP.splitlines()
        if "virtio-rng" not in line and "intel" not in line
    )
    stems = [m.stem for m in resolve_modules(index(dep))]
    assert "virtio-rng" not in stems
    assert "crc32c-intel" not in stems
    assert "crc32c_generic" in stems


def test_builtin_required_module_needs_nothing() -> None:
    dep = "\n".join(line for line in MODULES_DEP.splitlines() if "ext4.ko:" not in line)
    stems = [m.stem for m in resolve_modules(index(dep, builtin=frozenset({"ext4"})))]
    assert "ext4" not in stems


def test_missing_required_module_is_an_error_naming_it() -> None:
    dep = "\n".join(line for line in MODULES_DEP.splitlines() if "virtio_net.ko:" not in line)
    with pytest.raises(BangerError, match="no module virtio_net"):
        resolve_modules(index(dep))


def test_dash_and_underscore_are_the_same_module() -> None:
    stems = [m.stem for m in resolve_modules(index(), required=["virtio_rng"], optional=[])]
    assert stems == ["virtio_ring", "virtio", "virtio-rng"]


def test_dependency_cycle_terminates() -> None:
    dep = "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n"
    paths, deps = parse_modules_dep(dep)
    stems = [m.stem for m in resolve_modules(ModuleIndex(paths, deps), required=["a"], optional=[])]
    assert sorted(stems) == ["a", "b"]


def test_compressed_module_names() -> None:
    assert module_stem("kernel/fs/ext4/ext4.ko.xz") == "ext4"
    assert module_stem("kernel/arch/x86/crypto/crc32c-intel.ko.zst") == "crc32c-intel"


def test_softdep_post_section_is_ignored() -> None:
    assert parse_softdeps("softdep a pre: b c post: d\n") == {"a": ("b", "c")}


def test_load_index_reads_a_release_dir(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(MODULES_DEP)
    (tmp_path / "modules.softdep").write_text(MODULES_SOFTDEP)
    (tmp_path / "modules.alias").write_text(MODULES_ALIAS)
    (tmp_path / "modules.builtin").write_text("kernel/fs/vfat.ko\n")
    idx = load_index(tmp_path)
    assert "vfat" in idx.builtin
    assert [m.stem for m in resolve_modules(idx)] == RECIPE_ORDER


def test_load_index_without_modules_dep_says_to_run_depmod(tmp_path: Path) -> None:
    with pytest.raises(BangerError, match=r"no modules\.dep") as info:
        load_index(tmp_path)
    assert info.value.hint is not None and "depmod" in info.value.hint
