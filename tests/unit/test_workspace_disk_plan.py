"""The pure planner of a workspace written onto the work disk (no debugfs run here)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from banger.errors import InvalidArgument
from banger.workspace.disk_plan import (
    DiskEntry,
    HostEntry,
    NoRoom,
    Room,
    Unwritable,
    check_room,
    dir_commands,
    disk_root,
    expectations,
    finish_commands,
    leaf_commands,
    plan_entries,
    room_needed,
)
from banger.workspace.gitfiles import Member
from banger.workspace.host_state import worktree_paths

ROOT = HostEntry("", "dir", 0o755, 100)


def test_disk_root_is_relative_to_the_home() -> None:
    assert disk_root(PurePosixPath("/root/repo")) == "/repo"
    assert disk_root(PurePosixPath("/root/a b/c")) == "/a b/c"
    with pytest.raises(InvalidArgument, match="not on the work disk"):
        disk_root(PurePosixPath("/srv/repo"))
    with pytest.raises(InvalidArgument, match="home itself"):
        disk_root(PurePosixPath("/root"))


def test_dirs_first_parents_before_children_then_leaves_in_order() -> None:
    members = [
        HostEntry(".git", "dir", 0o755, 1),
        HostEntry("a/b", "dir", 0o700, 2),
        HostEntry(".git/HEAD", "file", 0o644, 3, 23, source=Path("/r/.git/HEAD")),
        HostEntry("a", "dir", 0o755, 4),
        HostEntry("a/b/run.sh", "file", 0o755, 5, 10, source=Path("/r/a/b/run.sh")),
        HostEntry("link", "symlink", 0o777, 6, target="a/b/run.sh"),
        HostEntry("a/b/run.sh", "file", 0o755, 5, 10, source=Path("/r/a/b/run.sh")),
    ]
    entries = plan_entries(ROOT, members, "/repo")
    assert [e.path for e in entries] == [
        "/repo", "/repo/.git", "/repo/a", "/repo/a/b",
        "/repo/.git/HEAD", "/repo/a/b/run.sh", "/repo/link",
    ]  # fmt: skip


def test_commands_quote_names_and_carry_modes_and_times() -> None:
    members = [
        HostEntry("it's $x #1;\\ok dir", "dir", 0o750, 7),
        HostEntry("it's $x #1;\\ok dir/f ü", "file", 0o600, 8, 3, source=Path("/r/f")),
        HostEntry("up", "symlink", 0o777, 9, target="../../etc/passwd"),
        HostEntry("gone", "file", 0o644, 9, 3, source=Path("/r/gone")),
    ]
    entries = plan_entries(ROOT, members, "/repo")
    assert [c.text for c in dir_commands(entries)] == [
        'mkdir "/repo"',
        'set_inode_field "/repo" mode 040755',
        'mkdir "/repo/it\'s $x #1;\\ok dir"',
        'set_inode_field "/repo/it\'s $x #1;\\ok dir" mode 040750',
    ]
    sources = {"/repo/it's $x #1;\\ok dir/f ü": "/proc/1/fd/5"}
    assert [c.text for c in leaf_commands(entries, sources)] == [
        'write "/proc/1/fd/5" "/repo/it\'s $x #1;\\ok dir/f ü"',
        'set_inode_field "/repo/it\'s $x #1;\\ok dir/f ü" mtime @8',
        # the target is stored as text: never resolved on the host
        'symlink "/repo/up" "../../etc/passwd"',
        'set_inode_field "/repo/up" mtime @9',
    ]  # the file without a source (gone since listing) is left out
    assert [c.text for c in finish_commands(entries)] == [
        'set_inode_field "/repo/it\'s $x #1;\\ok dir" mtime @7',
        'set_inode_field "/repo" mtime @100',
    ]
    exp = {e.path: e for e in expectations(entries, {"/repo/it's $x #1;\\ok dir/f ü": 3})}
    assert "/repo/gone" not in exp
    assert (exp["/repo/up"].kind, exp["/repo/up"].size, exp["/repo/up"].uid) == ("symlink", 16, 0)
    assert (exp["/repo/it's $x #1;\\ok dir"].mode, exp["/repo"].gid) == (0o750, 0)


@pytest.mark.parametrize(
    ("member", "named"),
    [
        (HostEntry('say "hi"', "file", 0o644, 0), "say"),
        (HostEntry("two\nlines", "file", 0o644, 0), "two"),
        (HostEntry("tab\there/x", "file", 0o644, 0), "tab"),
        (HostEntry("nel\x85", "dir", 0o755, 0), "nel"),
        (HostEntry("ok", "symlink", 0o777, 0, target='bad"target'), "symlink target"),
        (HostEntry("ok2", "symlink", 0o777, 0, target="line\nbreak"), "symlink target"),
    ],
)
def test_names_debugfs_cannot_express_are_refused_by_name(member: HostEntry, named: str) -> None:
    with pytest.raises(Unwritable, match=named):
        plan_entries(ROOT, [member], "/repo")


def test_room_counts_blocks_dirs_long_symlinks_and_inodes() -> None:
    entries = [
        DiskEntry("/repo", "dir", 0o755, 0),
        DiskEntry("/repo/a", "file", 0o644, 0, size=1),
        DiskEntry("/repo/b", "file", 0o644, 0, size=4097),
        DiskEntry("/repo/empty", "file", 0o644, 0, size=0),
        DiskEntry("/repo/short", "symlink", 0o777, 0, target="a"),
        DiskEntry("/repo/long", "symlink", 0o777, 0, target="x" * 80),
    ]
    need = room_needed(entries, 4096)
    # 1 + 2 data blocks, 1 long symlink block, 1 directory block, margin + 16
    assert need == Room(int(5 * 1.02) + 16, 6)


def test_no_room_names_both_sizes() -> None:
    with pytest.raises(NoRoom, match=r"needs 4\.0 MiB on the work disk, which has 2\.0 MiB free"):
        check_room(Room(1024, 1), 512, 100, 4096)
    with pytest.raises(NoRoom, match="needs 50 inodes on the work disk, which has 10 free"):
        check_room(Room(1, 50), 512, 10, 4096)
    check_room(Room(512, 10), 512, 10, 4096)


def test_worktree_paths_leave_out_git_and_submodule_contents() -> None:
    def m(name: str, kind: str = "file") -> Member:
        return Member(name, Path("/r") / name, kind)

    members = [
        m(".git", "dir"), m(".git/HEAD"), m("a"), m("sub", "dir"), m("sub/.git"),
        m("sub/inner"), m("subfile"), m("d", "dir"), m("d/x"),
    ]  # fmt: skip
    paths, subs = worktree_paths(members)
    assert paths == ["a", "subfile", "d/x"]
    assert subs == {"sub"}
