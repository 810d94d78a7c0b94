"""Error types that reach the user as one line plus a hint.

Every error banger raises on purpose derives from :class:`BangerError`. The CLI
prints ``error: <message>`` and, when present, ``hint: <hint>``; tracebacks are
only shown with ``--debug``. The daemon maps these to JSON ``{error, hint}``
bodies with the status code named by ``http_status``.
"""

from __future__ import annotations

import re


class BangerError(Exception):
    """Base class: a message for the user and an optional hint on what to do.

    ``field`` names the request field or argument at fault, when one is (see
    :class:`InvalidArgument`); programs (the SDK's callers) read it instead of
    parsing the message.
    """

    http_status = 500
    #: CLI exit status for this kind of failure (documented in the README).
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidArgument(BangerError):
    """Bad input from the user: names the field or argument.

    The message starts with the field (``cpus: must be at least 1``, or the
    daemon's ``invalid request: body.cpus: …``), banger's one convention for
    bad input; :attr:`field` is that name unless given, so an error rebuilt
    from the daemon's ``{error, hint, kind}`` answer carries it too.
    :attr:`fields` lists every field a multi-problem message names.
    """

    http_status = 400
    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, *, field: str | None = None) -> None:
        self.fields = (field,) if field is not None else fields_named(message)
        super().__init__(message, hint, field=self.fields[0] if self.fields else None)


#: A field as messages name it: a word, dotted path or index (``file_sync[2].guest``).
_FIELD = re.compile(r"[A-Za-z_][\w\-]*(?:\.[\w\-]+|\[\d+\])*")
#: Where FastAPI's request-validation locations start (``body.cpus`` is ``cpus``).
_LOCATIONS = ("body.", "query.", "path.")


def fields_named(message: str) -> tuple[str, ...]:
    """The fields an :class:`InvalidArgument` message names at the start of each problem.

    ``memory: …`` names ``memory``; ``invalid request: body.cpus: …`` names
    ``cpus``; ``invalid request (2 problems): name: …; cpus: …`` names both.
    A message that does not start with a field names none.
    """
    head, sep, rest = message.partition(": ")
    if not sep:
        return ()
    problems = [message]
    if head == "invalid request" or head.startswith("invalid request ("):
        problems = rest.split("; ")
    found: list[str] = []
    for problem in problems:
        name, sep, _ = problem.partition(": ")
        for prefix in _LOCATIONS:
            name = name.removeprefix(prefix)
        if sep and _FIELD.fullmatch(name) and name not in found:
            found.append(name)
    return tuple(found)


class ConfigError(BangerError):
    """The configuration file is invalid; ``problems`` lists every issue."""

    http_status = 400
    exit_code = 2

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        where = f"{path}: " if path else ""
        if len(problems) == 1:
            message = f"{where}invalid config: {problems[0]}"
        else:
            message = f"{where}invalid config ({len(problems)} problems): " + "; ".join(problems)
        super().__init__(message, hint="run `banger config validate` to list every problem")
        self.problems = problems


class NotFound(BangerError):
    http_status = 404
    exit_code = 3


class Conflict(BangerError):
    """The object exists already, or is in use, or is in the wrong state."""

    http_status = 409
    exit_code = 4


class PermissionDenied(BangerError):
    """Refused by file permissions: in a guest (files API), or on the host (``vm cp``)."""

    http_status = 403
    exit_code = 9


class DaemonUnavailable(BangerError):
    """The CLI could not reach (or start) bangerd."""

    http_status = 503
    exit_code = 5


class HelperError(BangerError):
    """The root helper refused or failed an operation."""

    http_status = 502
    exit_code = 6


class HelperBadInput(HelperError):
    """The root helper refused what it was given: a hostile layer, an image it cannot
    make bootable, a field it will not take. Bad input (exit 2), not a helper fault."""

    http_status = 400
    exit_code = 2


class CommandError(BangerError):
    """An external command failed: says which, how, and the tail of its stderr."""

    http_status = 500
    exit_code = 7

    def __init__(
        self,
        argv: list[str],
        *,
        returncode: int | None,
        stderr: str = "",
        not_found: bool = False,
        timed_out: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.not_found = not_found
        self.timed_out = timed_out
        prog = argv[0] if argv else "?"
        if not_found:
            message = f"command not found: {prog}"
            hint: str | None = "run `banger doctor` to see which host tools are missing"
        elif timed_out:
            message = f"{prog} timed out"
            hint = None
        elif returncode is not None and returncode < 0:
            import signal

            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            message = f"{prog} was killed by {name}"
            hint = None
        else:
            message = f"{prog} failed with exit status {returncode}"
            hint = None
        tail = stderr_tail(stderr)
        if tail:
            message = f"{message}: {tail}"
        super().__init__(message, hint)


def stderr_tail(stderr: str, lines: int = 3, limit: int = 400) -> str:
    """The last few non-empty lines of a command's stderr, joined on one line."""
    kept = [line.strip() for line in stderr.strip().splitlines() if line.strip()][-lines:]
    text = " | ".join(kept)
    if len(text) > limit:
        text = "…" + text[-limit:]
    return text
