"""A typed client for bangerd's API over its Unix socket (usable as a library).

    with BangerClient() as client:
        op = client.selftest()
        for event in client.stream_events(op.id):
            print(event.stage, event.message)

Errors come back as the :class:`~banger.errors.BangerError` subclass the daemon
raised (from the ``kind`` field of the JSON error body), with its message and
hint. A daemon that cannot be reached at all raises :class:`DaemonNotReachable`
(a :class:`~banger.errors.DaemonUnavailable`): the request was never sent, so
retrying after starting the daemon is safe.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import httpcore
import httpx
from httpcore._backends.base import SOCKET_OPTION
from httpcore._backends.sync import SyncStream
from pydantic import BaseModel, TypeAdapter, ValidationError

from banger import errors
from banger.api_models import (
    DefaultRequest,
    ErrorBody,
    ImageBuildRequest,
    ImageInfo,
    ImageRegisterRequest,
    KernelImportRequest,
    KernelInfo,
    KernelPullRequest,
    Operation,
    OpEvent,
    SelftestRequest,
    SSHInfo,
    VersionInfo,
    VMCreateRequest,
    VMDetail,
    VMStopRequest,
    VMSummary,
)
from banger.errors import BangerError, DaemonUnavailable
from banger.paths import Paths

M = TypeVar("M", bound=BaseModel)

#: Connecting is local and instant; reads may wait on real work (an op start).
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class _UnixBackend(httpcore.SyncBackend):
    """httpcore's Unix connect, minus its socket leak when the connect fails.

    httpcore 1.0 leaves the socket open if ``connect()`` raises (a
    ResourceWarning per failed attempt; the auto-start wait makes dozens).
    """

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            sock.connect(path)
        except TimeoutError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return SyncStream(sock)


class _UnixTransport(httpx.HTTPTransport):
    def __init__(self, path: str) -> None:
        # Plain HTTP over a Unix socket: no TLS ever. verify=False only skips
        # loading the CA bundle (~70 ms of every `banger` run, bench/cli_latency.py);
        # the TLS-capable pool it would configure is replaced on the next line.
        super().__init__(uds=path, verify=False)
        self._pool = httpcore.ConnectionPool(uds=path, network_backend=_UnixBackend())


class DaemonNotReachable(DaemonUnavailable):
    """Nothing answered on the daemon socket (not running, or a stale socket)."""


class RemoteCommandError(errors.CommandError):
    """A :class:`~banger.errors.CommandError` raised in the daemon, rebuilt from its message."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        BangerError.__init__(self, message, hint)
        self.argv = []
        self.returncode = None
        self.stderr = ""
        self.not_found = False
        self.timed_out = False


class RemoteConfigError(errors.ConfigError):
    """A :class:`~banger.errors.ConfigError` raised in the daemon, rebuilt from its message."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        BangerError.__init__(self, message, hint)
        self.problems = [message]


_SIMPLE_KINDS: dict[str, type[BangerError]] = {
    cls.__name__: cls
    for cls in (
        BangerError,
        errors.InvalidArgument,
        errors.NotFound,
        errors.Conflict,
        errors.DaemonUnavailable,
        errors.HelperError,
    )
}
_BY_STATUS: dict[int, type[BangerError]] = {
    400: errors.InvalidArgument,
    404: errors.NotFound,
    405: errors.InvalidArgument,
    409: errors.Conflict,
    422: errors.InvalidArgument,
    502: errors.HelperError,
    503: errors.DaemonUnavailable,
}


def error_from_response(status: int, body: bytes) -> BangerError:
    """Rebuild the daemon's error from a non-2xx response."""
    try:
        parsed = ErrorBody.model_validate_json(body)
    except ValidationError:
        text = body.decode("utf-8", "replace").strip()[:200]
        cls = _BY_STATUS.get(status, BangerError)
        return cls(f"bangerd answered HTTP {status}: {text or 'no body'}", hint=None)
    if parsed.kind == "CommandError":
        return RemoteCommandError(parsed.error, parsed.hint)
    if parsed.kind == "ConfigError":
        return RemoteConfigError(parsed.error, parsed.hint)
    cls = _SIMPLE_KINDS.get(parsed.kind) or _BY_STATUS.get(status, BangerError)
    return cls(parsed.error, parsed.hint)


