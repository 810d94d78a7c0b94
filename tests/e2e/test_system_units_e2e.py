"""The generated systemd units describe a working layout: a VM boots through them.

systemd is not PID 1 here, so ``systemctl start`` cannot run the units. This
test does what systemd would do with them, from the unit files alone:

1. ``banger system install --prefix TMP --owner <throwaway user> --runtime-dir
   /run/bgt-…`` writes the two units and install.toml (a runtime directory of
   its own under /run, so the real /run/banger is never touched);
2. the runtime and log directories are created as systemd creates
   ``RuntimeDirectory=``/``LogsDirectory=``: owned by the unit's ``User=``
   (root when unset) and ``Group=``, with the unit's ``…DirectoryMode=``;
3. each unit's exact ``ExecStart=`` line (unit quoting undone) runs as the
   unit's ``User=``/``Group=`` (``setpriv``), with the unit's ``UMask=`` and
   systemd's clean environment plus the unit's ``Environment=``, inside a
   test network namespace;
4. the sockets must have the owners and modes the units promise, ``banger
   system status`` (as the owner, reading that install.toml) must find both
   sockets right and answering, and the owner's ``banger vm run`` — which finds
   the sockets through install.toml and starts nothing itself — boots a guest.

Not reproduced: the sandboxing directives (``ProtectSystem=``, ``PrivateTmp=``,
the capability bounding set…), ``Restart=`` and journald; ``systemd-analyze
verify`` checks those lines in tests/integration/test_system_install.py.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import Banger, check_owner_can_run, seed_artifacts
from tests.image_cache import cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.support import VENV_BIN, Netns, User, needs_root, netns, throwaway_user, wait_until

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

#: The environment systemd gives every service (plus HOME/USER/… when User= is set).
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUN_ROOT = Path("/run")
LOG_ROOT = Path("/var/log")


# -- reading unit files ---------------------------------------------------------


def unit_words(value: str) -> list[str]:
    """Split a unit-file value into words the way systemd does for ExecStart=.

    Double quotes group, a backslash escapes the next character inside them;
    ``%%`` and ``$$`` are a literal ``%``/``$`` (our units use no specifiers
    or variables, so a single one is an error here rather than a guess).
    """
    words: list[str] = []
    i = 0
    while i < len(value):
        if value[i].isspace():
            i += 1
            continue
        word: list[str] = []
        if value[i] == '"':
            i += 1
            while value[i] != '"':
                if value[i] == "\\":
                    i += 1
                word.append(value[i])
                i += 1
            i += 1
        else:
            while i < len(value) and not value[i].isspace():
                word.append(value[i])
                i += 1
        words.append(_unescape_specifiers("".join(word)))
    return words


def _unescape_specifiers(word: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(word):
        if word[i] in "%$":
            assert word[i + 1 : i + 2] == word[i], f"unexpected specifier/variable in {word!r}"
            i += 1
        out.append(word[i])
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Unit:
    path: Path
    settings: Mapping[str, list[str]]

    @classmethod
    def read(cls, path: Path) -> Unit:
        settings: dict[str, list[str]] = {}
        for line in path.read_text().splitlines():
            if not line or line.startswith(("#", ";", "[")):
                continue
            key, sep, value = line.partition("=")
            assert sep, f"{path}: not a setting: {line!r}"
            settings.setdefault(key, []).append(value)
        return cls(path, settings)

    def one(self, key: str, default: str | None = None) -> str:
        values = self.settings.get(key)
        if not values:
            assert default is not None, f"{self.path.name}: no {key}="
            return default
        assert len(values) == 1, f"{self.path.name}: {key}= given {len(values)} times"
        return values[0]

    @property
    def exec_start(self) -> list[str]:
        argv = unit_words(self.one("ExecStart"))
        assert argv[0].startswith("/"), argv  # no -/@/+ prefixes, an absolute program
        return argv

    @property
    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.settings.get("Environment", []):
            for word in unit_words(value):
                key, _, val = word.partition("=")
                env[key] = val
        return env

    @property
    def uid(self) -> int:
        return pwd_uid(self.one("User", "root"))

    @property
    def gid(self) -> int:
        group = self.settings.get("Group")
        if group:
            return grp.getgrnam(self.one("Group")).gr_gid
        return pwd_gid(self.one("User", "root"))

    @property
    def umask(self) -> int:
        return int(self.one("UMask", "0022"), 8)


def pwd_uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def pwd_gid(name: str) -> int:
    return pwd.getpwnam(name).pw_gid


def service_env(unit: Unit) -> dict[str, str]:
    """systemd's environment for the service: PATH, the user's identity, Environment=."""
    env = {"PATH": SYSTEMD_PATH}
    if "User" in unit.settings:
        pw = pwd.getpwnam(unit.one("User"))
        env |= {"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name,
                "SHELL": pw.pw_shell}  # fmt: skip
    return env | unit.environment


def as_unit_user(unit: Unit) -> list[str]:
    """``setpriv`` as the unit's User=/Group= (supplementary groups as systemd sets them)."""
    groups = ["--init-groups"] if "User" in unit.settings else ["--clear-groups"]
    return ["setpriv", f"--reuid={unit.uid}", f"--regid={unit.gid}", *groups]


