"""The helper's test-only op hook: read once at start, inert unless set, holds only its op."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

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


def test_the_named_op_replies_late_and_the_others_at_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    op_delay.configure_from_env({op_delay.ENV: "version:0.4"})
    ops = Operations(owner_uid=12345)
    slept: list[tuple[str, float]] = []  # (op being run, seconds) of every hold
    running = ""

    def spy(seconds: float) -> None:
        slept.append((running, seconds))
        time.sleep(seconds)

    monkeypatch.setattr(op_delay, "time", SimpleNamespace(sleep=spy))
    running = "ping"
    ping = ops.run(Request(id=1, op="ping", args=None))
    running = "version"
    began = time.monotonic()
    version = ops.run(Request(id=2, op="version", args=None))
    held = time.monotonic() - began
    # The held op still did its work and returns its real result.
    assert ping.result["pid"] > 0 and version.result["protocol"] == 1
    # "At once" is observable, not timed: the only hold is the named op's.
    assert slept == [("version", 0.4)]
    # The delay is the behaviour, so a lower bound only: the reply really waited.
    assert held >= 0.4
    assert [r.getMessage() for r in caplog.records if op_delay.MARKER in r.getMessage()] == [
        f"{op_delay.MARKER}: version done, sleeping 0.4s before the reply"
    ]
