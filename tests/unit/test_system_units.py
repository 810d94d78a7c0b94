"""Pure builders: unit texts, unit-file quoting, the TOML writer and install metadata."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banger.system.metadata import InstallMetadata, dump_toml
from banger.system.status import error_lines
from banger.system.units import (
    HELPER_CAPABILITIES,
    ServiceLayout,
    daemon_unit,
    helper_exec_start,
    helper_unit,
    unit_quote,
)

LAYOUT = ServiceLayout(
    owner="alice",
    owner_uid=1000,
    owner_gid=1001,
    owner_group="alice",
    state_dir=Path("/home/alice/.local/state/banger"),
    bangerd=Path("/usr/bin/bangerd"),
    banger_helper=Path("/usr/bin/banger-helper"),
)


def settings(unit: str) -> dict[str, list[str]]:
    """key → values of a unit file (comments and section headers dropped)."""
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_helper_unit_is_hardened() -> None:
    s = settings(helper_unit(LAYOUT))
    assert "User" not in s  # root
    assert s["Group"] == ["alice"]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["ProtectSystem"] == ["strict"]
    assert s["ProtectHome"] == ["read-only"]
    assert s["ReadWritePaths"] == ["/home/alice/.local/state/banger"]
    assert s["PrivateTmp"] == ["yes"]
    assert s["SystemCallArchitectures"] == ["native"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_NETLINK AF_INET AF_INET6"]
    assert s["RuntimeDirectory"] == ["banger"]
    assert s["CapabilityBoundingSet"][0].split() == [
        "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_DAC_OVERRIDE",
        "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID",
    ]  # fmt: skip
    assert s["ExecStart"] == [
        "/usr/bin/banger-helper --socket /run/banger/helper.sock --owner-uid 1000 "
        "--owner-gid 1001 --allow-root /home/alice/.local/state/banger "
        "--log /var/log/banger/helper.log --foreground"
    ]


def test_every_capability_is_justified_in_a_comment() -> None:
    text = helper_unit(LAYOUT)
    for name, why in HELPER_CAPABILITIES:
        assert f"#   {name}: {why}" in text


def test_daemon_unit_has_no_privileges() -> None:
    s = settings(daemon_unit(LAYOUT))
    assert s["User"] == ["alice"]
    assert s["CapabilityBoundingSet"] == [""]
    assert s["AmbientCapabilities"] == [""]
    assert s["NoNewPrivileges"] == ["yes"]
    assert s["ExecStart"] == ["/usr/bin/bangerd"]
    assert s["Environment"] == ["BANGER_RUNTIME_DIR=/run/banger"]
    assert s["After"] == ["banger-helper.service network.target"]


def test_root_owner_daemon_is_told_so() -> None:
    root = ServiceLayout("root", 0, 0, "root", Path("/root/s"), Path("/b/bangerd"), Path("/b/h"))
    assert settings(daemon_unit(root))["ExecStart"] == ["/b/bangerd --allow-root"]


def test_unit_quote() -> None:
    assert unit_quote("/usr/bin/x") == "/usr/bin/x"
    assert unit_quote("/home/a b/state") == '"/home/a b/state"'
    assert unit_quote("100%") == "100%%"
    assert unit_quote("$HOME") == "$$HOME"
    assert unit_quote('say "hi"\\') == '"say \\"hi\\"\\\\"'


def test_paths_with_spaces_stay_one_argument() -> None:
    layout = ServiceLayout(
        "bob", 1, 1, "bob", Path("/home/b b/state"), Path("/x/bangerd"), Path("/x/h")
    )
    assert "--allow-root" in helper_exec_start(layout)
    assert '--allow-root "/home/b b/state"' in helper_unit(layout)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.one_of(st.text(), st.integers(), st.booleans(), st.lists(st.text(), max_size=3)),
        max_size=5,
    ),
    st.dictionaries(st.text(min_size=1, max_size=10), st.text(), max_size=4),
)
def test_dump_toml_round_trips(
    scalars: dict[str, str | int | bool | list[str]], table: dict[str, str]
) -> None:
    doc: dict[str, object] = dict(scalars)
    doc.pop("t", None)
    doc["t"] = table
    assert tomllib.loads(dump_toml(doc)) == doc  # type: ignore[arg-type]


def test_metadata_round_trip() -> None:
    meta = InstallMetadata(
        owner="alice",
        owner_uid=1000,
        owner_gid=1001,
        version="0.2.0",
        installed_at="2025-01-01T00:00:00Z",
        daemon_version="0.2.0",
        helper_version="0.1.9",
        paths={"state_dir": "/home/alice/.local/state/banger"},
        binaries={"banger-helper": "/usr/bin/banger-helper"},
        units=("/etc/systemd/system/bangerd.service",),
        created_dirs=("/etc/banger",),
    )
    assert InstallMetadata.from_toml(meta.to_toml()) == meta


def test_bad_metadata_names_the_field() -> None:
    import pytest

    from banger.errors import BangerError

    with pytest.raises(BangerError, match="owner_uid: expected int"):
        InstallMetadata.from_toml('owner = "a"\nowner_uid = "x"\n')


def test_error_lines() -> None:
    log = "\n".join(
        [
            "2025 banger-helper[1] INFO ready",
            "2025 banger-helper[1] ERROR open_tap failed: busy",
            "2025 INFO ok",
            "2025 banger-helper[1] ERROR nat: nft failed",
        ]
    )
    assert error_lines(log) == [
        "2025 banger-helper[1] ERROR open_tap failed: busy",
        "2025 banger-helper[1] ERROR nat: nft failed",
    ]
    assert error_lines(log, limit=1) == ["2025 banger-helper[1] ERROR nat: nft failed"]


def test_runtime_dir_is_a_layout_parameter_below_run() -> None:
    from dataclasses import replace

    from banger.errors import InvalidArgument
    from banger.system.install import check_runtime_dir

    layout = replace(
        LAYOUT,
        runtime_dir=Path("/run/bgt-1/banger"),
        helper_log=Path("/var/log/bgt-1/banger/helper.log"),
    )
    helper, daemon = settings(helper_unit(layout)), settings(daemon_unit(layout))
    assert helper["RuntimeDirectory"] == ["bgt-1/banger"]
    assert helper["LogsDirectory"] == ["bgt-1/banger"]
    assert "/run/bgt-1/banger/helper.sock" in helper["ExecStart"][0]
    assert daemon["Environment"] == ["BANGER_RUNTIME_DIR=/run/bgt-1/banger"]
    # The default stays /run/banger.
    assert settings(helper_unit(LAYOUT))["RuntimeDirectory"] == ["banger"]
    assert check_runtime_dir(Path("/run/x/../banger")) == Path("/run/banger")
    for bad in ("/tmp/banger", "/run", "run/banger", "/run/../etc"):
        with pytest.raises(
            InvalidArgument, match=r"--runtime-dir .*: must be a directory under /run"
        ):
            check_runtime_dir(Path(bad))
