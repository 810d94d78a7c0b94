"""Every shell snippet the workspace code runs in the guest, in one place.

POSIX ``sh`` (Debian's dash), ``set -eu``; each value is assigned once at the
top with :func:`shlex.quote` and used as ``"$var"`` below, so no value is ever
parsed as shell. Options end with ``--`` wherever a path follows. The texts are
pure functions of their arguments and unit-tested as text.

Prepare is two steps on purpose: :func:`receive` unpacks the stream into a
fresh temporary directory next to the destination, and :func:`swap` moves it
into place only after the host saw the whole stream go out. A transfer cut
short therefore never replaces the guest copy with a partial tree.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

from banger.errors import InvalidArgument

#: The ref the export snapshot is kept under while its bundle is made.
EXPORT_REF = "refs/banger/export"
NEW_SUFFIX = ".banger-new."
OLD_SUFFIX = ".banger-old."


def _assign(**values: str) -> str:
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())


def _check_path(path: PurePosixPath, what: str) -> str:
    text = str(path)
    if not path.is_absolute() or text == "/" or ".." in path.parts:
        raise InvalidArgument(f"{what}: {text!r} must be an absolute guest path below /")
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise InvalidArgument(f"{what}: {text!r} contains control characters")
    return text


def temp_prefix(dest: PurePosixPath, suffix: str) -> str:
    """Where the temporary trees of ``dest`` live: hidden siblings, same filesystem."""
    return str(dest.parent / f".{dest.name}{suffix}")


def receive(dest: PurePosixPath, root_mode: int) -> str:
    """Unpack a tar from stdin into a new sibling of ``dest``; print its path.

    Owner root (``--no-same-owner`` as root), modes as in the archive (``-p``),
    symlinks as symlinks. The temporary tree is removed if tar fails.
    """
    target = _check_path(dest, "workspace path")
    if not 0 <= root_mode <= 0o7777:
        raise InvalidArgument(f"mode {root_mode:#o} is not a permission mode")
    return (
        "set -eu\n"
        + _assign(
            dest=target,
            parent=str(dest.parent),
            prefix=temp_prefix(dest, NEW_SUFFIX),
            mode=f"{root_mode:04o}",
        )
        + 'mkdir -p -- "$parent"\n'
        # leftovers of a transfer cut short (the host died mid-stream); prepares of one
        # VM are serialised by the caller, so no other transfer is using them
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


def _check_new_tree(dest: PurePosixPath, new_tree: str) -> str:
    """``new_tree`` must be what :func:`receive` makes: a hidden sibling of ``dest``."""
    target = _check_path(dest, "workspace path")
    new = _check_path(PurePosixPath(new_tree), "received tree")
    prefix = temp_prefix(dest, NEW_SUFFIX)
    rest = new[len(prefix) :]
    if new != new_tree or not new.startswith(prefix) or not rest or "/" in rest:
        raise InvalidArgument(f"received tree {new_tree!r} is not a temporary sibling of {target}")
    return new


def swap(dest: PurePosixPath, new_tree: str) -> str:
    """Put ``new_tree`` (from :func:`receive`) at ``dest``; the old copy is moved aside first.

    ``mv old aside; mv new dest; rm -rf aside``: each ``mv`` is one rename on
    the same filesystem, so ``dest`` is the old tree or the new one, never a mix.
    """
    target = _check_path(dest, "workspace path")
    new = _check_new_tree(dest, new_tree)
    return (
        "set -eu\n"
        + _assign(dest=target, new=new, template=temp_prefix(dest, OLD_SUFFIX) + "XXXXXX")
        + 'aside=""\n'
        'if [ -e "$dest" ] || [ -L "$dest" ]; then\n'
        '  aside=$(mktemp -d -- "$template")\n'
        '  mv -- "$dest" "$aside/old"\n'
        "fi\n"
        'mv -- "$new" "$dest"\n'
        'if [ -n "$aside" ]; then rm -rf -- "$aside"; fi\n'
    )


def discard(dest: PurePosixPath, new_tree: str) -> str:
    """Remove a received tree that will not be swapped in (the stream was cut short)."""
    new = _check_new_tree(dest, new_tree)
    return "set -eu\n" + _assign(new=new) + 'rm -rf -- "$new"\n'


def export_snapshot(repo: PurePosixPath, message: str, fallback_name: str) -> str:
    """Snapshot the guest repository and bundle what the host lacks.

    Uncommitted changes (tracked edits, new files, deletions; ignored files
    excluded) become one extra commit on top of ``HEAD``, built on a temporary
    index (``GIT_INDEX_FILE``) with ``commit-tree``, so the guest's own index,
    working tree and branch are left exactly as they are. The result is kept
    under :data:`EXPORT_REF`. stdin: the commit ids the host already has, one a
    line; those the guest knows are left out of the bundle.

    Prints one line: ``<commit> <1 if a snapshot commit was made, else 0> <bundle
    path, or - when the host already has the commit>``.
    """
    path = _check_path(repo, "workspace path")
    if "\x00" in message:
        raise InvalidArgument("commit message contains a NUL byte")
    return (
        "set -eu\n"
        + _assign(
            repo=path,
            msg=message,
            fallback_name=fallback_name,
            ref=EXPORT_REF,
        )
        + 'cd -- "$repo"\n'
        "gitdir=$(git rev-parse --absolute-git-dir)\n"
        "if ! head=$(git rev-parse --verify -q 'HEAD^{commit}'); then\n"
        '  echo "banger: $repo has no commit to export from" >&2; exit 3\n'
        "fi\n"
        'known=$(mktemp -- "$gitdir/banger-known.XXXXXX")\n'
        'negs=$(mktemp -- "$gitdir/banger-negs.XXXXXX")\n'
        'idx=$(mktemp -- "$gitdir/banger-index.XXXXXX")\n'
        'trap \'rm -f -- "$known" "$negs" "$idx"\' EXIT\n'
        'cat > "$known"\n'
        # a copy of the real index keeps its stat cache (fast); git cannot read an empty file
        'rm -f -- "$idx"\n'
        'if [ -f "$gitdir/index" ]; then cp -- "$gitdir/index" "$idx"; '
        'else GIT_INDEX_FILE=$idx git read-tree "$head"; fi\n'
        "GIT_INDEX_FILE=$idx git add -A\n"
        "tree=$(GIT_INDEX_FILE=$idx git write-tree)\n"
        'if [ "$tree" = "$(git rev-parse "$head^{tree}")" ]; then\n'
        "  commit=$head; snap=0\n"
        "else\n"
        # no identity in the guest must not lose the user's work
        "  if ! git var GIT_AUTHOR_IDENT >/dev/null 2>&1 || "
        "! git var GIT_COMMITTER_IDENT >/dev/null 2>&1; then\n"
        '    export GIT_AUTHOR_NAME="$fallback_name" GIT_COMMITTER_NAME="$fallback_name"\n'
        "    export GIT_AUTHOR_EMAIL=banger@localhost GIT_COMMITTER_EMAIL=banger@localhost\n"
        "  fi\n"
        '  commit=$(git commit-tree "$tree" -p "$head" -m "$msg"); snap=1\n'
        "fi\n"
        'git update-ref -m "banger export" "$ref" "$commit"\n'
        'if grep -qxF -- "$commit" "$known"; then\n'
        '  printf "%s %s -\\n" "$commit" "$snap"; exit 0\n'
        "fi\n"
        "git cat-file --batch-check='%(objectname) %(objecttype)' < \"$known\" "
        "| sed -n 's/^\\([0-9a-f]*\\) commit$/^\\1/p' > \"$negs\"\n"
        'bundle=$(mktemp -- "$gitdir/banger-export.XXXXXX")\n'
        'if ! git bundle create -q "$bundle" --stdin "$ref" < "$negs"; then\n'
        '  rm -f -- "$bundle"; exit 1\n'
        "fi\n"
        'printf "%s %s %s\\n" "$commit" "$snap" "$bundle"\n'
    )


def export_send(bundle: str, repo: PurePosixPath) -> str:
    """Write the bundle made by :func:`export_snapshot` to stdout."""
    return "set -eu\n" + _assign(bundle=_check_bundle(bundle, repo)) + 'cat -- "$bundle"\n'


def export_cleanup(bundle: str | None, repo: PurePosixPath) -> str:
    """Remove the bundle and the temporary export ref (best effort)."""
    path = _check_path(repo, "workspace path")
    lines = _assign(repo=path, ref=EXPORT_REF)
    if bundle is not None:
        lines += _assign(bundle=_check_bundle(bundle, repo)) + 'rm -f -- "$bundle"\n'
    return lines + 'cd -- "$repo" && git update-ref -d "$ref"\n'


def _check_bundle(bundle: str, repo: PurePosixPath) -> str:
    path = _check_path(PurePosixPath(bundle), "bundle")
    if PurePosixPath(path).name.startswith("banger-export.") and "\n" not in path:
        return path
    raise InvalidArgument(f"bundle: {bundle!r} is not an export bundle of {repo}")


#: In the guest copy's git directory: ``<HEAD> <tree>`` of the state the host has
#: (written after a prepare and after an export), so a re-prepare can tell work the
#: host never saw from what it sent.
STATE_RECORD = "banger.workspace"

# ``head`` and ``tree`` of the working tree as it is (tracked and untracked, ignored
# files excluded), on a temporary index: the guest's own index is left alone. A
# copy of the real index keeps its stat cache (fast); git cannot read an empty file.
_WORKTREE_STATE = (
    "gitdir=$(git rev-parse --absolute-git-dir)\n"
    'record="$gitdir/' + STATE_RECORD + '"\n'
    "head=$(git rev-parse --verify -q 'HEAD^{commit}') || head=none\n"
    'idx=$(mktemp -- "$gitdir/banger-index.XXXXXX")\n'
    'trap \'rm -f -- "$idx" "$idx.since" "$idx.dirty"\' EXIT\n'
    'rm -f -- "$idx"\n'
    'if [ -f "$gitdir/index" ]; then cp -- "$gitdir/index" "$idx"; fi\n'
    "GIT_INDEX_FILE=$idx git add -A\n"
    "tree=$(GIT_INDEX_FILE=$idx git write-tree)\n"
)


def record_state(repo: PurePosixPath, exported: str | None = None, snapshot: bool = False) -> str:
    """Remember the guest copy's state as the host's.

    After a prepare: the state as it is. After an export: the state that was
    exported (``exported``, the commit :func:`export_snapshot` printed; with
    ``snapshot`` its parent is ``HEAD`` and its tree the working files), not
    whatever the guest changed since.
    """
    path = _check_path(repo, "workspace path")
    if exported is None:
        state = _WORKTREE_STATE
    else:
        if not re.fullmatch(r"[0-9a-f]{40,64}", exported):
            raise InvalidArgument(f"exported commit {exported!r} is not a commit id")
        state = (
            "gitdir=$(git rev-parse --absolute-git-dir)\n"
            'record="$gitdir/'
            + STATE_RECORD
            + '"\n'
            + _assign(exported=exported)
            + ('head=$(git rev-parse "$exported^1")\n' if snapshot else "head=$exported\n")
            + 'tree=$(git rev-parse "$exported^{tree}")\n'
        )
    return (
        "set -eu\n"
        + _assign(repo=path)
        + 'cd -- "$repo"\n'
        + state
        + 'printf "%s %s\\n" "$head" "$tree" > "$record.tmp"\n'
        + 'mv -- "$record.tmp" "$record"\n'
    )


def unexported_work(dest: PurePosixPath) -> str:
    """What re-preparing ``dest`` would throw away; one line each:

    ``absent`` (nothing there), ``unrecorded`` (there, but not a copy banger
    prepared), or ``commit <short id> <subject>`` lines for commits made since
    the recorded state, ``file <path>`` lines for files changed since, then ``end``.
    """
    target = _check_path(dest, "workspace path")
    return (
        "set -eu\n"
        + _assign(dest=target)
        + 'if [ ! -e "$dest" ] && [ ! -L "$dest" ]; then echo absent; exit 0; fi\n'
        'if [ ! -d "$dest" ] || [ -L "$dest" ]; then echo unrecorded; exit 0; fi\n'
        'cd -- "$dest"\n'
        "if ! git rev-parse --absolute-git-dir >/dev/null 2>&1; then echo unrecorded; exit 0; fi\n"
        + _WORKTREE_STATE
        + 'if [ ! -f "$record" ]; then echo unrecorded; exit 0; fi\n'
        'read -r was_head was_tree < "$record" || { echo unrecorded; exit 0; }\n'
        'if [ "$head" != none ] && [ "$head" != "$was_head" ]; then\n'
        '  if [ "$was_head" != none ] && git cat-file -e "$was_head^{commit}" 2>/dev/null; then\n'
        '    git log --format=\'commit %h %s\' "$head" --not "$was_head" --\n'
        "  else\n"
        "    git log --format='commit %h %s' \"$head\" --\n"
        "  fi\n"
        "fi\n"
        # changed since the record and not what the new commits hold: uncommitted work
        'if [ "$tree" != "$was_tree" ]; then\n'
        '  if git cat-file -e "$was_tree^{tree}" 2>/dev/null; then\n'
        '    since=$(git diff --name-only "$was_tree" "$tree" -- | sort)\n'
        "  else\n"
        '    since=$(git ls-tree -r --name-only "$tree" | sort)\n'
        "  fi\n"
        '  if [ "$head" != none ]; then\n'
        '    dirty=$(git diff --name-only "$head^{tree}" "$tree" -- | sort)\n'
        "  else\n"
        "    dirty=$since\n"
        "  fi\n"
        '  printf "%s\\n" "$since" > "$idx.since"; printf "%s\\n" "$dirty" > "$idx.dirty"\n'
        '  comm -12 "$idx.since" "$idx.dirty" | sed -n "s/^./file &/p"\n'
        "fi\n"
        "echo end\n"
    )
