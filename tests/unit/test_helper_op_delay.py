"""The helper's test-only op hook: read once at start, inert unless set, holds only its op."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from banger.delay_spec import StageDelay
from banger.helper import op_delay
from banger.helper.ops import Operations
from banger.helper.validate import Request


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    op_delay.configure_from_env({})


def test_unset_or_malformed_is_inert() -> None:
    assert op_delay.configure_from_env({}) is None
    assert op_delay.configure_from_env({op_delay.ENV: "open_tap"}) is None
    assert op_delay.configure_from_env({op_delay.ENV: "open_tap;id:1"}) is None
    assert op_delay.configure_from_env({op_delay.ENV: "open_tap:1"}) == StageDelay("open_tap", 1)


def test_the_named_op_replies_late_and_the_others_at_once(caplog: pytest.LogCaptureFixture) -> None:
    op_delay.configure_from_env({op_delay.ENV: "version:0.4"})
    ops = Operations(owner_uid=12345)
    began = time.monotonic()
    ping = ops.run(Request(id=1, op="ping", args=None))
    quick = time.monotonic() - began
    version = ops.run(Request(id=2, op="version", args=None))
    slow = time.monotonic() - began - quick
    # The held op still did its work and returns its real result.
    assert ping.result["pid"] > 0 and version.result["protocol"] == 1
    assert quick < 0.3 <= slow
    assert [r.getMessage() for r in caplog.records if op_delay.MARKER in r.getMessage()] == [
        f"{op_delay.MARKER}: version done, sleeping 0.4s before the reply"
    ]
