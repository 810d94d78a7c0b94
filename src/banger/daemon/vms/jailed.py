"""Firecracker under its jailer (config ``firecracker.jailer = true``), from the daemon's side.

The root helper's ``start_jailer`` op lays out the jail, runs the jailer and
returns Firecracker's pid, start time and API socket inside the jail. That
socket path is long (``<jail base>/firecracker/<id>/root/run/firecracker.socket``,
the base being the helper's ``--jail-base``, root's, default ``/srv/jailer``),
so the daemon links it from the VM's usual runtime socket name (``connect()``
follows the symlink; ``sun_path`` only holds the short name). The boot requests
are the plain driver's, with every path mapped to its name inside the jail and
the console sent to the hard-linked ``console.log`` with ``PUT /serial``
(under ``--daemonize`` Firecracker's stdout is /dev/null). The guest agent's vsock
socket is bound by Firecracker in the jail's ``/run`` (``JAIL_AGENT_SOCKET``) and
linked from the VM's agent socket name the same way, so the daemon's agent uses
reach it as they reach a plain Firecracker's.

Control (status, pause, resume, stop, snapshot) is the plain driver's, by pid,
start time and socket; after the process ends, ``teardown_jail`` removes the
jail directory and cgroup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from banger.guest.agent import AgentEndpoint
from banger.helper.client import HelperClient
from banger.vmm.base import (
    DriverFiles,
    LaunchSpec,
    StopResult,
    VMMCapabilities,
    VMMProcess,
    VMMStatus,
)
from banger.vmm.firecracker.api import FirecrackerClient
from banger.vmm.firecracker.driver import FirecrackerDriver, check_spec, wait_for_socket
from banger.vmm.firecracker.jailer import JAIL_AGENT_SOCKET, NAMES, JailRequest
from banger.vmm.firecracker.plan import DEFAULT_OPTIONS, FirecrackerOptions, VMFiles, boot_requests

log = logging.getLogger(__name__)


def jail_request(spec: LaunchSpec, files: VMFiles) -> JailRequest:
    return JailRequest(
        vm_id=spec.vm_id,
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        kernel=spec.kernel,
        initrd=spec.initrd,
        root_disk=spec.root_disk.path,
        root_read_only=spec.root_disk.read_only,
        work_disk=spec.work_disk,
        console_log=spec.console_log,
        log=files.log,
        metrics=files.metrics,
    )


def in_jail_paths(request: JailRequest) -> dict[Path, str]:
    """Host path → the path Firecracker sees (the jail's fixed names, see ``jailer.NAMES``)."""
    return {source: f"/{NAMES[role]}" for role, source in request.files().items()}


def link_socket(link: Path, target: Path) -> None:
    """``link`` → ``target``, replacing a stale link or socket, never anything else."""
    with contextlib.suppress(FileNotFoundError):
        mode = link.lstat().st_mode
        if not (stat.S_ISLNK(mode) or stat.S_ISSOCK(mode)):
            raise FileExistsError(f"{link} exists and is not a socket or symlink")
        link.unlink()
    link.symlink_to(target)


def _touch(path: Path) -> None:
    """The jail hard-links these, so they must exist as the owner's regular files."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.close(fd)


class JailedFirecracker:
    def __init__(
        self,
        helper: HelperClient,
        *,
        options: FirecrackerOptions = DEFAULT_OPTIONS,
        start_timeout: float = 10.0,
        control_timeout: float = 5.0,
    ) -> None:
        self.helper = helper
        self.options = options
        self.start_timeout = start_timeout
        self.control_timeout = control_timeout
        # Control goes by pid + start time + socket: the plain driver's methods do it.
        self.control = FirecrackerDriver(options=options, control_timeout=control_timeout)

    @property
    def name(self) -> str:
        return "firecracker"

    @property
    def capabilities(self) -> VMMCapabilities:
        return self.control.capabilities

    def adapt_spec(self, spec: LaunchSpec, files: DriverFiles) -> LaunchSpec:
        return self.control.adapt_spec(spec, files)

    def agent_endpoint(self, path: Path) -> AgentEndpoint:
        return self.control.agent_endpoint(path)

    async def launch(self, spec: LaunchSpec) -> VMMProcess:
        check_spec(spec)
        files = VMFiles.for_spec(spec)
        for path in (spec.console_log, files.log, files.metrics):
            _touch(path)
        request = jail_request(spec, files)
        result = await self.helper.acall("start_jailer", **request.to_args())
        link_socket(spec.control_socket, Path(str(result["socket"])))
        proc = VMMProcess(
            self.name,
            spec.vm_id,
            int(result["pid"]),
            int(result["start_time"]),
            spec.control_socket,
            ("jailer", str(result["jail_root"])),
        )
        mapping = in_jail_paths(request)
        try:
            if spec.agent_socket is not None:
                jail_root = Path(str(result["jail_root"]))
                link_socket(spec.agent_socket, jail_root / JAIL_AGENT_SOCKET.lstrip("/"))
                mapping[spec.agent_socket] = JAIL_AGENT_SOCKET
            await wait_for_socket(spec.control_socket, self.start_timeout)
            requests = boot_requests(
                spec, files, self.options, path=lambda p: mapping[p], console_via_api=True
            )
            async with FirecrackerClient(spec.control_socket, timeout=self.control_timeout) as api:
                for item in requests:
                    await api.send(item)
        except BaseException:
            await self.control.stop(proc, graceful_timeout=0)
            await self._teardown(proc)
            raise
        return proc

    async def _teardown(self, proc: VMMProcess) -> None:
        try:
            await self.helper.acall("teardown_jail", vm_id=proc.vm_id)
        except Exception as exc:  # the VM is stopped either way; a leftover jail is only disk
            log.warning("VM %s: jail not removed: %s", proc.vm_id, exc)
        with contextlib.suppress(FileNotFoundError):
            if proc.control_socket.is_symlink():
                proc.control_socket.unlink()

    async def stop(self, proc: VMMProcess, graceful_timeout: float) -> StopResult:
        result = await self.control.stop(proc, graceful_timeout)
        await self._teardown(proc)
        return result

    async def wait(self, proc: VMMProcess, timeout: float | None) -> bool:
        return await self.control.wait(proc, timeout)

    async def status(self, proc: VMMProcess) -> VMMStatus:
        return await self.control.status(proc)

    async def pause(self, proc: VMMProcess) -> None:
        await self.control.pause(proc)

    async def resume(self, proc: VMMProcess) -> None:
        await self.control.resume(proc)
