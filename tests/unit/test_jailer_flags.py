"""Jailer mode reaches the helper: ``--jailer J --firecracker F`` from ``firecracker.jailer``.

The CLI's first-use start and the systemd unit both add the flags (resolved to
absolute executables) when the owner's config says ``jailer = true``, and
nothing otherwise; a binary that cannot be found is a config error naming the
field. The jailer unit keeps passing ``systemd-analyze verify``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from banger.config.models import FirecrackerSettings
from banger.errors import ConfigError
from banger.helper_start import helper_argv, jailer_flags
from banger.paths import Paths
from banger.system.units import (
    HELPER_CAPABILITIES,
    JAILER_CAPABILITIES,
    ServiceLayout,
    helper_exec_start,
    helper_unit,
)
from banger.vmm.firecracker.jailer_flags import helper_jailer_flags


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def settings(**values: object) -> FirecrackerSettings:
    return FirecrackerSettings.model_validate(values)


def test_no_flags_without_jailer_mode() -> None:
    # Even binaries that do not exist: they are not looked up unless jailer = true.
    assert helper_jailer_flags(settings(binary="/nope/fc", jailer_binary="/nope/j")) == []


def test_absolute_binaries_become_flags(tmp_path: Path) -> None:
    jailer, fc = executable(tmp_path / "jailer"), executable(tmp_path / "firecracker")
    flags = helper_jailer_flags(settings(jailer=True, binary=str(fc), jailer_binary=str(jailer)))
    assert flags == [
        "--jailer", str(jailer), "--firecracker", str(fc), "--jail-base", "/srv/jailer",
    ]  # fmt: skip


def test_names_are_resolved_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    executable(tmp_path / "jailer")
    executable(tmp_path / "firecracker")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert helper_jailer_flags(settings(jailer=True)) == [
        "--jailer", str(tmp_path / "jailer"), "--firecracker", str(tmp_path / "firecracker"),
        "--jail-base", "/srv/jailer",
    ]  # fmt: skip


def test_missing_binaries_name_the_field(tmp_path: Path) -> None:
    fc = executable(tmp_path / "firecracker")
    with pytest.raises(ConfigError, match=r"firecracker\.jailer_binary: 'no-such-jailer-x'"):
        helper_jailer_flags(settings(jailer=True, binary=str(fc), jailer_binary="no-such-jailer-x"))
    (tmp_path / "plain").write_text("")
    with pytest.raises(ConfigError, match=r"firecracker\.binary: .* not an executable file"):
        helper_jailer_flags(
            settings(jailer=True, binary=str(tmp_path / "plain"), jailer_binary=str(fc))
        )


def test_cli_first_use_start_reads_the_owners_config(banger_home: Path) -> None:
    paths = Paths.from_env()
    assert jailer_flags(paths) == []
    jailer, fc = executable(banger_home / "j"), executable(banger_home / "fc")
    paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text(
        f'[firecracker]\njailer = true\nbinary = "{fc}"\njailer_binary = "{jailer}"\n'
    )
    flags = jailer_flags(paths)
    argv = helper_argv(paths, 1000, ["banger-helper"], extra=flags)
    assert argv[-6:] == [
        "--jailer", str(jailer), "--firecracker", str(fc), "--jail-base", "/srv/jailer",
    ]  # fmt: skip
    assert argv[:3] == ["banger-helper", "--socket", str(paths.helper_socket)]


def test_helper_cli_accepts_the_flags(tmp_path: Path) -> None:
    """The real helper parses the flags the CLI and the unit pass."""
    jailer = executable(tmp_path / "jailer")
    from banger.helper.main import parse_args

    args = parse_args(
        ["--socket", "/run/x.sock", "--owner-uid", "1", "--allow-root", str(tmp_path),
         "--jailer", str(jailer), "--firecracker", str(jailer), "--jail-base", "/srv/jailer"]
    )  # fmt: skip
    assert args.jailer == jailer and args.firecracker == jailer
    assert args.jail_base == Path("/srv/jailer")


LAYOUT = ServiceLayout(
    owner="alice",
    owner_uid=1000,
    owner_gid=1001,
    owner_group="alice",
    state_dir=Path("/home/alice/.local/state/banger"),
    bangerd=Path("/usr/bin/bangerd"),
    banger_helper=Path("/usr/bin/banger-helper"),
)
JAILED = dataclasses.replace(
    LAYOUT,
    jailer_flags=("--jailer", "/usr/bin/jailer", "--firecracker", "/usr/bin/firecracker",
                  "--jail-base", "/srv/jailer"),
)  # fmt: skip


def unit_settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_exec_start_carries_the_jailer_flags() -> None:
    assert helper_exec_start(JAILED)[-7:] == [
        "--jailer", "/usr/bin/jailer", "--firecracker", "/usr/bin/firecracker",
        "--jail-base", "/srv/jailer", "--foreground",
    ]  # fmt: skip
    s = unit_settings(helper_unit(JAILED))
    assert s["ExecStart"][0].endswith(
        "--jailer /usr/bin/jailer --firecracker /usr/bin/firecracker --jail-base /srv/jailer "
        "--foreground"
    )
    # ProtectSystem=strict: the jail base (root's, outside the owner's tree) must be writable.
    assert s["ReadWritePaths"] == ["/home/alice/.local/state/banger /srv/jailer"]
    assert JAILED.jail_base == Path("/srv/jailer")
    caps = s["CapabilityBoundingSet"][0].split()
    assert caps == [name for name, _ in HELPER_CAPABILITIES + JAILER_CAPABILITIES]
    assert s["ProtectControlGroups"] == ["no"]
    text = helper_unit(JAILED)
    for name, why in JAILER_CAPABILITIES:
        assert f"#   {name}: {why}" in text


def test_unit_without_jailer_is_unchanged() -> None:
    s = unit_settings(helper_unit(LAYOUT))
    assert "--jailer" not in s["ExecStart"][0]
    assert "CAP_MKNOD" not in s["CapabilityBoundingSet"][0]
    assert s["ReadWritePaths"] == ["/home/alice/.local/state/banger"]
    assert LAYOUT.jail_base is None
    assert s["ProtectControlGroups"] == ["yes"]


def test_jailer_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze missing: apt-get install systemd")
    helper = Path(sys.executable).with_name("banger-helper")
    jailer, fc = executable(tmp_path / "jailer"), executable(tmp_path / "firecracker")
    layout = dataclasses.replace(
        LAYOUT,
        owner="root", owner_uid=0, owner_gid=0, owner_group="root",
        state_dir=tmp_path / "state", banger_helper=helper,
        jailer_flags=("--jailer", str(jailer), "--firecracker", str(fc),
                      "--jail-base", str(tmp_path / "jail")),
    )  # fmt: skip
    unit = tmp_path / "banger-helper.service"
    unit.write_text(helper_unit(layout))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc.stderr