class BangerClient:
    """Synchronous client; one HTTP connection pool over the daemon socket."""

    def __init__(self, paths: Paths | None = None, *, timeout: httpx.Timeout | None = None) -> None:
        self.paths = paths or Paths.from_env()
        self.socket_path = self.paths.daemon_socket
        self._http = httpx.Client(
            transport=_UnixTransport(str(self.socket_path)),
            base_url="http://bangerd",
            timeout=timeout or DEFAULT_TIMEOUT,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BangerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- API -----------------------------------------------------------------------
    def version(self) -> VersionInfo:
        return self._get_model("/v1/version", VersionInfo)

    def config(self) -> dict[str, Any]:
        """The effective config the daemon is running with."""
        return TypeAdapter(dict[str, Any]).validate_python(self._request("GET", "/v1/config"))

    def list_vms(self) -> list[VMSummary]:
        return TypeAdapter(list[VMSummary]).validate_python(self._request("GET", "/v1/vms"))

    def list_ops(self, *, include_finished: bool = False) -> list[Operation]:
        params = {"all": "true"} if include_finished else None
        data = self._request("GET", "/v1/ops", params=params)
        return TypeAdapter(list[Operation]).validate_python(data)

    def get_op(self, op_id: str) -> Operation:
        return self._get_model(f"/v1/ops/{_segment(op_id)}", Operation)

    def selftest(self, *, fail_at: str | None = None, delay_ms: int = 50) -> Operation:
        """Start the diagnostic operation (see ``POST /v1/ops/selftest``)."""
        body = SelftestRequest(fail_at=fail_at, delay_ms=delay_ms).model_dump()
        return Operation.model_validate(self._request("POST", "/v1/ops/selftest", json=body))

    def stream_events(self, op_id: str, *, after: int = 0) -> Iterator[OpEvent]:
        """The op's events, then live ones until it finishes (NDJSON, no read timeout)."""
        url = f"/v1/ops/{_segment(op_id)}/events"
        timeout = httpx.Timeout(None, connect=5.0)
        try:
            with self._http.stream("GET", url, params={"after": after}, timeout=timeout) as resp:
                if resp.status_code >= 400:
                    raise error_from_response(resp.status_code, resp.read())
                for line in resp.iter_lines():
                    if line.strip():
                        yield OpEvent.model_validate_json(line)
        except httpx.TransportError as exc:
            self._transport_failed(exc)

    # -- VMs -------------------------------------------------------------------------
    def vm_details(self) -> list[VMDetail]:
        return TypeAdapter(list[VMDetail]).validate_python(self._request("GET", "/v1/vms"))

    def create_vm(self, request: VMCreateRequest) -> Operation:
        return self._op("POST", "/v1/vms", request.model_dump(exclude_none=True))

    def show_vm(self, ref: str) -> VMDetail:
        return self._get_model(f"/v1/vms/{_segment(ref)}", VMDetail)

    def vm_ssh_info(self, ref: str) -> SSHInfo:
        return self._get_model(f"/v1/vms/{_segment(ref)}/ssh", SSHInfo)

    def start_vm(self, ref: str) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/start")

    def stop_vm(self, ref: str, timeout: float = 30.0) -> Operation:
        body = VMStopRequest(timeout=timeout).model_dump()
        return self._op("POST", f"/v1/vms/{_segment(ref)}/stop", body)

    def restart_vm(self, ref: str) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/restart")

    def delete_vm(self, ref: str, *, force: bool = False) -> Operation:
        params = {"force": "true"} if force else None
        data = self._request("DELETE", f"/v1/vms/{_segment(ref)}", params=params)
        return Operation.model_validate(data)

    # -- images and kernels --------------------------------------------------------
    def list_images(self) -> list[ImageInfo]:
        return TypeAdapter(list[ImageInfo]).validate_python(self._request("GET", "/v1/images"))

    def show_image(self, ref: str) -> ImageInfo:
        return self._get_model(f"/v1/images/{_segment(ref)}", ImageInfo)

    def register_image(self, path: str, name: str | None) -> ImageInfo:
        body = ImageRegisterRequest(path=path, name=name).model_dump(exclude_none=True)
        return ImageInfo.model_validate(self._request("POST", "/v1/images/register", json=body))

    def build_image(self, ref: str, name: str | None) -> Operation:
        body = ImageBuildRequest(ref=ref, name=name).model_dump(exclude_none=True)
        return self._op("POST", "/v1/images/build", body)

    def remove_image(self, ref: str) -> ImageInfo:
        return ImageInfo.model_validate(self._request("DELETE", f"/v1/images/{_segment(ref)}"))

    def default_image(self) -> ImageInfo | None:
        data = self._request("GET", "/v1/images/default")
        return None if data is None else ImageInfo.model_validate(data)

    def set_default_image(self, name: str) -> ImageInfo:
        body = DefaultRequest(name=name).model_dump()
        return ImageInfo.model_validate(self._request("PUT", "/v1/images/default", json=body))

    def list_kernels(self) -> list[KernelInfo]:
        return TypeAdapter(list[KernelInfo]).validate_python(self._request("GET", "/v1/kernels"))

    def show_kernel(self, ref: str) -> KernelInfo:
        return self._get_model(f"/v1/kernels/{_segment(ref)}", KernelInfo)

    def import_kernel(self, request: KernelImportRequest) -> KernelInfo:
        body = request.model_dump(exclude_none=True)
        return KernelInfo.model_validate(self._request("POST", "/v1/kernels/import", json=body))

    def pull_kernel(self, source: str, name: str | None) -> Operation:
        body = KernelPullRequest(source=source, name=name).model_dump(exclude_none=True)
        return self._op("POST", "/v1/kernels/pull", body)

    def remove_kernel(self, ref: str) -> KernelInfo:
        return KernelInfo.model_validate(self._request("DELETE", f"/v1/kernels/{_segment(ref)}"))

    def default_kernel(self) -> KernelInfo | None:
        data = self._request("GET", "/v1/kernels/default")
        return None if data is None else KernelInfo.model_validate(data)

    def set_default_kernel(self, name: str) -> KernelInfo:
        body = DefaultRequest(name=name).model_dump()
        return KernelInfo.model_validate(self._request("PUT", "/v1/kernels/default", json=body))

    def vm_stats(self, ref: str, *, guest: bool = True) -> dict[str, Any]:
        """Host and guest statistics of a VM (JSON as sent by the daemon)."""
        params = {"guest": "true" if guest else "false"}
        data = self._request("GET", f"/v1/vms/{_segment(ref)}/stats", params=params)
        return dict(data)

    def set_vm(self, ref: str, body: dict[str, Any]) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/set", body)

    def pause_vm(self, ref: str) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/pause")

    def resume_vm(self, ref: str) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/resume")

    def workspace_prepare(self, ref: str, body: dict[str, Any]) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/workspace/prepare", body)

    def workspace_export(self, ref: str, body: dict[str, Any]) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/workspace/export", body)

    # -- plumbing ------------------------------------------------------------------
    def _op(self, method: str, path: str, body: dict[str, Any] | None = None) -> Operation:
        return Operation.model_validate(self._request(method, path, json=body))

    def _get_model(self, path: str, model: type[M]) -> M:
        return model.model_validate(self._request("GET", path))

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Any:
        try:
            resp = self._http.request(method, path, params=params, json=json)
        except httpx.TransportError as exc:
            self._transport_failed(exc)
        if resp.status_code >= 400:
            raise error_from_response(resp.status_code, resp.content)
        return _json(resp)

    def _transport_failed(self, exc: httpx.TransportError) -> NoReturn:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            raise DaemonNotReachable(
                f"bangerd is not running (nothing answers on {self.socket_path})",
                hint="any banger command starts it; or run `bangerd` yourself",
            ) from exc
        raise DaemonUnavailable(
            f"lost the connection to bangerd: {exc or type(exc).__name__}",
            hint=f"check the daemon log at {self.paths.daemon_log}",
        ) from exc


def _segment(value: str) -> str:
    """One URL path segment; an id with a slash would silently hit another route."""
    if not value or "/" in value or value in (".", ".."):
        raise errors.InvalidArgument(f"invalid id: {value!r}", hint="ids look like 3f9a1c2b7d10")
    return value


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except json.JSONDecodeError as exc:
        raise BangerError(
            f"bangerd sent a response that is not JSON (HTTP {resp.status_code})",
            hint="the daemon and CLI versions may differ; restart bangerd",
        ) from exc
