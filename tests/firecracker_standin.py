#!/usr/bin/env python3
"""A STAND-IN for the Firecracker binary: an HTTP server on a Unix socket.

Firecracker cannot run on the machines this test suite runs on (no Firecracker
binary, and no hardware KVM able to run ordinary guests), so banger's
Firecracker driver is exercised here against this stand-in instead. It is NOT
Firecracker and boots nothing. It imitates the parts of Firecracker's
behaviour the driver depends on, taken from the published API contract
(``firecracker-api.yaml``) and the fact sheet (``firecracker.md``):

- the command line (``--api-sock``, ``--id``, the logging and metrics flags;
  unknown flags exit 153; a leftover socket exits 1 "already in use");
- every request is checked against the OpenAPI operation's body schema (with
  ``additionalProperties: false`` enforced, as Firecracker's serde models deny
  unknown fields); failures are 400 ``{"fault_message": …}``;
- the phase rules: pre-boot-only calls after ``InstanceStart`` and post-boot-only
  calls before it fail with Firecracker's wording, ``InstanceStart`` works once,
  logger/metrics must come first, metrics only once, ``snapshot/load`` only on a
  fresh process (and a failed load ends the process), ``snapshot/create`` only
  while paused, path ids must equal body ids, files named in bodies must exist;
- stdout is the "serial console": a line is written there at InstanceStart;
- ``SendCtrlAltDel`` on a running guest answers 204 and the process exits 0
  (``BANGER_STANDIN_IGNORE_CTRL_ALT_DEL=1`` plays a guest that ignores it);
- the hybrid vsock (:class:`VsockMuxer`): ``PUT /vsock`` (and a snapshot load with
  a vsock) binds ``uds_path`` (a leftover file there fails, as Firecracker's bind
  does); a host connection sends ``CONNECT <port>\\n`` (read with Firecracker's
  32-byte bound), is held while the guest is not running, and is answered
  ``OK <host port>\\n`` when the "guest" listens on that port — then the stream is
  the guest listener's — or closed when nothing listens; ``snapshot/create``
  resets open connections. The "guest"'s listener is
  ``BANGER_STANDIN_VSOCK_GUEST=<port>=<unix socket>``: whatever serves that Unix
  socket (the tests run a real ``qemu-ga -m unix-listen`` there); unset, nothing
  listens in the guest.

:class:`SpecValidator` is also what the contract tests use.

Run as ``python firecracker_standin.py --api-sock PATH [--id ID]``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import socket
import socketserver
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# A copy of ../shared/reference/firecracker-api.yaml (Firecracker 1.17.0-dev),
# kept in the repo so the contract tests run on any clone.
SPEC_PATH = Path(
    os.environ.get(
        "BANGER_FIRECRACKER_SPEC", str(Path(__file__).parent / "data" / "firecracker-api.yaml")
    )
)

# -- the contract ----------------------------------------------------------------------


def _close_objects(schema: Any) -> Any:
    """Every object schema with ``properties`` and no ``additionalProperties`` gets ``false``.

    The OpenAPI file leaves ``additionalProperties`` unset (so a misspelt field
    would validate), but Firecracker rejects unknown fields (serde
    ``deny_unknown_fields``); closing the schemas makes the validator as strict
    as Firecracker itself.
    """
    if isinstance(schema, dict):
        out = {k: _close_objects(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_close_objects(v) for v in schema]
    return schema


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    params: tuple[str, ...]
    body_schema: dict[str, Any] | None
    body_required: bool


@dataclass
class SpecValidator:
    """Find the OpenAPI operation for (method, path) and validate a body against it."""

    spec_path: Path = SPEC_PATH
    operations: list[Operation] = field(default_factory=list)
    definitions: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = yaml.safe_load(self.spec_path.read_text())
        self.definitions = _close_objects(spec["definitions"])
        for template, item in spec["paths"].items():
            params = tuple(re.findall(r"\{(\w+)\}", template))
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            for method, op in item.items():
                body = [p for p in op.get("parameters", []) if p.get("in") == "body"]
                self.operations.append(
                    Operation(
                        method.upper(),
                        template,
                        re.compile(regex),
                        params,
                        _close_objects(body[0]["schema"]) if body else None,
                        bool(body and body[0].get("required", False)),
                    )
                )

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        for op in self.operations:
            match = op.pattern.fullmatch(path)
            if match and op.method == method:
                return op, match.groupdict()
        return None

    def errors(self, method: str, path: str, body: Any) -> list[str]:
        """Every way (method, path, body) breaks the contract; empty when it conforms."""
        found = self.find(method, path)
        if found is None:
            return [f"Invalid request method and/or path: {method} {path}"]
        op, _ = found
        if op.body_schema is None:
            return [] if body is None else [f"{method} {op.template} takes no body"]
        if body is None:
            return [f"{method} {op.template} needs a body"] if op.body_required else []
        schema = {**op.body_schema, "definitions": self.definitions}
        validator = jsonschema.Draft4Validator(schema)
        return [
            f"{'.'.join(str(p) for p in e.absolute_path) or '<body>'}: {e.message}"
            for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        ]


# -- Firecracker's phase rules ------------------------------------------------------------

PRE_BOOT_ONLY = {
    ("PUT", "/boot-source"),
    ("PUT", "/machine-config"),
    ("PATCH", "/machine-config"),
    ("PUT", "/logger"),
    ("PUT", "/metrics"),
    ("PUT", "/vsock"),
    ("PUT", "/balloon"),
    ("PUT", "/entropy"),
    ("PUT", "/mmds/config"),
    ("PUT", "/cpu-config"),
    ("PUT", "/serial"),
    ("PUT", "/snapshot/load"),
    ("PUT", "/drives/{drive_id}"),
    ("PUT", "/network-interfaces/{iface_id}"),
    ("PUT", "/pmem/{id}"),
}
POST_BOOT_ONLY = {
    ("PATCH", "/vm"),
    ("PUT", "/snapshot/create"),
    ("PATCH", "/drives/{drive_id}"),
    ("PATCH", "/network-interfaces/{iface_id}"),
    ("PATCH", "/pmem/{id}"),
}
PRE_BOOT_ERROR = "The requested operation is not supported after starting the microVM."
POST_BOOT_ERROR = "The requested operation is not supported before starting the microVM."


class Fault(Exception):
    def __init__(self, message: str, *, exit_after: int | None = None) -> None:
        super().__init__(message)
        self.exit_after = exit_after


@dataclass
class Instance:
    id: str
    started: bool = False
    paused: bool = False
    configured: list[str] = field(default_factory=list)
    metrics_path: str | None = None
    log_path: str | None = None
    machine: dict[str, Any] = field(default_factory=lambda: {"vcpu_count": 1, "mem_size_mib": 128})
    boot_source: dict[str, Any] | None = None
    drives: dict[str, dict[str, Any]] = field(default_factory=dict)
    ifaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending_ctrl_alt_del: bool = False
    #: ``PUT /serial`` (jailer mode): the console goes to this file instead of stdout.
    serial_path: str | None = None
    #: ``PUT /vsock``: recorded and kept in snapshots; its ``uds_path`` is served by
    #: the stand-in's :class:`VsockMuxer`.
    vsock: dict[str, Any] | None = None

    @property
    def state(self) -> str:
        if not self.started:
            return "Not started"
        return "Paused" if self.paused else "Running"


def _need_file(field_name: str, path: str, *, writable: bool = False) -> None:
    mode = os.R_OK | (os.W_OK if writable else 0)
    if not os.path.isfile(path) or not os.access(path, mode):
        raise Fault(f"{field_name}: cannot open {path}: No such file or permission denied")


def _log(inst: Instance, line: str) -> None:
    if inst.log_path:
        with open(inst.log_path, "a") as f:
            f.write(f"[{inst.id}:fc_api:INFO] {line}\n")


def _console(inst: Instance, line: str) -> None:
    """The guest's serial output: stdout, or the ``PUT /serial`` file (appended, like a UART)."""
    if inst.serial_path is None:
        print(line, flush=True)
        return
    with open(inst.serial_path, "a") as f:
        f.write(line + "\n")


