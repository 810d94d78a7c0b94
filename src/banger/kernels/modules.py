"""Which kernel modules the initramfs needs, in the order to load them.

A pure function over the kernel's ``modules.dep`` (hard dependencies),
``modules.softdep`` (``pre:`` soft dependencies, which matter here: ext4 and
jbd2 ask for ``crypto-crc32c`` and fail to mount without it) and
``modules.alias`` (to turn a softdep alias into modules). Module names are
compared the way the kernel does, with ``-`` and ``_`` equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from banger.errors import BangerError

#: What a banger guest cannot boot without: the microvm virtio transport, the
#: root disk, the NIC and the root filesystem.
REQUIRED_MODULES = ("virtio_mmio", "virtio_blk", "virtio_net", "ext4")
#: Loaded when the kernel has them: a faster crc32c, the virtio RNG, the
#: ACPI power button + evdev, so QMP ``system_powerdown`` (microvm's GED button)
#: reaches systemd-logind and a systemd guest shuts down cleanly,
#: virtio_console for the guest agent's virtio-serial port (QEMU), and the
#: virtio vsock transport for the guest agent over vsock (Firecracker; its
#: ``vsock`` and ``vmw_vsock_virtio_transport_common`` come in as dependencies).
#: A guest without the device just has the driver registered, unused.
OPTIONAL_MODULES = (
    "crc32c-intel",
    "virtio-rng",
    "button",
    "evdev",
    "virtio_console",
    "vmw_vsock_virtio_transport",
)

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def normalize(name: str) -> str:
    return name.replace("-", "_")


def module_stem(path: str) -> str:
    """``kernel/arch/x86/crypto/crc32c-intel.ko.xz`` -> ``crc32c-intel``."""
    base = PurePosixPath(path).name
    for suffix in sorted(MODULE_SUFFIXES, key=len, reverse=True):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


@dataclass(frozen=True)
class Module:
    name: str  # normalised: crc32c_intel
    path: str  # relative to lib/modules/<version>: kernel/arch/x86/crypto/crc32c-intel.ko

    @property
    def stem(self) -> str:
        """The file name without suffix, as the kernel tree spells it (``crc32c-intel``)."""
        return module_stem(self.path)


@dataclass(frozen=True)
class ModuleIndex:
    paths: dict[str, str] = field(default_factory=dict)
    deps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    softdeps_pre: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    builtin: frozenset[str] = frozenset()


def parse_modules_dep(text: str) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    paths: dict[str, str] = {}
    deps: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        target, _, rest = line.partition(":")
        name = normalize(module_stem(target.strip()))
        paths[name] = target.strip()
        deps[name] = tuple(normalize(module_stem(d)) for d in rest.split())
    return paths, deps


def parse_softdeps(text: str) -> dict[str, tuple[str, ...]]:
    """``softdep ext4 pre: crypto-crc32c post: x`` -> ``{"ext4": ("crypto-crc32c",)}``."""
    pre: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "softdep":
            continue
        section = None
        for word in words[2:]:
            if word in ("pre:", "post:"):
                section = word
            elif section == "pre:":
                pre.setdefault(normalize(words[1]), []).append(word)
    return {k: tuple(v) for k, v in pre.items()}


def parse_aliases(text: str) -> dict[str, tuple[str, ...]]:
    """Exact aliases only (``alias crypto-crc32c crc32c_generic``); wildcards are for devices."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "alias" and not any(c in words[1] for c in "*?["):
            out.setdefault(words[1], []).append(normalize(words[2]))
    return {k: tuple(v) for k, v in out.items()}


def load_index(moddir: Path) -> ModuleIndex:
    """Read a ``lib/modules/<version>`` directory that ``depmod`` has run on."""
    dep = moddir / "modules.dep"
    if not dep.is_file():
        raise BangerError(
            f"no modules.dep in {moddir}", hint="run `depmod -b <base> <version>` on a copy"
        )

    def optional(name: str) -> str:
        path = moddir / name
        return path.read_text() if path.is_file() else ""

    paths, deps = parse_modules_dep(dep.read_text())
    builtin = frozenset(
        normalize(module_stem(line.strip()))
        for line in optional("modules.builtin").splitlines()
        if line.strip()
    )
    return ModuleIndex(
        paths=paths,
        deps=deps,
        softdeps_pre=parse_softdeps(optional("modules.softdep")),
        aliases=parse_aliases(optional("modules.alias")),
        builtin=builtin,
    )


def resolve_modules(
    index: ModuleIndex,
    required: Sequence[str] = REQUIRED_MODULES,
    optional: Sequence[str] = OPTIONAL_MODULES,
) -> list[Module]:
    """Every loadable module the roots need, each after everything it needs.

    Depth first: a module's ``pre:`` softdeps, then its dependencies in
    ``modules.dep`` order, then the module. A softdep naming an alias brings
    in every module providing it, generic before optimised (sorted by name),
    so ``crc32c_generic`` is there even where ``crc32c-intel`` cannot load.
    Roots built into the kernel need nothing; a missing required root is an
    error, a missing optional one is skipped.
    """
    order: list[Module] = []
    done: set[str] = set()

    def softdep_targets(name: str) -> list[str]:
        out: list[str] = []
        for target in index.softdeps_pre.get(name, ()):
            if normalize(target) in index.paths:
                out.append(normalize(target))
            else:
                out.extend(sorted(m for m in index.aliases.get(target, ()) if m in index.paths))
        return out

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)  # before recursing: a dependency cycle cannot loop
        for pre in softdep_targets(name):
            visit(pre)
        for dep in index.deps.get(name, ()):
            visit(dep)
        order.append(Module(name, index.paths[name]))

    for root in required:
        name = normalize(root)
        if name in index.paths:
            visit(name)
        elif name not in index.builtin:
            raise BangerError(
                f"kernel has no module {root} (neither loadable nor built in)",
                hint="use a kernel with virtio-mmio, virtio-blk, virtio-net and ext4 support",
            )
    for root in optional:
        name = normalize(root)
        if name in index.paths:
            visit(name)
    return order
