"""Arguments that naive shell quoting mangles, shared by the session tests.

Quotes of both kinds, expansions (``$HOME``, backticks, ``$(...)``), a newline,
non-ASCII, the empty string, a glob and a command separator: an argv that
reaches the program unchanged went through every layer quoted right.
"""

from __future__ import annotations

HOSTILE = ["it's", '"double"', "$HOME", "`id`", "$(id)", "a\nb", "ünïcödé ☃", "", "*", "; true"]