def _flush_metrics(inst: Instance, event: str) -> None:
    if inst.metrics_path:
        with open(inst.metrics_path, "a") as f:
            f.write(json.dumps({"standin": event, "state": inst.state}) + "\n")


class StandIn:
    def __init__(self, instance_id: str) -> None:
        self.spec = SpecValidator()
        self.inst = Instance(instance_id)
        self.lock = threading.Lock()
        #: Notified after every request (the vsock muxer waits for a running guest).
        self.changed = threading.Condition(self.lock)
        self.exit_code: int | None = None
        self.muxer: VsockMuxer | None = None

    def guest_running(self) -> bool:
        return self.inst.started and not self.inst.paused

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            problems = self.spec.errors(method, path, body)
            if problems:
                raise Fault("; ".join(problems))
            found = self.spec.find(method, path)
            assert found is not None
            op, params = found
            key = (method, op.template)
            if key in PRE_BOOT_ONLY and self.inst.started:
                raise Fault(PRE_BOOT_ERROR)
            if key in POST_BOOT_ONLY and not self.inst.started:
                raise Fault(POST_BOOT_ERROR)
            for name, value in params.items():
                if not re.fullmatch(r"[A-Za-z0-9_]+", value):
                    raise Fault(f"Invalid ID: {value!r}")
                if isinstance(body, dict) and body.get(name, value) != value:
                    raise Fault(f"The id from the path [{value}] does not match the body")
            result = self._dispatch(method, op.template, body)
            self.changed.notify_all()
            if key not in {("GET", "/"), ("GET", "/version"), ("GET", "/vm/config")}:
                _log(self.inst, f"{method} {path}: ok")
            return result

    def _dispatch(self, method: str, template: str, body: Any) -> tuple[int, Any]:
        inst = self.inst
        if method == "GET":
            if template == "/":
                return 200, {
                    "app_name": "Firecracker",
                    "id": inst.id,
                    "state": inst.state,
                    "vmm_version": "1.17.0-dev (banger stand-in)",
                }
            if template == "/version":
                return 200, {"firecracker_version": "1.17.0-dev (banger stand-in)"}
            raise Fault(f"the stand-in does not implement GET {template}")
        if template in ("/logger", "/metrics"):
            others = [c for c in inst.configured if c not in ("/logger", "/metrics")]
            if others:
                raise Fault(f"{template} must be configured before {others[0]}")
            if template == "/metrics":
                if inst.metrics_path is not None:
                    raise Fault("Reinitialization of metrics not allowed.")
                inst.metrics_path = body["metrics_path"]
                open(inst.metrics_path, "a").close()
            else:
                inst.log_path = body.get("log_path")
                if inst.log_path:
                    open(inst.log_path, "a").close()
            inst.configured.append(template)
            return 204, None
        if template == "/snapshot/load":
            if [c for c in inst.configured if c not in ("/logger", "/metrics")]:
                raise Fault(
                    "Loading a microVM snapshot not allowed after configuring "
                    "boot-specific resources."
                )
            try:
                self._load_snapshot(body)
            except Fault as fault:
                raise Fault(str(fault), exit_after=1) from None
            return 204, None
        if template == "/actions":
            return self._action(body["action_type"])
        if template == "/machine-config":
            if body["vcpu_count"] > 1 and body["vcpu_count"] % 2 and body.get("smt"):
                raise Fault("The vCPU number is invalid!")
            inst.machine = dict(body) if method == "PUT" else {**inst.machine, **body}
        elif template == "/boot-source":
            _need_file("kernel_image_path", body["kernel_image_path"])
            if "initrd_path" in body:
                _need_file("initrd_path", body["initrd_path"])
            inst.boot_source = dict(body)
        elif template == "/drives/{drive_id}" and method == "PUT":
            _need_file("path_on_host", body["path_on_host"], writable=not body["is_read_only"])
            if body["is_root_device"] and any(
                d["is_root_device"] for i, d in inst.drives.items() if i != body["drive_id"]
            ):
                raise Fault("A root block device already exists!")
            inst.drives[body["drive_id"]] = dict(body)
        elif template == "/drives/{drive_id}" and method == "PATCH":
            drive = inst.drives.get(body["drive_id"])
            if drive is None:
                raise Fault(f"Invalid block device ID: {body['drive_id']}")
            if "path_on_host" in body:
                # Firecracker reopens the backing file at the new path.
                _need_file("path_on_host", body["path_on_host"], writable=not drive["is_read_only"])
                drive["path_on_host"] = body["path_on_host"]
        elif template == "/network-interfaces/{iface_id}":
            # A real Firecracker opens the tap here; the stand-in only records it.
            inst.ifaces[body["iface_id"]] = dict(body)
        elif template == "/serial":
            _need_file("serial_out_path", body["serial_out_path"], writable=True)
            inst.serial_path = body["serial_out_path"]
        elif template == "/vsock":
            self._listen_vsock(body["uds_path"])
            inst.vsock = dict(body)
        elif template == "/vm":
            inst.paused = body["state"] == "Paused"
            if not inst.paused and inst.pending_ctrl_alt_del:
                self._shutdown()
        elif template == "/snapshot/create":
            if not inst.paused:
                raise Fault("Cannot create snapshot: the microVM is not paused.")
            self._create_snapshot(body)
            if self.muxer is not None:
                self.muxer.reset()  # Firecracker resets open vsock connections
        else:
            raise Fault(f"the stand-in does not implement {method} {template}")
        inst.configured.append(template)
        return 204, None

    def _action(self, action: str) -> tuple[int, Any]:
        inst = self.inst
        if action == "InstanceStart":
            if inst.started:
                raise Fault(PRE_BOOT_ERROR)
            if inst.boot_source is None:
                raise Fault("Cannot start microvm without kernel configuration.")
            inst.started = True
            args = inst.boot_source.get("boot_args", "")
            root = next((d for d in inst.drives.values() if d["is_root_device"]), None)
            if root is not None:
                args += " root=/dev/vda " + ("ro" if root["is_read_only"] else "rw")
            _console(inst, f"[stand-in] Linux would boot {inst.boot_source['kernel_image_path']}")
            _console(inst, f"[stand-in] Command line: {args}")
            _flush_metrics(inst, "InstanceStart")
            return 204, None
        if not inst.started:
            raise Fault(POST_BOOT_ERROR)
        if action == "FlushMetrics":
            _flush_metrics(inst, "FlushMetrics")
        elif action == "SendCtrlAltDel":
            if os.environ.get("BANGER_STANDIN_IGNORE_CTRL_ALT_DEL") == "1":
                pass  # a guest that does not react (no i8042 driver, or a hung init)
            elif inst.paused:
                inst.pending_ctrl_alt_del = True  # vCPUs stopped: acted on at resume
            else:
                self._shutdown()
        return 204, None

    def _listen_vsock(self, uds_path: str) -> None:
        if self.muxer is not None:
            self.muxer.close()
        self.muxer = VsockMuxer(self, uds_path)

    def _shutdown(self) -> None:
        _console(self.inst, "[stand-in] reboot: Restarting system (Ctrl-Alt-Del)")
        self.exit_code = 0

    def _create_snapshot(self, body: dict[str, Any]) -> None:
        inst = self.inst
        state = {
            "id": inst.id,
            "machine": inst.machine,
            "boot_source": inst.boot_source,
            "drives": inst.drives,
            "ifaces": inst.ifaces,
            "vsock": inst.vsock,
        }
        Path(body["snapshot_path"]).write_text(json.dumps(state))
        with open(body["mem_file_path"], "wb") as f:
            f.truncate(inst.machine["mem_size_mib"] << 20)

    def _load_snapshot(self, body: dict[str, Any]) -> None:
        inst = self.inst
        if "mem_backend" in body and "mem_file_path" in body:
            raise Fault("mem_backend and mem_file_path cannot be used together")
        try:
            state = json.loads(Path(body["snapshot_path"]).read_text())
        except (OSError, ValueError) as exc:
            raise Fault(f"Cannot load snapshot state: {exc}") from None
        memory = body.get("mem_backend", {}).get("backend_path") or body.get("mem_file_path")
        if memory is None or not os.path.isfile(memory):
            raise Fault(f"Cannot open the memory file {memory}")
        if os.path.getsize(memory) != state["machine"]["mem_size_mib"] << 20:
            raise Fault("The memory file does not match the snapshot's memory size")
        for drive in state["drives"].values():
            _need_file("path_on_host", drive["path_on_host"], writable=not drive["is_read_only"])
        ifaces = state["ifaces"]
        for override in body.get("network_overrides", []):
            if override["iface_id"] not in ifaces:
                raise Fault(f"Invalid network override: no interface {override['iface_id']}")
            ifaces[override["iface_id"]]["host_dev_name"] = override["host_dev_name"]
        vsock = state.get("vsock")
        if "vsock_override" in body:
            if vsock is None:
                raise Fault("Invalid vsock override: the snapshot has no vsock device")
            vsock = {**vsock, "uds_path": body["vsock_override"]["uds_path"]}
        if vsock is not None:
            self._listen_vsock(vsock["uds_path"])
        inst.vsock = vsock
        inst.machine, inst.boot_source = state["machine"], state["boot_source"]
        inst.drives, inst.ifaces = state["drives"], ifaces
        inst.started = True
        inst.paused = not body.get("resume_vm", False)
        _log(inst, "snapshot loaded; interfaces: " + json.dumps(ifaces))
        if vsock is not None:
            _log(inst, "snapshot loaded; vsock: " + json.dumps(vsock))


