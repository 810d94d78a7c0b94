"""The debugfs script builder and output parsers, without running debugfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.disk.debugfs_script import (
    Command,
    EntryKind,
    Expect,
    Ext4Edit,
    failures_from_stderr,
    host_path,
    image_path,
)
from banger.disk.ext4 import parse_ls_p
from banger.errors import Conflict, InvalidArgument


def test_golden_script_for_a_batch() -> None:
    edit = (
        Ext4Edit()
        .ensure_root_dir_mode()
        .mkdir("/.ssh", 0o700)
        .write_file("/.ssh/authorized_keys", "/tmp/stage/ak", 0o600)
    )
    assert edit.probe_paths() == ["/", "/.ssh", "/.ssh/authorized_keys"]
    fresh: dict[str, EntryKind | None] = {"/": "dir", "/.ssh": None, "/.ssh/authorized_keys": None}
    assert edit.render(fresh) == (
        'set_inode_field "/" mode 040755\nbanger-step-0\n'
        'set_inode_field "/" uid 0\nbanger-step-1\n'
        'set_inode_field "/" gid 0\nbanger-step-2\n'
        'mkdir "/.ssh"\nbanger-step-3\n'
        'set_inode_field "/.ssh" mode 040700\nbanger-step-4\n'
        'set_inode_field "/.ssh" uid 0\nbanger-step-5\n'
        'set_inode_field "/.ssh" gid 0\nbanger-step-6\n'
        'write "/tmp/stage/ak" "/.ssh/authorized_keys"\nbanger-step-7\n'
        'set_inode_field "/.ssh/authorized_keys" mode 0100600\nbanger-step-8\n'
        'set_inode_field "/.ssh/authorized_keys" uid 0\nbanger-step-9\n'
        'set_inode_field "/.ssh/authorized_keys" gid 0\nbanger-step-10\n'
    )
    assert edit.expectations == [
        Expect("/", "dir", 0o755, 0, 0),
        Expect("/.ssh", "dir", 0o700, 0, 0),
        Expect("/.ssh/authorized_keys", "file", 0o600, 0, 0, size_from="/tmp/stage/ak"),
    ]


def test_paths_with_spaces_are_double_quoted() -> None:
    edit = Ext4Edit().write_file("/my dir/a file", "/host dir/src file", 0o644, 1000, 1000)
    text = edit.render({"/": "dir", "/my dir": "dir", "/my dir/a file": None})
    assert 'write "/host dir/src file" "/my dir/a file"\n' in text
    assert 'set_inode_field "/my dir/a file" mode 0100644\n' in text
    assert 'set_inode_field "/my dir/a file" uid 1000\n' in text


def test_mkdir_p_creates_missing_parents_and_sets_only_the_leaf() -> None:
    edit = Ext4Edit().mkdir_p("/a/b/c", 0o750, 5, 6)
    existing: dict[str, EntryKind | None] = {"/": "dir", "/a": "dir", "/a/b": None}
    existing["/a/b/c"] = None
    texts = [c.text for c in edit.commands(existing)]
    assert texts == [
        'mkdir "/a/b"',
        'mkdir "/a/b/c"',
        'set_inode_field "/a/b/c" mode 040750',
        'set_inode_field "/a/b/c" uid 5',
        'set_inode_field "/a/b/c" gid 6',
    ]
    assert [e.path for e in edit.expectations] == ["/a", "/a/b", "/a/b/c"]
    assert edit.expectations[0].mode is None  # parents are only required to be dirs


def test_staged_bytes_are_named_in_the_stage_dir(tmp_path: Path) -> None:
    edit = Ext4Edit().write_bytes("/.hushlogin", b"", 0o644, stage_dir=tmp_path)
    assert edit.staged == {"stage-0": b""}
    assert f'write "{tmp_path}/stage-0" "/.hushlogin"' in edit.render(
        {"/": "dir", "/.hushlogin": None}
    )
    assert edit.expectations[-1].size == 0


@pytest.mark.parametrize(
    "bad",
    [
        "relative/path",
        "/a/../etc",
        "/a/./b",
        "/a//b",
        '/quote"d',
        "/new\nline",
        "/tab\there",
        "/nul\x00",
        "/del\x7f",
        "/nel\x85",
        "/" + "x" * 256,
    ],
)
def test_refuses_paths_debugfs_cannot_express(bad: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        Ext4Edit().mkdir(bad)
    assert repr(bad) in str(err.value)  # the error names the path


def test_refuses_bad_host_paths_and_modes() -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        host_path("relative")
    with pytest.raises(InvalidArgument, match="cannot express"):
        Ext4Edit().write_file("/x", '/tmp/a"b')
    with pytest.raises(InvalidArgument, match="permission mode"):
        Ext4Edit().mkdir("/x", 0o10000)
    with pytest.raises(InvalidArgument, match="not a file"):
        Ext4Edit().write_file("/", "/tmp/x")


def test_image_path_normalises_a_trailing_slash() -> None:
    assert image_path("/a/b/") == "/a/b"
    assert image_path("/") == "/"
    assert image_path("/semi;colon #hash $HOME 'q' back\\slash") == (
        "/semi;colon #hash $HOME 'q' back\\slash"
    )


def test_plan_follows_the_image_state() -> None:
    edit = Ext4Edit().mkdir("/.ssh", 0o700).write_file("/.ssh/k", "/h/k")
    # an existing directory is kept: no mkdir (debugfs would damage the fs)
    texts = [c.text for c in edit.commands({"/": "dir", "/.ssh": "dir", "/.ssh/k": "file"})]
    assert not any(t.startswith("mkdir") for t in texts)
    assert texts.index('rm "/.ssh/k"') < texts.index('write "/h/k" "/.ssh/k"')
    # a symlink in the way of the directory is removed, and what was seen through it forgotten
    texts = [c.text for c in edit.commands({"/": "dir", "/.ssh": "symlink", "/.ssh/k": "file"})]
    assert texts[:2] == ['rm "/.ssh"', 'mkdir "/.ssh"']
    assert 'rm "/.ssh/k"' not in texts


def test_plan_refuses_what_debugfs_cannot_do_safely() -> None:
    with pytest.raises(Conflict, match="/f is a directory"):
        Ext4Edit().write_file("/f", "/h").commands({"/": "dir", "/f": "dir"})
    with pytest.raises(Conflict, match="/file is a file"):
        Ext4Edit().mkdir("/file/d").commands({"/file": "file", "/file/d": None})
    with pytest.raises(Conflict, match="/a is missing"):
        Ext4Edit().write_file("/a/b", "/h").commands({"/a": None, "/a/b": None})
    with pytest.raises(Conflict, match="below /a"):
        Ext4Edit().mkdir_p("/a/b").commands({"/": "dir", "/a": "file", "/a/b": None})
    with pytest.raises(Conflict, match="not a dir"):
        Ext4Edit().set_owner_mode("/x", "dir", 0o700).commands({"/": "dir", "/x": "file"})
    with pytest.raises(ValueError, match="not probed"):
        Ext4Edit().mkdir("/x").commands({})


BANNER = "debugfs 1.47.0 (5-Feb-2023)\n"


def test_stderr_segments_map_errors_to_their_command() -> None:
    commands = [
        Command('rm "/x"', tolerate=("File not found by ext2_lookup",)),
        Command('write "/h" "/x"'),
        Command('mkdir "/x/y"', tolerate=("already exists",)),
    ]
    stderr = (
        BANNER + "rm: File not found by ext2_lookup while trying to resolve filename\n"
        "debugfs: Command not found banger-step-0\n"
        "debugfs: Command not found banger-step-1\n"
        'ext2fs_mkdir: Ext2 inode is not a directory while creating directory "y"\n'
        "mkdir: Ext2 inode is not a directory \n"
        "debugfs: Command not found banger-step-2\n"
    )
    failures = failures_from_stderr(commands, stderr)
    assert len(failures) == 1
    assert failures[0].command == 'mkdir "/x/y"'
    assert "not a directory" in failures[0].message


def test_clean_stderr_has_no_failures() -> None:
    commands = [Command("mkdir /a", tolerate=("already exists",)), Command("mkdir /b")]
    stderr = (
        BANNER + 'ext2fs_mkdir: Ext2 directory already exists while creating directory "a"\n'
        "mkdir: Ext2 directory already exists \n"
        "debugfs: Command not found banger-step-0\n"
        "debugfs: Command not found banger-step-1\n"
    )
    assert failures_from_stderr(commands, stderr) == []


def test_parse_ls_p() -> None:
    out = (
        "/2/040755/0/0/.//\n/2/040755/0/0/..//\n/11/040700/0/0/lost+found//\n"
        "/12/100600/1000/1001/a file/17/\n/13/120777/0/0/lnk/4/\n\n"
    )
    entries = parse_ls_p(out)
    assert set(entries) == {".", "..", "lost+found", "a file", "lnk"}
    f = entries["a file"]
    assert (f.kind, f.mode, f.uid, f.gid, f.size, f.inode) == ("file", 0o600, 1000, 1001, 17, 12)
    assert entries["lost+found"].kind == "dir" and entries["lost+found"].size is None
    assert entries["lnk"].kind == "symlink"
