"""``banger system status``'s log scan: what counts as an error line."""

from __future__ import annotations

from banger.system.status import error_lines


def test_a_logger_named_error_is_not_an_error() -> None:
    # Every bangerd log has this line (uvicorn's logger is called uvicorn.error).
    log = "2026-12-07 10:12:53,894 INFO uvicorn.error: Started server process [364]\n"
    assert error_lines(log) == []


def test_error_words_levels_and_tracebacks_are() -> None:
    log = "\n".join(
        [
            "banger: error: something failed",
            "error: at the start of a line",
            "2026 bangerd[1] CRITICAL out of disk",
            "Traceback (most recent call last):",
            "2026 INFO uvicorn.error: Finished server process [364]",
        ]
    )
    assert error_lines(log, limit=10) == [
        "banger: error: something failed",
        "error: at the start of a line",
        "2026 bangerd[1] CRITICAL out of disk",
        "Traceback (most recent call last):",
    ]
