"""The guest command line as Firecracker wants it.

banger builds one command line for both drivers (:func:`banger.vmm.bootargs.kernel_cmdline`,
``vmm="firecracker"`` adds ``reboot=k``). Firecracker then differs from QEMU in two ways:

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

from banger.errors import InvalidArgument

#: Appended by Firecracker from the root drive; not banger's to say.
_APPENDED_BY_FIRECRACKER = ("root=", "rw", "ro")
_ALWAYS = ("console=ttyS0", "reboot=k", "i8042.noaux", "i8042.nomux")
_DEFAULT_PANIC = "panic=1"


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
