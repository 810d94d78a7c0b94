"""The helper's operations: validated arguments in, a result (and fds) out."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from banger.helper import op_delay, staging
from banger.helper.optable import OpTable, Outcome, op_specs, op_table
from banger.helper.validate import OpSpec, Request

__all__ = ["Operations", "Outcome"]


class Operations:
    """Runs validated requests, each holding what its entry in the op table names.

    Connections are served concurrently; the network ops serialise on one
    lock, each taking milliseconds (see :mod:`banger.helper.optable`).
    """

    def __init__(self, owner_uid: int, table: OpTable | None = None) -> None:
        self.owner_uid = owner_uid
        #: Without a table: every op, the jailer ops refusing (no jailer policy).
        self.table = op_table(None) if table is None else table
        self.specs: Mapping[str, OpSpec] = op_specs(self.table)
        self._lock = threading.Lock()

    def run(self, request: Request) -> Outcome:
        outcome = self._run(request)
        op_delay.pause_after(request.op)  # test-only hook; inert unless set at start
        return outcome

    def _run(self, request: Request) -> Outcome:
        op = self.table[request.op]
        if op.lock == "network":
            with self._lock:
                return op.handler(request.args, self.owner_uid)
        if op.lock == "out_dir":
            with staging.in_use(request.args.out_dir):
                return op.handler(request.args, self.owner_uid)
        return op.handler(request.args, self.owner_uid)
