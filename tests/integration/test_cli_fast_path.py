"""`banger vm list --json` stays cheap: a real daemon, the real CLI, no pydantic or httpx loaded.

Start-up time is most of what a read-only command costs (bench/cli_latency.py);
these tests keep the heavy imports from creeping back, and check that the
passed-through JSON is what the typed client would have printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from banger.paths import Paths
from banger.store import Store
from banger.store.records import VMState
from tests.integration.bangerd_harness import home_env, home_paths, running_daemon

#: runs the CLI in-process, then reports which heavy packages it loaded
_PROBE = """
import json, sys
from banger.cli.main import main
sys.argv = ["banger", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(set(sys.modules) & {"pydantic", "httpx", "httpcore", "rich"})
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def _seed(paths: Paths) -> None:
    with Store.open(paths.db) as store:
        for name in ("alpha", "beta"):
            store.create_vm(
                name=name,
                image_id=None,
                kernel_id=None,
                vmm="qemu",
                init_mode="fast",
                vcpus=1,
                memory_mib=256,
                work_disk_size=1 << 30,
                state=VMState.STOPPED,
            )


def test_vm_list_json_imports_neither_pydantic_nor_httpx(short_tmp: Path) -> None:
    _seed(home_paths(short_tmp))
    with running_daemon(short_tmp) as daemon:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, "vm", "list", "--json"],
            env=home_env(short_tmp),
            capture_output=True,
            text=True,
            check=False,
        )
        report = json.loads(probe.stderr.strip().splitlines()[-1])
        assert report == {"code": 0, "heavy": []}, probe.stderr
        listed = json.loads(probe.stdout)
        typed = [vm.model_dump(mode="json") for vm in daemon.client().vm_details()]
    assert [vm["name"] for vm in listed] == ["alpha", "beta"]
    assert listed == typed


def test_typed_calls_still_load_the_models(short_tmp: Path) -> None:
    with running_daemon(short_tmp):
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, "vm", "list"],
            env=home_env(short_tmp),
            capture_output=True,
            text=True,
            check=False,
        )
    report = json.loads(probe.stderr.strip().splitlines()[-1])
    assert report["code"] == 0 and "pydantic" in report["heavy"], probe.stderr
    assert "httpx" not in report["heavy"]
