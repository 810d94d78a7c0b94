"""banger doctor: parsers, single checks on built contexts, and a real run on this host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from banger import hostinfo
from banger.cli.doctor_cmd import doctor
from banger.doctor import checks as d
from banger.doctor.model import CheckResult, DoctorContext
from banger.hostinfo import KvmStatus
from banger.paths import Paths
from tests.support import VENV_BIN, throwaway_user

KVM_USABLE = KvmStatus(True, "ok", True, True, True, False)
KVM_PVM = KvmStatus(False, "nested paravirtual (kvm_pvm)", True, True, False, True)
KVM_NO_ACCESS = KvmStatus(False, "cannot open", True, False, True, False)


def ctx(
    banger_home: Path,
    *,
    kvm: KvmStatus = KVM_PVM,
    firecracker: str | None = None,
    jailer: str | None = None,
    user: str = "root",
) -> DoctorContext:
    return DoctorContext(Paths.from_env(), kvm, firecracker, jailer, user)


def fake_tool(directory: Path, name: str, output: str) -> str:
    """A stand-in executable for a tool this host does not have (Firecracker)."""
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{output}'\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright", "7.2.22"),
        ("qemu-img version 8.2.0\n", "8.2.0"),
        ("nftables v1.0.6 (Lester Gooch #5)", "1.0.6"),
        ("ip utility, iproute2-6.1.0, libbpf 1.1.2", "6.1.0"),
        ("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026", "9.2p1"),
        ("mke2fs 1.47.0 (5-Feb-2023)\n\tUsing EXT2FS Library version 1.47.0", "1.47.0"),
        ("BusyBox v1.35.0 (Debian 1:1.35.0-4+b3) multi-call binary.", "1.35.0"),
        ("Firecracker v1.7.0\n\nSupported snapshot data format versions: v1.0.0", "1.7.0"),
        ("skopeo version 1.9.3", "1.9.3"),
        ("usage: tool [options]\n", None),
    ],
)
def test_version_from_output(text: str, version: str | None) -> None:
    assert d.version_from_output(text) == version


def test_missing_required_tool_fails_with_package_hint(banger_home: Path) -> None:
    spec = d.ToolSpec("banger-no-such-tool", ("--version",), "some-pkg", "testing")
    result = d.check_tool(spec)(ctx(banger_home))
    assert result.status == "fail"
    assert result.fix == "apt-get install some-pkg"
    assert "testing is unavailable" in result.detail


def test_missing_qemu_only_tool_is_a_warning_when_firecracker_can_run(
    banger_home: Path, short_tmp: Path
) -> None:
    spec = d.ToolSpec("banger-no-qemu", ("--version",), "qemu-system-x86", "QEMU", qemu_only=True)
    fc = fake_tool(short_tmp, "firecracker", "Firecracker v1.7.0")
    assert d.check_tool(spec)(ctx(banger_home, kvm=KVM_USABLE, firecracker=fc)).status == "warn"
    # Firecracker installed but KVM unusable: QEMU is the only way, so it fails.
    assert d.check_tool(spec)(ctx(banger_home, kvm=KVM_PVM, firecracker=fc)).status == "fail"


def test_tool_that_reports_no_version_warns(banger_home: Path, short_tmp: Path) -> None:
    tool = fake_tool(short_tmp, "quiet-tool", "usage: quiet-tool [options]")
    spec = d.ToolSpec(tool, ("--version",), "quiet", "nothing")
    result = d.check_tool(spec)(ctx(banger_home))
    assert result.status == "warn" and "did not report a version" in result.detail


def test_firecracker_states(banger_home: Path, short_tmp: Path) -> None:
    absent = d.check_firecracker(ctx(banger_home))
    assert absent.status == "warn" and "QEMU driver" in absent.detail
    fc = fake_tool(short_tmp, "firecracker", "Firecracker v1.7.0")
    no_kvm = d.check_firecracker(ctx(banger_home, firecracker=fc))
    assert no_kvm.status == "warn" and "1.7.0" in no_kvm.detail and "QEMU driver" in no_kvm.detail
    ok = d.check_firecracker(ctx(banger_home, kvm=KVM_USABLE, firecracker=fc))
    assert ok.status == "pass" and ok.detail == f"1.7.0 at {fc}"


def test_jailer_states(banger_home: Path, short_tmp: Path) -> None:
    fc = fake_tool(short_tmp, "firecracker", "Firecracker v1.7.0")
    jailer = fake_tool(short_tmp, "jailer", "Jailer v1.7.0")
    assert "not needed" in d.check_jailer(ctx(banger_home)).detail
    assert "without its jailer" in d.check_jailer(ctx(banger_home, firecracker=fc)).detail
    assert d.check_jailer(ctx(banger_home, firecracker=fc, jailer=jailer)).status == "pass"


def test_virtualisation_check_names_the_tcg_fallback(banger_home: Path) -> None:
    result = d.check_virtualisation(ctx(banger_home, kvm=KVM_PVM))
    assert result.status == "warn"
    assert "software emulation (TCG)" in result.detail
    assert "vmx/svm" in result.fix
    access = d.check_virtualisation(ctx(banger_home, kvm=KVM_NO_ACCESS, user="alice"))
    assert "add alice to the group" in access.fix
    assert d.check_virtualisation(ctx(banger_home, kvm=KVM_USABLE)).status == "pass"


def test_busybox_must_be_static(
    banger_home: Path, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert d.check_busybox(ctx(banger_home)).status == "pass"  # busybox-static is installed
    # A dynamically linked "busybox" first on PATH: /bin/ls is a real dynamic ELF.
    shutil.copy("/bin/ls", short_tmp / "busybox")
    monkeypatch.setenv("PATH", f"{short_tmp}:{os.environ['PATH']}")
    result = d.check_busybox(ctx(banger_home))
    assert result.status == "warn" and "dynamically linked" in result.detail
    monkeypatch.setenv("PATH", str(short_tmp / "empty"))
    assert "not installed" in d.check_busybox(ctx(banger_home)).detail


def test_kvm_group_only_matters_when_kvm_could_work(banger_home: Path) -> None:
    result = d.check_kvm_group(ctx(banger_home, kvm=KVM_PVM))
    assert result.status == "pass" and "not needed" in result.detail


@pytest.mark.root
@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm")
def test_kvm_group_names_the_group_to_join(banger_home: Path) -> None:
    with throwaway_user() as user:
        result = d.check_kvm_group(ctx(banger_home, kvm=KVM_NO_ACCESS, user=user.name))
    group = __import__("grp").getgrgid(os.stat("/dev/kvm").st_gid).gr_name
    assert result.status == "warn"
    assert f"{user.name} is not in group {group}" in result.detail
    assert result.fix.startswith(f"sudo usermod -aG {group} {user.name}")


def test_config_check(banger_home: Path) -> None:
    assert "defaults apply" in d.check_config(ctx(banger_home)).detail
    config = Paths.from_env().config_file
    config.parent.mkdir(parents=True)
    config.write_text('vmm = "bhyve"\nno_such_key = 1\n')
    result = d.check_config(ctx(banger_home))
    assert result.status == "fail"
    assert str(config) in result.detail and "more" in result.detail
    config.write_text('vmm = "qemu"\n')
    assert d.check_config(ctx(banger_home)).detail == f"{config} is valid"


def test_services_absent_are_warnings(banger_home: Path) -> None:
    assert d.check_daemon(ctx(banger_home)).status == "warn"
    helper = d.check_helper(ctx(banger_home))
    assert helper.status == "warn" and "not running" in helper.detail


def test_a_broken_check_fails_alone(banger_home: Path) -> None:
    def check_explodes(c: DoctorContext) -> CheckResult:
        raise RuntimeError("boom")

    results = d.run_checks(Paths.from_env(), checks=(check_explodes, d.check_apt))
    assert results[0] == CheckResult(
        "explodes", "fail", "the check itself failed: RuntimeError('boom')", "report a bug"
    )
    assert results[1].name == "apt tooling"


# -- this host, for real ------------------------------------------------------


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_run_checks_on_this_host(banger_home: Path) -> None:
    results = by_name(d.run_checks(Paths.from_env()))
    assert len(results) == len(d.CHECKS)  # names are unique
    assert results["qemu-system-x86_64"].status == "pass"
    assert results["qemu-img"].status == "pass"
    for tool in ("mkfs.ext4", "debugfs", "resize2fs", "e2fsck", "nft", "ip"):
        assert results[tool].status == "pass", results[tool]
    assert results["busybox (static)"].status == "pass"
    if shutil.which("firecracker") is None:
        assert results["firecracker"].status == "warn"
        assert "QEMU driver" in results["firecracker"].detail
    kvm = hostinfo.kvm_status()
    virt = results["hardware virtualisation"]
    if not kvm.usable_for_ordinary_guests:
        assert virt.status == "warn" and "TCG" in virt.detail
    assert results["config"].status == "pass"
    assert results["daemon"].status == "warn"  # nothing runs in a fresh BANGER_HOME
    assert results["helper"].status == "warn"
    assert not d.failed(list(results.values()))


def test_cli_table_and_json(banger_home: Path) -> None:
    runner = CliRunner()
    table = runner.invoke(doctor, [])
    assert table.exit_code == 0, table.output
    assert "hardware virtualisation" in table.output and "passed" in table.output
    out = runner.invoke(doctor, ["--json"])
    assert out.exit_code == 0
    rows = json.loads(out.output)
    assert {tuple(sorted(r)) for r in rows} == {("detail", "fix", "name", "status")}
    # The root group's --json, carried in ctx.obj, works as well.
    via_root = runner.invoke(doctor, [], obj={"json": True, "debug": False})
    assert [r["name"] for r in json.loads(via_root.output)] == [r["name"] for r in rows]


def test_cli_exits_1_when_a_check_fails(banger_home: Path) -> None:
    config = Paths.from_env().config_file
    config.parent.mkdir(parents=True)
    config.write_text("this is not toml\n")
    result = CliRunner().invoke(doctor, ["--json"])
    assert result.exit_code == 1
    failed = [r for r in json.loads(result.output) if r["status"] == "fail"]
    assert [r["name"] for r in failed] == ["config"]


def test_console_script(banger_home: Path) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "banger"), "doctor", "--json"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert any(r["name"] == "qemu-system-x86_64" for r in json.loads(proc.stdout))


@pytest.mark.root
def test_doctor_as_an_unprivileged_user() -> None:
    # The owner is never root: run the real checks as a throwaway user and see
    # the root-only devices of this host explained rather than failed.
    with throwaway_user() as user:
        proc = subprocess.run(
            [
                "runuser", "-u", user.name, "--",
                # An ordinary Debian user's PATH: no sbin directories (issue #22).
                "env", f"HOME={user.home}", f"BANGER_HOME={user.home}/bh", "PATH=/usr/bin:/bin",
                str(VENV_BIN / "python"), "-c",
                "import json; from banger.doctor.checks import run_checks;"
                "from banger.paths import Paths;"
                "print(json.dumps([r.to_json() for r in run_checks(Paths.from_env())]))",
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = {r["name"]: r for r in json.loads(proc.stdout)}
    # e2fsprogs and nftables live in /usr/sbin: found, not "install e2fsprogs".
    for tool in ("mkfs.ext4", "debugfs", "resize2fs", "e2fsck", "nft"):
        assert results[tool]["status"] == "pass", results[tool]
    tun_mode = os.stat("/dev/net/tun").st_mode & 0o777
    if tun_mode & 0o006 != 0o006:
        assert results["/dev/net/tun"]["status"] == "pass"
        assert "helper opens each tap" in results["/dev/net/tun"]["detail"]
    if not hostinfo.kvm_status().usable_for_ordinary_guests:
        assert results["hardware virtualisation"]["status"] == "warn"
