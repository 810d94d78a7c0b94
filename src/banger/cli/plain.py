"""Terminal output made plain text: ``session logs --plain``.

A session's log is what its terminal received: colour and cursor escapes,
``\\r\\n`` line ends, carriage returns redrawing a progress line. Into a pipe
or a file the user wants text: escapes go, ``\\r\\n`` becomes ``\\n``, a lone
``\\r`` (a redraw) becomes ``\\n`` so each state is its own line, and the other
control characters (bell, backspace…) go; tabs and newlines stay. UTF-8 is
passed through untouched (the filter works on bytes below 0x80 only).

The log arrives in chunks that can split an escape sequence or a ``\\r\\n``:
:class:`PlainFilter` keeps an unfinished tail for the next chunk.
"""

from __future__ import annotations

import re

# CSI (ESC [ params final), OSC (ESC ] ... BEL or ESC \), DCS/APC/PM/SOS strings,
# charset designations (ESC ( B), and any other two-byte ESC sequence.
_ESCAPE = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    rb"|\x1b[PX^_][^\x1b]*\x1b\\"
    rb"|\x1b[()*+][ -~]"
    rb"|\x1b[ -~]"
)
# What may still become an escape sequence or a CRLF once the next chunk comes.
_UNFINISHED = re.compile(
    rb"(?:\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[()*+])?|\r)\Z"
)
_OTHER_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")


def plain(data: bytes) -> bytes:
    """``data`` (complete) as plain text."""
    text = _ESCAPE.sub(b"", data)
    text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return _OTHER_CONTROLS.sub(b"", text.replace(b"\x1b", b""))


class PlainFilter:
    """:func:`plain` over a stream of chunks."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        tail = _UNFINISHED.search(data)
        cut = tail.start() if tail and tail.group() else len(data)
        self._pending = data[cut:]
        return plain(data[:cut])

    def close(self) -> bytes:
        rest, self._pending = self._pending, b""
        return plain(rest)
