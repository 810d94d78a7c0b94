"""Talk to a running bangerd or banger-helper just enough to know it is alive.

Used by ``banger doctor`` and ``banger system status``. Each probe has a short
timeout and turns every failure into a :class:`ServiceProbe` saying what went
wrong, so a hung or stale service cannot hang the caller.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: Seconds to wait for a service to accept and answer.
PROBE_TIMEOUT = 2.0
#: A ping reply is tiny; refuse to buffer more than this from a confused peer.
MAX_REPLY = 64 * 1024

ProbeState = Literal["up", "absent", "stale", "error"]


@dataclass(frozen=True)
class ServiceProbe:
    """``up``: answered; ``absent``: no socket; ``stale``: socket but nobody
    listening; ``error``: something answered, but not as expected."""

    state: ProbeState
    detail: str
    version: str | None = None

    @property
    def up(self) -> bool:
        return self.state == "up"


def _absent_or_none(path: Path) -> ServiceProbe | None:
    if not path.exists():
        return ServiceProbe("absent", f"no socket at {path}")
    if not path.is_socket():
        return ServiceProbe("error", f"{path} exists but is not a socket")
    return None


def _connect_failure(path: Path, exc: OSError) -> ServiceProbe:
    if isinstance(exc, ConnectionRefusedError):
        return ServiceProbe("stale", f"nothing listens on {path} (stale socket)")
    if isinstance(exc, PermissionError):
        return ServiceProbe("error", f"permission denied connecting to {path}")
    if isinstance(exc, TimeoutError):
        return ServiceProbe("error", f"{path} did not answer within {PROBE_TIMEOUT:g}s")
    return ServiceProbe("error", f"cannot talk to {path}: {exc.strerror or exc}")


def helper_request(path: Path, op: str, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """Send one request line to the helper and return its reply object.

    Raises ``OSError`` (connection problems, timeouts) or ``ValueError`` (a
    reply that is not one JSON object line).
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"id": 1, "op": op, "args": {}}).encode() + b"\n")
        buf = bytearray()
        while b"\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf.extend(chunk)
            if len(buf) > MAX_REPLY:
                raise ValueError(f"reply longer than {MAX_REPLY} bytes")
    line = bytes(buf).split(b"\n", 1)[0]
    if not line:
        raise ValueError("the helper closed the connection without replying")
    reply = json.loads(line)
    if not isinstance(reply, dict):
        raise ValueError("the reply is not a JSON object")
    return reply


def _version_of(result: object) -> str | None:
    if isinstance(result, str):
        return result
    if isinstance(result, dict):
        for key in ("version", "helper_version", "banger"):
            value = result.get(key)
            if isinstance(value, str):
                return value
    return None


def probe_helper(path: Path, op: str = "ping") -> ServiceProbe:
    """Ping the root helper: ``{"id":1,"op":"ping","args":{}}`` → ``{"ok": true}``."""
    early = _absent_or_none(path)
    if early:
        return early
    try:
        reply = helper_request(path, op)
    except OSError as exc:
        return _connect_failure(path, exc)
    except ValueError as exc:
        return ServiceProbe("error", f"unexpected reply from {path}: {exc}")
    if reply.get("ok") is True:
        version = _version_of(reply.get("result"))
        return ServiceProbe("up", f"answers on {path}", version)
    error = reply.get("error") or "refused without a reason"
    return ServiceProbe("error", f"helper refused {op}: {error}")


def _can_connect(path: Path) -> ServiceProbe | None:
    """Connect once ourselves, so connection failures are classified here.

    (httpcore's sync Unix-socket backend leaks its socket when the connect
    fails, which the test suite rightly turns into an error.)
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(PROBE_TIMEOUT)
        try:
            sock.connect(str(path))
        except OSError as exc:
            return _connect_failure(path, exc)
    return None


def probe_daemon(path: Path) -> ServiceProbe:
    """``GET /v1/version`` on bangerd's socket."""
    early = _absent_or_none(path) or _can_connect(path)
    if early:
        return early
    import httpx  # lazily: doctor's host checks should not pay for it

    try:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(path)), timeout=PROBE_TIMEOUT
        ) as client:
            response = client.get("http://bangerd/v1/version")
    except httpx.TimeoutException:
        return ServiceProbe("error", f"{path} did not answer within {PROBE_TIMEOUT:g}s")
    except httpx.HTTPError as exc:
        return ServiceProbe("error", f"cannot talk to {path}: {exc}")
    if response.status_code != 200:
        return ServiceProbe("error", f"GET /v1/version answered {response.status_code}")
    try:
        body: object = response.json()
    except ValueError:
        body = response.text.strip()
    return ServiceProbe("up", f"answers on {path}", _version_of(body))
