"""A small client for Firecracker's HTTP API on its Unix socket.

Firecracker serves HTTP/1.1 on ``--api-sock`` and handles one request at a
time; every PUT/PATCH answers 204 once the VMM thread applied it, GETs answer
200 with JSON, and any failure is a non-2xx status with ``{"fault_message"}``.
URLs are ``http://localhost/...`` (the host part is ignored on a Unix socket).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from banger.vmm.base import VMMError
from banger.vmm.firecracker.models import ApiRequest


class FirecrackerError(VMMError):
    """Firecracker refused or failed a request; names the endpoint and its ``fault_message``."""

    def __init__(
        self,
        endpoint: str,
        message: str,
        *,
        status: int | None = None,
        fault_message: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"Firecracker {endpoint}: {message}", hint)
        self.endpoint = endpoint
        self.status = status
        self.fault_message = fault_message


class FirecrackerUnreachable(FirecrackerError):
    """Nothing answers on the API socket (not started yet, exited, or hung)."""


def _fault_message(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("fault_message"), str):
        return str(data["fault_message"])
    return None


class FirecrackerClient:
    """One connection to one Firecracker API socket; use as ``async with``."""

    def __init__(self, socket_path: Path, *, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket_path)),
            base_url="http://localhost",
            timeout=timeout,
        )

    async def __aenter__(self) -> FirecrackerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    async def send(self, request: ApiRequest) -> Any:
        """Send one request; the decoded JSON body for a 200, None for a 204."""
        endpoint = f"{request.method} {request.path}"
        try:
            response = await self._client.request(
                request.method,
                request.path,
                json=request.body,
                headers={"Accept": "application/json"},
            )
        except httpx.TimeoutException:
            raise FirecrackerUnreachable(
                endpoint, f"no answer on {self.socket_path} (timed out)"
            ) from None
        except httpx.TransportError as exc:
            raise FirecrackerUnreachable(
                endpoint, f"cannot reach {self.socket_path}: {exc or type(exc).__name__}"
            ) from None
        if not response.is_success:
            fault = _fault_message(response)
            detail = fault or response.text.strip()[:200] or response.reason_phrase
            raise FirecrackerError(
                endpoint,
                f"HTTP {response.status_code}: {detail}",
                status=response.status_code,
                fault_message=fault,
            )
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise FirecrackerError(
                endpoint, "answered with a body that is not JSON", status=response.status_code
            ) from None