# -- the hybrid vsock ----------------------------------------------------------------------

#: ``<port>=<unix socket>``: the stand-in guest's vsock listener (see the module docstring).
GUEST_LISTENER_ENV = "BANGER_STANDIN_VSOCK_GUEST"
#: Firecracker's muxer reads the ``CONNECT`` line with this bound.
CONNECT_LINE_MAX = 32
_CONNECT = re.compile(rb"CONNECT ([0-9]{1,10})\n")


def guest_listener() -> tuple[int, str] | None:
    value = os.environ.get(GUEST_LISTENER_ENV)
    if not value:
        return None
    port, _, path = value.partition("=")
    return int(port), path


class VsockMuxer:
    """The host side of Firecracker's vsock device: a Unix socket at ``uds_path``."""

    def __init__(self, standin: StandIn, uds_path: str) -> None:
        if os.path.lexists(uds_path):
            raise Fault(
                "Cannot create backend for vsock device: UnixBind(Os { code: 98, kind: "
                'AddrInUse, message: "Address in use" })'
            )
        self.standin = standin
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(uds_path)
        self.server.listen(16)
        self.conns: list[socket.socket] = []
        self.conns_lock = threading.Lock()
        #: Firecracker numbers host-side ports from 2^30.
        self.ports = itertools.count(1 << 30)
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.server.close()
        self.reset()

    def reset(self) -> None:
        with self.conns_lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        line = b""
        try:
            while not line.endswith(b"\n") and len(line) < CONNECT_LINE_MAX:
                byte = conn.recv(1)
                if not byte:
                    break
                line += byte
        except OSError:
            line = b""
        match = _CONNECT.fullmatch(line)
        listener = guest_listener()
        if match is None or listener is None or int(match.group(1)) != listener[0]:
            conn.close()  # a bad request, or nothing listens on the port: the guest's RST
            return
        # The device only moves bytes while the guest's vCPUs run.
        with self.standin.changed:
            self.standin.changed.wait_for(self.standin.guest_running)
        guest = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            guest.connect(listener[1])
        except OSError:
            guest.close()
            conn.close()
            return
        with self.conns_lock:
            self.conns += [conn, guest]
        with contextlib.suppress(OSError):  # the host gave up: the pumps end at once
            conn.sendall(f"OK {next(self.ports)}\n".encode())
        back = threading.Thread(target=_pump, args=(guest, conn), daemon=True)
        back.start()
        _pump(conn, guest)
        back.join()
        with self.conns_lock:
            self.conns = [c for c in self.conns if c not in (conn, guest)]
        conn.close()
        guest.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Bytes from ``src`` to ``dst`` until either end closes; then both are shut down."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for end in (src, dst):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


