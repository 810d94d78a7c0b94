"""Every file and socket banger uses, named in one place.

Layout (XDG by default; ``BANGER_HOME`` puts everything under one directory,
which is what the tests do)::

    config_dir/config.toml
    state_dir/banger.db               SQLite store (WAL)
    state_dir/bangerd.log             daemon log
    state_dir/ssh/id_ed25519[.pub]    banger's own key for guests (one per owner)
    state_dir/ssh/known_hosts         pinned guest host keys
    state_dir/images/<id>/            rootfs.ext4, work-seed.ext4, image.json
    state_dir/kernels/<id>/           vmlinuz|vmlinux, initrd.img, modules/, kernel.json
    state_dir/vms/<id>/               root.*, work.ext4, console.log, ssh_host_* keys
    state_dir/tmp/                    build directories, renamed into place when whole
    cache_dir/                        downloads (kernel packages, OCI layers)
    runtime_dir/bangerd.sock          daemon API socket (0600)
                                      (/run/banger when ``banger system install``
                                      runs the services for this user)
    runtime_dir/helper.sock           root helper socket
    runtime_dir/vm-<id>.qmp|.fc       per-VM VMM control sockets

Unix socket paths are limited to 107 bytes plus a NUL (``sun_path`` is 108
bytes on Linux); :func:`check_socket_path` enforces it with a clear error, and
per-VM sockets live in the runtime directory (short) rather than the state
directory (long) for that reason.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from banger.errors import BangerError, InvalidArgument

#: Linux ``sizeof(sockaddr_un.sun_path)``, including the terminating NUL.
SUN_PATH_MAX = 108

#: Where the system-service install keeps its runtime sockets.
SYSTEM_RUNTIME_DIR = Path("/run/banger")
#: Install metadata written by ``banger system install``.
INSTALL_METADATA = Path("/etc/banger/install.toml")
#: Reads the install metadata from elsewhere (tests, a --prefix tree).
INSTALL_METADATA_ENV = "BANGER_INSTALL_METADATA"


def check_socket_path(path: Path) -> Path:
    """Refuse a Unix socket path that the kernel would truncate."""
    size = len(os.fsencode(path))
    if size >= SUN_PATH_MAX:
        raise InvalidArgument(
            f"socket path is {size} bytes, over the {SUN_PATH_MAX - 1}-byte Unix socket limit: "
            f"{path}",
            hint="set BANGER_RUNTIME_DIR (or BANGER_HOME) to a shorter directory",
        )
    return path


def fallback_runtime_dir() -> Path:
    """The runtime directory when nothing else names one: a name anyone could create first."""
    return Path(f"/tmp/banger-{os.getuid()}")


def check_private_dir(path: Path) -> Path:
    """Refuse a socket directory that is not ours to use or that another user could tamper with.

    The one check between banger and a runtime directory: the CLI runs it
    before every connection and before starting the helper, bangerd before it
    binds, ``banger doctor`` as its "runtime directory" check.

    Without ``XDG_RUNTIME_DIR`` the runtime directory is ``/tmp/banger-<uid>``,
    a name anyone can create first; whoever owns (or may write) the directory
    can swap the sockets inside it and impersonate the daemon. So it must be
    a real directory (not a symlink), owned by us or by root, and writable by
    nobody else.

    A directory that belongs to another user (``BANGER_RUNTIME_DIR``,
    ``BANGER_HOME`` or ``XDG_RUNTIME_DIR`` pointed at theirs, or one we cannot
    even reach or create) is ``permission denied: <dir> belongs to <user>``:
    said here, before anything connects, so the CLI never takes the failed
    connect for "bangerd is not running" and starts one into it. A missing
    directory is fine (it will be made 0700) unless it would be made inside
    another user's.

    One exception, the system install's layout (``/run/banger``: root, our
    group, 0770, made by systemd for banger-helper.service): root made it
    writable for our group on purpose, and that group may use the helper's
    socket anyway, so its members are trusted already.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        # To be made in another user's directory: theirs. Not so under root's
        # (/run while /run/banger is gone: the installed services are down,
        # and the CLI says exactly that when nothing answers).
        barrier = _barrier(path)
        if barrier is not None and barrier[1].st_uid != 0:
            raise _belongs_to_another(path, *barrier) from None
        return path
    except PermissionError:
        # Inside a directory we may not search (XDG_RUNTIME_DIR=/run/user/0,
        # BANGER_HOME in someone's 0700 home): name the one in the way.
        barrier = _barrier(path)
        if barrier is None:
            raise
        raise _belongs_to_another(path, *barrier) from None
    hint = _squat_hint(path)
    if stat.S_ISLNK(st.st_mode):
        raise InvalidArgument(f"runtime directory {path} is a symbolic link", hint=hint)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"runtime directory {path} is not a directory", hint=hint)
    if st.st_uid not in (os.geteuid(), 0) or (st.st_uid == 0 and not _usable(path)):
        # Root's own is fine only when root opened it to us (the system layout).
        raise _belongs_to_another(path, path, st)
    if st.st_mode & 0o002 or (st.st_mode & 0o020 and not _system_layout(st)):
        raise InvalidArgument(
            f"runtime directory {path} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o})",
            hint=f"chmod 700 {path}",
        )
    return path


