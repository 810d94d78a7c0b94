"""Drive schemathesis cases against a real ``bangerd`` over its Unix socket.

schemathesis builds requests for ``requests``; the daemon only listens on a
Unix socket, which httpx speaks natively. :func:`send` turns a case into one
httpx request on that socket, and :func:`fuzz_operation` runs hypothesis over
one API operation with the response checks that matter here: no 5xx, and the
status code, content type, headers and body all as the OpenAPI document says.
Negative cases (data the schema forbids) must also be refused with a 4xx.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import httpx
import schemathesis
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.budget import fuzz_settings

Operation: TypeAlias = schemathesis.APIOperation[Any, Any, Any, Any]
Case: TypeAlias = schemathesis.Case[Any]

BASE_URL = "http://bangerd"
#: Streams (``/v1/ops/{id}/events``) end when their operation ends; the fuzzed ones
#: are unknown ids (404) or short selftests, so a long read means a hang.
READ_TIMEOUT = 30.0

POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [*POSITIVE_CHECKS, negative_data_rejection]


def unix_client(socket_path: str) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=socket_path)
    return httpx.Client(
        transport=transport,
        base_url=BASE_URL,
        timeout=httpx.Timeout(10.0, read=READ_TIMEOUT),
    )


def send(http: httpx.Client, case: Case) -> httpx.Response:
    """One case as one request (the kwargs schemathesis would give ``requests``)."""
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=BASE_URL)
    content: bytes | None = None
    if "json" in kwargs:
        content = json.dumps(kwargs["json"]).encode()
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        content = data.encode() if isinstance(data, str) else bytes(data)
    headers = {str(k): str(v) for k, v in (kwargs.get("headers") or {}).items()}
    if "json" in kwargs:
        headers.setdefault("Content-Type", "application/json")
    cookies = kwargs.get("cookies") or {}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    request = http.build_request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params") or None,
        headers=headers,
        content=content,
    )
    return http.send(request)


@dataclass
class FuzzTally:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    #: Time spent waiting for operations the fuzz started (see the test's settle()).
    settle_seconds: float = 0.0

    def add(self, status: int) -> None:
        self.requests += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1


def fuzz_operation(
    operation: Operation,
    http: httpx.Client,
    tally: FuzzTally,
    *,
    negative: bool,
    after_each: Callable[[httpx.Response], None] | None = None,
) -> None:
    """Hypothesis over one operation; raises the first failing case (shrunk)."""
    mode = (
        schemathesis.GenerationMode.NEGATIVE if negative else schemathesis.GenerationMode.POSITIVE
    )
    checks = NEGATIVE_CHECKS if negative else POSITIVE_CHECKS

    @fuzz_settings()
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        response = send(http, case)
        tally.add(response.status_code)
        case.validate_response(response, checks=checks)
        if after_each is not None:
            after_each(response)

    try:
        run()
    except Unsatisfiable:
        # Nothing about this operation can be invalid (no body, no typed
        # parameters: any string is a valid path segment): no negative cases.
        if not negative:
            raise


def operations(schema: schemathesis.BaseSchema) -> list[Operation]:
    found: list[Operation] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            # A route FastAPI documented in a way schemathesis cannot read is a bug too.
            raise AssertionError(f"unusable operation in /openapi.json: {result.err()}")
        found.append(result.ok())
    return found


def load_schema(http: httpx.Client) -> schemathesis.BaseSchema:
    raw = http.get("/openapi.json")
    raw.raise_for_status()
    return schemathesis.openapi.from_dict(raw.json())
