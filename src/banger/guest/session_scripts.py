"""Every piece of guest-side shell that sessions run, in one place (POSIX sh).

The scripts are constant texts that take their inputs as positional
parameters: the caller runs ``sh -c SCRIPT banger-session ARG...`` through
:func:`banger.guest.ssh.remote_command`, which quotes every argument once with
:func:`shlex.quote`. No value is ever spliced into script text, so a name, a
path or a signal cannot change what a script does. The one generated text is
the per-session ``run`` file (:func:`run_file`), built with ``shlex.quote``
around every word and shipped to the guest base64-encoded, so the user's argv
(quotes, ``$``, backticks, newlines, unicode, empty strings) arrives intact.

Layout in the guest, one directory per session ``<root>/<name>/``:

``cmd``          the argv, JSON (for listings)
``run``          the generated command file: records ``pid``, cd, env, exec
``boot``         the guest boot id when the session started
``started``      start time (seconds since the epoch)
``wrapper.pid``  pid of the wrapper running in the tmux pane
``pid``          pid of the command, which leads its own process group
``log``          everything the command wrote to its terminal
``ended``        end time
``exit``         exit status (128+N after signal N), written last, atomically

The default root is on the work disk (``/root/.banger/sessions``), not on
``/run``: logs then survive a VM stop for a post-mortem ``logs`` after the
next boot, and a coding agent's log grows on disk instead of in the guest's
RAM. A session whose ``boot`` differs from the current boot id and that has no
``exit`` file died with the guest: *lost*. tmux's socket lives on ``/run``
(``/run/banger/tmux.sock``), where a socket belongs and which a reboot empties.

How output is captured: the tmux pane runs the wrapper, which runs the
command under ``script`` (util-linux, essential in Debian) with a fresh
terminal of its own and pipes ``script``'s output through ``tee``: the pane
sees it and the log gets it, whether or not anyone is attached. The wrapper
writes ``exit`` only after ``tee`` has finished, so once ``exit`` exists the
log is complete (``tmux pipe-pane`` cannot promise that: tmux drops what it
has not yet written to the pipe when the pane closes). ``script`` also makes
the command a session and process-group leader, so ``stop`` signals the
command's group without touching the wrapper, which then records the status.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from banger.errors import InvalidArgument
from banger.images.oci.guestenv import switch_user_argv

#: Per-session state directories in the guest (on the work disk, see above).
STATE_ROOT = "/root/.banger/sessions"
#: The private tmux server for sessions; ``tmux -S`` so the user's own tmux is separate.
TMUX_SOCKET = "/run/banger/tmux.sock"
#: Prefix of the tmux session names (``tmux -S /run/banger/tmux.sock ls`` shows them).
TMUX_PREFIX = "banger-"

#: Exit statuses the scripts use to say what went wrong (1 is "something else").
EXIT_NO_SESSION = 3
EXIT_EXISTS = 4
EXIT_NOT_RUNNING = 5
EXIT_RUNNING = 6

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
# Paths the scripts receive are restricted to a plain alphabet: the wrapper
# builds ``script -c "exec /bin/sh '<dir>/run'"`` and tmux's socket path is
# used verbatim, so a quote or newline in them must be impossible.
_PATH = re.compile(r"/[A-Za-z0-9_.+/-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Every glibc since 2.35 (Debian 12) has C.UTF-8 built in: no locale package needed.
UTF8_LOCALE = "C.UTF-8"
UTF8_ENV = {"LANG": UTF8_LOCALE, "LC_ALL": UTF8_LOCALE}


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"name: not a valid session name: {name!r}",
            hint="1-63 characters: lowercase letters, digits, '_', '.', '-';"
            " starting with a letter or digit",
        )
    return name


def tmux_session(name: str) -> str:
    """The tmux session name for a banger session.

    tmux turns ``.`` in session names into ``_`` (and ``.`` separates window
    and pane in targets), so ``.`` becomes ``,``: reversible, unlike ``_``.
    """
    return TMUX_PREFIX + validate_name(name).replace(".", ",")


def tmux_target(name: str) -> str:
    """An exact-match target (``=``): tmux otherwise matches name prefixes."""
    return f"={tmux_session(name)}:"


@dataclass(frozen=True)
class GuestLayout:
    """Where sessions live in the guest; tests point both at a temp dir."""

    root: str = STATE_ROOT
    socket: str = TMUX_SOCKET

    def __post_init__(self) -> None:
        for field, value in (("root", self.root), ("socket", self.socket)):
            if not _PATH.fullmatch(value) or "/../" in f"{value}/" or value.endswith("/"):
                raise InvalidArgument(f"{field}: not a plain absolute path: {value!r}")

    def dir(self, name: str) -> str:
        return f"{self.root}/{validate_name(name)}"


#: The guest's layout (tests use their own).
DEFAULT_LAYOUT = GuestLayout()


def _started_channel(name: str) -> str:
    """The ``tmux wait-for`` channel the run file signals once the command's pid is written."""
    return f"{tmux_session(name)}-started"


