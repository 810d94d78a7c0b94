"""The ``banger-helper`` flags that turn on Firecracker's jailer (config ``firecracker.jailer``).

The helper's ``start_jailer`` op runs only the two binaries it was started
with (``--jailer PATH --firecracker PATH``, absolute paths it checks itself):
the daemon cannot name a program for root to run. So whoever starts the
helper — the CLI's first-use start (:mod:`banger.helper_start`) or the
systemd unit (:mod:`banger.system.units`) — resolves the owner's
``firecracker.jailer_binary`` and ``firecracker.binary`` here, once, to
absolute paths. With ``jailer = false`` there are no flags and the helper
refuses jailer requests. The jail's chroot base is always ``--jail-base
/srv/jailer`` (Firecracker's default, root's alone; the helper checks it), said
explicitly so that the systemd unit's ``ReadWritePaths`` can name it too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from banger.config.models import FirecrackerSettings
from banger.errors import ConfigError
from banger.helper.jailer_ops import DEFAULT_JAIL_BASE


def resolve_program(field: str, value: str) -> Path:
    """``value`` (a name on PATH or an absolute path) as an absolute executable path."""
    if os.sep in value:
        path = Path(value)
        if not path.is_absolute():
            raise ConfigError([f"{field}: {value!r} must be a name on PATH or an absolute path"])
    else:
        found = shutil.which(value)
        if found is None:
            raise ConfigError(
                [
                    f"{field}: {value!r} is not on PATH (install it, set an absolute path, "
                    "or set firecracker.jailer = false)"
                ]
            )
        path = Path(found).absolute()
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ConfigError([f"{field}: {path} is not an executable file"])
    return path


def helper_jailer_flags(settings: FirecrackerSettings) -> list[str]:
    """``--jailer J --firecracker F --jail-base B`` with ``firecracker.jailer`` on, else nothing."""
    if not settings.jailer:
        return []
    jailer = resolve_program("firecracker.jailer_binary", settings.jailer_binary)
    firecracker = resolve_program("firecracker.binary", settings.binary)
    return [
        "--jailer", str(jailer), "--firecracker", str(firecracker),
        "--jail-base", str(DEFAULT_JAIL_BASE),
    ]  # fmt: skip