# -- doing what systemd does ----------------------------------------------------


def make_service_dir(root: Path, relative: str, unit: Unit, mode_key: str) -> Path:
    """``RuntimeDirectory=``/``LogsDirectory=``: parents root 0755, the last one the unit's."""
    path = root
    for part in Path(relative).parts[:-1]:
        path = path / part
        path.mkdir(mode=0o755, exist_ok=True)
    path = path / Path(relative).parts[-1]
    path.mkdir()
    os.chown(path, unit.uid, unit.gid)
    path.chmod(int(unit.one(mode_key, "0755"), 8))
    return path


@contextmanager
def running(ns: Netns, unit: Unit, socket: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The unit's ExecStart, as systemd would run it (Type=simple), until its socket is up."""
    assert unit.one("Type") == "simple"
    with tempfile.TemporaryFile() as log:
        # ip netns exec and setpriv both exec: terminate() reaches the service itself.
        proc = subprocess.Popen(
            ns.argv(*as_unit_user(unit), *unit.exec_start),
            env=service_env(unit),
            umask=unit.umask,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def bound() -> bool:
                return socket.is_socket() or proc.poll() is not None

            with suppress(AssertionError):  # the check below says why, with the unit's log
                wait_until(bound, 120, f"{unit.path.name} binding {socket}")
            if not socket.is_socket():
                log.seek(0)
                pytest.fail(f"{unit.path.name} did not bind {socket}: {log.read().decode()}")
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def install_cli(*args: str) -> None:
    result = subprocess.run([str(VENV_BIN / "banger"), "system", "install", *args],
                            capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr


def owner_state_dir(user: User) -> Path:
    """The owner's state directory, created as ``banger system install`` does (0700, theirs)."""
    state = user.home / ".local/state/banger"
    for d in (user.home / ".local", user.home / ".local/state", state):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chown(d, user.uid, user.gid)
    return state


def mode_of(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


# -- the test -------------------------------------------------------------------


def test_the_units_exec_lines_boot_a_vm() -> None:
    kernel = cached_debian_kernel()
    image = cached_debian_image()
    name = f"bgt-{secrets.token_hex(3)}"
    runtime_dir = RUN_ROOT / name
    with ExitStack() as stack:
        ns = stack.enter_context(netns("bgs"))
        user = stack.enter_context(throwaway_user("bgs"))
        check_owner_can_run(user)
        # Readable by the owner, like the real /etc (pytest's tmp_path is root-only).
        prefix = Path(tempfile.mkdtemp(prefix="bgs-root-", dir="/tmp"))
        stack.callback(shutil.rmtree, prefix, ignore_errors=True)
        prefix.chmod(0o755)
        install_cli("--prefix", str(prefix), "--owner", user.name,
                    "--runtime-dir", str(runtime_dir))  # fmt: skip
        units = prefix / "etc/systemd/system"
        helper = Unit.read(units / "banger-helper.service")
        daemon = Unit.read(units / "bangerd.service")
        metadata = prefix / "etc/banger/install.toml"

        # The units agree with each other and with install.toml about the layout.
        assert "User" not in helper.settings  # root
        assert daemon.uid == user.uid and daemon.gid == user.gid == helper.gid
        assert daemon.environment["BANGER_RUNTIME_DIR"] == str(runtime_dir)
        helper_socket = Path(helper.exec_start[helper.exec_start.index("--socket") + 1])
        assert helper_socket == runtime_dir / "helper.sock"
        assert helper.exec_start[helper.exec_start.index("--owner-gid") + 1] == str(user.gid)

        stack.callback(shutil.rmtree, RUN_ROOT / helper.one("RuntimeDirectory").split("/")[0],
                       ignore_errors=True)  # fmt: skip
        run_dir = make_service_dir(RUN_ROOT, helper.one("RuntimeDirectory"), helper,
                                   "RuntimeDirectoryMode")  # fmt: skip
        assert run_dir == runtime_dir
        stack.callback(shutil.rmtree, LOG_ROOT / helper.one("LogsDirectory").split("/")[0],
                       ignore_errors=True)  # fmt: skip
        make_service_dir(LOG_ROOT, helper.one("LogsDirectory"), helper, "LogsDirectoryMode")
        owner_state_dir(user)

        # After=/Wants=: the helper first, then the daemon.
        assert daemon.one("After").split()[0] == "banger-helper.service"
        stack.enter_context(running(ns, helper, helper_socket))
        daemon_socket = runtime_dir / "bangerd.sock"
        stack.enter_context(running(ns, daemon, daemon_socket))

        # The layout the units promise (units.py's docstring; status checks the same).
        assert mode_of(run_dir) == (0, user.gid, 0o770)
        # With --owner-gid, banger-helper's socket is root:<that group> 0660.
        flag = helper.exec_start.index
        owner_ids = (int(helper.exec_start[flag("--owner-uid") + 1]),
                     int(helper.exec_start[flag("--owner-gid") + 1]))  # fmt: skip
        assert owner_ids == (user.uid, user.gid)
        assert mode_of(helper_socket) == (0, owner_ids[1], 0o660)
        assert mode_of(daemon_socket) == (user.uid, user.gid, 0o600)

        b = Banger(ns, user, user.home)
        b.env = {
            "HOME": str(user.home),
            "PATH": f"{VENV_BIN}:{SYSTEMD_PATH}",
            "BANGER_INSTALL_METADATA": str(metadata),
            "LANG": "C.UTF-8",
        }
        # The owner's CLI finds both services through install.toml alone.
        status = b.banger("system", "status", "--json", check=False)
        assert status.stdout.startswith("{"), status.stderr
        report = json.loads(status.stdout)
        sockets = {s["name"]: s for s in report["sockets"]}
        for sock in sockets.values():
            assert sock["present"] and sock["layout_ok"] and sock["answering"], sock
        assert not report["version_mismatch"], report["versions"]
        # Only the unit files are "missing": they are under the prefix, not /etc.
        assert all("unit file missing" in p for p in report["problems"]), report["problems"]

        seed_artifacts(b, kernel, image)
        # From the owner's home: `vm run` in a git checkout would sync it into the guest.
        ran = subprocess.run(
            b.as_owner([str(VENV_BIN / "banger"), "vm", "run", "--init", "fast", "--rm", "--",
                        "true"]),
            cwd=user.home, capture_output=True, text=True, check=False, timeout=600,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        assert "started banger-helper" not in ran.stderr  # the installed one did the work
        assert json.loads(b.banger("vm", "list", "--json").stdout) == []
        # The daemon (the owner) keeps its state, keys and known_hosts in the owner's home.
        state = user.home / ".local/state/banger"
        assert mode_of(state / "banger.db")[0] == user.uid
        assert mode_of(state / "ssh/known_hosts")[0] == user.uid
        # The helper logged where its unit's LogsDirectory= put it.
        helper_log = helper.exec_start[helper.exec_start.index("--log") + 1]
        assert Path(helper_log).parent == LOG_ROOT / helper.one("LogsDirectory")
        assert "Traceback" not in Path(helper_log).read_text()