def run_file(
    layout: GuestLayout,
    name: str,
    argv: Sequence[str],
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> str:
    """The per-session command file: record the pid, tell ``start``, cd, export, exec.

    Run as ``/bin/sh <dir>/run`` (so ``$0`` locates the directory). It is the
    only generated shell text; every word is quoted with :func:`shlex.quote`.
    ``user`` (an OCI image's User: name or uid[:gid]) runs the command as that
    user, as ``docker run`` does; the session's own files stay root's.
    """
    if not argv:
        raise InvalidArgument("command: empty argv")
    if argv[0].startswith("-"):
        # dash's exec takes no `--`, so a leading dash could read as an option
        raise InvalidArgument(f"command: the program must not start with '-': {argv[0]!r}")
    if any("\0" in arg for arg in argv):
        raise InvalidArgument("command: arguments cannot contain NUL bytes")
    lines = [
        "# banger session command file (generated; every word quoted with shlex.quote)",
        "dir=${0%/*}",
        'printf \'%s\\n\' "$$" > "$dir/pid"',
        f"tmux -S {shlex.quote(layout.socket)} wait-for -S"
        f" {shlex.quote(_started_channel(name))} </dev/null",
    ]
    if cwd is None:
        lines.append('cd -- "${HOME:-/root}" 2>/dev/null || cd /')
    else:
        if not cwd or "\0" in cwd:
            raise InvalidArgument(f"cwd: not a directory path: {cwd!r}")
        lines.append(
            f"cd -- {shlex.quote(cwd)} || {{ echo {shlex.quote(f'banger: cannot cd to {cwd}')}"
            " >&2; exit 126; }"
        )
    # A UTF-8 locale (an SSH exec carries none: bash would echo "é" as octal
    # escapes); the session's own env, exported after, overrides it.
    env = dict(env or {})
    locale = {"LANG": UTF8_LOCALE} if {"LANG", "LC_ALL"} & env.keys() else UTF8_ENV
    for key, value in (*locale.items(), *env.items()):
        if not _ENV_NAME.fullmatch(key):
            raise InvalidArgument(f"env: not a variable name: {key!r}")
        if "\0" in value:
            raise InvalidArgument(f"env: {key}: values cannot contain NUL bytes")
        lines.append(f"export {key}={shlex.quote(value)}")
    if user is not None:
        if not user or "\0" in user:
            raise InvalidArgument(f"user: not a user: {user!r}")
        argv = [*switch_user_argv(user), *argv]
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def command_json(argv: Sequence[str]) -> str:
    return json.dumps(list(argv), ensure_ascii=False)


#: Start a session. $1 root, $2 socket, $3 name, $4 tmux session, $5 run file
#: (base64), $6 cmd (base64 JSON), $7 the wrapper script text, $8 start channel.
START = r"""set -u
root=$1 sock=$2 name=$3 tsess=$4 run=$5 cmd=$6 wrapper=$7 chan=$8
dir=$root/$name
mkdir -p -m 700 -- "$root" "${sock%/*}" || exit 1
if ! mkdir -m 700 -- "$dir" 2>/dev/null; then
    [ -e "$dir" ] && exit 4
    echo "banger: cannot create $dir" >&2
    exit 1
fi
printf '%s' "$run" | base64 -d > "$dir/run" || exit 1
printf '%s' "$cmd" | base64 -d > "$dir/cmd" || exit 1
cat /proc/sys/kernel/random/boot_id > "$dir/boot" || exit 1
date +%s > "$dir/started"
: > "$dir/log"
# The pane runs a shell that runs the wrapper: tmux does not always reap its
# pane processes promptly (a missed SIGCHLD leaves a zombie, and `tail --pid`
# counts a zombie as alive); this parent shell reaps the wrapper at once.
if ! tmux -S "$sock" new-session -d -s "$tsess" -- /bin/sh -c '/bin/sh -c "$@"; exit $?' \
        banger-pane "$wrapper" banger-session "$dir" "$sock" "$chan" </dev/null; then
    rm -rf -- "$dir"
    exit 1
fi
# Return once the command's pid is on file (the run file or, if that never
# ran, the wrapper signals the channel), so `stop` right after `start` works.
timeout 30 tmux -S "$sock" wait-for "$chan" </dev/null || true
"""

#: The tmux pane's process. $1 session dir, $2 socket, $3 start channel.
#: ``script`` gives the command its own terminal and session; ``tee`` copies
#: everything to the pane and the log; ``exit`` is renamed into place last.
WRAPPER = r"""dir=$1 sock=$2 chan=$3
printf '%s\n' "$$" > "$dir/wrapper.pid"
{
    script -q -e -c "exec /bin/sh '$dir/run'" /dev/null
    printf '%s\n' "$?" > "$dir/exit.tmp"
} | tee -a -- "$dir/log"
[ -e "$dir/pid" ] || tmux -S "$sock" wait-for -S "$chan" </dev/null
date +%s > "$dir/ended"
mv -f -- "$dir/exit.tmp" "$dir/exit"
"""

#: One line ``boot<TAB>id``, then per session ``session<TAB>name<TAB>live
#: <TAB>exit<TAB>started<TAB>ended<TAB>boot<TAB>base64(cmd)``. $1 root, $2
#: socket, $3 a single name or empty for all. Fields are single tokens by
#: construction (numbers, ids, base64), so tabs cannot occur inside them.
LIST = r"""root=$1 sock=$2 only=${3:-}
printf 'boot\t%s\n' "$(cat /proc/sys/kernel/random/boot_id)"
[ -d "$root" ] || exit 0
for dir in "$root"/*; do
    [ -d "$dir" ] || continue
    name=${dir##*/}
    [ -z "$only" ] || [ "$name" = "$only" ] || continue
    tsess=banger-$(printf '%s' "$name" | tr . ,)
    if tmux -S "$sock" has-session -t "=$tsess" 2>/dev/null; then live=1; else live=0; fi
    printf 'session\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$live" \
        "$(cat -- "$dir/exit" 2>/dev/null)" "$(cat -- "$dir/started" 2>/dev/null)" \
        "$(cat -- "$dir/ended" 2>/dev/null)" "$(cat -- "$dir/boot" 2>/dev/null)" \
        "$(base64 -w0 < "$dir/cmd" 2>/dev/null)"
done
"""

#: The log so far; $1 session dir, $2 number of last lines or empty for all.
LOGS = r"""dir=$1 lines=${2:-}
[ -d "$dir" ] || exit 3
if [ -n "$lines" ]; then exec tail -n "$lines" -- "$dir/log"; fi
exec cat -- "$dir/log"
"""

#: The log from byte $2 on, following it while the wrapper lives; $1 session dir.
#: ``tail --pid`` reads once more after the wrapper exits, and the wrapper
#: exits after the log is complete, so nothing is cut off.
FOLLOW = r"""dir=$1 offset=$2
[ -d "$dir" ] || exit 3
from=$((offset + 1))
w=$(cat -- "$dir/wrapper.pid" 2>/dev/null)
if [ -e "$dir/exit" ] || [ -z "$w" ] \
        || [ "$(cat -- "$dir/boot" 2>/dev/null)" != "$(cat /proc/sys/kernel/random/boot_id)" ]; then
    exec tail -c "+$from" -- "$dir/log"
fi
exec tail -c "+$from" -s 0.2 -f --pid="$w" -- "$dir/log"
"""

#: Type text into the session; $1 session dir, $2 socket, $3 tmux target,
#: $4 text (may be empty), $5 ``1`` to press Enter afterwards.
SEND = r"""dir=$1 sock=$2 target=$3 text=$4 enter=$5
[ -d "$dir" ] || exit 3
[ ! -e "$dir/exit" ] || exit 5
tmux -S "$sock" has-session -t "$target" 2>/dev/null || exit 5
if [ -n "$text" ]; then tmux -S "$sock" send-keys -t "$target" -l -- "$text" || exit 1; fi
if [ "$enter" = 1 ]; then tmux -S "$sock" send-keys -t "$target" Enter || exit 1; fi
"""

#: Signal the command's process group, wait, then KILL. $1 session dir,
#: $2 signal name, $3 seconds to wait, $4 socket, $5 tmux target. Prints
#: ``exited`` (already over), ``signalled`` (the command ended after the
#: signal; members of its group still running after another wait are killed)
#: or ``killed``. A lost session (other boot, or its tmux server is gone) is
#: not signalled: its pid may belong to someone else by now.
STOP = r"""dir=$1 sig=$2 wait=$3 sock=$4 target=$5
[ -d "$dir" ] || exit 3
if [ -e "$dir/exit" ]; then echo exited; exit 0; fi
pid=$(cat -- "$dir/pid" 2>/dev/null) w=$(cat -- "$dir/wrapper.pid" 2>/dev/null)
if [ -z "$pid" ] || [ -z "$w" ] \
        || [ "$(cat -- "$dir/boot" 2>/dev/null)" != "$(cat /proc/sys/kernel/random/boot_id)" ] \
        || ! tmux -S "$sock" has-session -t "$target" 2>/dev/null; then
    exit 5
fi
kill -s "$sig" -- "-$pid" 2>/dev/null
if timeout "$wait" tail -n 0 -s 0.1 -f --pid="$w" -- "$dir/log" >/dev/null 2>&1; then
    # The command ended; what it started in its group (a child ignoring the
    # signal and the terminal's hangup) gets the same grace, then KILL too:
    # a stopped session leaves no process of its group behind.
    timeout "$wait" sh -c 'while kill -s 0 -- "-$1" 2>/dev/null; do sleep 0.1; done' \
        banger-session "$pid" || kill -s KILL -- "-$pid" 2>/dev/null
    echo signalled
    exit 0
fi
kill -s KILL -- "-$pid" 2>/dev/null
timeout 30 tail -n 0 -s 0.1 -f --pid="$w" -- "$dir/log" >/dev/null 2>&1
echo killed
"""

#: Interactive attach (run under ``ssh -t``); $1 session dir, $2 socket, $3 tmux
#: target, $4 name. A TERM the guest has no terminfo for would make tmux refuse to start.
ATTACH = r"""dir=$1 sock=$2 target=$3 name=$4
if [ -e "$dir/exit" ] || ! tmux -S "$sock" has-session -t "$target" 2>/dev/null; then
    echo "banger: session $name is not running" >&2
    exit 5
fi
case ${TERM:-dumb} in dumb | unknown) TERM=xterm-256color ;; esac
infocmp -- "$TERM" >/dev/null 2>&1 || TERM=xterm-256color
export TERM
# -u: the ssh session carries no LANG, and tmux would draw non-ASCII as '_'
exec tmux -u -S "$sock" attach-session -t "$target"
"""

#: Delete a finished session's directory; $1 session dir, $2 socket, $3 tmux target.
FORGET = r"""dir=$1 sock=$2 target=$3
[ -d "$dir" ] || exit 3
if [ ! -e "$dir/exit" ] && tmux -S "$sock" has-session -t "$target" 2>/dev/null; then exit 6; fi
tmux -S "$sock" kill-session -t "$target" 2>/dev/null
rm -rf -- "$dir"
"""


def script_argv(script: str, *args: str) -> list[str]:
    """The argv that runs a constant script with positional arguments."""
    return ["sh", "-c", script, "banger-session", *args]


def start_argv(
    layout: GuestLayout,
    name: str,
    argv: Sequence[str],
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> list[str]:
    return script_argv(
        START,
        layout.root,
        layout.socket,
        validate_name(name),
        tmux_session(name),
        b64(run_file(layout, name, argv, cwd, env, user)),
        b64(command_json(argv)),
        WRAPPER,
        _started_channel(name),
    )


def list_argv(layout: GuestLayout, name: str | None = None) -> list[str]:
    only = "" if name is None else validate_name(name)
    return script_argv(LIST, layout.root, layout.socket, only)


def logs_argv(layout: GuestLayout, name: str, tail: int | None = None) -> list[str]:
    if tail is not None and tail < 0:
        raise InvalidArgument(f"tail: must be 0 or more, got {tail}")
    return script_argv(LOGS, layout.dir(name), "" if tail is None else str(tail))


def follow_argv(layout: GuestLayout, name: str, offset: int = 0) -> list[str]:
    if offset < 0:
        raise InvalidArgument(f"offset: must be 0 or more, got {offset}")
    return script_argv(FOLLOW, layout.dir(name), str(offset))


def send_argv(layout: GuestLayout, name: str, text: str, enter: bool) -> list[str]:
    if "\0" in text:
        raise InvalidArgument("text: cannot contain NUL bytes")
    return script_argv(
        SEND, layout.dir(name), layout.socket, tmux_target(name), text, "1" if enter else "0"
    )


#: Signals ``stop`` accepts (names as ``kill -s`` takes them).
SIGNALS = frozenset({"TERM", "INT", "HUP", "QUIT", "KILL", "USR1", "USR2"})


def normalize_signal(signal: str) -> str:
    sig = signal.upper().removeprefix("SIG")
    if sig not in SIGNALS:
        raise InvalidArgument(
            f"signal: not supported: {signal!r}", hint="one of " + ", ".join(sorted(SIGNALS))
        )
    return sig


#: :data:`STOP`, then (if it succeeded) :data:`LIST` for the one session, in one exec:
#: the stop's answer carries the session's end without a second round trip, so
#: ``session stop --timeout N`` ends within N seconds and a fraction.
STOP_THEN_LIST = r"""stop=$1 list=$2
shift 2
sh -c "$stop" banger-session "$1" "$2" "$3" "$4" "$5" || exit $?
exec sh -c "$list" banger-session "$6" "$4" "$7"
"""


def stop_argv(layout: GuestLayout, name: str, signal: str, timeout: float) -> list[str]:
    """STOP's outcome line, then LIST's lines for the session (:data:`STOP_THEN_LIST`)."""
    if not 0.1 <= timeout <= 3600:
        raise InvalidArgument(f"timeout: must be between 0.1 and 3600 seconds, got {timeout:g}")
    seconds = f"{timeout:.3f}".rstrip("0").rstrip(".")
    return script_argv(
        STOP_THEN_LIST,
        STOP,
        LIST,
        layout.dir(name),
        normalize_signal(signal),
        seconds,
        layout.socket,
        tmux_target(name),
        layout.root,
        validate_name(name),
    )


def attach_command(layout: GuestLayout, name: str) -> list[str]:
    return script_argv(ATTACH, layout.dir(name), layout.socket, tmux_target(name), name)


def forget_argv(layout: GuestLayout, name: str) -> list[str]:
    return script_argv(FORGET, layout.dir(name), layout.socket, tmux_target(name))
