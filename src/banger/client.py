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

Start-up cost is the point of how this is written (every ``banger`` command
pays it; ``bench/cli_latency.py`` measures it): the transport is the standard
:mod:`banger.http_unix` over the Unix socket (not httpx: 150 ms of imports; not
even ``http.client``, whose ``email`` and ``ssl`` imports cost 20-30 ms),
and the API models load on first use. Refer to them as ``api.Name`` in code
that runs (``api`` is :mod:`banger.api_models`, loaded lazily); the plain names
imported under ``TYPE_CHECKING`` are for annotations only. ``get_json`` returns
the daemon's JSON unvalidated, so ``--json`` listings never import pydantic.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import unquote, urlencode

from banger import errors, http_unix
from banger.client_files import FilesAPI
from banger.client_files import path_segment as _segment
from banger.errors import BangerError, DaemonUnavailable
from banger.paths import Paths, check_private_dir

if TYPE_CHECKING:
    from pydantic import BaseModel

    from banger import api_models as api
    from banger.api_models import (
        ImageInfo,
        ImagePruneResult,
        KernelBuildRegisterRequest,
        KernelImportRequest,
        KernelInfo,
        Operation,
        OpEvent,
        PoolInfo,
        PoolSetRequest,
        SSHInfo,
        VersionInfo,
        VMCreateRequest,
        VMDetail,
        VMForkStarted,
        VMSummary,
    )
    from banger.exec_client import AsyncExec, ExecResult

    M = TypeVar("M", bound=BaseModel)
else:

    def _lazy_module(name: str) -> ModuleType:
        """``name``, imported on first attribute access (importlib's documented LazyLoader)."""
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.loader is not None
        loader = importlib.util.LazyLoader(spec.loader)
        spec.loader = loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
        return module

    api = _lazy_module("banger.api_models")
    M = TypeVar("M")

#: Connecting is local and instant; reads may wait on real work (an op start).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0


#: bangerd's flag on every answer while config.toml is invalid (its value: the
#: problem, URL-quoted); the daemon's side is banger.daemon.config_watch.ERROR_HEADER.
CONFIG_ERROR_HEADER = "x-banger-config-error"
CONFIG_RELOAD_PATH = "/v1/config/reload"
_config_problems_told: set[str] = set()


def note_config_problem(headers: Mapping[str, str]) -> None:
    """Say once per process, on stderr, that config.toml is invalid and not applied."""
    value = headers.get(CONFIG_ERROR_HEADER)
    if not value or value in _config_problems_told:
        return
    _config_problems_told.add(value)
    print(
        f"error: {unquote(value)} (bangerd keeps the last good config;"
        " `banger config validate` lists every problem)",
        file=sys.stderr,
    )


def _connect(path: str) -> socket.socket:
    """A socket connected to the daemon at ``path`` (HTTP goes over it: :mod:`banger.http_unix`)."""
    # Never talk to a socket in a directory another user could have
    # squatted (the /tmp/banger-<uid> fallback): it could be a fake daemon.
    # bangerd refuses such a directory too; this is the client's half. Its
    # refusals (another user's directory too) are not OSErrors: no caller
    # takes them for "not running" and auto-starts a daemon into it.
    check_private_dir(Path(path).parent)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(path)
    except BaseException:
        sock.close()  # no leaked socket per failed attempt (auto-start polls)
        raise
    return sock


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
        errors.PermissionDenied,
    )
}
_BY_STATUS: dict[int, type[BangerError]] = {
    400: errors.InvalidArgument,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    405: errors.InvalidArgument,
    409: errors.Conflict,
    422: errors.InvalidArgument,
    502: errors.HelperError,
    503: errors.DaemonUnavailable,
}


