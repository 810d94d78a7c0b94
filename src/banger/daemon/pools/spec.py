"""What a pool is, checked; the names it gives things; the key its template is valid under.

Pure: no store, no I/O. :mod:`.service` does the work.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from banger import __version__
from banger.daemon.vms.names import check_name
from banger.errors import InvalidArgument

#: The most guests one pool keeps ready (each is a whole running VM).
MAX_SIZE = 16
#: Pool names are DNS labels short enough that ``NAME-pool-XXXXXX`` is one too.
MAX_NAME = 40
#: Template snapshots are ``pool.NAME.HEX``: no user can pick such a name (snapshot
#: names are DNS labels), and ``vm fork``'s sweep (``fork.``) leaves them alone.
TEMPLATE_PREFIX = "pool."
#: Bumped when what a template holds changes shape in a way its key cannot see.
TEMPLATE_FORMAT = 1


def check_pool_name(name: str) -> str:
    try:
        check_name(name)
    except InvalidArgument:
        raise InvalidArgument(
            f"name: {name!r} is not a DNS label",
            hint="lowercase letters, digits and inner hyphens",
        ) from None
    if len(name) > MAX_NAME:
        raise InvalidArgument(
            f"name: a pool name has at most {MAX_NAME} characters (got {len(name)}), "
            "so its guests' names fit a DNS label"
        )
    return name


def check_size(size: int) -> int:
    if isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise InvalidArgument(
            f"size: must be 0-{MAX_SIZE}, got {size}",
            hint="each ready guest is a running VM: memory, an address, a tap",
        )
    return size


def member_name(pool: str) -> str:
    """A ready guest's name until it is taken (then it gets the user's)."""
    return f"{pool}-pool-{secrets.token_hex(3)}"


def template_name(pool: str) -> str:
    return f"{TEMPLATE_PREFIX}{pool}.{secrets.token_hex(4)}"


@dataclass(frozen=True)
class TemplateInputs:
    """Everything a template's saved guest depends on: a change in any means a new one."""

    image_id: str
    kernel_id: str
    init_mode: str
    vcpus: int
    memory_mib: int
    work_disk_size: int
    #: The VMM the template's guest ran on (a snapshot restores only on its own VMM):
    #: a pool whose new VMs move to another VMM (``vmm`` in config.toml) gets a new one.
    vmm: str = "qemu"
    #: banger's own version: the guest contract (boot line, finalize, the agent's use)
    #: is banger's, so a new banger makes new templates.
    banger: str = __version__
    format: int = TEMPLATE_FORMAT

    def key(self) -> str:
        blob = json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:32]
