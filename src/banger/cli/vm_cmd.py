"""``banger vm``: create, run and manage microVMs (the daemon does the work)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from banger.cli.output import print_fields, print_json, print_table
from banger.cli.state import CliState, get_state, json_option
from banger.errors import BangerError, InvalidArgument

if TYPE_CHECKING:
    from banger.api_models import Operation, VMDetail

MIB = 1024 * 1024


@click.group(name="vm")
def vm() -> None:
    """Create, run and manage microVMs."""


def memory_mib(value: str | None) -> int | None:
    """``--memory`` as MiB (a number of MiB or a size like ``2G``); exit 2 naming it if bad."""
    if value is None:
        return None
    from banger.config.values import parse_memory_mib

    text = value.strip()
    try:
        return parse_memory_mib(int(text) if text.lstrip("-").isdigit() else text)
    except ValueError as exc:
        raise InvalidArgument(f"memory: {exc}", hint="e.g. --memory 512 or --memory 2G") from None


def _disk_size(value: str | None) -> int | None:
    if value is None:
        return None
    from banger.config.values import parse_size

    text = value.strip()
    try:
        return parse_size(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise InvalidArgument(f"disk-size: {exc}", hint="e.g. --disk-size 4G") from None


def _age(created: datetime | None) -> str | None:
    if created is None:
        return None
    seconds = int((datetime.now(UTC) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _follow(state: CliState, op: Operation, verbose: bool = False) -> Operation:
    from banger.cli.progress import follow

    return follow(state, op, verbose=verbose)


def _print_vm(state: CliState, detail: VMDetail) -> None:
    if state.json:
        print_json(detail.model_dump(mode="json"))
        return
    print_fields(
        [
            ("name", detail.name),
            ("id", detail.id),
            ("state", detail.state),
            ("image", f"{detail.image_name} ({detail.image})" if detail.image else None),
            ("kernel", f"{detail.kernel_name} ({detail.kernel})" if detail.kernel else None),
            ("vmm", f"{detail.vmm} ({detail.accelerator})" if detail.accelerator else detail.vmm),
            ("vmm chosen", detail.vmm_reason),
            ("guest agent", detail.agent),
            ("init", detail.init_mode),
            ("cpus", detail.vcpus),
            ("memory", f"{detail.memory_mib} MiB"),
            ("work disk", f"{detail.work_disk_size // MIB} MiB"),
            ("root disk", detail.root_strategy),
            ("ip", detail.ip),
            ("mac", detail.mac),
            ("tap", detail.tap),
            ("pid", detail.pid),
            ("created", detail.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")),
            ("last error", detail.last_error),
            ("console", detail.console_log),
            ("last boot", _boot_summary(detail)),
        ]
    )


def _boot_summary(detail: VMDetail) -> str | None:
    """``4.61 s to SSH (kernel 0.31 s, init 2.40 s, sshd 3.90 s)``, or None if not timed."""
    at = {p.phase: p.seconds for p in detail.boot_timeline if p.seconds is not None}
    if "ssh" not in at:
        return None
    steps = ", ".join(
        f"{name} {at[name]:.2f} s" for name in ("kernel", "init", "sshd") if name in at
    )
    return f"{at['ssh']:.2f} s to SSH ({steps}; vm logs {detail.name} --boot-timeline)"


@vm.command(name="list")
@json_option
def list_vms() -> None:
    """List VMs."""
    state = get_state()
    if state.json:  # the daemon's JSON as it came: no models built, pydantic never imported
        print_json(state.call(lambda c: c.get_json("/v1/vms")))
        return
    vms = state.call(lambda c: c.vm_details())
    print_table(
        ["NAME", "STATE", "IP", "IMAGE", "CPUS", "MEMORY", "AGE"],
        [
            [
                v.name,
                v.state,
                v.ip,
                v.image_name or v.image,
                v.vcpus,
                f"{v.memory_mib}M",
                _age(v.created_at),
            ]
            for v in vms
        ],
    )


@vm.command(name="show")
@click.argument("name")
@json_option
def show(name: str) -> None:
    """Show one VM: driver, CoW strategy, init mode, address, pid, …"""
    state = get_state()
    _print_vm(state, state.call(lambda c: c.show_vm(name)))


def _create_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option("--name", help="VM name (a DNS label); generated when absent."),
            click.option("--image", help="Image name or id (default: the default image)."),
            click.option("--kernel", help="Kernel name or id (default: the default kernel)."),
            click.option("--cpus", type=int, help="Virtual CPUs."),
            click.option("--memory", help="Memory in MiB, or a size like 2G."),
            click.option("--disk-size", help="Work disk size, e.g. 4G."),
            click.option("--init", type=click.Choice(["systemd", "fast"]), help="Guest init mode."),
            click.option(
                "--pool",
                metavar="POOL",
                help="Take a ready guest of pool POOL (`banger pool`) instead of "
                "booting one; not with the options above but --name.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _create_request(
    name: str | None,
    image: str | None,
    kernel: str | None,
    cpus: int | None,
    memory: str | None,
    disk_size: str | None,
    init: str | None,
    start: bool,
    workspace: dict[str, Any] | None = None,
    pool: str | None = None,
) -> Any:
    from banger.api_models import CreateWorkspaceRequest, VMCreateRequest

    return VMCreateRequest(
        pool=pool,
        name=name,
        image=image,
        kernel=kernel,
        vcpus=cpus,
        memory_mib=memory_mib(memory),
        work_disk_size=_disk_size(disk_size),
        init=init,
        start=start,
        workspace=CreateWorkspaceRequest(**workspace) if workspace is not None else None,
    )


def _shape_flags(
    image: str | None,
    kernel: str | None,
    cpus: int | None,
    memory: str | None,
    disk_size: str | None,
    init: str | None,
) -> dict[str, Any]:
    """The create flags that say what the guest is, by flag (a pool or a snapshot fixes them)."""
    return {"--image": image, "--kernel": kernel, "--cpus": cpus, "--memory": memory,
            "--disk-size": disk_size, "--init": init}  # fmt: skip


def _created_vm(state: CliState, op: Operation) -> VMDetail:
    _follow(state, op)
    return state.client().show_vm(op.target or "")


@vm.command(name="create")
@click.argument("new_name", metavar="[NAME]", required=False)
@_create_options
@click.option("--start/--no-start", default=None,
              help="Also start it (default: no; with --pool it is running already).")  # fmt: skip
@click.option("--from-snapshot", metavar="SNAP",
              help="Restore snapshot SNAP: the new VM continues the saved guest.")  # fmt: skip
@click.option("--workspace", "workspace_path", metavar="PATH",
              type=click.Path(exists=True, file_okay=True, dir_okay=True),
              help="Copy the git repository at PATH onto the work disk before the first boot "
                   "(as `workspace prepare` would, at /root/<repo name>).")  # fmt: skip
@json_option
def create(
    new_name: str | None,
    name: str | None,
    image: str | None,
    kernel: str | None,
    cpus: int | None,
    memory: str | None,
    disk_size: str | None,
    init: str | None,
    pool: str | None,
    start: bool | None,
    from_snapshot: str | None,
    workspace_path: str | None,
) -> None:
    """Create a VM (disks, keys); --start boots it too. NAME is the same as --name.

    With --pool P the VM is a ready guest of pool P, running, renamed and given
    its per-VM files (and --workspace) instead of a new one booted.
    """
    from banger.cli.pool_flags import pool_conflicts

    state = get_state()
    if new_name and name and new_name != name:
        raise InvalidArgument(f"name: given twice ({new_name!r} and --name {name!r})")
    name = name or new_name
    shape = _shape_flags(image, kernel, cpus, memory, disk_size, init)
    no_start = True if start is False else None  # only an explicit --no-start conflicts
    pool_conflicts(pool, {**shape, "--from-snapshot": from_snapshot, "--no-start": no_start})
    if from_snapshot is not None:
        from banger.cli.snapshot_cmd import restore

        given = {**shape, "--workspace": workspace_path}
        op = restore(state, from_snapshot, name, [k for k, v in given.items() if v is not None])
        _print_vm(state, state.client().show_vm(op.target or name or ""))
        return
    from banger.cli.workspace_cmd import workspace_request

    workspace = workspace_request(workspace_path) if workspace_path is not None else None
    start = bool(start) or pool is not None  # a pool's guest is running already
    request = _create_request(
        name, image, kernel, cpus, memory, disk_size, init, start, workspace, pool
    )
    op = state.call(lambda c: c.create_vm(request))
    detail = _created_vm(state, op)
    if workspace is not None and not state.json:
        from banger.cli.workspace_cmd import created_workspace

        click.echo(f"workspace: {created_workspace(state, op)}", err=True)
    _print_vm(state, detail)


def run_lifecycle(verb: str, name: str, call: Any) -> None:
    """Start a lifecycle operation, follow it, then print ``NAME: VERB`` (or its JSON)."""
    state = get_state()
    op = state.call(call)
    final = _follow(state, op)
    if state.json:
        print_json(final.model_dump(mode="json"))
    else:
        click.echo(f"{name}: {verb}")


@vm.command(name="start")
@click.argument("name")
@json_option
def start(name: str) -> None:
    """Boot a stopped VM and wait until SSH answers."""
    run_lifecycle("running", name, lambda c: c.start_vm(name))


@vm.command(name="stop")
@click.argument("name")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds the guest gets to power off before it is stopped hard.")  # fmt: skip
@json_option
def stop(name: str, timeout: float) -> None:
    """Power a VM off (gracefully, then forcibly after --timeout)."""
    run_lifecycle("stopped", name, lambda c: c.stop_vm(name, timeout))


@vm.command(name="restart")
@click.argument("name")
@json_option
def restart(name: str) -> None:
    """Stop, then start a VM."""
    run_lifecycle("running", name, lambda c: c.restart_vm(name))


@vm.command(name="rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Kill it without a graceful stop; ignore errors.")
@json_option
def rm(names: tuple[str, ...], force: bool) -> None:
    """Delete VMs: stop if needed, then release tap, lease, disks and files."""
    for name in names:
        run_lifecycle("deleted", name, lambda c, n=name: c.delete_vm(n, force=force))


@vm.command(name="logs")
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the VM runs.")
@click.option(
    "--boot-timeline",
    is_flag=True,
    help="Print the last boot's phases (VMM start → kernel → /init → init → sshd → SSH) instead.",
)
@json_option
def logs(name: str, follow: bool, boot_timeline: bool) -> None:
    """Print a VM's serial console log."""
    state = get_state()
    detail = state.call(lambda c: c.show_vm(name))
    path = Path(detail.console_log)
    if boot_timeline:
        if follow:
            raise InvalidArgument("--follow: not with --boot-timeline")
        _print_boot_timeline(state, detail, path)
        return
    if state.json and not follow:
        text = path.read_text(errors="replace") if path.is_file() else ""
        print_json({"vm": detail.name, "console_log": str(path), "text": text})
        return
    offset = 0
    last_check = time.monotonic()
    while True:
        if path.is_file():
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            offset += len(data)
            if data:
                sys.stdout.write(data.decode("utf-8", "replace"))
                sys.stdout.flush()
        if not follow:
            return
        # A file tail has nothing to wait on but time (like tail -f).
        time.sleep(0.25)
        if time.monotonic() - last_check > 2:
            last_check = time.monotonic()
            if state.client().show_vm(name).state not in ("running", "starting"):
                follow = False


