"""Firecracker's exit statuses (``FcExitCode``) as sentences a user can act on."""

from __future__ import annotations

import signal

_REASONS = {
    0: "exited cleanly (the guest rebooted or shut down)",
    1: "failed with a generic error (e.g. API socket in use, bad --config-file)",
    2: "failed with an unexpected error",
    12: "ran out of host memory",
    148: "was stopped by its seccomp filter (a forbidden system call)",
    149: "died of SIGBUS (guest memory file truncated or unavailable?)",
    150: "died of SIGSEGV",
    151: "died of SIGXFSZ (a file size limit was exceeded)",
    152: "refused its configuration (bad configuration)",
    153: "refused its command-line arguments",
    154: "died of SIGXCPU (a CPU time limit was exceeded)",
    156: "exited on SIGHUP",
    157: "died of SIGILL",
}


def exit_reason(returncode: int | None) -> str:
    """What a Firecracker ``returncode`` (negative: killed by that signal) means."""
    if returncode is None:
        return "exited (status unknown: not our child)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGABRT:
            return "aborted (SIGABRT: a Firecracker panic)"
        return f"was killed by {name}"
    reason = _REASONS.get(returncode)
    if reason is None:
        return f"exited with status {returncode}"
    return f"{reason} [exit {returncode}]"
