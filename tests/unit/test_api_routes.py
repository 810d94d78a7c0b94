"""The daemon API's surface, pinned: every route and every OpenAPI operation.

``tests/data/api_routes.json`` lists each route the app serves (method, path,
status code, tags) and each operation of its OpenAPI document (method, path,
response codes, tags, operation id). A change to how the routers are built
(one router per URL prefix, route groups in modules) must leave both as they
are; a new or changed endpoint updates the file on purpose::

    .venv/bin/python -m tests.unit.test_api_routes > tests/data/api_routes.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from banger.daemon.api.app import create_app
from banger.daemon.config_watch import ConfigWatch
from banger.daemon.lifecycle import build_services
from banger.daemon.ops import Operations
from banger.paths import Paths
from banger.store import Store
from tests.support import short_tmpdir

EXPECTED = Path(__file__).parent.parent / "data" / "api_routes.json"


def built_app(home: Path) -> Iterator[FastAPI]:
    """The app as bangerd builds it, over a fresh home (not served)."""
    paths = Paths.from_env({"BANGER_HOME": str(home)})
    paths.ensure()
    store = Store.open(paths.db)
    try:
        services = build_services(
            paths, ConfigWatch.load(paths.config_file), store, Operations(store)
        )
        yield create_app(services)
    finally:
        store.close()


@pytest.fixture(scope="module")
def app() -> Iterator[FastAPI]:
    with short_tmpdir() as home:
        yield from built_app(home)


def surface(app: FastAPI) -> dict[str, list[list[Any]]]:
    """Routes and OpenAPI operations as sorted rows (the order routers are included
    in may change; no two of banger's paths match the same request)."""
    routes = []
    for route in iter_route_contexts(app.routes):
        methods = sorted(route.methods or ["WEBSOCKET"])
        status = getattr(route, "status_code", None)
        tags = sorted(str(t) for t in getattr(route, "tags", None) or [])
        routes += [[method, route.path, status, tags] for method in methods]
    operations = []
    for path, items in app.openapi()["paths"].items():
        for method, op in items.items():
            codes = sorted(op.get("responses", {}))
            operations.append([method.upper(), path, codes, op.get("tags", []), op["operationId"]])
    return {
        "routes": sorted(routes, key=json.dumps),
        "operations": sorted(operations, key=json.dumps),
    }


def test_routes_are_as_pinned(app: FastAPI) -> None:
    expected = json.loads(EXPECTED.read_text())
    assert surface(app)["routes"] == expected["routes"]


def test_openapi_operations_are_as_pinned(app: FastAPI) -> None:
    expected = json.loads(EXPECTED.read_text())
    assert surface(app)["operations"] == expected["operations"]


@pytest.mark.parametrize(
    "path", ["/v1/ops", "/v1/vms", "/v1/images", "/v1/kernels", "/v1/sessions", "/v1/snapshots"]
)
async def test_each_collection_answers_through_its_router(app: FastAPI, path: str) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bangerd") as http:
        resp = await http.get(path)
    assert resp.status_code == 200 and resp.json() == [], resp.text


def test_every_v1_path_has_one_of_the_known_prefixes(app: FastAPI) -> None:
    prefixes = ("ops", "vms", "images", "kernels", "sessions", "snapshots", "network", "pools")
    meta = {"version", "dns", "config"}
    for path in app.openapi()["paths"]:
        first = path.removeprefix("/v1/").split("/")[0]
        assert first in prefixes or first in meta, path


if __name__ == "__main__":
    with short_tmpdir() as home:
        for built in built_app(home):
            found = surface(built)
            # One row a line, so a change to the API reads as a one-line diff.
            parts = [
                f' "{key}": [\n' + ",\n".join(f"  {json.dumps(row)}" for row in found[key]) + "\n ]"
                for key in ("routes", "operations")
            ]
            sys.stdout.write("{\n" + ",\n".join(parts) + "\n}\n")
