"""Per-invocation CLI state (``--json``, ``--debug``) and the daemon connection.

Kept import-light: httpx, pydantic and rich are imported only by the commands
that need them, so ``banger --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from banger.client import BangerClient
    from banger.paths import Paths

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    json: bool = False
    debug: bool = False
    _client: BangerClient | None = field(default=None, repr=False)
    _helper_checked: bool = field(default=False, repr=False)

    @property
    def paths(self) -> Paths:
        from banger.paths import Paths

        return Paths.from_env()

    def client(self) -> BangerClient:
        if self._client is None:
            from banger.client import BangerClient

            self._client = BangerClient(self.paths)
        return self._client

    def call(self, fn: Callable[[BangerClient], T]) -> T:
        """Run ``fn`` against the daemon, starting it first if nothing answers."""
        from banger.autostart import ensure_daemon
        from banger.client import DaemonNotReachable

        self._ensure_helper_once()
        client = self.client()
        try:
            return fn(client)
        except DaemonNotReachable as exc:
            ensure_daemon(self.paths, exc)
        return fn(client)

    def _ensure_helper_once(self) -> None:
        """Before the first call of a command that needs the root helper, start it if absent."""
        if self._helper_checked:
            return
        self._helper_checked = True
        from banger.helper_start import ensure_helper, needs_helper

        ctx = click.get_current_context(silent=True)
        if ctx is not None and needs_helper(ctx.command_path.split()[1:]):
            ensure_helper(self.paths)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def get_state() -> CliState:
    state = click.get_current_context().find_object(CliState)
    if state is None:  # invoked without main() (e.g. click's test runner)
        state = CliState()
        click.get_current_context().find_root().obj = state
    return state


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        obj = ctx.find_object(CliState)
        if obj is None:
            obj = CliState()
            ctx.find_root().obj = obj
        obj.json = True


def json_option(fn: F) -> F:
    """``--json`` on a command (same as ``banger --json <command>``)."""
    return click.option(
        "--json",
        "json_output",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Machine-readable JSON output.",
    )(fn)
