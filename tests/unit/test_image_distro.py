from __future__ import annotations

from pathlib import Path

import pytest

from banger.errors import InvalidArgument, NotFound
from banger.images.aptsources import (
    check_mirror,
    debian_mirror_from,
    host_sources,
    parse_deb822,
    parse_one_line,
    resolve_debian_mirror,
)
from banger.images.distro import DEFAULT_PACKAGES, mmdebstrap_argv, parse_distro_ref

# Placeholder host names (RFC 2606): no real mirror is named in this repository.
MIRROR = "http://mirror.example/debian"

ONE_LINE = """\
# deb cdrom:[Debian GNU/Linux 12]/ bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://vendor.example/apt stable-vendor main
deb http://security.example/debian-security bookworm-security main contrib
deb-src http://src.example/debian bookworm main
deb http://mirror.example/debian bookworm main non-free-firmware  # the archive
"""

DEB822 = """\
Types: deb
# a comment inside the stanza
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""

THIRD_PARTY_DEB822 = """\
Types: deb
URIs: https://vendor.example/node_20.x
Suites: nodistro
Components: main
"""


def test_argv_is_minbase_directory_build_with_packages() -> None:
    argv = mmdebstrap_argv("bookworm", Path("/srv/build/tree"), mirror=MIRROR)
    assert argv == [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--format=directory",
        "--components=main",
        "--include=" + ",".join(DEFAULT_PACKAGES),
        "bookworm",
        "/srv/build/tree",
        MIRROR,
    ]
    for pkg in ("systemd-sysv", "openssh-server", "tmux", "iproute2", "sudo", "curl"):
        assert pkg in DEFAULT_PACKAGES
    assert "kmod" not in DEFAULT_PACKAGES  # modules live in banger's initramfs


def test_suites_before_bookworm_are_not_asked_for_util_linux_extra() -> None:
    # bullseye's util-linux still has hwclock; util-linux-extra does not exist there,
    # and one missing package fails the whole mmdebstrap run.
    assert "util-linux-extra" in DEFAULT_PACKAGES and "python3" in DEFAULT_PACKAGES
    old = mmdebstrap_argv("bullseye", Path("/srv/t"), mirror=MIRROR)
    include = next(a for a in old if a.startswith("--include="))
    assert "util-linux-extra" not in include.split("=", 1)[1].split(",")
    assert "qemu-guest-agent" in include
    new = mmdebstrap_argv("trixie", Path("/srv/t"), mirror=MIRROR)
    assert "util-linux-extra" in next(a for a in new if a.startswith("--include="))


def test_argv_rejects_bad_inputs() -> None:
    with pytest.raises(InvalidArgument, match="suite"):
        mmdebstrap_argv("--hook=x", Path("/srv/t"), mirror=MIRROR)
    with pytest.raises(InvalidArgument, match="absolute"):
        mmdebstrap_argv("bookworm", Path("tree"), mirror=MIRROR)
    with pytest.raises(InvalidArgument, match="package names"):
        mmdebstrap_argv("bookworm", Path("/srv/t"), mirror=MIRROR, packages=["ok", "--evil"])
    with pytest.raises(InvalidArgument, match="debian_mirror"):
        mmdebstrap_argv("bookworm", Path("/srv/t"), mirror="deb http://x bookworm main")


@pytest.mark.parametrize("ref", ["debian:bookworm", "debian:sid", "debian:trixie"])
def test_distro_refs(ref: str) -> None:
    parsed = parse_distro_ref(ref)
    assert str(parsed) == ref
    assert parsed.image_name == ref.replace(":", "-")


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ("bookworm", "debian:<suite>"),
        ("ubuntu:jammy", "debian:<suite>"),
        ("debian:", "suite"),
        ("debian:Bookworm", "suite"),
        ("debian:bookworm;rm", "suite"),
        ("debian:../x", "suite"),
    ],
)
def test_bad_distro_refs(ref: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        parse_distro_ref(ref)


def test_one_line_sources() -> None:
    entries = parse_one_line(ONE_LINE)
    assert [e.uri for e in entries] == [
        "https://vendor.example/apt",
        "http://security.example/debian-security",
        "http://src.example/debian",
        MIRROR,
    ]
    assert entries[0].suites == ("stable-vendor",)
    assert entries[3].components == ("main", "non-free-firmware")
    # The vendor suite is not a Debian one, security is skipped, deb-src is not deb.
    assert debian_mirror_from(entries) == MIRROR


def test_deb822_sources() -> None:
    entries = parse_deb822(DEB822)
    assert len(entries) == 2
    assert entries[0].suites == ("bookworm", "bookworm-updates")
    assert debian_mirror_from(entries) == MIRROR
    assert debian_mirror_from(parse_deb822(THIRD_PARTY_DEB822)) is None
    disabled = "Enabled: no\n" + DEB822.split("\n\n")[0]
    assert parse_deb822(disabled) == []


def test_host_sources_order_and_explicit_mirror(tmp_path: Path) -> None:
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "a-vendor.sources").write_text(THIRD_PARTY_DEB822)
    (parts / "debian.sources").write_text(DEB822)
    (parts / "ignored.list.disabled").write_text("deb http://no.example/debian bookworm main\n")
    assert next(e.uri for e in host_sources(tmp_path)) == "https://vendor.example/node_20.x"
    assert resolve_debian_mirror(None, tmp_path) == MIRROR
    assert resolve_debian_mirror("https://other.example/debian", tmp_path).startswith("https://")
    (parts / "debian.sources").unlink()
    with pytest.raises(NotFound, match="no Debian archive"):
        resolve_debian_mirror(None, tmp_path)


@pytest.mark.parametrize(
    "bad", ["ftp://x.example/debian", "http:///debian", "http://x.example/a b", "-http://x"]
)
def test_bad_mirrors(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        check_mirror(bad)
