"""The helper's operations: validated arguments in, a result (and fds) out."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import banger
from banger.helper import image_build, image_pull, links, nat, op_delay, ops_dns, staging
from banger.helper.validate import (
    OPS,
    BindDnsArgs,
    DeleteTapArgs,
    EnsureBridgeArgs,
    EnsureNatArgs,
    OpenTapArgs,
    Request,
    ResolverLinkArgs,
    TeardownNetworkArgs,
)

PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class Outcome:
    result: dict[str, Any]
    fds: list[int] = field(default_factory=list)


class Operations:
    """Runs requests one at a time.

    Connections are served concurrently, but every op reads then rewrites
    shared kernel state (the nft table, a bridge's taps), so ops serialise on
    one lock; each takes milliseconds.
    """

    def __init__(self, owner_uid: int) -> None:
        self.owner_uid = owner_uid
        self._lock = threading.Lock()

    def run(self, request: Request) -> Outcome:
        outcome = self._run(request)
        op_delay.pause_after(request.op)  # test-only hook; inert unless set at start
        return outcome

    def _run(self, request: Request) -> Outcome:
        if isinstance(request.args, image_build.ImageBuildArgs):
            # Minutes of work: it must not hold up tap and bridge ops.
            with staging.in_use(request.args.out_dir):
                return Outcome(image_build.image_build(request.args, self.owner_uid))
        if isinstance(request.args, image_pull.ImagePullArgs):
            with staging.in_use(request.args.out_dir):
                return Outcome(image_pull.image_pull(request.args, self.owner_uid))
        if isinstance(request.args, staging.RemoveStagingArgs):
            # File work on the owner's disk, possibly a whole image tree: outside the lock.
            return Outcome(staging.remove_staging(request.args, self.owner_uid))
        if request.op in ("start_jailer", "teardown_jail"):
            from banger.helper import jailer_ops

            # Runs the jailer and waits for its pid file: outside the network-op lock.
            return Outcome(jailer_ops.run(request.args))
        with self._lock:
            return self._dispatch(request.op, request.args)

    def _dispatch(self, op: str, args: Any) -> Outcome:
        if op == "ping":
            return Outcome({"version": banger.__version__, "pid": os.getpid()})
        if op == "version":
            return Outcome(
                {
                    "version": banger.__version__,
                    "protocol": PROTOCOL_VERSION,
                    "ops": sorted(OPS),
                }
            )
        if isinstance(args, EnsureBridgeArgs):
            return Outcome(links.ensure_bridge(args.name, args.cidr))
        if isinstance(args, OpenTapArgs):
            result, fd = links.open_tap(args.name, args.bridge, self.owner_uid)
            return Outcome(result, [fd])
        if isinstance(args, DeleteTapArgs):
            return Outcome(links.delete_tap(args.name))
        if isinstance(args, EnsureNatArgs):
            return Outcome(nat.ensure_nat(args.cidr, args.bridge))
        if isinstance(args, TeardownNetworkArgs):
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
        if isinstance(args, BindDnsArgs):
            result, fds = ops_dns.bind_dns(args.cidr)
            return Outcome(result, fds)
        if isinstance(args, ResolverLinkArgs):
            return Outcome(ops_dns.resolver_link(args.bridge, args.cidr, args.domain))
        raise AssertionError(f"op {op} validated but has no handler")
