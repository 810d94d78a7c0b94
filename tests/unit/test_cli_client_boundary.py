"""The CLI talks to bangerd only through BangerClient's public methods.

Transport, error mapping and URL building live in :mod:`banger.client`; a
CLI module reaching for a private client member (``c._request``,
``client._transport_failed``, ``from banger.client import _segment``) would
grow a second copy of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import banger.cli
from banger import client

CLI_DIR = Path(banger.cli.__file__).parent
#: private names of the client module and of BangerClient (not dunders)
PRIVATE = {
    name
    for name in (*vars(client), *vars(client.BangerClient))
    if name.startswith("_") and not name.startswith("__")
}


def private_uses(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "banger.client":
            found += [
                f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")
            ]
    return found


def test_the_checker_sees_private_uses() -> None:
    source = (
        "from banger.client import _segment, BangerClient\n"
        "def f(c):\n    c._request('GET', '/v1/vms')\n    c._op('POST', '/x')\n"
    )
    assert private_uses(source) == [
        "line 1: import _segment",
        "line 3: ._request",
        "line 4: ._op",
    ]
    assert {"_request", "_op", "_exchange", "_transport_failed", "_segment"} <= PRIVATE


def test_no_cli_module_uses_private_client_members() -> None:
    offenders = {
        path.name: uses
        for path in sorted(CLI_DIR.glob("*.py"))
        if (uses := private_uses(path.read_text()))
    }
    assert offenders == {}
