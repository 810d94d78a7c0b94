"""schemathesis against the daemon's own OpenAPI, on a real ``bangerd``.

The installation is the e2e harness's (network namespace without uplink,
unprivileged owner user, root helper), left unseeded: with no kernel or image
registered, fuzzed ``vm create`` requests cannot boot guests, and operations
that would download (kernel pull, image build) fail inside the namespace —
the config points both mirrors at a closed port on the namespace's loopback,
so they fail at once instead of waiting on DNS.

Every operation of the live OpenAPI document is fuzzed twice: with valid
requests (no 5xx; status, content type, headers and body as documented) and
with invalid ones (additionally: refused with a 4xx). Then the daemon must
still be the same process, every operation the fuzz started must have ended
with a banger error (never "internal error"), and the log must hold no
traceback. Budget: ``BANGER_FUZZ_EXAMPLES`` (see :mod:`.budget`).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.harness import Banger, banger_env
from tests.reliability.api_fuzz import (
    FuzzTally,
    fuzz_operation,
    load_schema,
    operations,
    unix_client,
)
from tests.reliability_counts import ReliabilityCounts
from tests.support import needs_root, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root]

#: Port 9 (discard) on the namespace's loopback: nothing listens, connects fail at once.
CLOSED_MIRROR = "http://127.0.0.1:9/debian"
CONFIG = f"""\
[vm]
image = "fuzz-no-image"  # not a distro ref: a VM create cannot start a 10-s build

[images]
debian_mirror = "{CLOSED_MIRROR}"

[kernel]
debian_mirror = "{CLOSED_MIRROR}"
"""


@pytest.fixture(scope="module")
def installation() -> Iterator[Banger]:
    with banger_env(seed=False) as b:
        config_dir = b.home / "config"
        config_dir.mkdir(mode=0o700)
        (config_dir / "config.toml").write_text(CONFIG)
        for path in (config_dir, config_dir / "config.toml"):
            os.chown(path, b.user.uid, b.user.gid)
        b.banger("vm", "list")  # auto-starts bangerd as the owner, inside the namespace
        yield b


@pytest.fixture(scope="module")
def http(installation: Banger) -> Iterator[httpx.Client]:
    # Root may connect to the owner's 0600 socket; the daemon answers like it does the CLI.
    with unix_client(str(installation.runtime_dir / "bangerd.sock")) as client:
        yield client


def daemon_pid(b: Banger) -> int:
    return int((b.runtime_dir / "bangerd.pid").read_text().split()[0])


def wait_ops_finished(http: httpx.Client, timeout: float = 180) -> list[dict[str, object]]:
    """Every operation, once none is running (bounded: fuzzed ops fail, if slowly)."""

    def ended() -> tuple[list[dict[str, object]], ...]:
        ops: list[dict[str, object]] = http.get("/v1/ops", params={"all": "true"}).json()
        return (ops,) if all(op["state"] not in ("pending", "running") for op in ops) else ()

    try:
        [ops] = wait_until(ended, timeout, "every operation ended after the fuzz")
    except AssertionError as exc:
        ops = http.get("/v1/ops", params={"all": "true"}).json()
        running = [op for op in ops if op["state"] in ("pending", "running")]
        raise AssertionError(f"{exc}: {running}") from None
    return ops


def settle(http: httpx.Client, tally: FuzzTally) -> Callable[[httpx.Response], None]:
    """After a case that started an operation, wait for it to end.

    Operations hold locks (an image build holds the publication lock until the
    helper gives up on the closed mirror); letting them pile up would make the
    next cases wait on those locks and time out, and the failure would point
    at an innocent endpoint.
    """

    def after(response: httpx.Response) -> None:
        if response.status_code == 202:
            started = time.monotonic()
            wait_ops_finished(http)
            tally.settle_seconds += time.monotonic() - started

    return after


def test_every_endpoint_survives_schemathesis(
    installation: Banger, http: httpx.Client, reliability_counts: ReliabilityCounts
) -> None:
    pid = daemon_pid(installation)
    schema = load_schema(http)
    found = operations(schema)
    assert len(found) >= 10, [op.label for op in found]  # the VM stack's routes are there
    tally = FuzzTally()
    failures: list[str] = []
    for operation in found:
        for negative in (False, True):
            try:
                fuzz_operation(
                    operation, http, tally, negative=negative, after_each=settle(http, tally)
                )
            # schemathesis raises a BaseExceptionGroup: report every operation, not the first.
            except (Exception, BaseExceptionGroup) as exc:
                mode = "negative" if negative else "positive"
                detail = "".join(traceback.format_exception(exc))[-3000:]
                failures.append(f"{operation.label} ({mode}): {exc}\n{detail}")
    reliability_counts.hostile(tally.requests)
    assert not failures, "\n\n".join(failures)
    assert tally.requests >= len(found)
    assert not [s for s in tally.by_status if s >= 500], tally.by_status
    assert any(200 <= s < 300 for s in tally.by_status), tally.by_status  # not all refused

    assert daemon_pid(installation) == pid, "bangerd restarted during the fuzz"
    ops = wait_ops_finished(http)
    print(f"{tally.requests} requests, statuses {tally.by_status}, {len(ops)} operations started")
    internal = [op for op in ops if "internal error" in str(op.get("error"))]
    assert not internal, internal
    log = (installation.state_dir / "bangerd.log").read_text()
    assert "Traceback" not in log, log[-4000:]
    assert installation.taps() == []