def _squat_hint(path: Path) -> str:
    return (
        f"remove {path} if you did not create it (another user may be trying to "
        "intercept banger's sockets), or set XDG_RUNTIME_DIR or BANGER_RUNTIME_DIR"
    )


def _usable(directory: Path) -> bool:
    """Whether we may create sockets in ``directory`` (as the effective uid the kernel checks)."""
    return os.access(directory, os.W_OK | os.X_OK, effective_ids=True)


def _barrier(path: Path) -> tuple[Path, os.stat_result] | None:
    """The directory that stops us from reaching or creating ``path``, when another user's.

    Nearest first, the first ancestor we can stat: every directory above it
    is searchable (or the stat would have failed), so it is the one in the
    way if we may not create entries in it.
    """
    for parent in path.absolute().parents:
        try:
            st = parent.stat()
        except OSError:
            continue  # inside a closed directory itself: look higher
        if _usable(parent) or st.st_uid == os.geteuid():
            return None  # we may create it, or it is ours to fix: not another user's
        return parent, st
    return None


def _belongs_to_another(path: Path, directory: Path, st: os.stat_result) -> InvalidArgument:
    """``permission denied: <directory> belongs to <user>``, with what to do instead."""
    import pwd

    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = f"uid {st.st_uid}"
    if path == fallback_runtime_dir():
        hint = _squat_hint(path)  # nobody chose this name for us: someone created it first
    else:
        hint = (
            "banger needs a runtime directory of your own: point BANGER_RUNTIME_DIR "
            "(or BANGER_HOME, XDG_RUNTIME_DIR) at one, or unset it"
        )
    return InvalidArgument(f"permission denied: {directory} belongs to {owner}", hint=hint)


def install_metadata_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the system install's metadata is: ``BANGER_INSTALL_METADATA``, else /etc/banger."""
    env = os.environ if env is None else env
    override = env.get(INSTALL_METADATA_ENV)
    return Path(override) if override else INSTALL_METADATA


@dataclass(frozen=True)
class SystemInstall:
    """What the CLI needs from ``install.toml``: whose services they are, and their sockets."""

    metadata: Path
    owner: str
    owner_uid: int
    runtime_dir: Path

    @property
    def serves_me(self) -> bool:
        return self.owner_uid == os.getuid()


def system_install(env: Mapping[str, str] | None = None) -> SystemInstall | None:
    """The two-service install on this machine, or None when nothing is installed.

    The one place the CLI reads the install metadata (:mod:`banger.system.metadata`
    writes it). An unreadable file is an error, not "not installed": guessing
    would start a second daemon next to the installed one.
    """
    path = install_metadata_path(env)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BangerError(
            f"{path}: cannot read the install metadata: {exc.strerror}",
            hint="it should be world-readable (0644); reinstall with `sudo banger system install`",
        ) from None
    from banger.system.metadata import InstallMetadata

    metadata = InstallMetadata.from_toml(text, str(path))
    runtime = metadata.paths.get("runtime_dir", str(SYSTEM_RUNTIME_DIR))
    return SystemInstall(path, metadata.owner, metadata.owner_uid, Path(runtime))


