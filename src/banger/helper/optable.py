"""The helper's op table: every op it serves, built once at start and never changed.

Each entry says, for one op name:

- ``spec``: its arguments (:class:`~banger.helper.validate.OpSpec`: one checker
  per field, the constructor of the validated arguments);
- ``handler``: what runs it, from the validated arguments and the owner's uid
  to an :class:`Outcome` (a JSON result, and descriptors to pass back);
- ``lock``: what it holds while it runs. ``"network"``: the helper-wide lock,
  because every network op reads then rewrites shared kernel state (the nft
  table, a bridge's taps) and each takes milliseconds; ``"out_dir"``: its
  output directory is marked in use for the whole run (minutes of image work
  must not hold up tap and bridge ops, and ``remove_staging`` refuses a
  directory in use); ``None``: nothing (``remove_staging``'s file work and the
  jailer's start and teardown run alongside the network ops).

:func:`op_table` is the one place the table is built; ``banger-helper`` builds
it with its jailer policy (``--jailer``/``--firecracker``; without them both
jailer ops are in the table and refuse every request, naming the flags).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import banger
from banger.helper import (
    dm_ops,
    image_build,
    image_pull,
    jailer_ops,
    links,
    nat,
    ops_dns,
    staging,
)
from banger.helper.validate import (
    NETWORK_SPECS,
    AttachTapArgs,
    BindDnsArgs,
    DeleteTapArgs,
    EnsureBridgeArgs,
    EnsureNatArgs,
    OpenTapArgs,
    OpenTapDetachedArgs,
    OpSpec,
    ResolverLinkArgs,
    TeardownNetworkArgs,
)

if TYPE_CHECKING:
    from banger.vmm.firecracker.jailer import JailerPolicy

PROTOCOL_VERSION = 1

Lock = Literal["network", "out_dir"] | None


@dataclass(frozen=True)
class Outcome:
    result: dict[str, Any]
    fds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Op:
    spec: OpSpec
    handler: Callable[[Any, int], Outcome]
    lock: Lock


OpTable = Mapping[str, Op]


def _ping(_args: Any, _owner_uid: int) -> Outcome:
    return Outcome({"version": banger.__version__, "pid": os.getpid()})


def _ensure_bridge(args: EnsureBridgeArgs, _owner_uid: int) -> Outcome:
    return Outcome(links.ensure_bridge(args.name, args.cidr))


def _open_tap(args: OpenTapArgs, owner_uid: int) -> Outcome:
    result, fd = links.open_tap(args.name, args.bridge, owner_uid)
    return Outcome(result, [fd])


def _open_tap_detached(args: OpenTapDetachedArgs, owner_uid: int) -> Outcome:
    result, fd = links.open_tap_detached(args.name, owner_uid)
    return Outcome(result, [fd])


def _attach_tap(args: AttachTapArgs, owner_uid: int) -> Outcome:
    return Outcome(links.attach_tap(args.name, args.bridge, owner_uid))


def _delete_tap(args: DeleteTapArgs, _owner_uid: int) -> Outcome:
    return Outcome(links.delete_tap(args.name))


def _ensure_nat(args: EnsureNatArgs, _owner_uid: int) -> Outcome:
    return Outcome(nat.ensure_nat(args.cidr, args.bridge))


def _teardown_network(args: TeardownNetworkArgs, _owner_uid: int) -> Outcome:
    taps, bridge_deleted = links.teardown_bridge(args.bridge)
    removed, table_deleted = nat.remove_bridge(args.bridge)
    return Outcome(
        {
            "bridge": args.bridge,
            "taps_deleted": taps,
            "bridge_deleted": bridge_deleted,
            "nat_removed": removed,
            "nat_table_deleted": table_deleted,
        }
    )


def _bind_dns(args: BindDnsArgs, _owner_uid: int) -> Outcome:
    result, fds = ops_dns.bind_dns(args.cidr)
    return Outcome(result, fds)


def _resolver_link(args: ResolverLinkArgs, _owner_uid: int) -> Outcome:
    return Outcome(ops_dns.resolver_link(args.bridge, args.cidr, args.domain))


def _image_build(args: image_build.ImageBuildArgs, owner_uid: int) -> Outcome:
    return Outcome(image_build.image_build(args, owner_uid))


def _image_pull(args: image_pull.ImagePullArgs, owner_uid: int) -> Outcome:
    return Outcome(image_pull.image_pull(args, owner_uid))


def _remove_staging(args: staging.RemoveStagingArgs, owner_uid: int) -> Outcome:
    return Outcome(staging.remove_staging(args, owner_uid))


def _dm_create(args: dm_ops.DmCreateArgs, owner_uid: int) -> Outcome:
    return Outcome(dm_ops.dm_snapshot_create(args, owner_uid))


def _dm_remove(args: dm_ops.DmRemoveArgs, owner_uid: int) -> Outcome:
    return Outcome(dm_ops.dm_snapshot_remove(args, owner_uid))


def _jailer(args: Any, _owner_uid: int) -> Outcome:
    return Outcome(jailer_ops.run(args))


def op_table(jailer: JailerPolicy | None) -> OpTable:
    """Every op, with the jailer ops bound to ``jailer`` (None: they refuse when run)."""

    def version(_args: Any, _owner_uid: int) -> Outcome:
        return Outcome({"version": banger.__version__, "protocol": PROTOCOL_VERSION, "ops": names})

    network: dict[str, Callable[[Any, int], Outcome]] = {
        "ping": _ping,
        "version": version,
        "ensure_bridge": _ensure_bridge,
        "open_tap": _open_tap,
        "open_tap_detached": _open_tap_detached,
        "attach_tap": _attach_tap,
        "delete_tap": _delete_tap,
        "ensure_nat": _ensure_nat,
        "teardown_network": _teardown_network,
        "bind_dns": _bind_dns,
        "resolver_link": _resolver_link,
    }
    assert set(network) == set(NETWORK_SPECS)
    table = {name: Op(NETWORK_SPECS[name], handler, "network") for name, handler in network.items()}
    table["image_build"] = Op(image_build.SPEC, _image_build, "out_dir")
    table[image_pull.OP] = Op(image_pull.SPEC, _image_pull, "out_dir")
    table[staging.OP] = Op(staging.SPEC, _remove_staging, None)
    # Loop devices and dm snapshots: a VM's device is named by
    # its id, and the daemon serialises ops per VM, so no helper lock is needed.
    table[dm_ops.CREATE] = Op(dm_ops.CREATE_SPEC, _dm_create, None)
    table[dm_ops.REMOVE] = Op(dm_ops.REMOVE_SPEC, _dm_remove, None)
    for name, spec in jailer_ops.specs(jailer).items():
        table[name] = Op(spec, _jailer, None)
    names = sorted(table)
    return MappingProxyType(table)


def op_specs(table: OpTable) -> Mapping[str, OpSpec]:
    """The argument half of ``table``, what :func:`.validate.validate_request` checks against."""
    return MappingProxyType({name: op.spec for name, op in table.items()})
