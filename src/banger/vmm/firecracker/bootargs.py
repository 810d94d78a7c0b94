"""The guest command line as Firecracker wants it.

The driver builds the guest contract's line (:func:`banger.vmm.bootargs.kernel_cmdline`)
with its own token, ``reboot=k`` (:func:`firecracker_cmdline`: a guest reboot must
end the Firecracker process, which has no ACPI poweroff on x86). That line is what
the VM records; at launch Firecracker then differs from QEMU in two ways
(:func:`firecracker_boot_args`):

- ``boot_args`` *replaces* Firecracker's default line
  (``reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux …``), so nothing of
  the default survives unless banger says it. banger keeps the serial console
  (``console=ttyS0``; the default line would turn the UART off), ``reboot=k``
  (a guest reboot or Ctrl-Alt-Del must end the process) and a ``panic=`` so a
  panicking guest reboots, i.e. exits, instead of hanging. It does *not* keep
  ``nomodule``: a distro kernel loads its virtio drivers from banger's initramfs.
  ``i8042.noaux i8042.nomux`` skip probing ports the emulated controller does
  not have (faster boot) while leaving the keyboard, and so SendCtrlAltDel, working.
- Firecracker appends ``root=/dev/vda rw`` (from the root drive) and the
  ``virtio_mmio.device=`` entries itself; banger's own ``root=``/``rw`` are
  dropped so the line does not say it twice.
"""

from __future__ import annotations

import dataclasses

from banger.errors import InvalidArgument
from banger.vmm.bootargs import BootSpec, kernel_cmdline

#: Appended by Firecracker from the root drive; not banger's to say.
_APPENDED_BY_FIRECRACKER = ("root=", "rw", "ro")
_ALWAYS = ("console=ttyS0", "reboot=k", "i8042.noaux", "i8042.nomux")
_DEFAULT_PANIC = "panic=1"
#: Firecracker's own tokens in the guest contract's line.
DRIVER_ARGS = ("reboot=k",)


def firecracker_cmdline(boot: BootSpec) -> str:
    """The guest contract's line for ``boot`` under Firecracker (KVM only: no TSC hint)."""
    return kernel_cmdline(dataclasses.replace(boot, tsc_khz=None), driver_args=DRIVER_ARGS)


def firecracker_boot_args(cmdline: str) -> str:
    """``cmdline`` adapted for Firecracker's ``boot_args`` (see the module docstring)."""
    if "\n" in cmdline or "\0" in cmdline:
        raise InvalidArgument("cmdline: contains a newline or NUL")
    tokens = [
        t for t in cmdline.split() if not (t.startswith("root=") or t in _APPENDED_BY_FIRECRACKER)
    ]
    # Everything banger needs comes first; the guest contract's tokens keep their order.
    head = [t for t in _ALWAYS if t not in tokens]
    if not any(t.startswith("panic=") for t in tokens):
        head.append(_DEFAULT_PANIC)
    return " ".join(head + tokens)
