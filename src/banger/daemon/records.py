"""Store records → API models, in one place.

The store (:mod:`banger.store`) owns persistence and its dataclasses; the API
owns the wire shape. Keeping the mapping here means a change on either side is
a change to this one small module.
"""

from __future__ import annotations

from banger.api_models import Operation, OpEvent, VMSummary
from banger.store import OperationRecord, VMRecord
from banger.store import OpEvent as OpEventRecord


def operation_model(record: OperationRecord) -> Operation:
    return Operation(
        id=record.id,
        kind=record.kind,
        target=record.target,
        state=record.state.value,
        stage=record.stage,
        error=record.error,
        hint=record.hint,
        created_at=record.created_at,
        updated_at=record.updated_at,
        finished_at=record.finished_at,
    )


def event_model(record: OpEventRecord) -> OpEvent:
    return OpEvent(
        op_id=record.op_id,
        seq=record.seq,
        at=record.at,
        kind=record.kind,
        stage=record.stage,
        message=record.message,
        data=dict(record.data),
    )


def vm_model(record: VMRecord) -> VMSummary:
    return VMSummary(
        id=record.id,
        name=record.name,
        state=record.state.value,
        image=record.image_id,
        kernel=record.kernel_id,
        ip=str(record.ip) if record.ip is not None else None,
        created_at=record.created_at,
    )