def _error_body(body: bytes) -> tuple[str, str | None, str] | None:
    """``(error, hint, kind)`` from an :class:`~banger.api_models.ErrorBody`; None if not one."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return None
    hint, kind = data.get("hint"), data.get("kind", "BangerError")
    if (hint is not None and not isinstance(hint, str)) or not isinstance(kind, str):
        return None
    return data["error"], hint, kind


def error_from_response(status: int, body: bytes) -> BangerError:
    """Rebuild the daemon's error from a non-2xx response."""
    parsed = _error_body(body)
    if parsed is None:
        text = body.decode("utf-8", "replace").strip()[:200]
        cls = _BY_STATUS.get(status, BangerError)
        return cls(f"bangerd answered HTTP {status}: {text or 'no body'}", hint=None)
    message, hint, kind = parsed
    if kind == "CommandError":
        return RemoteCommandError(message, hint)
    if kind == "ConfigError":
        return RemoteConfigError(message, hint)
    cls = _SIMPLE_KINDS.get(kind) or _BY_STATUS.get(status, BangerError)
    return cls(message, hint)


class BangerClient(FilesAPI):
    """Synchronous client; one connection per request over the daemon socket."""

    def __init__(self, paths: Paths | None = None, *, timeout: float = READ_TIMEOUT) -> None:
        self.paths = paths or Paths.from_env()
        self.socket_path = self.paths.daemon_socket
        #: seconds to wait for an answer (connecting has its own, short, timeout)
        self.timeout = timeout

    def close(self) -> None:
        """Nothing to release: every request uses its own connection (a local connect is cheap)."""

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
        return self._get_model("/v1/version", api.VersionInfo)

    def config(self) -> dict[str, Any]:
        """The effective config the daemon is running with."""
        return _object(self._request("GET", "/v1/config"))

    def reload_config(self) -> dict[str, Any]:
        """Make bangerd re-read config.toml now (ConfigError, exit 2, if it is invalid)."""
        return _object(self._request("POST", CONFIG_RELOAD_PATH))

    def list_vms(self) -> list[VMSummary]:
        return _list_of(api.VMSummary, self._request("GET", "/v1/vms"))

    def list_ops(self, *, include_finished: bool = False) -> list[Operation]:
        params = {"all": "true"} if include_finished else None
        data = self._request("GET", "/v1/ops", params=params)
        return _list_of(api.Operation, data)

    def get_op(self, op_id: str) -> Operation:
        return self._get_model(f"/v1/ops/{_segment(op_id)}", api.Operation)

    def selftest(self, *, fail_at: str | None = None, delay_ms: int = 50) -> Operation:
        """Start the diagnostic operation (see ``POST /v1/ops/selftest``)."""
        body = api.SelftestRequest(fail_at=fail_at, delay_ms=delay_ms).model_dump()
        return api.Operation.model_validate(self._request("POST", "/v1/ops/selftest", json=body))

    def stream_events(self, op_id: str, *, after: int = 0) -> Iterator[OpEvent]:
        """The op's events, then live ones until it finishes (NDJSON, no read timeout)."""
        url = f"/v1/ops/{_segment(op_id)}/events"
        for line in self.stream_lines(url, params={"after": str(after)}):
            yield api.OpEvent.model_validate_json(line)

    # -- VMs -------------------------------------------------------------------------
    def vm_details(self) -> list[VMDetail]:
        return _list_of(api.VMDetail, self._request("GET", "/v1/vms"))

    def create_vm(self, request: VMCreateRequest) -> Operation:
        return self._op("POST", "/v1/vms", request.model_dump(exclude_none=True))

    def show_vm(self, ref: str) -> VMDetail:
        return self._get_model(f"/v1/vms/{_segment(ref)}", api.VMDetail)

    def vm_ssh_info(self, ref: str) -> SSHInfo:
        return self._get_model(f"/v1/vms/{_segment(ref)}/ssh", api.SSHInfo)

    def start_vm(self, ref: str) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/start")

    def stop_vm(self, ref: str, timeout: float = 30.0) -> Operation:
        body = api.VMStopRequest(timeout=timeout).model_dump()
        return self._op("POST", f"/v1/vms/{_segment(ref)}/stop", body)

    def restart_vm(self, ref: str) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/restart")

    def delete_vm(self, ref: str, *, force: bool = False) -> Operation:
        params = {"force": "true"} if force else None
        data = self._request("DELETE", f"/v1/vms/{_segment(ref)}", params=params)
        return api.Operation.model_validate(data)

    # -- images and kernels --------------------------------------------------------
    def list_images(self) -> list[ImageInfo]:
        return _list_of(api.ImageInfo, self._request("GET", "/v1/images"))

    def show_image(self, ref: str) -> ImageInfo:
        return self._get_model(f"/v1/images/{_segment(ref)}", api.ImageInfo)

    def register_image(self, path: str, name: str | None) -> ImageInfo:
        body = api.ImageRegisterRequest(path=path, name=name).model_dump(exclude_none=True)
        return api.ImageInfo.model_validate(self._request("POST", "/v1/images/register", json=body))

    def build_image(self, ref: str, name: str | None) -> Operation:
        body = api.ImageBuildRequest(ref=ref, name=name).model_dump(exclude_none=True)
        return self._op("POST", "/v1/images/build", body)

    def remove_image(self, ref: str) -> ImageInfo:
        return api.ImageInfo.model_validate(self._request("DELETE", f"/v1/images/{_segment(ref)}"))

    def default_image(self) -> ImageInfo | None:
        data = self._request("GET", "/v1/images/default")
        return None if data is None else api.ImageInfo.model_validate(data)

    def set_default_image(self, name: str) -> ImageInfo:
        body = api.DefaultRequest(name=name).model_dump()
        return api.ImageInfo.model_validate(self._request("PUT", "/v1/images/default", json=body))

    def list_kernels(self) -> list[KernelInfo]:
        return _list_of(api.KernelInfo, self._request("GET", "/v1/kernels"))

    def show_kernel(self, ref: str) -> KernelInfo:
        return self._get_model(f"/v1/kernels/{_segment(ref)}", api.KernelInfo)

    def import_kernel(self, request: KernelImportRequest) -> KernelInfo:
        body = request.model_dump(exclude_none=True)
        return api.KernelInfo.model_validate(self._request("POST", "/v1/kernels/import", json=body))

    def register_kernel_build(self, request: KernelBuildRegisterRequest) -> KernelInfo:
        body = request.model_dump(exclude_none=True)
        data = self._request("POST", "/v1/kernels/register-build", json=body)
        return api.KernelInfo.model_validate(data)

    def pull_kernel(self, source: str, name: str | None) -> Operation:
        body = api.KernelPullRequest(source=source, name=name).model_dump(exclude_none=True)
        return self._op("POST", "/v1/kernels/pull", body)

    def remove_kernel(self, ref: str) -> KernelInfo:
        return api.KernelInfo.model_validate(
            self._request("DELETE", f"/v1/kernels/{_segment(ref)}")
        )

    def default_kernel(self) -> KernelInfo | None:
        data = self._request("GET", "/v1/kernels/default")
        return None if data is None else api.KernelInfo.model_validate(data)

    def set_default_kernel(self, name: str) -> KernelInfo:
        body = api.DefaultRequest(name=name).model_dump()
        return api.KernelInfo.model_validate(self._request("PUT", "/v1/kernels/default", json=body))

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

    def fork_vm(self, ref: str, count: int = 1, prefix: str | None = None) -> VMForkStarted:
        """Start ``vm fork``: N re-identified children of a running VM (``PREFIX-1..N``)."""
        body = api.VMForkRequest(count=count, name=prefix).model_dump(exclude_none=True)
        answer = self._request("POST", f"/v1/vms/{_segment(ref)}/fork", json=body)
        return api.VMForkStarted.model_validate(answer)

    def workspace_prepare(self, ref: str, body: dict[str, Any]) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/workspace/prepare", body)

    def workspace_export(self, ref: str, body: dict[str, Any]) -> Operation:
        return self._op("POST", f"/v1/vms/{_segment(ref)}/workspace/export", body)

    # -- pools of ready guests (``vm create --pool P`` takes one) ---------------------
    def pool_set(self, name: str, request: PoolSetRequest) -> PoolInfo:
        """Create pool ``name`` or change it (absent fields keep their value); it fills in
        the background: the answer's ``state`` is ``filling``, ``ready``, ``failed`` or
        ``empty``."""
        body = request.model_dump(exclude_none=True)
        data = self._request("PUT", f"/v1/pools/{_segment(name)}", json=body)
        return api.PoolInfo.model_validate(data)

    def pool_list(self) -> list[PoolInfo]:
        return _list_of(api.PoolInfo, self._request("GET", "/v1/pools"))

    def pool_get(self, name: str) -> PoolInfo:
        return self._get_model(f"/v1/pools/{_segment(name)}", api.PoolInfo)

    def pool_rm(self, name: str) -> Operation:
        """Start removing a pool (its ready guests and its template): a ``pool.rm`` op."""
        return self._op("DELETE", f"/v1/pools/{_segment(name)}")

    # -- image transfer (operations: follow them with stream_events) ---------------
    def pull_image(self, ref: str, name: str | None = None) -> Operation:
        """Pull an OCI reference, ``oci-archive:PATH`` or ``bundle:PATH|URL`` (paths absolute)."""
        return self._op("POST", "/v1/images/pull", {"ref": ref, "name": name})

    def prune_images(self, *, dry_run: bool = False) -> ImagePruneResult:
        """Remove the OCI cache's blobs no image needs (``dry_run``: only list them)."""
        data = self._request("POST", "/v1/images/prune", json={"dry_run": dry_run})
        return api.ImagePruneResult.model_validate(data)

    def export_image(self, ref: str, output: str) -> Operation:
        """Write image ``ref`` as a bundle at ``output`` (absolute: the daemon has its own cwd)."""
        return self._op("POST", f"/v1/images/{_segment(ref)}/export", {"output": output})

    def promote_image(
        self, vm: str, name: str, *, with_work_disk: bool = False, include_synced: bool = False
    ) -> Operation:
        """Make stopped VM ``vm``'s root disk (and optionally its work disk) image ``name``."""
        body = {
            "vm": vm,
            "name": name,
            "with_work_disk": with_work_disk,
            "include_synced": include_synced,
        }
        return self._op("POST", "/v1/images/promote", body)

    # -- sessions (JSON as the daemon sends it: SessionModel in routes_sessions) ---
    def list_sessions(self, vm: str | None = None) -> list[dict[str, Any]]:
        """Every session, or one VM's, reconciled with the guests first."""
        data = self._request("GET", "/v1/sessions", params={"vm": vm} if vm else None)
        return [_object(item) for item in _list(data)]

    def start_session(
        self,
        vm: str,
        command: Sequence[str],
        *,
        name: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Start ``command`` (an argv, no shell) detached under tmux in ``vm``; its record."""
        body: dict[str, Any] = {"command": list(command), "env": dict(env or {})}
        if name is not None:
            body["name"] = name
        if cwd is not None:
            body["cwd"] = cwd
        return _object(self._request("POST", _session_path(vm), json=body))

    def show_session(self, vm: str, name: str) -> dict[str, Any]:
        return _object(self._request("GET", _session_path(vm, name)))

    def session_ssh_info(self, vm: str, name: str) -> SSHInfo:
        """Check the session runs (Conflict if not); how to ``ssh -t … tmux attach`` to it."""
        data = _object(self._request("GET", _session_path(vm, name, "attach")))
        return api.SSHInfo.model_validate(data.get("ssh"))

    def session_logs(
        self, vm: str, name: str, *, follow: bool = False, tail: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """The session's log events: ``output`` (base64 ``data``), then ``end`` with its record.

        With ``follow``, output arrives as the session writes it and ``end``
        comes once it has ended. An ``error`` event (the guest connection
        failed mid-stream) is raised as the :class:`BangerError` it names.
        """
        params = {"follow": "true" if follow else "false"}
        if tail is not None:
            params["tail"] = str(tail)
        for line in self.stream_lines(_session_path(vm, name, "logs"), params=params):
            try:
                event = _object(json.loads(line))
            except ValueError as exc:
                raise BangerError(
                    "bangerd sent a log event that is not JSON",
                    hint="the daemon and CLI versions may differ; restart bangerd",
                ) from exc
            if event.get("kind") == "error":
                raise BangerError(str(event.get("error")), event.get("hint"))
            yield event

    # -- exec: a WebSocket; see banger.exec_client for streaming ---------------------
    def exec(
        self,
        ref: str,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``command`` (an argv, or a shell string) in VM ``ref``; output collected.

        A non-zero exit is a result (``exit_code``, ``signal``, ``timed_out``), not an
        error; an unknown or stopped VM raises :class:`NotFound` / :class:`Conflict`.
        """
        import asyncio

        return asyncio.run(
            self.exec_async(ref, command, env=env, cwd=cwd, user=user, stdin=stdin, timeout=timeout)
        )

    async def exec_async(
        self,
        ref: str,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """:meth:`exec` for asyncio code."""
        from banger import exec_client

        request = exec_client.exec_request(command, env=env, cwd=cwd, user=user, timeout=timeout)
        try:
            return await exec_client.run_exec(self.socket_path, ref, request, stdin)
        except exec_client.DaemonGone as exc:
            raise DaemonNotReachable(exc.message, exc.hint) from None

    async def open_exec(self, ref: str, request: Mapping[str, Any]) -> AsyncExec:
        """Start a command and stream it (request: :func:`banger.exec_client.exec_request`)."""
        from banger import exec_client

        try:
            return await exec_client.open_exec(self.socket_path, ref, request)
        except exec_client.DaemonGone as exc:
            raise DaemonNotReachable(exc.message, exc.hint) from None

    def send_to_session(self, vm: str, name: str, text: str, *, enter: bool = False) -> None:
        """Type ``text`` into the session's terminal (and Enter)."""
        body = {"text": text, "enter": enter}
        self._request("POST", _session_path(vm, name, "send"), json=body)

    def stop_session(
        self, vm: str, name: str, *, signal: str = "TERM", timeout: float = 10.0
    ) -> dict[str, Any]:
        """Signal the session, wait ``timeout`` s, then SIGKILL: ``{outcome, session}``."""
        body = {"signal": signal, "timeout": timeout}
        # the daemon answers only after the wait: give the read that much more
        read_timeout = self.timeout + max(timeout, 0.0)
        path = _session_path(vm, name, "stop")
        return _object(self._request("POST", path, json=body, read_timeout=read_timeout))

    def remove_session(self, vm: str, name: str) -> None:
        """Forget a finished session (its record and guest log)."""
        self._request("DELETE", _session_path(vm, name))

    # -- plumbing ------------------------------------------------------------------
    def _op(self, method: str, path: str, body: dict[str, Any] | None = None) -> Operation:
        return api.Operation.model_validate(self._request(method, path, json=body))

    def _get_model(self, path: str, model: type[M]) -> M:
        return model.model_validate(self._request("GET", path))

    def get_json(self, path: str, *, params: dict[str, str] | None = None) -> Any:
        """``GET path``: the daemon's JSON as it came, unvalidated (for ``--json`` output)."""
        return self._request("GET", path, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Any:
        """One API call: the answer's JSON, None for an empty answer (204); errors raised."""
        return self._request(method, path, params=params, json=json)

    def stream_lines(self, path: str, *, params: dict[str, str] | None = None) -> Iterator[bytes]:
        """``GET path`` as an NDJSON stream: its non-blank lines, with no read timeout."""
        with self._exchange("GET", path, params=params, body=None, read_timeout=None) as resp:
            if resp.status >= 400:
                raise error_from_response(resp.status, resp.read())
            try:
                for line in resp:
                    if line.strip():
                        yield line
            except (OSError, http_unix.ProtocolError) as exc:
                self._transport_failed(exc)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        read_timeout: float = -1.0,
    ) -> Any:
        exchange = self._exchange(method, path, params=params, body=json, read_timeout=read_timeout)
        with exchange as resp:
            try:
                content = resp.read()
            except (OSError, http_unix.ProtocolError) as exc:
                self._transport_failed(exc)
        if resp.status >= 400:
            raise error_from_response(resp.status, content)
        return _decode(resp.status, content)

    @contextmanager
    def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None,
        body: dict[str, Any] | None,
        read_timeout: float | None = -1.0,
    ) -> Iterator[http_unix.Response]:
        """Send one request on a new connection; the response is read inside the block.

        The one place the transport and its failures are handled: a failed
        connect is :class:`DaemonNotReachable` (nothing was sent, retrying is
        safe), anything later :class:`~banger.errors.DaemonUnavailable`.
        """
        try:
            sock = _connect(str(self.socket_path))
        except OSError as exc:
            self._transport_failed(exc, connecting=True)
        try:
            sock.settimeout(self.timeout if read_timeout == -1.0 else read_timeout)
            target = f"{path}?{urlencode(params)}" if params else path
            headers = {"Accept": "application/json"}
            payload = None
            if body is not None:
                payload = _encode(body)
                headers["Content-Type"] = "application/json"
            with sock.makefile("rb") as stream:
                try:
                    http_unix.send_request(sock, method, target, headers, payload)
                    resp = http_unix.read_response(stream)
                except (OSError, http_unix.ProtocolError) as exc:
                    self._transport_failed(exc)
                if path != CONFIG_RELOAD_PATH:  # reload reports the problem itself
                    note_config_problem(resp.headers)
                yield resp
        finally:
            sock.close()

    def _open_socket(self) -> socket.socket:
        """A socket connected to bangerd, nothing sent yet (FilesAPI's streamed exchanges)."""
        try:
            return _connect(str(self.socket_path))
        except OSError as exc:
            self._transport_failed(exc, connecting=True)

    def _response_error(self, status: int, body: bytes) -> BangerError:
        return error_from_response(status, body)

    def _transport_failed(self, exc: BaseException, *, connecting: bool = False) -> NoReturn:
        if connecting:
            raise DaemonNotReachable(
                f"bangerd is not running (nothing answers on {self.socket_path})",
                hint="any banger command starts it; or run `bangerd` yourself",
            ) from exc
        raise DaemonUnavailable(
            f"lost the connection to bangerd: {exc or type(exc).__name__}",
            hint=f"check the daemon log at {self.paths.daemon_log}",
        ) from exc


def _session_path(vm: str, name: str | None = None, *rest: str) -> str:
    parts = ["/v1/vms", _segment(vm), "sessions"]
    if name is not None:
        parts.append(_segment(name))
    return "/".join([*parts, *rest])


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _decode(status: int, content: bytes) -> Any:
    if not content.strip():
        return None
    try:
        return json.loads(content)
    except ValueError as exc:
        raise BangerError(
            f"bangerd sent a response that is not JSON (HTTP {status})",
            hint="the daemon and CLI versions may differ; restart bangerd",
        ) from exc


def _list_of(model: type[M], data: Any) -> list[M]:
    return [model.model_validate(item) for item in _list(data)]


def _list(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise BangerError(
            f"bangerd sent {type(data).__name__} where a list was expected",
            hint="the daemon and CLI versions may differ; restart bangerd",
        )
    return data


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BangerError(
            f"bangerd sent {type(data).__name__} where an object was expected",
            hint="the daemon and CLI versions may differ; restart bangerd",
        )
    return data
