"""Workspaces, export, [[file_sync]] and git identity against real guests, through the CLI.

One installation (namespace, owner user, helper, daemon) and one fast-init VM
(``ws``) are shared by the module. Before the daemon starts, the owner's home
gets a global git identity, the files ``[[file_sync]]`` names and the config;
repositories are made by the owner in their home, as a user would.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from banger.errors import BangerError, Conflict
from banger.workspace.guest_scripts import unexported_work
from tests.e2e.harness import Banger, banger_env, seed_artifacts
from tests.e2e.leftovers import assert_nothing_left, vm_kept
from tests.image_cache import cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.support import VENV_BIN, assert_refusal, needs_root, wait_until

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

VM = "ws"
NAME = "Ada Owner"
EMAIL = "ada@example.test"


@dataclass
class Env:
    b: Banger
    home: Path
    #: stderr of the `vm create --start` that provisioned the shared VM
    create_stderr: str


def owner(b: Banger, *argv: str, cwd: Path | None = None, input: str | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``argv`` as the owner user (HOME = the owner's home), optionally in ``cwd``."""
    where = ["env", "-C", str(cwd)] if cwd is not None else []
    result = subprocess.run(
        b.as_owner([*where, *argv]),
        capture_output=True,
        text=True,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}: {result.stderr}{result.stdout}")
    return result


