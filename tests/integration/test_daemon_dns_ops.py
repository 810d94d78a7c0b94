"""A real bangerd: GET /v1/dns and the `vm dns` doctor check on it; old operations pruned at start.

The resolver itself (serving on a bridge, the helper's resolver link) needs a
namespace and a VM: ``tests/e2e/test_dns_stats.py`` covers that state.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from banger.doctor.dns import decide, gather_facts
from banger.store import OpState, Store
from tests.integration.bangerd_harness import home_paths, running_daemon
from tests.support import short_tmpdir, wait_until

CONFIG = '[network]\nsubnet = "10.77.3.0/24"\nbridge = "bng77"\ndns_domain = "box"\n'


def get_dns(socket: Path) -> dict[str, object]:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket))) as http:
        response = http.get("http://bangerd/v1/dns")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_dns_report_and_doctor_check_on_a_real_daemon() -> None:
    with short_tmpdir() as home:
        paths = home_paths(home)
        paths.config_file.parent.mkdir(parents=True)
        paths.config_file.write_text(CONFIG)
        resolved = home / "resolve"  # stands for /run/systemd/resolve
        with running_daemon(home):
            # No VM started since bangerd started: the bridge (and so port 53) is not up yet.
            assert get_dns(paths.daemon_socket) == {
                "serving": False,
                "address": "10.77.3.1",
                "bridge": "bng77",
                "domain": "box",
                "upstreams": [],
                "host_link": None,
                "error": None,
            }
            no_resolved = decide(gather_facts(paths, resolved_run_dir=resolved))
            assert no_resolved.status == "warn"
            assert "not started yet" in no_resolved.detail
            assert "server=/box/10.77.3.1" in no_resolved.fix
            resolved.mkdir()
            with_resolved = decide(gather_facts(paths, resolved_run_dir=resolved))
            assert with_resolved.status == "pass"
            assert "routes ~box to 10.77.3.1" in with_resolved.detail
        facts = gather_facts(paths, resolved_run_dir=resolved)
        assert not facts.daemon_up and facts.report is None
        assert "not running" in facts.daemon_detail
        assert decide(facts).status == "pass" and "skipped" in decide(facts).detail


def test_finished_operations_older_than_the_retention_are_pruned_at_start() -> None:
    with short_tmpdir() as home:
        paths = home_paths(home)
        paths.config_file.parent.mkdir(parents=True)
        paths.config_file.write_text("[daemon]\nops_retention_days = 3\n")
        paths.db.parent.mkdir(parents=True, exist_ok=True)
        past = datetime.now(UTC) - timedelta(days=10)
        recent = datetime.now(UTC) - timedelta(days=1)
        clock = [past]
        with Store.open(paths.db, clock=lambda: clock[0]) as store:
            old_ok = store.create_operation("vm.start", "a")
            store.update_operation(old_ok.id, state=OpState.SUCCEEDED)
            old_failed = store.create_operation("vm.create", "b")
            store.update_operation(old_failed.id, state=OpState.FAILED, error="boom")
            # Left running by a crashed daemon: the next start fails it *now*, so it stays.
            old_running = store.create_operation("vm.create", "c")
            clock[0] = recent
            kept = store.create_operation("vm.stop", "a")
            store.update_operation(kept.id, state=OpState.SUCCEEDED)

        with running_daemon(home) as daemon, daemon.client() as client:

            def ids() -> set[str]:
                return {op.id for op in client.list_ops(include_finished=True)}

            # Pruning runs in a task the daemon starts with its API.
            with suppress(AssertionError):  # the assert below says what stayed
                wait_until(lambda: old_ok.id not in ids(), 60, "the old operations pruned")
            assert ids() == {old_running.id, kept.id}
            interrupted = client.get_op(old_running.id)
            assert interrupted.state == "failed" and "interrupted" in (interrupted.error or "")
            assert "pruned 2 operation(s)" in daemon.log()