def _print_boot_timeline(state: CliState, detail: VMDetail, console: Path) -> None:
    """bangerd's record of the last cold boot; else what the console's printk times say."""
    from banger.guest.boot_timeline import Phase, parse_console, render

    source = "bangerd"
    phases = [Phase(p.phase, p.label, p.seconds, p.kernel) for p in detail.boot_timeline]
    if not phases:
        # A VM booted by an older bangerd, or restored from a snapshot (no boot to time).
        source = "console"
        text = console.read_text(errors="replace") if console.is_file() else ""
        phases = parse_console(text)
    if state.json:
        print_json({"vm": detail.name, "source": source, "phases": [p.to_json() for p in phases]})
        return
    if not phases:
        click.echo(f"VM {detail.name}: no boot recorded and nothing on its console")
        return
    for line in render(phases):
        click.echo(line)
    if source == "console":
        click.echo("(from the console's printk timestamps only: bangerd did not time this boot)")


@vm.command(name="ssh", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@json_option
def ssh(name: str, command: tuple[str, ...]) -> int | None:
    """Open a shell in a VM, or run COMMAND (after --); exit status is the command's.

    COMMAND's words are passed as its argv, quoted for the guest's shell (like
    `docker exec`): `-- 'a; b'` runs one program named "a; b". For shell syntax
    ask for a shell: `banger vm ssh NAME -- sh -c 'a; b'`.
    """
    from banger.cli.sshexec import argv_for, exec_ssh

    state = get_state()
    if state.json:  # the output and status as one JSON object
        from banger.cli.ssh_json import require_command, run_json

        require_command(command, "vm ssh")
        info = state.call(lambda c: c.vm_ssh_info(name))
        return run_json(argv_for(info, command, tty=False), command, vm=info.vm)
    info = state.call(lambda c: c.vm_ssh_info(name))
    exec_ssh(argv_for(info, command or None))
    return None


@vm.command(name="run", context_settings={"ignore_unknown_options": True})
@_create_options
@click.option("--rm", "remove", is_flag=True, help="Delete the VM afterwards (even on failure).")
@click.option("--no-workspace", is_flag=True,
              help="Inside a git repository: do not copy it in (and start in /root).")  # fmt: skip
@click.option("--session", "session_name", metavar="NAME",
              help="Run COMMAND as session NAME, attached (C-b d detaches).")  # fmt: skip
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@json_option
def run(
    name: str | None,
    image: str | None,
    kernel: str | None,
    cpus: int | None,
    memory: str | None,
    disk_size: str | None,
    init: str | None,
    pool: str | None,
    remove: bool,
    no_workspace: bool,
    session_name: str | None,
    command: tuple[str, ...],
) -> int:
    """Create and start a VM, then run COMMAND in it (or a shell); exit status is COMMAND's.

    Inside a git repository, the repository is written onto the work disk
    before the first boot (what `banger workspace prepare` copies, without SSH)
    and COMMAND or the shell starts in its guest copy.
    With --session, COMMAND runs as a session this terminal attaches to; --rm
    then removes the VM only once the session has ended (not after a detach).
    With --pool P a ready guest of pool P is taken instead of booting one (the
    repository is then copied in over SSH).
    """
    from banger.cli import run_session
    from banger.cli.pool_flags import pool_conflicts
    from banger.cli.workspace_cmd import (
        argv_in_workspace,
        created_workspace,
        repository_here,
        workspace_request,
    )

    if session_name is not None:
        run_session.check_session_run(session_name, command)
    pool_conflicts(pool, _shape_flags(image, kernel, cpus, memory, disk_size, init))
    state = get_state()
    if state.json:
        from banger.cli.ssh_json import require_command

        require_command(command, "vm run")
        if session_name is not None:
            raise InvalidArgument("--json: not with --session (an attached terminal)")
    repo = None if no_workspace else repository_here()
    # the repository goes onto the work disk before the first boot (no SSH copy)
    workspace = None if repo is None else workspace_request(repo)
    request = _create_request(
        name, image, kernel, cpus, memory, disk_size, init, True, workspace, pool
    )
    op = state.call(lambda c: c.create_vm(request))
    vm_name = op.target or ""
    status = 1
    try:
        if command and session_name is None and not state.json:
            _import_meanwhile("banger.cli.vm_exec_cmd", "banger.exec_client")
        _follow(state, op)
        dest = None if repo is None else created_workspace(state, op)
        if session_name is not None:
            status = run_session.run_as_session(state, vm_name, session_name, command, dest)
        elif state.json:
            from banger.cli.ssh_json import run_json
            from banger.cli.sshexec import argv_for

            info = state.client().vm_ssh_info(vm_name)
            argv = (
                argv_for(info, command, tty=False)
                if dest is None
                else argv_in_workspace(info, dest, command)
            )
            status = run_json(argv, command, vm=vm_name, removed=remove)
        elif command:
            # Through bangerd's held connection (the one that saw the guest boot): no
            # second SSH handshake, and the status comes back as soon as CMD ends.
            from banger.cli.vm_exec_cmd import run_exec_cli

            status = run_exec_cli(vm_name, list(command), cwd=dest, interactive=True)
        else:
            # imported here, not above: it loads asyncssh (~0.15 s), which the
            # common `vm run … -- CMD` (the exec API) never needs
            from banger.cli.sshexec import argv_for, run_ssh

            info = state.client().vm_ssh_info(vm_name)
            argv = argv_for(info, None) if dest is None else argv_in_workspace(info, dest, command)
            status = run_ssh(argv)
    finally:
        if remove and session_name and run_session.session_still_runs(state, vm_name, session_name):
            click.echo(f"--rm: VM {vm_name} kept while its session runs; `banger vm rm {vm_name}`"
                       " when done", err=True)  # fmt: skip
        elif remove:
            _remove_quietly(state, vm_name)
    return status


def _import_meanwhile(*modules: str) -> None:
    """Import ``modules`` on a thread while this one waits for the daemon.

    ``vm run … -- CMD`` needs the exec client (websockets and asyncio: ~80 ms of
    imports) only once the VM runs; the wait for the boot or the pool take is
    spent blocked in a socket read, which lets a thread run. Python's import lock
    makes the later ``import`` wait for this one to finish, never import twice; a
    failure here is the later import's to report.
    """
    import importlib
    import threading

    def load() -> None:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:  # noqa: S112 - the import where it is needed raises it
                continue

    threading.Thread(target=load, name="import-meanwhile", daemon=True).start()


def _remove_quietly(state: CliState, name: str) -> None:
    from banger.cli.progress import follow

    try:
        follow(state, state.client().delete_vm(name, force=True))
    except BangerError as exc:
        if "no VM" not in exc.message:
            click.echo(f"warning: could not remove VM {name}: {exc.message}", err=True)


# -- vm set / vm stats: change a stopped VM's size, read its live numbers ------------


@vm.command(name="set")
@click.argument("name")
@click.option("--cpus", type=int, help="Virtual CPUs from the next start (at most the host's).")
@click.option("--memory", help="Memory from the next start: MiB or a size like 2G.")
@click.option("--disk", help="Grow the work disk to this size (VM stopped; never shrinks).")
@click.option("--restart", is_flag=True, help="Restart a running VM so the change applies now.")
@json_option
def set_cmd(
    name: str, cpus: int | None, memory: str | None, disk: str | None, restart: bool
) -> None:
    """Change a VM's CPUs, memory or work-disk size."""
    state = get_state()
    body = {"vcpus": cpus, "memory_mib": memory_mib(memory), "work_disk_size": _disk_size(disk)}
    final = _follow(state, state.call(lambda c: c.set_vm(name, body)))
    detail = state.call(lambda c: c.show_vm(name))
    if restart and detail.state == "running":
        final = _follow(state, state.call(lambda c: c.restart_vm(name)))
        detail = state.call(lambda c: c.show_vm(name))
    if state.json:
        print_json(
            {"operation": final.model_dump(mode="json"), "vm": detail.model_dump(mode="json")}
        )
        return
    click.echo(
        f"{name}: {detail.vcpus} CPUs, {detail.memory_mib} MiB, "
        f"work disk {detail.work_disk_size // MIB} MiB ({detail.state})"
    )


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    for unit, step in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= step:
            return f"{value / step:.1f} {unit}"
    return f"{value} B"


def _stats_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    host, guest = data.get("host") or {}, data.get("guest")
    rows = [("vm", f"{data['vm']} ({data['state']})")]
    proc = host.get("process")
    if proc:
        rows += [
            ("vmm cpu", f"{proc['cpu_percent']:.1f} %"),
            ("vmm rss", _size(proc["rss_bytes"])),
            ("uptime", f"{int(proc['uptime_seconds'])} s"),
        ]
    for role, disk in sorted((host.get("disks") or {}).items()):
        used, size = _size(disk["allocated_bytes"]), _size(disk["virtual_bytes"])
        rows.append((f"{role} disk", f"{used} allocated of {size} ({disk['format']})"))
    net = host.get("net")
    if net:
        rows.append(("net rx", f"{_size(net['rx_bytes'])}, {net['rx_packets']} packets"))
        rows.append(("net tx", f"{_size(net['tx_bytes'])}, {net['tx_packets']} packets"))
    if guest:
        if guest.get("load"):
            rows.append(("guest load", " ".join(f"{x:.2f}" for x in guest["load"])))
        total, avail = guest.get("mem_total_bytes"), guest.get("mem_available_bytes")
        if isinstance(total, int) and isinstance(avail, int):
            rows.append(("guest memory", f"{_size(total - avail)} used, {_size(avail)} available"))
        for disk in guest.get("disks") or []:
            rows.append(
                (
                    f"guest df {disk['path']}",
                    f"{_size(disk['used_bytes'])} used of {_size(disk['total_bytes'])}",
                )
            )
    elif data.get("guest_error"):
        rows.append(("guest", str(data["guest_error"])))
    return rows


@vm.command(name="stats")
@click.argument("name")
@click.option("--watch", "-w", is_flag=True, help="Refresh in place every 2 seconds.")
@click.option("--no-guest", is_flag=True, help="Host side only (no SSH into the guest).")
@json_option
def stats(name: str, watch: bool, no_guest: bool) -> None:
    """VMM CPU/memory, disk and network use, and the guest's load, memory and disks."""
    state = get_state()

    def fetch() -> dict[str, Any]:
        return state.call(lambda c: c.vm_stats(name, guest=not no_guest))

    if state.json and not watch:
        print_json(fetch())
        return
    if not watch:
        print_fields(_stats_rows(fetch()))
        return
    from rich.live import Live
    from rich.table import Table

    def table() -> Table:
        t = Table(show_header=False, box=None)
        for key, value in _stats_rows(fetch()):
            t.add_row(key, value)
        return t

    try:
        with Live(table(), auto_refresh=False) as live:
            while True:
                time.sleep(2)
                live.update(table(), refresh=True)
    except KeyboardInterrupt:
        pass
