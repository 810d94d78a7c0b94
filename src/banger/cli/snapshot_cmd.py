"""``banger vm snapshot NAME``, ``vm snapshots [NAME]``, ``vm snapshot-rm SNAP`` and the
restore behind ``vm create NEW --from-snapshot SNAP`` (registered by :func:`register`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from banger.cli.output import print_fields, print_json, print_table
from banger.cli.state import CliState, get_state, json_option
from banger.errors import InvalidArgument

if TYPE_CHECKING:
    from banger.api_models import Operation

MIB = 1024 * 1024


def _segment(value: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise InvalidArgument(f"invalid name: {value!r}")
    return quote(value, safe="")


def _follow(state: CliState, data: Any) -> Operation:
    from banger.api_models import Operation
    from banger.cli.progress import follow

    return follow(state, Operation.model_validate(data))


def _age(text: str) -> str:
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(text)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _print_snapshot(snap: dict[str, Any]) -> None:
    print_fields(
        [
            ("name", snap["name"]),
            ("id", snap["id"]),
            ("vm", f"{snap['vm']} ({snap['vm_id']})"),
            ("vmm", snap["vmm"]),
            ("image", snap.get("image_name") or snap.get("image")),
            ("ip", f"{snap['ip']} (the source's; a restore gets its own)"),
            ("mac", snap["mac"]),
            (
                "frozen",
                "yes (disks copied with the guest's filesystems frozen)"
                if snap.get("frozen")
                else "no (no answering guest agent: disks consistent with the memory only)",
            ),
            ("cpus", snap["vcpus"]),
            ("memory", f"{snap['memory_mib']} MiB"),
            ("size", f"{snap['size'] // MIB} MiB on disk"),
            ("created", snap["created_at"]),
            ("dir", snap["dir"]),
        ]
    )


@click.command(name="snapshot")
@click.argument("name")
@click.option("--name", "snap_name", help="Snapshot name (a DNS label); default <vm>-<time>.")
@click.option("--stop", is_flag=True, help="Leave the VM paused afterwards (vm resume continues).")
@json_option
def snapshot(name: str, snap_name: str | None, stop: bool) -> None:
    """Save a running VM: memory, devices, disks and host key (paused meanwhile)."""
    state = get_state()
    body = {"name": snap_name, "stop": stop}
    started = state.call(
        lambda c: c.request("POST", f"/v1/vms/{_segment(name)}/snapshots", json=body)
    )
    _follow(state, started["operation"])
    snap = state.call(lambda c: c.get_json(f"/v1/snapshots/{_segment(started['snapshot'])}"))
    if state.json:
        print_json(snap)
    else:
        _print_snapshot(snap)


@click.command(name="snapshots")
@click.argument("name", required=False)
@json_option
def snapshots(name: str | None) -> None:
    """List snapshots (of VM NAME only, when given — also of a VM since deleted)."""
    state = get_state()
    params = {"vm": name} if name else None
    found = state.call(lambda c: c.get_json("/v1/snapshots", params=params))
    if state.json:
        print_json(found)
        return
    print_table(
        ["NAME", "VM", "VMM", "IP", "SIZE", "AGE"],
        [
            [s["name"], s["vm"], s["vmm"], s["ip"], f"{s['size'] // MIB}M", _age(s["created_at"])]
            for s in found
        ],
    )


@click.command(name="snapshot-rm")
@click.argument("names", nargs=-1, required=True)
@json_option
def snapshot_rm(names: tuple[str, ...]) -> None:
    """Delete snapshots (record and files; VMs restored from them keep running)."""
    state = get_state()

    def remove(name: str) -> Any:
        return state.call(lambda c: c.request("DELETE", f"/v1/snapshots/{_segment(name)}"))

    removed = [remove(n) for n in names]
    if state.json:
        print_json(removed)
        return
    for snap in removed:
        click.echo(f"{snap['name']}: deleted")


def restore(
    state: CliState, snapshot_ref: str, name: str | None, conflicting: list[str]
) -> Operation:
    """``vm create NAME --from-snapshot SNAP``: run the restore; returns the operation.

    ``conflicting``: create options given that a snapshot fixes (image, kernel,
    CPUs, memory, disk size, init: the saved guest has them already).
    """
    if conflicting:
        raise InvalidArgument(
            f"{conflicting[0]}: not with --from-snapshot (the snapshot fixes "
            "image, kernel, CPUs, memory, disk size and init)",
            hint="change them after the restore with banger vm set",
        )
    if not name:
        raise InvalidArgument(
            "name: required with --from-snapshot",
            hint="banger vm create NEW --from-snapshot SNAP",
        )
    body = {"name": name}
    return _follow(
        state,
        state.call(
            lambda c: c.request(
                "POST", f"/v1/snapshots/{_segment(snapshot_ref)}/restore", json=body
            )
        ),
    )


def register(group: click.Group) -> None:
    for command in (snapshot, snapshots, snapshot_rm):
        group.add_command(command)
