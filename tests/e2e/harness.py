"""An isolated banger installation for end-to-end tests, driven through the real CLI.

As root: a network namespace with no uplink, an unprivileged owner user, the
root helper (``banger-helper``) running inside the namespace, and the owner's
``banger`` CLI run inside the namespace as that user (``setpriv``) with a
short ``BANGER_HOME``. The CLI auto-starts ``bangerd`` as the owner, inside
the namespace, like on a fresh workstation. Nothing is mocked: the guests are
real QEMU/TCG VMs on a real bridge and tap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from banger.paths import Paths
from tests.helper_launch import start_helper
from tests.image_cache import cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.support import VENV_BIN, Netns, User, alive, netns, stop_pid, throwaway_user

REPO = Path(__file__).resolve().parents[2]
KERNEL_NAME = "debian-test"
IMAGE_NAME = "debian-bookworm"
#: Per-boot SSH timeout inside the daemon; the pipeline retries a timed-out boot once.
#: A slow or loaded machine raises it with BANGER_BOOT_TIMEOUT in the environment.
BOOT_TIMEOUT = os.environ.get("BANGER_BOOT_TIMEOUT", "90")


@dataclass
class Banger:
    ns: Netns
    user: User
    home: Path
    helper_pid: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def runtime_dir(self) -> Path:
        return self.home / "run"

    def as_owner(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run as the owner user inside the namespace, with a clean environment."""
        env = [f"{k}={v}" for k, v in self.env.items()]
        return [
            *self.ns.argv(
                "setpriv",
                f"--reuid={self.user.uid}",
                f"--regid={self.user.gid}",
                "--init-groups",
                "env",
                "-i",
                *env,
                *argv,
            )
        ]

    def banger(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``banger`` CLI as the owner; output captured as text."""
        result = subprocess.run(
            self.as_owner([str(VENV_BIN / "banger"), *args]),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"banger {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def host(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """A command in the namespace as root (to inspect what banger left behind)."""
        return self.ns.run(*argv, check=False)

    def taps(self) -> list[str]:
        out = self.host("ip", "-o", "link", "show").stdout
        names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
        return [n for n in names if n.startswith("bt-")]

    def owner_processes(self, name: str) -> list[str]:
        """The owner's running processes named ``name`` (``pgrep -a`` lines).

        An exited process its reaper has not collected yet (``<defunct>``) is not
        one: it holds no file, memory or device. After a kill -9 of bangerd its
        orphaned children are reparented to PID 1, whose reaping is the machine's
        (a debugfs that finished writing after the kill was seen as a leak on CI).
        """
        out = subprocess.run(
            ["pgrep", "-u", str(self.user.uid), "-a", name],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [line for line in out.splitlines() if line.strip() and alive(int(line.split()[0]))]


#: Runs in the namespace: connect to a guest's sshd and read its banner within
#: argv[2] seconds; exit 3 when it does not answer.
SSH_BANNER = (
    "import socket, sys\n"
    "try:\n"
    "    s = socket.create_connection((sys.argv[1], 22), timeout=float(sys.argv[2]))\n"
    "    print(s.recv(64).decode(errors='replace').strip())\n"
    "except OSError as exc:\n"
    "    print(f'no answer: {exc}'); sys.exit(3)\n"
)


def ssh_banner(b: Banger, ip: str, timeout: float) -> tuple[int, str]:
    """(exit status, banner or why not) of a connect to ``ip``:22 from inside the namespace."""
    result = b.host("python3", "-c", SSH_BANNER, ip, str(timeout))
    return result.returncode, result.stdout.strip()


def check_owner_can_run(user: User) -> None:
    """Fail clearly when the owner cannot read the repository or its virtualenv."""
    probe = subprocess.run(
        [
            "setpriv",
            f"--reuid={user.uid}",
            f"--regid={user.gid}",
            "--init-groups",
            str(VENV_BIN / "python"),
            "-c",
            "import banger.cli.main",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.fail(
            f"the unprivileged owner user cannot run {VENV_BIN / 'python'} with the repository "
            f"at {REPO}: {probe.stderr.strip()[-300:]} — make the repo and .venv world-readable "
            "(and the venv built on /usr/bin/python3, not a per-user interpreter)",
            pytrace=False,
        )


def _start_helper(b: Banger, extra_env: Mapping[str, str] | None = None) -> None:
    """The owner's root helper inside the namespace, started with the production argv."""
    paths = Paths(b.home / "config", b.state_dir, b.home / "cache", b.runtime_dir)
    b.helper_pid = start_helper(paths, b.user.uid, ns=b.ns, env=extra_env)


def daemon_pid(b: Banger) -> int | None:
    """The running bangerd's pid from its pid file; None when there is none or it ended."""
    try:
        pid = int((b.runtime_dir / "bangerd.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


@contextmanager
def banger_env(*, seed: bool = True) -> Iterator[Banger]:
    """A running, seeded banger for one owner in one namespace; everything removed after."""
    kernel = cached_debian_kernel()
    image = cached_debian_image()
    with netns("bge") as ns, throwaway_user("bge") as user:
        check_owner_can_run(user)
        home = Path(tempfile.mkdtemp(prefix="bgh-", dir="/tmp"))
        try:
            os.chown(home, user.uid, user.gid)
            home.chmod(0o700)
            for sub in ("state", "run"):
                (home / sub).mkdir(mode=0o700)
                os.chown(home / sub, user.uid, user.gid)
            b = Banger(ns, user, home)
            b.env = {
                "HOME": str(user.home),
                # An ordinary Debian user's PATH: no sbin directories (issue #22),
                # so every system tool banger runs must be found without them.
                "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
                "BANGER_HOME": str(home),
                "BANGER_BOOT_TIMEOUT": BOOT_TIMEOUT,
                "LANG": "C.UTF-8",
            }
            _start_helper(b)
            try:
                if seed:
                    seed_artifacts(b, kernel, image)
                yield b
            finally:
                # VMs first (their taps need the helper), then the daemon, then the helper.
                with suppress(Exception):
                    names = _vm_names(b)
                    if names:
                        b.banger("vm", "rm", "--force", *names, check=False, timeout=120)
                stop_pid(daemon_pid(b))
                stop_pid(b.helper_pid)
        finally:
            subprocess.run(["rm", "-rf", "--", str(home)], check=False)


def _vm_names(b: Banger) -> list[str]:
    import json

    out = b.banger("vm", "list", "--json", check=False, timeout=60).stdout
    try:
        return [vm["name"] for vm in json.loads(out)]
    except ValueError:
        return []


def seed_artifacts(b: Banger, kernel: Path, image: Path) -> None:
    """The cached test kernel and image, brought in through the real CLI as the owner."""
    b.banger("kernel", "import", str(kernel / "vmlinuz"), "--initrd", str(kernel / "initrd.img"),
             "--name", KERNEL_NAME)  # fmt: skip
    b.banger("kernel", "default", KERNEL_NAME)
    b.banger("image", "register", str(image), "--name", IMAGE_NAME)
    b.banger("image", "default", IMAGE_NAME)


def main() -> None:  # pragma: no cover - manual use: python -m tests.e2e.harness -- vm run …
    with banger_env() as b:
        print(f"netns {b.ns.name}, owner {b.user.name}, BANGER_HOME {b.home}", file=sys.stderr)
        result = b.banger(*sys.argv[1:], check=False)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)


if __name__ == "__main__":
    main()


def js(b: Banger, *args: str, timeout: float = 600) -> Any:
    """``banger ARGS --json`` as the owner, its answer parsed (a failure raises, with output)."""
    return json.loads(b.banger(*args, "--json", timeout=timeout).stdout)
