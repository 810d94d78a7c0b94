"""`banger ops`: following a live `vm create --start`, and a create failing inside its pipeline.

One fast-init guest boots for the module. The failing create uses the real
test kernel with an initramfs that has no modules (as in ``test_vm_e2e``): it
cannot find its root disk and powers off, so the operation fails at
``wait_ssh`` within seconds, with the console tail as its error.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from banger.kernels.initramfs import build_initramfs
from tests.e2e.harness import Banger
from tests.e2e.leftovers import query
from tests.kernel_cache import cached_debian_kernel
from tests.support import VENV_BIN, needs_root, wait_until

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

#: A successful create --start, stage by stage (prepare_work_disk comes once at create).
CREATE_START_STAGES = [
    "resolve",
    "root_disk",
    "prepare_work_disk",
    "network",
    "launch",
    "wait_ssh",
    "running",
]


def ops_list(b: Banger, *, all: bool = False) -> list[dict[str, Any]]:
    args = ["ops", "list", "--json", *(["--all"] if all else [])]
    data: list[dict[str, Any]] = json.loads(b.banger(*args).stdout)
    return data


def wait_for_running_op(b: Banger, kind: str, target: str, timeout: float = 120) -> dict[str, Any]:
    """The op as `ops list` (running ones only) shows it, as soon as it is there."""

    def running() -> dict[str, Any]:
        found = [op for op in ops_list(b) if op["kind"] == kind and op["target"] == target]
        return found[0] if found else {}

    return wait_until(running, timeout, f"a running {kind} operation for {target}")


def test_follow_streams_a_running_create_stage_by_stage(b: Banger) -> None:
    create = subprocess.Popen(
        b.as_owner([str(VENV_BIN / "banger"), "vm", "create", "--name", "follow",
                    "--init", "fast", "--cpus", "1", "--memory", "384", "--start"]),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        op = wait_for_running_op(b, "vm.create", "follow")
        assert op["state"] == "running"

        follow = subprocess.Popen(
            b.as_owner([str(VENV_BIN / "banger"), "ops", "show", op["id"], "--follow", "--json"]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert follow.stdout is not None and follow.stderr is not None
        events: list[dict[str, Any]] = []
        state_at_launch = None
        for line in follow.stdout:
            events.append(json.loads(line))
            if events[-1]["kind"] == "stage" and events[-1]["stage"] == "launch":
                # The store's state of the op as its launch event arrives: live
                # events come while the boot is still ahead, a dump at the end after.
                [(state_at_launch,)] = query(
                    b, "SELECT state FROM operations WHERE id = ?", op["id"]
                )
        assert follow.wait(timeout=60) == 0, follow.stderr.read()
        follow.stderr.close()
        follow.stdout.close()
    finally:
        _out, err = create.communicate(timeout=600)
    assert create.returncode == 0, err

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # every event, once
    assert all(e["op_id"] == op["id"] for e in events)
    stages = [e["stage"] for e in events if e["kind"] == "stage"]
    assert stages == CREATE_START_STAGES
    assert events[0]["kind"] == "started" and events[-1]["kind"] == "succeeded"
    # The boot (launch → SSH) happened while we followed: the launch event came live.
    assert state_at_launch == "running", state_at_launch

    final = json.loads(b.banger("ops", "show", op["id"], "--json").stdout)
    assert (final["state"], final["stage"], final["error"]) == ("succeeded", "running", None)
    assert final["finished_at"] is not None
    assert op["id"] not in [o["id"] for o in ops_list(b)]  # finished: only with --all
    assert op["id"] in [o["id"] for o in ops_list(b, all=True)]
    assert json.loads(b.banger("vm", "show", "follow", "--json").stdout)["state"] == "running"


@pytest.fixture
def broken_kernel(b: Banger) -> Iterator[str]:
    kernel = cached_debian_kernel()
    initrd = b.home / "no-modules-initrd.img"
    build_initramfs(None, initrd)
    initrd.chmod(0o644)
    b.banger("kernel", "import", str(kernel / "vmlinuz"), "--initrd", str(initrd),
             "--name", "no-modules")  # fmt: skip
    try:
        yield "no-modules"
    finally:
        b.banger("kernel", "rm", "no-modules", check=False)


def test_a_create_failing_in_its_pipeline_keeps_stage_error_and_hint(
    b: Banger, broken_kernel: str
) -> None:
    result = b.banger("vm", "create", "--name", "doomed", "--kernel", broken_kernel,
                      "--init", "fast", "--memory", "256", "--start", check=False)  # fmt: skip
    assert result.returncode != 0
    assert "failed at stage wait_ssh" in result.stderr, result.stderr

    failed = [o for o in ops_list(b, all=True) if o["target"] == "doomed"]
    assert len(failed) == 1
    op = failed[0]
    assert (op["kind"], op["state"], op["stage"]) == ("vm.create", "failed", "wait_ssh")
    assert op["error"].startswith("the guest stopped before SSH answered")
    assert "console" in op["error"]  # its last console lines
    assert op["hint"].startswith("full console log: ")
    assert op["finished_at"] is not None

    shown = json.loads(b.banger("ops", "show", op["id"], "--json").stdout)
    assert {k: shown[k] for k in ("state", "stage", "error", "hint")} == {
        k: op[k] for k in ("state", "stage", "error", "hint")
    }
    # The human forms: the table row and the fields (wide enough not to fold the id).
    wide = dataclasses.replace(b, env={**b.env, "COLUMNS": "250"})
    row = next(line for line in wide.banger("ops", "list", "--all").stdout.splitlines()
               if line.startswith(op["id"]))  # fmt: skip
    assert row.split()[1:5] == ["vm.create", "doomed", "failed", "wait_ssh"]
    fields = b.banger("ops", "show", op["id"]).stdout
    assert "stage:    wait_ssh" in fields and "hint:     full console log:" in fields
    assert "error:    the guest stopped before SSH answered" in fields

    # Following a finished, failed op replays it and exits with its failure.
    replay = b.banger("ops", "show", op["id"], "--follow", check=False)
    assert replay.returncode != 0
    assert f"operation {op['id']} (vm.create) failed at stage wait_ssh" in replay.stderr
    stages = [line.split("▸ ")[1] for line in replay.stdout.splitlines() if "▸ " in line]
    assert stages == CREATE_START_STAGES[:-1]  # everything up to the failing wait_ssh
    # Nothing is left of the VM: its undo ran.
    names = [vm["name"] for vm in json.loads(b.banger("vm", "list", "--json").stdout)]
    assert "doomed" not in names


def test_no_operation_is_left_running(b: Banger) -> None:
    assert ops_list(b) == []
