"""Read config.toml and turn every problem into one ``field.path: message`` line.

pydantic reports errors as ``loc`` tuples and multi-line text; users get lines
like ``file_sync[2].guest: must be under ~/ or /root/ (got "/etc/x")`` instead,
all of them at once, in file order.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from banger.config.models import Config, NestedProblem
from banger.config.values import describe
from banger.errors import ConfigError
from banger.paths import Paths

_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
}


def load_config(
    path: Path | None = None, *, paths: Paths | None = None, home: Path | None = None
) -> Config:
    """The effective config (defaults if the file is missing); ConfigError lists every problem."""
    path = path if path is not None else (paths or Paths.from_env()).config_file
    data, problems = _read(path, missing_ok=True)
    if not problems:
        config, problems = _validate(data, home)
        if config is not None:
            return config
    raise ConfigError(problems, path=str(path))


def config_problems(path: Path, *, home: Path | None = None, missing_ok: bool = False) -> list[str]:
    """Every problem in the file at ``path`` (empty when it is valid)."""
    data, problems = _read(path, missing_ok=missing_ok)
    if problems:
        return problems
    return _validate(data, home)[1]


def _read(path: Path, *, missing_ok: bool) -> tuple[dict[str, Any], list[str]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, ([] if missing_ok else ["file does not exist"])
    except IsADirectoryError:
        return {}, ["is a directory, not a file"]
    except OSError as exc:
        return {}, [f"cannot read the file: {exc.strerror or exc}"]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {}, [f"not valid UTF-8 (byte {exc.start})"]
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already ends with "(at line L, column C)".
        return {}, [f"TOML syntax error: {exc}"]


def _validate(data: dict[str, Any], home: Path | None) -> tuple[Config | None, list[str]]:
    context = {"home": home if home is not None else Path.home()}
    try:
        return Config.model_validate(data, context=context), []
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors(include_url=False):
            line = problem_line(error)
            if line not in problems:
                problems.append(line)
        return None, problems


def problem_line(error: ErrorDetails) -> str:
    """One pydantic error as ``a.b[2].c: message``."""
    loc: tuple[str | int, ...] = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    kind = error["type"]
    if isinstance(cause, NestedProblem):
        loc, message = loc + cause.loc, str(cause)
    elif isinstance(cause, ValueError):
        message = str(cause)
    elif kind == "extra_forbidden":
        message = "unknown key" + _suggestion(loc)
    elif kind == "missing":
        message = "is required"
    elif kind == "literal_error":
        message = f"must be one of {ctx.get('expected', '?')} (got {describe(error['input'])})"
    elif kind in _TYPE_MESSAGES:
        message = f"{_TYPE_MESSAGES[kind]} (got {describe(error['input'])})"
    else:
        message = error["msg"][:1].lower() + error["msg"][1:]
    path = field_path(loc)
    return f"{path}: {message}" if path else message


def field_path(loc: Sequence[str | int]) -> str:
    """``("file_sync", 2, "guest")`` → ``file_sync[2].guest``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or "-" in part:
            continue  # pydantic's internal step names (function-before[...], unions)
        else:
            out += f".{part}" if out else part
    return out


def _suggestion(loc: tuple[str | int, ...]) -> str:
    """`` (did you mean "vcpus"?)`` for a near-miss unknown key."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field else None
    if model is None or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
