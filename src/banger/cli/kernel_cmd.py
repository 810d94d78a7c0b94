"""``banger kernel``: guest kernels and their initramfs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from banger.cli.artifact_cmd import list_artifacts, remove_artifacts, show_or_set_default
from banger.cli.output import print_fields, print_json
from banger.cli.state import CliState, get_state, json_option

if TYPE_CHECKING:
    from banger.api_models import KernelInfo


@click.group(name="kernel")
def kernel() -> None:
    """Guest kernels and their initramfs."""


def _pvh_line(info: KernelInfo) -> str | None:
    if info.pvh:
        return "yes: QEMU boots the uncompressed vmlinux (no decompression in the guest)"
    if info.pvh is False and info.kernel == "vmlinuz":
        return "no: QEMU boots the bzImage (no vmlinux with a PVH entry note)"
    return None  # not asked, or a bare vmlinux: the qemu line says whether it boots


def _print_kernel(state: CliState, info: KernelInfo) -> None:
    if state.json:
        print_json(info.model_dump(mode="json"))
        return
    print_fields(
        [
            ("name", info.name + (" (default)" if info.default else "")),
            ("id", info.id),
            ("source", info.source),
            ("version", info.version),
            ("kernel", info.kernel),
            ("initrd", info.initrd or (None if info.needs_initramfs else "none needed (built in)")),
            ("vmlinux", info.vmlinux),
            ("path", info.path),
            ("used by", ", ".join(info.used_by) or None),
            ("pvh boot", _pvh_line(info)),
            *[(f"{c.vmm}", ("yes: " if c.ok else "no: ") + c.reason) for c in info.capabilities],
        ]
    )


@kernel.command(name="list")
@json_option
def list_kernels() -> None:
    """List kernels."""
    list_artifacts(
        lambda c: c.list_kernels(),
        ["NAME", "ID", "VERSION", "SOURCE", "DEFAULT", "USED BY"],
        lambda k: [
            k.name,
            k.id,
            k.version,
            k.source,
            "*" if k.default else "",
            ", ".join(k.used_by),
        ],
    )


@kernel.command(name="show")
@click.argument("name")
@json_option
def show(name: str) -> None:
    """Show one kernel."""
    state = get_state()
    _print_kernel(state, state.call(lambda c: c.show_kernel(name)))


@kernel.command(name="pull")
@click.argument("source", default="debian")
@click.option("--name", help="Kernel name (default: debian-<package version>).")
@json_option
def pull(source: str, name: str | None) -> None:
    """Fetch Debian's kernel package (debian or debian:<version>) and build its initramfs."""
    from banger.cli.progress import follow

    state = get_state()
    op = state.call(lambda c: c.pull_kernel(source, name))
    follow(state, op)
    kernels = state.client().list_kernels()
    newest = max(kernels, key=lambda k: k.created_at or 0) if kernels else None
    if newest is not None:
        _print_kernel(state, newest)


@kernel.command(name="build")
@click.option("--name", help="Kernel name (default: microvm-<version>).")
@click.option("--source", type=click.Path(dir_okay=False, path_type=Path),
              help="A Linux source tarball (default: /usr/src/linux-source-6.1.tar.xz "
                   "from Debian's linux-source-6.1).")  # fmt: skip
@click.option("--version", "series",
              help="Build Debian's linux-source-<VERSION> (e.g. 6.1, the default) from "
                   "/usr/src/linux-source-<VERSION>.tar.xz.")  # fmt: skip
@click.option("--config", "config",
              help="'microvm' (banger's fragment, the default) or a FILE of CONFIG_ lines "
                   "added to it (additions only: banger's own options cannot change).")  # fmt: skip
@click.option("--jobs", type=click.IntRange(1, 256), help="Parallel compile jobs (default: CPUs).")
@json_option
def build(
    name: str | None, source: Path | None, series: str | None, config: str | None,
    jobs: int | None,
) -> None:  # fmt: skip
    """Build a microVM kernel (everything built in, no initramfs) from Debian's linux-source.

    Compiled here, as you, under banger's cache (minutes; Ctrl-C stops it and
    registers nothing); the same inputs again reuse the finished build at once.
    """
    from banger.api_models import KernelBuildRegisterRequest
    from banger.errors import InvalidArgument
    from banger.kernels.build import (
        DEFAULT_VERSION,
        build_inputs,
        build_kernel,
        source_package,
        user_fragment,
    )
    from banger.kernels.store import check_kernel_name

    state = get_state()
    if name is not None:
        check_kernel_name(name)
    if series is not None and source is not None:
        raise InvalidArgument(
            "version: --version picks Debian's tarball, --source names one: give one of them",
            field="version",
        )
    version = series or DEFAULT_VERSION
    source_package(version)  # checked before anything else runs
    fragment = user_fragment(config)

    def report(line: str) -> None:
        if not state.json:
            click.echo(f"  {line}", err=True)

    report("checking the source and the toolchain")
    inputs = build_inputs(
        source.absolute() if source is not None else None, fragment, version=version
    )
    built = build_kernel(inputs, state.paths.cache_dir, jobs=jobs, report=report)
    if built.cached:
        report(f"cached: built before with the same inputs (key {inputs.key}); nothing to compile")
    request = KernelBuildRegisterRequest(build=str(built.path), name=name)
    _print_kernel(state, state.call(lambda c: c.register_kernel_build(request)))


@kernel.command(name="import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--initrd", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An initramfs to use as it is.")  # fmt: skip
@click.option("--modules", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A lib/modules/<release> tree to build the initramfs from.")  # fmt: skip
@click.option("--name", help="Kernel name (default: its version).")
@json_option
def import_(path: Path, initrd: Path | None, modules: Path | None, name: str | None) -> None:
    """Register a local kernel image (bzImage or vmlinux)."""
    from banger.api_models import KernelImportRequest

    request = KernelImportRequest(
        path=str(path.absolute()),
        initrd=str(initrd.absolute()) if initrd else None,
        modules=str(modules.absolute()) if modules else None,
        name=name,
    )
    state = get_state()
    _print_kernel(state, state.call(lambda c: c.import_kernel(request)))


@kernel.command(name="rm")
@click.argument("names", nargs=-1, required=True)
@json_option
def rm(names: tuple[str, ...]) -> None:
    """Remove kernels (refused while a VM uses one)."""
    remove_artifacts("kernel", names, lambda c, n: c.remove_kernel(n))


@kernel.command(name="default")
@click.argument("name", required=False)
@json_option
def default(name: str | None) -> None:
    """Show the default kernel, or make NAME the default."""
    show_or_set_default(
        name,
        get_default=lambda c: c.default_kernel(),
        set_default=lambda c, n: c.set_default_kernel(n),
        none_yet="no default kernel yet (the first `vm run` pulls debian)",
        print_info=_print_kernel,
    )
