"""Property tests: no generated ``host`` escapes the owner's home."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from hypothesis import example, given
from hypothesis import strategies as st

from banger.config.file_sync import parse_guest, parse_host
from tests.support import Branches

HOME = Path("/home/alice")

# Segments biased towards the tricky ones; joined with "/" (sometimes doubled).
segment = st.one_of(
    st.sampled_from(["..", ".", "", "~", "~bob", "home", "alice", "alicex", "etc", "...", "a..b"]),
    st.text(alphabet="abc./~-", min_size=1, max_size=6),
)
prefix = st.sampled_from(["", "/", "//", "~", "~/", "/home/alice/", "/home/", "~bob/", "./"])
host_strings = st.builds(
    lambda p, parts, sep: p + sep.join(parts),
    prefix,
    st.lists(segment, max_size=6),
    st.sampled_from(["/", "//"]),
)


def _try(value: str) -> Path | None:
    try:
        return parse_host(value, HOME)
    except ValueError:
        return None


def test_accepted_hosts_stay_inside_home() -> None:
    branches = Branches()

    @given(host_strings | st.text(max_size=30))
    @example("~/.gitconfig")  # accepted
    @example("/home/alice//a/./b")  # accepted, normalised
    @example("~/../alice/x")
    @example("/home/alice/../alice/x")
    @example("/home/alicex")
    @example("~/./..")
    def stay_inside_home(value: str) -> None:
        result = _try(value)
        has_dotdot = ".." in value.split("/")
        if has_dotdot:
            assert result is None, value
        if result is None:
            branches.took("refused")
            return
        branches.took("accepted")
        assert result.is_absolute()
        assert ".." not in result.parts
        assert result != HOME
        assert result.is_relative_to(HOME), (value, result)
        # Normalised: re-parsing the result gives itself, and no empty/dot segments remain.
        assert _try(str(result)) == result
        assert "." not in PurePosixPath(str(result)).parts

    stay_inside_home()
    branches.require("accepted", "refused")


@given(st.lists(segment, min_size=1, max_size=5))
def test_host_with_dotdot_segment_is_never_accepted(parts: list[str]) -> None:
    for start in ("~/", "/home/alice/"):
        value = start + "/".join([*parts, "..", *parts])
        assert _try(value) is None


def test_accepted_guests_stay_inside_work_disk() -> None:
    branches = Branches()

    @given(host_strings | st.text(max_size=30))
    @example("~/.config/x")  # accepted
    @example("/home/alice/a//b/.")  # /root/a//b/.: accepted, normalised
    @example("~/../etc")  # refused
    def stay_inside_work_disk(value: str) -> None:
        value = value.replace("/home/alice", "/root")
        try:
            relative = parse_guest(value)
        except ValueError:
            branches.took("refused")
            return
        branches.took("accepted")
        assert relative
        assert not relative.startswith("/")
        assert ".." not in relative.split("/")
        assert "" not in relative.split("/") and "." not in relative.split("/")

    stay_inside_work_disk()
    branches.require("accepted", "refused")
