from __future__ import annotations

import json
import re
from pathlib import Path

from banger.vmm.base import VMMDriver, VMMProcess, stable_mac
from banger.vmm.qemu import QemuDriver


def test_stable_mac_is_deterministic_local_unicast() -> None:
    mac = stable_mac("vm-123")
    assert mac == stable_mac("vm-123")
    assert re.fullmatch(r"02(:[0-9a-f]{2}){5}", mac)
    first = int(mac[:2], 16)
    assert first & 0b10 and not first & 0b1  # locally administered, unicast


def test_stable_mac_differs_between_ids() -> None:
    macs = {stable_mac(f"vm{i}") for i in range(5000)}
    assert len(macs) == 5000


def test_vmm_process_round_trips_through_json() -> None:
    proc = VMMProcess("qemu", "v1", 4242, 987654, Path("/r/vm-v1.qmp"), ("qemu", "-M", "microvm"))
    data = json.loads(json.dumps(proc.to_json()))
    assert VMMProcess.from_json(data) == proc


def test_qemu_driver_satisfies_the_protocol() -> None:
    driver: VMMDriver = QemuDriver()
    assert driver.name == "qemu"
    assert driver.capabilities.pause and driver.capabilities.tap_by_fd
