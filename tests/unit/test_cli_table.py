"""Tables into a pipe: one line per row, however long (issue #21 item 12)."""

from __future__ import annotations

import subprocess
import sys

PRINT = """
from banger.cli.output import print_table
print_table(["NAME", "PATH"], [["a" * 50, "/x" * 60], ["short", None]])
"""


def test_a_table_into_a_pipe_is_not_folded_at_80_columns() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PRINT], capture_output=True, text=True, check=True, env={}
    ).stdout
    lines = out.splitlines()
    assert len(lines) == 3, out  # header and two rows: nothing folded onto extra lines
    assert lines[1] == "a" * 50 + "  " + "/x" * 60
    assert lines[2].split() == ["short", "-"]
    assert all(line == line.rstrip() for line in lines)
