"""What a bug report needs: banger's version and the versions it runs with.

``banger version --json`` reports these: the Python packages banger is built on
(the set ``requirements.lock`` pins, as installed) and the host tools whose
behaviour banger depends on most. Nothing here starts the daemon.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

#: banger's runtime dependencies (pyproject.toml), plus cryptography, which
#: asyncssh's behaviour (and its warnings) depend on.
KEY_PACKAGES: tuple[str, ...] = (
    "asyncssh",
    "click",
    "cryptography",
    "dnspython",
    "fastapi",
    "httpx",
    "psutil",
    "pydantic",
    "pyroute2",
    "rich",
    "uvicorn",
    "websockets",
    "zstandard",
)

#: Host tool -> the arguments that make it print its version (e2fsprogs is
#: asked through mkfs.ext4, QEMU through its system emulator).
HOST_TOOLS: dict[str, tuple[str, ...]] = {
    "qemu-system-x86_64": ("--version",),
    "qemu-img": ("--version",),
    "skopeo": ("--version",),
    "mmdebstrap": ("--version",),
    "mkfs.ext4": ("-V",),
}


def python_packages() -> dict[str, str | None]:
    """Installed version of each key package (None: not installed)."""
    found: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _tool_version(item: tuple[str, tuple[str, ...]]) -> dict[str, str | None]:
    from banger.doctor import tool_version
    from banger.proc import which

    program, args = item
    path = which(program)
    return {"path": path, "version": tool_version(path, args) if path else None}


def host_tools() -> dict[str, dict[str, str | None]]:
    """Each host tool's path and version (both None when it is not installed)."""
    with ThreadPoolExecutor(max_workers=len(HOST_TOOLS)) as pool:
        answers = list(pool.map(_tool_version, HOST_TOOLS.items()))
    return dict(zip(HOST_TOOLS, answers, strict=True))


def report() -> dict[str, object]:
    from banger import __version__

    return {
        "banger": __version__,
        "python": {"version": sys.version.split()[0], "executable": sys.executable},
        "packages": python_packages(),
        "host_tools": host_tools(),
    }
