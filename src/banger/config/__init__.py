"""banger's configuration: ``config.toml`` parsed into frozen, typed models.

``load_config()`` returns the effective :class:`Config` (defaults when the file
is missing) or raises :class:`banger.errors.ConfigError` listing every problem,
each as ``field.path: message``.
"""

from banger.config.file_sync import DEFAULT_MODE, GUEST_HOME, FileSync
from banger.config.loader import config_problems, load_config
from banger.config.models import (
    Config,
    DaemonSettings,
    FirecrackerSettings,
    ImageSettings,
    KernelSettings,
    NetworkSettings,
    VMSettings,
)
from banger.config.values import format_size, parse_size

__all__ = [
    "DEFAULT_MODE",
    "GUEST_HOME",
    "Config",
    "DaemonSettings",
    "FileSync",
    "FirecrackerSettings",
    "ImageSettings",
    "KernelSettings",
    "NetworkSettings",
    "VMSettings",
    "config_problems",
    "format_size",
    "load_config",
    "parse_size",
]
