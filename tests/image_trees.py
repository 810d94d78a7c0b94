"""Root trees for testing image finalize without an image build (no root needed to make them)."""

from __future__ import annotations

from pathlib import Path

#: The programs finalize looks for, as fake executables.
FAKE_PROGRAMS = ("usr/bin/sh", "usr/sbin/sshd", "usr/bin/tmux")


def usrmerged_tree(root: Path, *extra_dirs: str) -> Path:
    """``root/tree``: a tiny usrmerged root (``bin``/``sbin`` links into ``usr``) with
    fake ``sh``, ``sshd`` and ``tmux``, and ``etc/ssh``; plus ``extra_dirs``."""
    tree = root / "tree"
    for d in ("usr/bin", "usr/sbin", "etc/ssh", *extra_dirs):
        (tree / d).mkdir(parents=True)
    (tree / "bin").symlink_to("usr/bin")
    (tree / "sbin").symlink_to("usr/sbin")
    for exe in FAKE_PROGRAMS:
        (tree / exe).write_text("#!/fake\n")
        (tree / exe).chmod(0o755)
    return tree
