"""Pull references and skopeo command lines (pure; no skopeo run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.images.oci import skopeo
from banger.images.oci.ref import ArchiveRef, RegistryRef, image_name_for, parse_ref

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("debian:bookworm", "docker.io/library/debian:bookworm"),
        ("ubuntu", "docker.io/library/ubuntu:latest"),
        ("docker://python:3.12", "docker.io/library/python:3.12"),
        ("team/app:1.2", "docker.io/team/app:1.2"),
        ("localhost:5000/x:y", "localhost:5000/x:y"),
        ("localhost/x", "localhost/x:latest"),
        ("127.0.0.1:5000/test/x:tag", "127.0.0.1:5000/test/x:tag"),
        ("registry.example/o/r@" + DIGEST, "registry.example/o/r@" + DIGEST),
        ("registry.example:5000/o/r:v1@" + DIGEST, "registry.example:5000/o/r:v1@" + DIGEST),
    ],
)
def test_registry_refs_are_normalised(text: str, expected: str) -> None:
    ref = parse_ref(text)
    assert isinstance(ref, RegistryRef)
    assert str(ref) == expected


def test_archive_refs() -> None:
    assert parse_ref("oci-archive:/srv/a.tar") == ArchiveRef("oci-archive", "/srv/a.tar")
    assert parse_ref("docker-archive:/srv/b.tar") == ArchiveRef("docker-archive", "/srv/b.tar")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-debian",
        "--authfile=/etc/shadow",
        "docker://-x",
        "debian bookworm",
        "debian:book\nworm",
        "Debian:bookworm",
        "oci-archive:relative.tar",
        "oci-archive:/a:b.tar",
        "dir:/etc",
        "docker-daemon:debian:bookworm",
        "containers-storage:debian",
        "oci:/srv/layout",
        "debian:" + "x" * 200,
        "registry.example/o/r@sha256:short",
        "x/../y:1",
    ],
)
def test_bad_refs_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="image reference"):
        parse_ref(text)


def test_default_image_names() -> None:
    assert image_name_for(parse_ref("debian:bookworm")) == "debian-bookworm"
    assert image_name_for(parse_ref("localhost:5000/team/app:1.2")) == "team-app-1.2"
    assert image_name_for(parse_ref("oci-archive:/srv/My+App.tar")) == "my-app"
    assert image_name_for(parse_ref("registry.example/o/r@" + DIGEST)) == "o-r-" + "ab" * 6


def test_copy_argv_pins_platform_and_transport() -> None:
    ref = parse_ref("debian:bookworm")
    assert isinstance(ref, RegistryRef)
    argv = skopeo.copy_argv(ref.with_digest(DIGEST), Path("/c/oci/pulls/1"), "banger",
                            skopeo.SkopeoOptions())  # fmt: skip
    assert argv == [
        "skopeo", "--override-os", "linux", "--override-arch", "amd64", "copy", "--quiet",
        f"docker://docker.io/library/debian@{DIGEST}", "oci:/c/oci/pulls/1:banger",
    ]  # fmt: skip


def test_loopback_and_configured_registries_skip_tls_and_authfile_is_passed() -> None:
    options = skopeo.SkopeoOptions(Path("/home/u/auth.json"), frozenset({"reg.lan:5000"}))
    local = parse_ref("127.0.0.1:5000/x:y")
    lan = parse_ref("reg.lan:5000/x:y")
    hub = parse_ref("debian")
    assert isinstance(local, RegistryRef) and isinstance(lan, RegistryRef)
    assert isinstance(hub, RegistryRef)
    assert "--tls-verify=false" in skopeo.inspect_digest_argv(local, options)
    assert "--src-tls-verify=false" in skopeo.copy_argv(lan, Path("/l"), "t", options)
    hub_argv = skopeo.copy_argv(hub, Path("/l"), "t", options)
    assert not any("tls-verify" in a for a in hub_argv)
    assert "--src-authfile=/home/u/auth.json" in hub_argv
    assert "--authfile=/home/u/auth.json" in skopeo.inspect_digest_argv(hub, options)


def test_archives_get_no_registry_flags() -> None:
    ref = parse_ref("oci-archive:/srv/a.tar")
    argv = skopeo.copy_argv(ref, Path("/l"), "t", skopeo.SkopeoOptions(Path("/a.json")))
    assert argv[-2:] == ["oci-archive:/srv/a.tar", "oci:/l:t"]
    assert not any("authfile" in a for a in argv)


@pytest.mark.parametrize("layout", [Path("rel"), Path("/a:b")])
def test_layout_paths_are_checked(layout: Path) -> None:
    with pytest.raises(InvalidArgument):
        skopeo.copy_argv(parse_ref("debian"), layout, "t", skopeo.SkopeoOptions())
