"""What a VM may be: the bounds every layer checks against (config, daemon, drivers, jailer).

One home for each limit, so a value the config accepts is a value every
``vm create`` accepts too (``vm.vcpus = 48`` used to load and then fail every
create). Standard library only: the root helper's jailer checks import it.
"""

from __future__ import annotations

MIB = 1024 * 1024

MIN_VCPUS = 1
#: Firecracker refuses more than 32 vCPUs (its machine-config limit); QEMU's
#: microvm takes at least that many, so 32 is what both drivers accept.
MAX_VCPUS = 32

#: Below this a Debian guest does not boot to sshd.
MIN_MEMORY_MIB = 128
MAX_MEMORY_MIB = 1024 * 1024

#: Work and root disk sizes: whole MiB (so every tool agrees on them), at least
#: room for an ext4 journal and banger's files, at most 16 TiB (ext4 with 4 KiB blocks).
MIN_DISK_BYTES = 64 * MIB
MAX_DISK_BYTES = 16 * 1024 * 1024 * MIB
