"""InvalidArgument names the field at fault (issue #17 item 5: the SDK's errors carry it).

The daemon's answer is ``{error, hint, kind}``; the field is the start of the
message by banger's convention, so an error rebuilt on the client side carries
the same :attr:`field` as the one raised in the daemon.
"""

from __future__ import annotations

import pytest

from banger.client import error_from_response
from banger.errors import BangerError, InvalidArgument, NotFound


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("memory: must be at least 128 MiB, got 1 MiB", ("memory",)),
        ("invalid request: body.fail_at: Input should be a valid string", ("fail_at",)),
        ("invalid request (2 problems): name: not a DNS label; cpus: at least 1", ("name", "cpus")),
        ("file_sync[2].guest: must be under ~/ or /root", ("file_sync[2].guest",)),
        ("disk-size: not a size", ("disk-size",)),
        ("no VM named 'x'", ()),
        ("invalid name: 'a/b'", ()),  # a sentence before the colon is not a field
    ],
)
def test_the_field_is_read_from_the_message(message: str, fields: tuple[str, ...]) -> None:
    exc = InvalidArgument(message, "a hint")
    assert exc.fields == fields
    assert exc.field == (fields[0] if fields else None)
    assert (exc.message, exc.hint) == (message, "a hint")


def test_a_given_field_wins_and_other_errors_have_none() -> None:
    assert InvalidArgument("bad thing", field="cpus").field == "cpus"
    assert NotFound("no VM named 'x'").field is None
    assert BangerError("x: y").field is None


def test_an_error_rebuilt_from_the_daemons_answer_carries_the_field() -> None:
    body = b'{"error": "cpus: at least 1, got 0", "hint": "e.g. 2", "kind": "InvalidArgument"}'
    exc = error_from_response(400, body)
    assert isinstance(exc, InvalidArgument)
    assert (exc.field, exc.hint) == ("cpus", "e.g. 2")
