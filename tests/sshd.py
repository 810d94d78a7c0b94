"""A real sshd on loopback standing in for a guest's, started by the test (never a system service).

Used by the guest SSH, session and workspace tests: each gets its own host
key, client key, known_hosts and config in a short temp directory, and an
:class:`~banger.guest.ssh.SSHTarget` that reaches it. Needs root (sshd's
privilege separation) and openssh-server. :func:`vm_record` is a running VM's
record whose guest address is loopback, i.e. this sshd.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from banger.guest.ssh import SSHTarget
from banger.store import VMConfig, VMRecord, VMState

SSHD = Path("/usr/sbin/sshd")
SET_ENV = "SetEnv SHLVL=1"
needs_sshd = pytest.mark.skipif(not SSHD.exists(), reason="openssh-server is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    dir: Path
    port: int
    host_pub: str
    target: SSHTarget
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        with open(self.dir / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", self.dir / "sshd_config"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def set_env(self, **env: str) -> None:
        """Add variables to the sessions' environment (takes effect at the next start).

        sshd uses only the first ``SetEnv`` line, so they join the config's one.
        """
        config = self.dir / "sshd_config"
        extra = " ".join(f"{k}={v}" for k, v in env.items())
        text = config.read_text().replace(f"\n{SET_ENV}", f"\n{SET_ENV} {extra}", 1)
        config.write_text(text)


def make_sshd(d: Path) -> Sshd:
    port = free_port()
    host_pub = keygen(d / "host_ed25519")
    client_pub = keygen(d / "id_ed25519")
    (d / "authorized_keys").write_text(client_pub + "\n")
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    (d / "sshd_config").write_text(
        f"""ListenAddress 127.0.0.1:{port}
HostKey {d}/host_ed25519
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
# the files API's SFTP, as a guest's Debian sshd_config has it
Subsystem sftp internal-sftp
# test files live under /tmp (world-writable), which StrictModes rejects
StrictModes no
# It logs in as this host's root, whose ~/.bashrc is not a guest's (on the CI
# machines it runs `pyenv init`, and 16 concurrent commands' rehashes wrote
# "pyenv: cannot rehash" into a command's output). Debian's bash reads
# ~/.bashrc for a shell sshd starts only at the first shell level, so SHLVL=1
# keeps every command's output its own.
{SET_ENV}
"""
    )
    target = SSHTarget("127.0.0.1", d / "known_hosts", d / "id_ed25519", port=port)
    return Sshd(d, port, host_pub, target)


@pytest.fixture(name="sshd")
def sshd_fixture(short_tmp: Path) -> Iterator[Sshd]:
    """The ``sshd`` fixture: a started sshd (see :func:`make_sshd`), killed after the test.

    Test modules import it (``from tests.sshd import sshd_fixture``) to use it.
    """
    server = make_sshd(short_tmp)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def vm_record(state: VMState = VMState.RUNNING) -> VMRecord:
    now = datetime.now(UTC)
    return VMRecord(
        id="vm-1",
        name="t1",
        state=state,
        image_id=None,
        kernel_id=None,
        vmm="qemu",
        init_mode="fast",
        vcpus=1,
        memory_mib=256,
        work_disk_size=0,
        root_strategy=None,
        ip=IPv4Address("127.0.0.1"),
        mac=None,
        tap=None,
        pid=None,
        pid_start_time=None,
        created_at=now,
        updated_at=now,
        last_error=None,
        config=VMConfig(),
        labels={},
    )
