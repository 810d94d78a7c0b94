"""``vm run … -- CMD`` imports the exec client on a thread while the daemon works."""

from __future__ import annotations

import json
import subprocess
import sys

#: In a fresh interpreter: start the background import, wait for it, report.
_PROBE = """
import json, sys, time
from banger.cli.vm_cmd import _import_meanwhile
before = "banger.exec_client" in sys.modules
_import_meanwhile("banger.no_such_module", "banger.exec_client")
deadline = time.monotonic() + 60
while "websockets.asyncio.client" not in sys.modules and time.monotonic() < deadline:
    time.sleep(0.01)
loaded = "websockets.asyncio.client" in sys.modules  # by the thread: not imported here
import banger.exec_client  # waits for the thread's import, if still running
print(json.dumps({"before": before, "by_thread": loaded}))
"""


def test_the_exec_client_is_imported_meanwhile_and_a_failure_is_not_raised() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(probe.stdout) == {"before": False, "by_thread": True}, probe.stderr
    assert probe.stderr == ""  # the missing module was skipped quietly (its importer reports)
