"""config.toml followed while bangerd runs: edits apply without a restart.

The daemon re-reads the file when its identity changes — inode, size or
mtime, checked with one ``stat`` before every API request (every operation
that uses the config starts with one), on ``banger config reload`` and on
SIGHUP. So ``vm stop`` + ``vm start`` after an edit provisions from the new
``[[file_sync]]`` entries, as the README promises.

- A new file that is valid replaces the config in every service that holds
  one (:meth:`ConfigWatch.apply`), except the sections the running daemon
  was built around (:data:`RESTART_SECTIONS`: the bridge and subnet that
  running VMs use, the VMM drivers): those keep their old values and the
  reload says they wait for a restart.
- A new file that is invalid changes nothing: the last good config stays in
  force, and every answer carries the one-line problem
  (:data:`ERROR_HEADER`) until the file is fixed; the CLI prints it once.
- A removed file means the defaults, as at start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from banger.config import Config, load_config
from banger.errors import ConfigError

log = logging.getLogger(__name__)

#: Sections a running daemon cannot take over: its bridge, subnet and resolver
#: serve VMs that are running now, and its VMM drivers were chosen at start.
RESTART_SECTIONS = ("network", "vmm", "firecracker")
#: Response header carrying the current file's problem (URL-quoted: header values are latin-1).
ERROR_HEADER = "x-banger-config-error"

#: The route that re-reads the file whatever its signature (``banger config reload``).
RELOAD_PATH = "/v1/config/reload"

Signature = tuple[int, int, int, int] | None


def file_signature(path: Path) -> Signature:
    """The file's identity: device, inode, size, mtime (None when it is absent)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError:
        return (-1, -1, -1, -1)  # unreadable: load_config says why
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class ReloadResult:
    """What one (re)read did."""

    changed: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()
    error: str | None = None

    def to_json(self, path: Path) -> dict[str, Any]:
        return {
            "path": str(path),
            "changed": list(self.changed),
            "restart_needed": list(self.restart_needed),
            "error": self.error,
        }


@dataclass
class ConfigWatch:
    """The daemon's current config and the file it came from."""

    path: Path
    current: Config
    signature: Signature
    home: Path | None = None
    #: Called with each newly applied config (pushes it into the services).
    listeners: list[Callable[[Config], None]] = field(default_factory=list)
    #: The problem with the file on disk, while it is invalid (one line).
    error: str | None = None

    @classmethod
    def load(cls, path: Path, *, home: Path | None = None) -> ConfigWatch:
        """The config at start: an invalid file is a refusal here (raises ConfigError)."""
        signature = file_signature(path)
        return cls(path, load_config(path, home=home), signature, home)

    def refresh(self) -> ReloadResult | None:
        """Re-read the file if it changed since the last read; None if it did not."""
        signature = file_signature(self.path)
        if signature == self.signature:
            return None
        return self._read(signature)

    def reload(self) -> ReloadResult:
        """Read the file now, whatever its signature; apply it if valid."""
        return self._read(file_signature(self.path))

    def _read(self, signature: Signature) -> ReloadResult:
        self.signature = signature
        try:
            new = load_config(self.path, home=self.home)
        except ConfigError as exc:
            self.error = exc.message
            log.error("%s; the last good config stays in force", exc.message)
            return ReloadResult(error=exc.message)
        self.error = None
        kept = {name: getattr(self.current, name) for name in RESTART_SECTIONS}
        waiting = tuple(name for name in RESTART_SECTIONS if getattr(new, name) != kept[name])
        effective = new.model_copy(update=kept)
        changed = _changed_sections(self.current, effective)
        if waiting:
            log.warning(
                "config.toml: %s changed; that applies when bangerd restarts", ", ".join(waiting)
            )
        if changed:
            self.apply(effective)
            log.info("config.toml reloaded: %s changed", ", ".join(changed))
        return ReloadResult(changed=changed, restart_needed=waiting)

    def apply(self, config: Config) -> None:
        self.current = config
        for listener in self.listeners:
            listener(config)

    def header_value(self) -> str | None:
        return quote(self.error, safe=" /:,;()[]'\"~=-_.") if self.error else None


def _changed_sections(old: Config, new: Config) -> tuple[str, ...]:
    return tuple(
        name for name in type(new).model_fields if getattr(old, name) != getattr(new, name)
    )


class ConfigRefreshMiddleware:
    """ASGI middleware: refresh the config before each request; flag an invalid file.

    Plain ASGI (not ``BaseHTTPMiddleware``) so NDJSON streams and the attach
    WebSocket pass through untouched.
    """

    def __init__(self, app: Any, watch: ConfigWatch) -> None:
        self.app = app
        self.watch = watch

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope.get("path") != RELOAD_PATH:  # that one reads it itself, and reports
            self.watch.refresh()
        problem = self.watch.header_value()
        if problem is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_flagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((ERROR_HEADER.encode(), problem.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_flagged)
