"""The /v1 API against a real bangerd: error shapes, operations, live event streams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from banger.client import BangerClient
from banger.config import load_config
from banger.daemon.api.app import create_app
from banger.daemon.config_watch import ConfigWatch
from banger.daemon.lifecycle import build_services
from banger.daemon.ops import Operations
from banger.daemon.selftest import STAGES
from banger.daemon.services import Services
from banger.errors import InvalidArgument, NotFound
from banger.paths import Paths
from banger.store import Store
from tests.integration.bangerd_harness import Daemon, running_daemon
from tests.support import short_tmpdir


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_tmpdir() as home, running_daemon(home) as d:
        yield d


@pytest.fixture
def client(daemon: Daemon) -> Iterator[BangerClient]:
    with daemon.client() as c:
        yield c


@pytest.fixture
def in_process(short_tmp: Path) -> Iterator[Services]:
    """A whole daemon's services built in this process as bangerd builds them (not served)."""
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp)})
    paths.ensure()
    store = Store.open(paths.db)
    try:
        yield build_services(paths, ConfigWatch.load(paths.config_file), store, Operations(store))
    finally:
        store.close()


@pytest.fixture
def raw(daemon: Daemon) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(uds=str(daemon.paths.daemon_socket))
    with httpx.Client(transport=transport, base_url="http://bangerd") as http:
        yield http


def test_unknown_route_is_json_404(raw: httpx.Client) -> None:
    resp = raw.get("/v1/nope")
    assert resp.status_code == 404
    assert resp.json() == {
        "error": "no such endpoint: GET /v1/nope",
        "hint": "see /openapi.json for the API",
        "kind": "NotFound",
    }


def test_wrong_method_is_json_405(raw: httpx.Client) -> None:
    resp = raw.delete("/v1/version")
    assert resp.status_code == 405
    assert set(resp.json()) == {"error", "hint", "kind"}


def test_unknown_operation_is_404_naming_it(raw: httpx.Client, client: BangerClient) -> None:
    resp = raw.get("/v1/ops/deadbeef0000")
    assert resp.status_code == 404
    assert resp.json()["error"] == "no operation with id 'deadbeef0000'"
    assert resp.json()["kind"] == "NotFound"
    assert raw.get("/v1/ops/deadbeef0000/events").status_code == 404
    with pytest.raises(NotFound, match="deadbeef0000"):
        client.get_op("deadbeef0000")
    with pytest.raises(NotFound):
        list(client.stream_events("deadbeef0000"))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"fail_at": "no_such_stage"}, "fail_at"),
        ({"delay_ms": -1}, "body.delay_ms"),
        ({"delay_ms": "soon"}, "body.delay_ms"),
        ({"surprise": 1}, "body.surprise"),
    ],
)
def test_bad_request_is_400_naming_the_field(raw: httpx.Client, body: object, field: str) -> None:
    resp = raw.post("/v1/ops/selftest", json=body)
    assert resp.status_code == 400
    data = resp.json()
    assert field in data["error"]
    assert data["kind"] == "InvalidArgument"
    assert data["hint"]


def test_bad_query_parameter_is_400(raw: httpx.Client) -> None:
    resp = raw.get("/v1/ops", params={"all": "perhaps"})
    assert resp.status_code == 400
    assert "query.all" in resp.json()["error"]


def test_client_raises_invalid_argument_with_hint(client: BangerClient) -> None:
    with pytest.raises(InvalidArgument) as info:
        client.selftest(fail_at="bogus")
    assert info.value.exit_code == 2
    assert info.value.hint is not None and "read_store" in info.value.hint


def test_openapi_describes_the_api(raw: httpx.Client) -> None:
    spec = raw.get("/openapi.json").json()
    for path in ("/v1/version", "/v1/vms", "/v1/ops", "/v1/ops/{op_id}/events", "/v1/config"):
        assert path in spec["paths"]


def test_vms_empty_and_config_is_the_effective_one(daemon: Daemon, client: BangerClient) -> None:
    assert client.list_vms() == []
    assert client.config() == load_config(paths=daemon.paths).to_json_dict()


def test_selftest_streams_its_stages_in_order(client: BangerClient) -> None:
    op = client.selftest(delay_ms=10)
    events = list(client.stream_events(op.id))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].kind == "started"
    assert [e.stage for e in events if e.kind == "stage"] == list(STAGES)
    assert events[-1].kind == "succeeded"
    final = client.get_op(op.id)
    assert final.state == "succeeded"
    assert final.stage == "finish"
    assert final.finished_at is not None


def test_events_arrive_while_the_operation_runs(client: BangerClient) -> None:
    op = client.selftest(delay_ms=400)
    stream = client.stream_events(op.id)
    first_stage = next(e for e in stream if e.kind == "stage")
    assert first_stage.stage == "read_store"
    assert client.get_op(op.id).state == "running"  # we heard it live, not replayed
    assert op.id in [o.id for o in client.list_ops()]
    rest = list(stream)
    assert rest[-1].kind == "succeeded"
    assert op.id not in [o.id for o in client.list_ops()]
    assert op.id in [o.id for o in client.list_ops(include_finished=True)]


