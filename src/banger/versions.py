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

#: The host tools reported (e2fsprogs through mkfs.ext4, QEMU through its system
#: emulator); how each says its version is doctor's ToolSpec, the one place for it.
HOST_TOOLS: tuple[str, ...] = (
    "qemu-system-x86_64",
    "qemu-img",
    "skopeo",
    "mmdebstrap",
    "mkfs.ext4",
)


def python_packages() -> dict[str, str | None]:
    """Installed version of each key package (None: not installed)."""
    found: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _tool_version(program: str) -> dict[str, str | None]:
    from banger.doctor.checks import TOOLS, tool_version
    from banger.proc import which

    [args] = [spec.version_args or () for spec in TOOLS if spec.program == program]
    path = which(program)
    return {"path": path, "version": tool_version(path, args) if path else None}


def host_tools() -> dict[str, dict[str, str | None]]:
    """Each host tool's path and version (both None when it is not installed)."""
    with ThreadPoolExecutor(max_workers=len(HOST_TOOLS)) as pool:
        answers = list(pool.map(_tool_version, HOST_TOOLS))
    return dict(zip(HOST_TOOLS, answers, strict=True))


def python_info() -> dict[str, str]:
    return {"version": sys.version.split()[0], "executable": sys.executable}