# -- HTTP over the Unix socket -----------------------------------------------------------


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    standin: StandIn


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # Firecracker logs requests to its logger, not to stderr

    def _reply(self, status: int, body: Any) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _serve(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        exit_after: int | None = None
        try:
            if self.command in ("PUT", "PATCH") and not raw:
                raise Fault(f"Empty {self.command} request.")
            if self.command == "GET" and raw:
                raise Fault("GET request cannot have a body.")
            try:
                body = json.loads(raw) if raw else None
            except ValueError as exc:
                raise Fault(f"An error occurred when deserializing the json body: {exc}") from None
            status, payload = standin.handle(self.command, self.path, body)
        except Fault as fault:
            status, payload, exit_after = 400, {"fault_message": str(fault)}, fault.exit_after
        self._reply(status, payload)
        code = exit_after if exit_after is not None else standin.exit_code
        if code is not None:
            sys.stdout.flush()
            os._exit(code)

    do_GET = do_PUT = do_PATCH = _serve  # noqa: N815 (http.server's handler names)


_VALUE_FLAGS = {
    "--api-sock", "--id", "--log-path", "--level", "--module", "--metrics-path",
    "--seccomp-filter", "--start-time-us", "--start-time-cpu-us", "--parent-cpu-time-us",
    "--http-api-max-payload-size", "--mmds-size-limit", "--metadata",
}  # fmt: skip
_BOOL_FLAGS = {"--no-seccomp", "--boot-timer", "--show-level", "--show-log-origin", "--enable-pci"}


def parse_args(argv: list[str]) -> dict[str, str | bool]:
    opts: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _VALUE_FLAGS:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise SystemExit(f"Error: argument {name} needs a value")
                value = argv[i]
            opts[name] = value
        elif arg in _BOOL_FLAGS:
            opts[arg] = True
        else:
            raise SystemExit(f"Error: Arguments parsing error: unexpected argument {arg!r}")
        i += 1
    return opts


def main(argv: list[str]) -> int:
    try:
        opts = parse_args(argv)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 153
    sock = str(opts.get("--api-sock", "/run/firecracker.socket"))
    if os.path.exists(sock):
        print(
            f"Error: Failed to open the API socket at {sock}: Address already in use",
            file=sys.stderr,
        )
        return 1
    standin = StandIn(str(opts.get("--id", "anonymous-instance")))
    server = _Server(sock, _Handler)
    server.standin = standin
    print("[stand-in] Firecracker stand-in listening (not a real VMM)", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
