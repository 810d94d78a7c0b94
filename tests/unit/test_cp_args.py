"""``banger vm cp``'s SRC/DST parsing and the files API's argument checks (no daemon, no guest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from banger.cli.cp_cmd import Endpoint, Summary, _Download, _Meter, parse_endpoint
from banger.client_files import GuestEntry, path_segment
from banger.errors import BangerError, InvalidArgument
from banger.guest.files import check_mode, check_owner, check_path, file_type


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("t1:/root/x", Endpoint("t1", "/root/x")),
        ("t1:rel/x", Endpoint("t1", "rel/x")),
        ("3f9a1c2b:/a:b", Endpoint("3f9a1c2b", "/a:b")),
        ("t1:/new\nline ☃", Endpoint("t1", "/new\nline ☃")),
        ("./a:b", Endpoint(None, "./a:b")),
        ("/abs/a:b", Endpoint(None, "/abs/a:b")),
        ("Upper:x", Endpoint(None, "Upper:x")),  # not a VM name: a host path
        ("plain", Endpoint(None, "plain")),
    ],
)
def test_guest_side_is_a_vm_name_before_the_colon(text: str, want: Endpoint) -> None:
    assert parse_endpoint(text, "SRC") == want


@pytest.mark.parametrize(("text", "message"), [("", "SRC: empty path"), ("t1:", "no guest path")])
def test_bad_endpoints_name_the_argument(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_endpoint(text, "SRC")


def test_path_and_mode_checks() -> None:
    assert check_path("/a\nb ☃") == "/a\nb ☃"
    for bad, message in (("", "empty"), ("/a\0b", "NUL"), ("/" + "a" * 5000, "longer")):
        with pytest.raises(InvalidArgument, match=message):
            check_path(bad)
    assert check_mode(0o4755) == 0o4755
    with pytest.raises(InvalidArgument, match="mode"):
        check_mode(0o10000)
    with pytest.raises(InvalidArgument, match="uid"):
        check_owner(-1, None)
    assert (file_type(0o100644), file_type(0o40755), file_type(0o120777)) == (
        "file",
        "dir",
        "symlink",
    )
    assert file_type(None) == "unknown"
    for bad in ("", "a/b", ".", ".."):
        with pytest.raises(InvalidArgument):
            path_segment(bad)


class HostileGuest:
    """A daemon relaying a broken or hostile guest's listing (no real sftp-server lies so)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def list_files(self, vm: str, path: str) -> list[GuestEntry]:
        return [GuestEntry(self.name, "file", 1, 0o644, 0, 0, None)]


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ""])
def test_a_guest_listing_never_steers_a_download_outside(tmp_path: Path, name: str) -> None:
    top = GuestEntry("d", "dir", 0, 0o755, 0, 0, None)
    summary = Summary("download", "t1", "t1:/d", str(tmp_path / "d"))
    copier = _Download(HostileGuest(name), "t1", summary, _Meter(None, quiet=True))  # type: ignore[arg-type]
    with pytest.raises(BangerError, match="bad name"):
        copier.copy(top, "/d", tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert list((tmp_path / "d").iterdir()) == []
