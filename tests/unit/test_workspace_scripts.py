"""Guest scripts as text, and run for real with the local sh where that needs no ssh."""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from banger.errors import InvalidArgument
from banger.workspace import guest_scripts as gs
from banger.workspace.prepare import guest_destination
from banger.workspace.shell import sh_command

HOSTILE = PurePosixPath('/root/it\'s $(touch pwned) `x` "q"')


def sh(script: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-c", script], input=stdin, capture_output=True)


def test_every_script_parses_in_posix_sh() -> None:
    scripts = [
        gs.receive(HOSTILE, 0o755),
        gs.swap(HOSTILE, gs.temp_prefix(HOSTILE, gs.NEW_SUFFIX) + "abc123"),
        gs.discard(HOSTILE, gs.temp_prefix(HOSTILE, gs.NEW_SUFFIX) + "abc123"),
        gs.export_snapshot(HOSTILE, "msg with 'quotes' and $vars", "banger (vm)"),
        gs.export_send(f"{HOSTILE}/.git/banger-export.abc", HOSTILE),
        gs.export_cleanup(f"{HOSTILE}/.git/banger-export.abc", HOSTILE),
        gs.export_cleanup(None, HOSTILE),
        gs.record_state(HOSTILE),
        gs.record_state(HOSTILE, "a" * 40, snapshot=True),
        gs.unexported_work(HOSTILE),
    ]
    for script in scripts:
        assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0, script
        assert script.startswith("set -eu\n") or "cd --" in script
        # the hostile value appears only in single-quoted assignments
        lines = [ln for ln in script.splitlines() if "$(touch pwned)" in ln]
        assert lines and all(re.fullmatch(r"[a-z_]+='/root/\.?it'.*'", ln) for ln in lines)


def test_hostile_names_are_not_executed(tmp_path: Path) -> None:
    dest = PurePosixPath(tmp_path / "it's $(touch pwned) `touch pwned2`")
    new = gs.temp_prefix(dest, gs.NEW_SUFFIX) + "x"
    Path(new).mkdir()
    done = subprocess.run(["sh", "-c", gs.discard(dest, new)], cwd=tmp_path)
    assert done.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_receive_text() -> None:
    assert gs.receive(PurePosixPath("/root/my repo"), 0o750) == (
        "set -eu\n"
        "dest='/root/my repo'\n"
        "parent=/root\n"
        "prefix='/root/.my repo.banger-new.'\n"
        "mode=0750\n"
        'mkdir -p -- "$parent"\n'
        'for stale in "$prefix"*; do\n'
        '  if [ -d "$stale" ] && [ ! -L "$stale" ]; then rm -rf -- "$stale"; fi\n'
        "done\n"
        'tmp=$(mktemp -d -- "${prefix}XXXXXX")\n'
        "trap 'rm -rf -- \"$tmp\"' EXIT\n"
        'tar -x -p --no-same-owner -f - -C "$tmp"\n'
        'chmod -- "$mode" "$tmp"\n'
        "trap - EXIT\n"
        'printf "%s\\n" "$tmp"\n'
    )


def test_swap_text() -> None:
    assert gs.swap(PurePosixPath("/root/r"), "/root/.r.banger-new.Ab12Cd") == (
        "set -eu\n"
        "dest=/root/r\n"
        "new=/root/.r.banger-new.Ab12Cd\n"
        "template=/root/.r.banger-old.XXXXXX\n"
        'aside=""\n'
        'if [ -e "$dest" ] || [ -L "$dest" ]; then\n'
        '  aside=$(mktemp -d -- "$template")\n'
        '  mv -- "$dest" "$aside/old"\n'
        "fi\n"
        'mv -- "$new" "$dest"\n'
        'if [ -n "$aside" ]; then rm -rf -- "$aside"; fi\n'
    )


@pytest.mark.parametrize(
    "new_tree",
    [
        "/root/elsewhere",
        "/root/.r.banger-new.",
        "/root/.r.banger-new.x/../../etc",
        "/root/.r.banger-new.x/sub",
        "/root/.r.banger-old.abc",
        "relative",
    ],
)
def test_swap_only_accepts_a_received_tree(new_tree: str) -> None:
    with pytest.raises(InvalidArgument):
        gs.swap(PurePosixPath("/root/r"), new_tree)


@pytest.mark.parametrize("dest", ["relative", "/", "/root/../etc", "/root/a\nb"])
def test_bad_destinations_are_refused(dest: str) -> None:
    with pytest.raises(InvalidArgument):
        gs.receive(PurePosixPath(dest), 0o755)


def test_guest_destination() -> None:
    repo = Path("/home/u/src/proj")
    assert guest_destination(repo) == PurePosixPath("/root/proj")
    assert guest_destination(repo, "w/p") == PurePosixPath("/root/w/p")
    assert guest_destination(repo, "/srv/p") == PurePosixPath("/srv/p")
    assert guest_destination(repo, guest_home=PurePosixPath("/tmp/g")) == PurePosixPath(
        "/tmp/g/proj"
    )
    for bad in ("/", "/root", "../x", "/root/a\tb"):
        with pytest.raises(InvalidArgument, match="workspace path"):
            guest_destination(repo, bad)


def test_bundle_paths_are_checked() -> None:
    with pytest.raises(InvalidArgument, match="not an export bundle"):
        gs.export_send("/etc/shadow", PurePosixPath("/root/r"))


def test_sh_command_round_trips_through_a_shell() -> None:
    script = "printf '%s|' \"$0\" it\\'s"
    out = subprocess.run(["sh", "-c", sh_command(script)], capture_output=True, text=True)
    assert out.stdout == "sh|it's|"


def test_receive_swap_for_real(tmp_path: Path) -> None:
    """The scripts run by the local sh (as root: same tar, same coreutils as the guest)."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/f").write_text("new")
    (src / "l").symlink_to("d/f")
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("d", "d/f", "l"):
            tar.add(src / name, arcname=name, recursive=False)
    dest = tmp_path / "guest" / "r"
    dest.mkdir(parents=True)
    (dest / "old").write_text("old")
    received = sh(gs.receive(PurePosixPath(dest), 0o700), archive.read_bytes())
    assert received.returncode == 0, received.stderr
    new_tree = received.stdout.decode().strip()
    assert (dest / "old").exists()  # nothing replaced yet
    swapped = sh(gs.swap(PurePosixPath(dest), new_tree))
    assert swapped.returncode == 0, swapped.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["d", "l"]
    assert (dest / "l").is_symlink() and (dest / "l").read_text() == "new"
    assert dest.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in dest.parent.iterdir()] == ["r"]
    # a corrupt stream: tar fails, its temporary tree is removed, dest untouched
    bad = sh(gs.receive(PurePosixPath(dest), 0o755), b"not a tar" * 200)
    assert bad.returncode != 0
    assert [p.name for p in dest.parent.iterdir()] == ["r"]


def test_record_state_takes_only_a_commit_id() -> None:
    with pytest.raises(InvalidArgument, match="not a commit id"):
        gs.record_state(HOSTILE, "HEAD; rm -rf /")


def test_the_refusal_names_commits_and_files_on_one_line() -> None:
    from banger.workspace.guard import parse_guest_work, refusal

    dest = PurePosixPath("/root/repo")
    assert parse_guest_work("absent\n").state == "absent"
    assert refusal("vm", dest, parse_guest_work("absent\n")) is None
    assert refusal("vm", dest, parse_guest_work("end\n")) is None
    unrecorded = refusal("vm", dest, parse_guest_work("unrecorded\n"))
    assert unrecorded is not None and "not a copy banger prepared" in unrecorded.message
    out = "".join(f"commit abc{i} subject {i}\n" for i in range(7)) + "file a b.txt\nend\n"
    problem = refusal("vm", dest, parse_guest_work(out))
    assert problem is not None
    assert problem.message == (
        "workspace prepare: vm:/root/repo has work that was never exported: 7 commits "
        "(abc0 subject 0, abc1 subject 1, abc2 subject 2, abc3 subject 3, abc4 subject 4, …); "
        "1 changed file (a b.txt)"
    )
    assert problem.exit_code == 4