def banger_in(b: Banger, cwd: Path, *args: str, check: bool = True,
              input: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The real CLI as the owner, run from ``cwd`` (a repository)."""
    return owner(b, str(VENV_BIN / "banger"), *args, cwd=cwd, check=check, input=input)


def git(b: Banger, repo: Path, *args: str) -> str:
    return owner(b, "git", *args, cwd=repo).stdout


def guest(b: Banger, script: str, vm: str = VM, check: bool = True) -> str:
    return b.banger("vm", "ssh", vm, "--", "sh", "-c", script, check=check).stdout


def sh(b: Banger, script: str) -> None:
    owner(b, "sh", "-ec", script)


def _write_owner_home(b: Banger, home: Path) -> None:
    sh(
        b,
        f"""
        git config --global user.name '{NAME}'
        git config --global user.email '{EMAIL}'
        git config --global init.defaultBranch main
        cd {home}
        printf 'machine example.test login ada\\n' > .netrc-test
        chmod 0644 .netrc-test
        mkdir -p bin && printf '#!/bin/sh\\necho tool\\n' > bin/tool && chmod 0700 bin/tool
        mkdir -p dots/sub
        printf 'a\\n' > dots/a.conf && chmod 0640 dots/a.conf
        printf 'b\\n' > dots/sub/b.txt && chmod 0604 dots/sub/b.txt
        chmod 0750 dots/sub
        ln -s /etc/hostname dots/link-file
        ln -s /etc dots/sub/link-dir
        """,
    )
    config = b.home / "config"
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "config.toml").write_text(
        f"""
[[file_sync]]
host = "~/.netrc-test"
guest = "~/.netrc"

[[file_sync]]
host = "~/bin/tool"
guest = "/root/.local/bin/tool"
mode = "0755"

[[file_sync]]
host = "{home}/dots"
guest = "~/.dots"

[[file_sync]]
host = "~/nope"
guest = "~/nope"
"""
    )
    for path in (config, config / "config.toml"):
        os.chown(path, b.user.uid, b.user.gid)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with banger_env(seed=False) as b:
        home = b.user.home
        _write_owner_home(b, home)  # before the daemon starts: it reads the config once
        seed_artifacts(b, cached_debian_kernel(), cached_debian_image())
        created = b.banger("vm", "create", "--name", VM, "--init", "fast", "--start")
        yield Env(b, home, created.stderr)


# -- file_sync and git identity -------------------------------------------------------


def test_file_sync_lands_with_modes_and_skips_what_it_must(env: Env) -> None:
    b = env.b
    stats = guest(
        b,
        "cd /root && stat -c '%a %U:%G %n' .netrc .local/bin/tool .dots .dots/a.conf "
        ".dots/sub .dots/sub/b.txt",
    ).splitlines()
    assert stats == [
        "600 root:root .netrc",  # default mode, whatever the host file's
        "755 root:root .local/bin/tool",  # the entry's mode
        "755 root:root .dots",  # directories keep their own permissions
        "640 root:root .dots/a.conf",
        "750 root:root .dots/sub",
        "604 root:root .dots/sub/b.txt",
    ], stats
    assert guest(b, "cat /root/.netrc") == "machine example.test login ada\n"
    assert guest(b, "/root/.local/bin/tool") == "tool\n"
    # nested symlinks pointing outside are not in the guest at all, nor is the missing path
    absent = "for p in .dots/link-file .dots/sub/link-dir nope; do "
    absent += 'if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done'
    assert guest(b, f"cd /root && {absent}") == ""
    # ... and the CLI said so, one warning each
    err = env.create_stderr
    outside = "it points outside the synced tree"
    assert f"warning: file_sync: skipped symlink ~/dots/link-file: {outside}" in err, err
    assert f"warning: file_sync: skipped symlink ~/dots/sub/link-dir: {outside}" in err
    assert "warning: file_sync: skipped ~/nope: not found" in err


def test_git_identity_merged_and_everything_reapplied_at_start(env: Env) -> None:
    b = env.b
    assert guest(b, "git config --global user.name") == f"{NAME}\n"
    assert guest(b, "git config --global user.email") == f"{EMAIL}\n"
    # keys of the guest's own .gitconfig survive; file_sync overwrites its files at start
    guest(b, "git config --global alias.co checkout && echo changed > /root/.netrc")
    sh(b, "git config --global user.email ada@new.example.test")
    try:
        restarted = b.banger("vm", "restart", VM)
    finally:
        sh(b, f"git config --global user.email {EMAIL}")
    assert "warning: file_sync: skipped ~/nope: not found" in restarted.stderr
    assert guest(b, "git config --global user.email") == "ada@new.example.test\n"
    assert guest(b, "git config --global user.name") == f"{NAME}\n"
    assert guest(b, "git config --global alias.co") == "checkout\n"
    assert guest(b, "cat /root/.netrc") == "machine example.test login ada\n"


def test_no_host_identity_is_a_notice(env: Env) -> None:
    b = env.b
    gitconfig = env.home / ".gitconfig"
    saved = gitconfig.read_bytes()
    gitconfig.unlink()
    try:
        created = b.banger("vm", "create", "--name", "noid", "--init", "fast")
    finally:
        gitconfig.write_bytes(saved)
        os.chown(gitconfig, b.user.uid, b.user.gid)
    try:
        assert "note: git identity: none on the host" in created.stderr, created.stderr
    finally:
        b.banger("vm", "rm", "noid")


def test_an_unreadable_synced_file_fails_the_create_and_leaves_nothing(env: Env) -> None:
    b = env.b
    netrc = env.home / ".netrc-test"
    netrc.chmod(0)
    try:
        result = b.banger("vm", "create", "--name", "unreadable", "--init", "fast", check=False)
    finally:
        netrc.chmod(0o644)
    # A failed operation, not bad input: exit 1, still one error line and its hint.
    said = assert_refusal(
        result, BangerError.exit_code, "failed at stage prepare_work_disk", hint="permissions"
    )
    assert "file_sync: cannot read ~/.netrc-test: Permission denied" in said
    assert_nothing_left(b, [vm_kept(b, VM)])


def _promote_leaves_out_what_banger_synced(b: Banger) -> None:
    """Issue #21 item 2, on the stopped shared VM: synced credentials stay out of images."""
    from banger.disk import ext4

    promoted = b.banger("image", "promote", VM, "ws-plain", "--with-work-disk")
    assert "left out of the work seed what file_sync and git identity wrote:" in promoted.stderr
    assert "~/.netrc" in promoted.stderr, promoted.stderr
    b.banger("image", "promote", VM, "ws-all", "--with-work-disk", "--include-synced")
    try:
        plain = Path(
            json.loads(b.banger("image", "show", "ws-plain", "--json").stdout)["work_seed"]
        )
        kept = Path(json.loads(b.banger("image", "show", "ws-all", "--json").stdout)["work_seed"])
        for synced in ("/.netrc", "/.local/bin/tool", "/.dots/a.conf", "/.gitconfig"):
            assert not ext4.exists(plain, synced), synced
            assert ext4.exists(kept, synced), synced
        for seed in (plain, kept):
            assert ext4.read_file(seed, "/.mine") == b"mine\n"  # the guest's own work stays
            assert not ext4.exists(seed, "/.banger/synced.json")
    finally:
        b.banger("image", "rm", "ws-plain", "ws-all", check=False)


def test_a_config_edit_applies_at_the_next_start_without_a_daemon_restart(env: Env) -> None:
    """Issue #21 item 1: bangerd re-reads config.toml; a removed entry's files leave the disk."""
    b = env.b
    config = b.home / "config" / "config.toml"
    saved = config.read_text()
    pid = (b.runtime_dir / "bangerd.pid").read_text()
    sh(b, f"printf 'fresh\\n' > {env.home}/.fresh-test")
    # the ~/.netrc-test entry goes, a new one comes
    edited = saved.replace(
        'host = "~/.netrc-test"\nguest = "~/.netrc"', 'host = "~/.fresh-test"\nguest = "~/.fresh"'
    )
    assert edited != saved
    config.write_text(edited)
    try:
        guest(b, "echo mine > /root/.mine")
        b.banger("vm", "stop", VM)
        _promote_leaves_out_what_banger_synced(b)
        b.banger("vm", "start", VM)
        assert guest(b, "cat /root/.fresh") == "fresh\n"
        assert guest(b, "test -e /root/.netrc || echo gone") == "gone\n"  # banger wrote it
        assert guest(b, "cat /root/.mine") == "mine\n"  # the guest's own file stays
        assert (b.runtime_dir / "bangerd.pid").read_text() == pid  # the same bangerd
    finally:
        config.write_text(saved)


def test_names_a_disk_image_cannot_hold_arrive_over_ssh(env: Env) -> None:
    """Issue #21 item 5: a synced name with a quote, a tab or a newline is not dropped."""
    b = env.b
    sh(
        b,
        f"""cd {env.home}/dots && printf 'q\\n' > 'sub/q"uote' && mkdir -p 'tab\tdir' \
        && printf 'in\\n' > 'tab\tdir/in' && printf 'nl\\n' > "$(printf 'new\\nline')" """,
    )
    restarted = b.banger("vm", "restart", VM)
    assert "has a name a disk image cannot hold; copied over SSH" in restarted.stderr, restarted
    assert guest(b, "cat '/root/.dots/sub/q\"uote'") == "q\n"
    assert guest(b, "cat /root/.dots/tab*dir/in") == "in\n"
    assert guest(b, "cat /root/.dots/new?line") == "nl\n"
    assert guest(b, "stat -c '%a %U' /root/.dots/tab*dir") == "755 root\n"


# -- workspaces -------------------------------------------------------------------


def make_repo(b: Banger, path: Path) -> Path:
    """Several commits, a second branch, untracked, ignored, binary, spaces, symlink, +x."""
    sh(
        b,
        f"""
        mkdir -p '{path}' && cd '{path}'
        git init -q
        printf 'hello\\n' > README.md
        printf 'build.log\\n' > .gitignore
        git add . && git commit -q -m first
        printf '#!/bin/sh\\necho run\\n' > run.sh && chmod 0755 run.sh
        head -c 4096 /dev/urandom > data.bin && printf '\\000\\377' >> data.bin
        mkdir -p 'dir with space' && printf 's\\n' > 'dir with space/file with space.txt'
        ln -s README.md link
        git add . && git commit -q -m second
        git checkout -q -b feature && printf 'f\\n' > feature.txt && git add feature.txt
        git commit -q -m 'on feature' && git checkout -q main
        printf 'third\\n' >> README.md && git commit -q -am third
        printf 'untracked\\n' > notes.txt
        printf 'ignored\\n' > build.log
        """,
    )
    return path


EXPECTED_TREE = sorted(
    [
        ".gitignore",
        "README.md",
        "data.bin",
        "dir with space",
        "dir with space/file with space.txt",
        "link",
        "notes.txt",
        "run.sh",
    ]
)


def guest_tree(b: Banger, dest: str) -> list[str]:
    out = guest(b, f"cd '{dest}' && find . -path ./.git -prune -o -mindepth 1 -print")
    return sorted(line.removeprefix("./") for line in out.splitlines())


@pytest.fixture(scope="module")
def repo(env: Env) -> Path:
    return make_repo(env.b, env.home / "proj")


def test_prepare_copies_exactly_the_repository(env: Env, repo: Path) -> None:
    b = env.b
    result = banger_in(b, repo, "workspace", "prepare", VM, "--json")  # PATH: the cwd
    data = json.loads(result.stdout)
    assert data["dest"] == "/root/proj" and data["repo"] == str(repo)
    assert guest_tree(b, "/root/proj") == EXPECTED_TREE
    q = "cd /root/proj && "
    assert guest(b, q + "git log --format=%H main") == git(b, repo, "log", "--format=%H", "main")
    assert guest(b, q + "git log --format=%H feature") == git(
        b, repo, "log", "--format=%H", "feature"
    )
    assert guest(b, q + "git branch --show-current") == "main\n"
    assert guest(b, q + "git status --porcelain") == "?? notes.txt\n"
    assert guest(b, q + "stat -c '%a' run.sh") == "755\n"
    assert guest(b, q + "readlink link") == "README.md\n"
    host_sum = owner(b, "sha256sum", "data.bin", cwd=repo).stdout
    assert guest(b, q + "sha256sum data.bin") == host_sum
    banger_in(b, repo, "workspace", "prepare", VM)  # nothing new in the guest: replaced
    # work made in the guest is not thrown away silently (issue #21 item 4) ...
    guest(b, "cd /root/proj && touch stray && git -c user.name=G -c user.email=g@x commit -q "
          "--allow-empty -m 'guest only'")  # fmt: skip
    refused = banger_in(b, repo, "workspace", "prepare", VM, check=False)
    assert refused.returncode == 4, refused
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, refused.stderr
    assert "workspace prepare: ws:/root/proj has work that was never exported" in error[0]
    assert "1 commit (" in error[0] and "guest only)" in error[0], error
    assert "1 changed file (stray)" in error[0], error
    assert guest(b, "ls /root/proj/stray") == "/root/proj/stray\n"
    # ... only with --force (a guest-only file goes away)
    banger_in(b, repo, "workspace", "prepare", VM, "--force")
    assert guest_tree(b, "/root/proj") == EXPECTED_TREE


def test_export_brings_commits_and_uncommitted_work_back_as_a_branch(env: Env, repo: Path) -> None:
    b = env.b
    banger_in(b, repo, "workspace", "prepare", VM)
    before = {
        "head": git(b, repo, "rev-parse", "HEAD"),
        "branch": git(b, repo, "branch", "--show-current"),
        "status": git(b, repo, "status", "--porcelain"),
        "readme": (repo / "README.md").read_text(),
    }
    guest(
        b,
        "cd /root/proj && printf 'guest\\n' >> README.md && git commit -q -am 'guest edit' "
        "&& printf 'echo more\\n' >> run.sh && printf 'new\\n' > new.txt",
    )
    exported = banger_in(b, repo, "workspace", "export", VM)
    assert "branch banger/ws" in exported.stdout and "2 commits" in exported.stdout, exported
    subjects = git(b, repo, "log", "--format=%s", "-2", "banger/ws").splitlines()
    assert subjects[1] == "guest edit"
    assert subjects[0].startswith("banger: uncommitted changes from ws")
    assert git(b, repo, "show", "banger/ws:new.txt") == "new\n"
    assert git(b, repo, "show", "banger/ws:run.sh").endswith("echo more\n")
    assert git(b, repo, "show", "banger/ws~1:README.md").endswith("guest\n")
    changed = git(b, repo, "diff", "--name-only", "main", "banger/ws").split()
    assert sorted(changed) == ["README.md", "new.txt", "notes.txt", "run.sh"]
    # the user's working tree, index and current branch are exactly as they were
    assert git(b, repo, "rev-parse", "HEAD") == before["head"]
    assert git(b, repo, "branch", "--show-current") == before["branch"]
    assert git(b, repo, "status", "--porcelain") == before["status"]
    assert (repo / "README.md").read_text() == before["readme"]
    assert not (repo / "new.txt").exists()

    again = banger_in(b, repo, "workspace", "export", VM, check=False)
    assert_refusal(again, Conflict.exit_code, "branch banger/ws already exists", hint="--force")
    forced = banger_in(b, repo, "workspace", "export", VM, "--force", "--json")
    assert json.loads(forced.stdout)["branch"] == "banger/ws"


def test_concurrent_prepares_of_one_vm_never_interleave(env: Env) -> None:
    b = env.b
    trees = {}
    for name in ("alpha", "beta"):
        path = env.home / name
        sh(
            b,
            f"""
            mkdir -p {path} && cd {path} && git init -q
            for i in $(seq 1 300); do printf '{name} %s\\n' $i > {name}-$i.txt; done
            head -c 16M /dev/urandom > {name}-big.bin  # transfers long enough to overlap
            git add . && git commit -q -m {name}
            """,
        )
        trees[name] = sorted([f"{name}-big.bin", *(f"{name}-{i}.txt" for i in range(1, 301))])
    banger = str(VENV_BIN / "banger")
    procs = [
        subprocess.Popen(
            b.as_owner([banger, "workspace", "prepare", VM, str(env.home / n), "--dest", "shared"]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for n in ("alpha", "beta")
    ]
    outcomes = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    for code, out, err in outcomes:
        assert code == 0, (out, err)
    tree = guest_tree(b, "/root/shared")
    assert tree in (trees["alpha"], trees["beta"]), tree[:5]
    assert guest(b, "ls -A /root | grep -c banger-new || true") == "0\n"
    # serialised: one prepare connected only after the other had its result
    windows = sorted(transfer_windows(b)[-2:])
    assert len(windows) == 2 and windows[0][1] <= windows[1][0], windows


def transfer_windows(b: Banger) -> list[tuple[str, str]]:
    """(connect stage, result event) times of each workspace.prepare, oldest first."""
    db_path = f"file:{b.state_dir / 'banger.db'}?mode=ro"
    with sqlite3.connect(db_path, uri=True) as db:
        rows = db.execute(
            "SELECT o.id, o.created_at,"
            " (SELECT at FROM op_events e WHERE e.op_id = o.id AND e.kind = 'stage'"
            "  AND e.stage = 'connect'),"
            " (SELECT at FROM op_events e WHERE e.op_id = o.id AND e.kind = 'result')"
            " FROM operations o WHERE o.kind = 'workspace.prepare' AND o.state = 'succeeded'"
            " ORDER BY o.created_at"
        ).fetchall()
    return [(connect, result) for _, _, connect, result in rows]


def test_vm_run_in_a_repository_starts_in_its_copy(env: Env, repo: Path) -> None:
    b = env.b
    shell = banger_in(b, repo, "vm", "run", "--init", "fast", "--rm", input="pwd; ls\n")
    lines = shell.stdout.splitlines()
    assert lines[0] == "/root/proj", shell
    assert "README.md" in lines and "build.log" not in lines
    plain = banger_in(
        b, repo, "vm", "run", "--init", "fast", "--rm", "--no-workspace", "--",
        "sh", "-c", "pwd; ls /root/proj 2>/dev/null || echo absent",
    )  # fmt: skip
    assert plain.stdout == "/root\nabsent\n", plain


def test_vm_run_command_runs_in_the_repository(env: Env, repo: Path) -> None:
    b = env.b
    result = banger_in(b, repo, "vm", "run", "--init", "fast", "--rm", "--", "git", "status", "-s")
    assert result.stdout == "?? notes.txt\n", result


def workspace_events(b: Banger, vm: str) -> list[dict[str, object]]:
    """The data of the ``workspace`` events of ``vm``'s create operations."""
    db_path = f"file:{b.state_dir / 'banger.db'}?mode=ro"
    with sqlite3.connect(db_path, uri=True) as db:
        rows = db.execute(
            "SELECT e.data FROM op_events e JOIN operations o ON o.id = e.op_id"
            " WHERE o.kind = 'vm.create' AND o.target = ? AND e.kind = 'workspace'",
            (vm,),
        ).fetchall()
    return [json.loads(data) for (data,) in rows]


def test_vm_run_writes_the_workspace_before_boot_and_export_works(env: Env, repo: Path) -> None:
    """Issue #21 item 19: the copy is on the work disk before the guest boots (no SSH copy),
    as prepare makes it (content, modes, owner, links, .git); guard and export as after one."""
    b = env.b
    name = "wsdisk"
    files = ["run.sh", "README.md", "dir with space", "dir with space/file with space.txt",
             ".git", ".git/HEAD", "notes.txt"]  # fmt: skip
    quoted = " ".join(f"'{f}'" for f in files)
    script = (f"pwd; stat -c '%a %u:%g %n' {quoted}; readlink link; sha256sum data.bin;"
              " git status --porcelain; git log --format=%H main")  # fmt: skip
    run = banger_in(b, repo, "vm", "run", "--init", "fast", "--name", name, "--",
                    "sh", "-c", script)  # fmt: skip
    try:
        [event] = workspace_events(b, name)
        assert event["via"] == "disk" and event["dest"] == "/root/proj", event
        modes = [f"{(repo / f).lstat().st_mode & 0o7777:o} 0:0 {f}" for f in files]
        host_sum = owner(b, "sha256sum", "data.bin", cwd=repo).stdout
        assert run.stdout == "".join(
            [
                "/root/proj\n",
                *(line + "\n" for line in modes),
                "README.md\n",
                host_sum,
                "?? notes.txt\n",
                git(b, repo, "log", "--format=%H", "main"),
            ]
        ), run
        # the recorded state is what the guest computes: the guard sees nothing unexported
        assert guest(b, unexported_work(PurePosixPath("/root/proj")), vm=name) == "end\n"
        commit = "git -c user.name=G -c user.email=g@x commit -q -am 'on the disk copy'"
        guest(b, f"cd /root/proj && printf 'guest\\n' >> README.md && {commit}", vm=name)
        # a prepare after a guest commit is refused, as after an SSH prepare; export works
        refused = banger_in(b, repo, "workspace", "prepare", name, check=False)
        assert refused.returncode == 4 and "on the disk copy" in refused.stderr, refused
        exported = banger_in(b, repo, "workspace", "export", name, "--branch", "from-disk")
        # the guest commit, then the untracked notes.txt as the uncommitted-changes commit
        assert "2 commits" in exported.stdout, exported
        subjects = git(b, repo, "log", "--format=%s", "-2", "from-disk").splitlines()
        assert subjects[1] == "on the disk copy", subjects
    finally:
        b.banger("vm", "rm", "--force", name, check=False)


def test_a_name_debugfs_cannot_write_goes_over_ssh_after_boot(env: Env) -> None:
    """A workspace the disk image cannot hold (a quote in a name) still arrives, over SSH."""
    b = env.b
    path = env.home / "oddnames"
    sh(b, f"""mkdir -p {path} && cd {path} && git init -q && printf 'q\\n' > 'say "hi"'
           git add . && git commit -q -m odd""")  # fmt: skip
    name = "wsodd"
    created = banger_in(b, path, "vm", "create", "--name", name, "--init", "fast", "--start",
                        "--workspace", ".")  # fmt: skip
    try:
        assert "the workspace is copied over SSH after boot" in created.stderr, created
        [event] = workspace_events(b, name)
        assert event["via"] == "ssh" and event["dest"] == "/root/oddnames", event
        assert guest(b, "cat '/root/oddnames/say \"hi\"'", vm=name) == "q\n"
    finally:
        b.banger("vm", "rm", "--force", name, check=False)


def test_a_submodule_arrives_with_its_files_and_export_says_what_it_leaves(env: Env) -> None:
    """Issue #21 item 7, in a real guest."""
    b = env.b
    lib, top = env.home / "sublib", env.home / "withsub"
    sh(
        b,
        f"""
        mkdir -p {lib} {top} && cd {lib} && git init -q && echo lib > lib.txt
        git add . && git commit -qm lib
        cd {top} && git init -q && echo top > top.txt && git add . && git commit -qm top
        git -c protocol.file.allow=always submodule add -q {lib} vendor/lib
        git commit -qm 'add lib'
        """,
    )
    banger_in(b, top, "workspace", "prepare", VM)
    assert guest(b, "cat /root/withsub/vendor/lib/lib.txt") == "lib\n"
    assert guest(b, "cd /root/withsub/vendor/lib && git log --format=%s") == "lib\n"
    exported = banger_in(b, top, "workspace", "export", VM, "--branch", "subcheck")
    assert "submodules: commits made inside them are not exported" in exported.stderr, exported


def test_vm_rm_force_cancels_a_running_transfer(env: Env) -> None:
    """Issue #21 item 18: a transfer holds the VM's workspace lock, not its lifecycle
    lock; `vm rm` refuses while one runs, `vm rm --force` cancels it. Runs last: it
    removes the shared VM."""
    b = env.b
    big = make_repo(b, env.home / "big")
    # large enough that the transfer (tar over SSH into an emulated CPU) is still
    # running when the rm comes: the wait below is for it to have begun
    sh(b, f"cd {big} && head -c 512M /dev/zero > big.bin && git add big.bin && git commit -qm big")
    prepare = subprocess.Popen(
        b.as_owner(["env", "-C", str(big), str(VENV_BIN / "banger"), "workspace", "prepare", VM]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:

        def transferring() -> bool:
            ops = json.loads(b.banger("ops", "list", "--json").stdout)
            return any(o["kind"] == "workspace.prepare" and o["stage"] == "transfer" for o in ops)

        wait_until(transferring, 300, "the prepare to reach its transfer stage")
        refused = b.banger("vm", "rm", VM, check=False)
        assert refused.returncode == 4, refused
        assert "has a workspace transfer running" in refused.stderr, refused.stderr
        assert "--force" in refused.stderr
        removed = b.banger("vm", "rm", "--force", VM)
        assert "cancelled 1 workspace transfer" in removed.stderr, removed.stderr
        _, err = prepare.communicate(timeout=300)
    finally:
        if prepare.poll() is None:
            prepare.kill()
            prepare.wait()
    assert prepare.returncode != 0
    assert "VM ws is being removed" in err, err
    assert json.loads(b.banger("vm", "list", "--json").stdout) == []
