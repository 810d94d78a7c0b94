"""banger.kernels: guest kernels and the initramfs banger builds for them.

Entry points for the daemon's KernelService: :func:`pull_kernel` (Debian's
kernel package, through the host's apt or a configured mirror),
:func:`import_kernel` (a local bzImage/vmlinux), :func:`verify_kernel`,
:func:`list_kernels` and :func:`read_kernel`.
"""

from banger.kernels.pull import import_kernel, parse_source, pull_kernel
from banger.kernels.store import (
    KernelCorrupt,
    KernelEntry,
    list_kernels,
    publish_kernel,
    read_kernel,
    verify_kernel,
)

__all__ = [
    "KernelCorrupt",
    "KernelEntry",
    "import_kernel",
    "list_kernels",
    "parse_source",
    "publish_kernel",
    "pull_kernel",
    "read_kernel",
    "verify_kernel",
]
