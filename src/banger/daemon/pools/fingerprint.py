"""What a take would write over SSH, as one digest (so that a take with nothing new
to write skips the SFTP session: about a second of a warm start under emulation).

A pool's template guest is provisioned offline at its boot with ``[[file_sync]]``
and the owner's git identity as they were then; every ready guest is a restore of
it, untouched since. :func:`sync_fingerprint` digests the plan a take would apply
now — each directory and file's guest path and mode, each file's *content*, the
identity — and the pool service keeps the digest taken just before the template
was provisioned. Equal digests: the guest already holds exactly that. Anything
changed on the host since (a file's bytes, a mode, an entry, the identity) gives
another digest and the take writes it all, so a taken guest is never stale. A
host-side problem (an unreadable file) gives no digest, and the take's own sync
reports it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from banger.config.file_sync import FileSync
from banger.disk.gitidentity import read_host_identity
from banger.disk.sync_plan import plan_file_sync
from banger.errors import BangerError


def sync_fingerprint(entries: Sequence[FileSync], *, home: Path) -> str | None:
    """The digest of what a sync of ``entries`` would write now; None when unknown.

    Blocking (reads the owner's files, runs git): call it in a thread.
    """
    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        for part in parts:
            digest.update(str(part).encode("utf-8", "surrogateescape") + b"\0")

    try:
        plan = plan_file_sync(entries, home=home)
        for d in (*plan.dirs, *plan.late_dirs):
            add("dir", d.guest_rel_path, oct(d.mode))
        for f in (*plan.files, *plan.late_files):
            with open(f.host_path, "rb") as content:
                file_digest = hashlib.file_digest(content, "sha256").hexdigest()
            add("file", f.guest_rel_path, oct(f.mode), file_digest)
        identity = read_host_identity(home)
    except (BangerError, OSError):
        return None
    add("identity", identity.name or "", identity.email or "")
    return digest.hexdigest()