def test_failed_operation_keeps_stage_error_and_hint(client: BangerClient) -> None:
    op = client.selftest(fail_at="check_runtime_dir", delay_ms=0)
    events = list(client.stream_events(op.id))
    assert [e.stage for e in events if e.kind == "stage"] == ["read_store", "check_runtime_dir"]
    last = events[-1]
    assert last.kind == "failed"
    assert last.stage == "check_runtime_dir"
    assert last.data["exit_code"] == 1
    final = client.get_op(op.id)
    assert final.state == "failed"
    assert final.stage == "check_runtime_dir"
    assert final.error == "selftest failed at stage check_runtime_dir as requested"
    assert final.hint is not None and "fail_at" in final.hint
    # A finished op replays its events and the stream ends; `after` skips the seen ones.
    assert list(client.stream_events(op.id)) == events
    assert list(client.stream_events(op.id, after=2)) == events[2:]


def test_two_followers_see_the_same_stream(client: BangerClient, daemon: Daemon) -> None:
    op = client.selftest(delay_ms=100)
    with daemon.client() as other:
        a = client.stream_events(op.id)
        b = other.stream_events(op.id)
        assert list(a) == list(b)


async def test_unexpected_errors_are_generic_500s(in_process: Services) -> None:
    """In-process app over a closed store: a real failure, answered without a traceback."""
    paths = in_process.paths
    app = create_app(in_process)  # building it reads the store (leftover snapshot sweep)
    in_process.store.close()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        resp = await http.get("/v1/vms")
    assert resp.status_code == 500
    body = resp.json()
    assert body["error"] == "internal error in bangerd while serving GET /v1/vms"
    assert str(paths.daemon_log) in body["hint"]
    assert "Traceback" not in resp.text
    assert "closed" not in resp.text  # the exception's own text stays in the log


def test_vm_create_reports_every_invalid_field_at_once(raw: httpx.Client) -> None:
    """Issue #22 item 7: a bad name did not hide `vcpus: -1` and the rest."""
    body = {"name": "Bad_Name", "vcpus": -1, "memory_mib": 1, "work_disk_size": 5,
            "init": "upstart", "start": False}  # fmt: skip
    resp = raw.post("/v1/vms", json=body)
    assert resp.status_code == 400
    data = resp.json()
    assert data["kind"] == "InvalidArgument"
    assert data["error"].startswith("invalid request (5 problems): name: 'Bad_Name' is not a DNS")
    for field in (
        "cpus: must be at least 1, got -1",
        "memory: must be at least 128 MiB",
        "work disk size: must be a whole number of MiB",
        "init: must be 'systemd'",
    ):
        assert field in data["error"]
    assert "lowercase letters" in data["hint"] and "--memory 512" in data["hint"]
    # Type errors are gathered too (pydantic, before the checks run).
    resp = raw.post("/v1/vms", json={"vcpus": "many", "memory_mib": "lots"})
    assert resp.status_code == 400
    assert "body.vcpus" in resp.json()["error"] and "body.memory_mib" in resp.json()["error"]
    # One problem keeps its own message and hint.
    one = raw.post("/v1/vms", json={"name": "ok-name", "vcpus": 0, "start": False}).json()
    assert one["error"] == "cpus: must be at least 1, got 0"


def test_vm_create_refuses_a_workspace_that_is_not_a_repository(
    raw: httpx.Client, tmp_path: Path
) -> None:
    """Issue #21 item 19: the workspace is checked before anything is created."""
    relative = raw.post("/v1/vms", json={"start": False, "workspace": {"path": "repo"}})
    assert relative.status_code == 400, relative.text
    assert relative.json()["error"] == "workspace.path: 'repo' must be absolute"
    plain = raw.post("/v1/vms", json={"start": False, "workspace": {"path": str(tmp_path)}})
    assert plain.status_code == 404, plain.text
    assert plain.json()["error"] == f"{tmp_path} is not inside a git repository"
    assert raw.get("/v1/vms").json() == []


@pytest.mark.parametrize(
    ("build", "says"),
    [
        ("/tmp/a\0b", "build: a path cannot contain a NUL byte"),  # schemathesis found this 500
        ("relative/dir", "build: must be an absolute path"),
        ("/nonexistent/kernel-build", "build: kernel build: /nonexistent/kernel-build is not"),
    ],
)
def test_register_build_refuses_what_is_not_a_finished_build(
    raw: httpx.Client, build: str, says: str
) -> None:
    """Bad input, 400 naming the field: never a 500, and nothing registered."""
    resp = raw.post("/v1/kernels/register-build", json={"build": build})
    assert resp.status_code == 400, resp.text
    data = resp.json()
    assert data["kind"] == "InvalidArgument" and data["error"].startswith(says), data
    assert raw.get("/v1/kernels").json() == []