def _system_layout(st: os.stat_result) -> bool:
    return st.st_uid == 0 and st.st_gid == os.getegid()


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    state_dir: Path
    cache_dir: Path
    runtime_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, home: Path | None = None) -> Paths:
        """Resolve the layout from ``BANGER_HOME``/``BANGER_RUNTIME_DIR`` or XDG.

        Runtime directory, first that applies: ``BANGER_RUNTIME_DIR``;
        ``BANGER_HOME/run``; the system install's (``/run/banger``) when it
        serves this user; ``$XDG_RUNTIME_DIR/banger``; ``/tmp/banger-<uid>``.
        ``BANGER_HOME`` is a self-contained layout, so it never uses the
        installed services (their daemon keeps its state in the owner's XDG
        directories, not there).
        """
        env = os.environ if env is None else env
        home = home if home is not None else Path(env.get("HOME") or Path.home())
        runtime_override = env.get("BANGER_RUNTIME_DIR")
        banger_home = env.get("BANGER_HOME")
        if banger_home:
            root = Path(banger_home).absolute()
            return cls(
                config_dir=root / "config",
                state_dir=root / "state",
                cache_dir=root / "cache",
                runtime_dir=Path(runtime_override) if runtime_override else root / "run",
            )

        def xdg(name: str, default: Path) -> Path:
            value = env.get(name)
            return Path(value) if value and Path(value).is_absolute() else default

        installed = None if runtime_override else system_install(env)
        if runtime_override:
            runtime = Path(runtime_override)
        elif installed is not None and installed.serves_me:
            runtime = installed.runtime_dir
        elif env.get("XDG_RUNTIME_DIR"):
            runtime = Path(env["XDG_RUNTIME_DIR"]) / "banger"
        else:
            runtime = fallback_runtime_dir()
        return cls(
            config_dir=xdg("XDG_CONFIG_HOME", home / ".config") / "banger",
            state_dir=xdg("XDG_STATE_HOME", home / ".local" / "state") / "banger",
            cache_dir=xdg("XDG_CACHE_HOME", home / ".cache") / "banger",
            runtime_dir=runtime,
        )

    # -- configuration ---------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    # -- state -----------------------------------------------------------
    @property
    def db(self) -> Path:
        return self.state_dir / "banger.db"

    @property
    def daemon_log(self) -> Path:
        return self.state_dir / "bangerd.log"

    @property
    def helper_log(self) -> Path:
        return self.state_dir / "helper.log"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def ssh_key(self) -> Path:
        """banger's own private key for logging into guests (ed25519)."""
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def images_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def kernels_dir(self) -> Path:
        return self.state_dir / "kernels"

    @property
    def vms_dir(self) -> Path:
        return self.state_dir / "vms"

    @property
    def tmp_dir(self) -> Path:
        """Build directories; on the state filesystem so publication is a rename."""
        return self.state_dir / "tmp"

    def image_dir(self, image_id: str) -> Path:
        return self.images_dir / image_id

    def kernel_dir(self, kernel_id: str) -> Path:
        return self.kernels_dir / kernel_id

    def vm_dir(self, vm_id: str) -> Path:
        return self.vms_dir / vm_id

    def vm_console_log(self, vm_id: str) -> Path:
        return self.vm_dir(vm_id) / "console.log"

    def vm_work_disk(self, vm_id: str) -> Path:
        return self.vm_dir(vm_id) / "work.ext4"

    def vm_root_disk(self, vm_id: str, suffix: str) -> Path:
        """``suffix`` is the CoW strategy's file ending, e.g. ``qcow2`` or ``ext4``."""
        return self.vm_dir(vm_id) / f"root.{suffix}"

    def vm_vmm_log(self, vm_id: str) -> Path:
        """The VMM process's own stdout/stderr (not the guest console)."""
        return self.vm_dir(vm_id) / "vmm.log"

    def vm_host_key(self, vm_id: str) -> Path:
        return self.vm_dir(vm_id) / "ssh_host_ed25519_key"

    # -- runtime (sockets) -------------------------------------------------
    @property
    def daemon_socket(self) -> Path:
        return check_socket_path(self.runtime_dir / "bangerd.sock")

    @property
    def daemon_pidfile(self) -> Path:
        """flock'd by the running bangerd: one daemon per socket."""
        return self.runtime_dir / "bangerd.pid"

    @property
    def helper_pidfile(self) -> Path:
        """The pid of a helper the CLI started on first use (written by the CLI)."""
        return self.runtime_dir / "helper.pid"

    @property
    def helper_socket(self) -> Path:
        return check_socket_path(self.runtime_dir / "helper.sock")

    def vm_qmp_socket(self, vm_id: str) -> Path:
        return check_socket_path(self.runtime_dir / f"vm-{vm_id}.qmp")

    def vm_agent_socket(self, vm_id: str) -> Path:
        """The host end of the VM's guest agent channel (QEMU listens on it)."""
        return check_socket_path(self.runtime_dir / f"vm-{vm_id}.qga")

    def vm_firecracker_socket(self, vm_id: str) -> Path:
        return check_socket_path(self.runtime_dir / f"vm-{vm_id}.fc")

    def all_owner_dirs(self) -> list[Path]:
        """Directories the daemon creates (0700) at start."""
        return [
            self.config_dir,
            self.state_dir,
            self.cache_dir,
            self.runtime_dir,
            self.ssh_dir,
            self.images_dir,
            self.kernels_dir,
            self.vms_dir,
            self.tmp_dir,
        ]

    def ensure(self) -> None:
        for d in self.all_owner_dirs():
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
