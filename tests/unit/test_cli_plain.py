"""``session logs --plain``: terminal output as text, whatever the chunking."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from banger.cli.plain import PlainFilter, plain

TERMINAL = (
    b"\x1b[?2004h\x1b]0;root@vm: ~\x07root@vm:~# ls\r\n"
    b"\x1b[0m\x1b[01;34mdir\x1b[0m  caf\xc3\xa9.txt\r\n"
    b"10%\r50%\r100%\r\n\x1b(Bdone\x07\tok\x08\r\n"
)
TEXT = b"root@vm:~# ls\ndir  caf\xc3\xa9.txt\n10%\n50%\n100%\ndone\tok\n"


def test_escapes_and_crlf_go_utf8_stays() -> None:
    assert plain(TERMINAL) == TEXT


@given(st.lists(st.integers(min_value=0, max_value=len(TERMINAL)), max_size=12))
def test_any_chunking_gives_the_same_text(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(TERMINAL)]
    f = PlainFilter()
    out = b"".join(f.feed(TERMINAL[a:b]) for a, b in itertools.pairwise(bounds))
    assert out + f.close() == TEXT
