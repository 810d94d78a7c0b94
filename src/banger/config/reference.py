"""The README's config reference, generated from the models' field descriptions."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from banger.config.file_sync import FileSync
from banger.config.models import Config
from banger.config.values import format_size


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if value in ([], ()):
        return "`[]`"
    return f"`{json.dumps(value)}`"


def _rows(model: type[BaseModel], prefix: str, defaults: dict[str, Any]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        value = defaults.get(name)
        if name.endswith("_size") and isinstance(value, int):
            value = format_size(value)  # sizes read better as "4G" than as bytes
        default = _default(value) if name in defaults else "required"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {default} | {description} |")
    return rows


def markdown_reference() -> str:
    """A Markdown table per section: key, default, description."""
    defaults = Config().to_json_dict()
    lines = ["| key | default | description |", "|---|---|---|"]
    for name, field in Config.model_fields.items():
        if name == "file_sync":
            continue
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            lines += _rows(section, f"{name}.", defaults[name])
        else:
            lines += _rows_top(name, field.description or "", defaults[name])
    lines += ["", "`[[file_sync]]` entries (any number):", ""]
    lines += ["| key | default | description |", "|---|---|---|"]
    lines += _rows(FileSync, "", {"mode": "0600"})
    return "\n".join(lines) + "\n"


def _rows_top(name: str, description: str, default: Any) -> list[str]:
    escaped = description.replace("|", "\\|")
    return [f"| `{name}` | {_default(default)} | {escaped} |"]
