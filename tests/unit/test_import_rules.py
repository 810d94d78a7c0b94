"""The import boundaries of banger's three processes, checked on the source.

docs/ARCHITECTURE.md draws one-way imports: the CLI talks to bangerd over HTTP
and never loads the daemon or the store; the root helper trusts nothing the
owner controls, so it never loads the daemon, the store or the owner's config;
libraries serve the daemon and never import it back; and no module imports
another that (directly or through others) imports it again.

How imports are read (stdlib ``ast`` only, no module is executed):

- every ``import`` counts wherever it stands: at module level, inside a
  function (a lazy import defers the cost, not the dependency) and under
  ``if TYPE_CHECKING:`` (a type-only import is still a dependency, and a cycle
  through one is a cycle in the design);
- ``from banger.a import b`` is an import of ``banger.a.b`` when that is a
  module, of ``banger.a`` otherwise; relative imports are resolved;
- importing ``banger.a.b`` is not counted as importing the package
  ``banger.a``: an ``__init__`` counts only where it is imported by name (most
  hold a docstring; the few that import, ``config`` and the lazy
  ``vmm.firecracker``, are then counted with their own imports);
- the rules are transitive: a CLI module that imports a library that imports
  the daemon breaks the CLI rule, and the failure shows the chain.
"""

from __future__ import annotations

import ast
import functools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import banger

SRC = Path(banger.__file__).parent.parent

Graph = Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class Rule:
    """Modules under ``sources`` (minus ``except_``) never reach ``forbidden``."""

    name: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...]
    except_: tuple[str, ...] = ()

    def applies_to(self, module: str) -> bool:
        return within(module, self.sources) and not within(module, self.except_)


RULES = (
    Rule(
        "the CLI never imports the daemon or the store",
        ("banger.cli",),
        ("banger.daemon", "banger.store"),
    ),
    Rule(
        "the helper never imports the daemon, the store or the config",
        ("banger.helper",),
        ("banger.daemon", "banger.store", "banger.config"),
    ),
    Rule(
        "libraries never import the daemon",
        ("banger",),
        ("banger.daemon",),
        except_=("banger.cli", "banger.daemon"),
    ),
    Rule("nothing below the CLI imports it", ("banger",), ("banger.cli",), except_=("banger.cli",)),
    # The Python SDK is a client of bangerd, like the CLI (issue #17 item 5).
    Rule(
        "the SDK never imports the daemon or the store",
        ("banger.sdk",),
        ("banger.daemon", "banger.store"),
    ),
)

#: Import edges (importer, imported) that break a rule or close a cycle,
#: ignored by the checks: empty, and to stay so. An entry is a debt with its
#: reason in a comment, removed with the import (``test_known_exceptions_still_exist``
#: fails on an entry whose import is gone).
KNOWN_EXCEPTIONS: frozenset[tuple[str, str]] = frozenset()


def within(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def module_files(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Every module of ``package`` under ``src``: name → (file, is a package)."""
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(module: str, path: Path, is_package: bool, known: Iterable[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports, anywhere in its file."""
    names = set(known)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in names else base)
    return {name for name in found if name in names and name != module}


def import_graph(src: Path = SRC, package: str = "banger") -> dict[str, frozenset[str]]:
    files = module_files(src, package)
    return {
        module: frozenset(imported_modules(module, path, is_package, files))
        for module, (path, is_package) in files.items()
    }


def without(graph: Graph, edges: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    drop = set(edges)
    return {m: frozenset(t for t in targets if (m, t) not in drop) for m, targets in graph.items()}


def rule_violations(graph: Graph, rules: Iterable[Rule] = RULES) -> list[str]:
    """One line per (rule, module, forbidden module reached), with the chain."""
    found: list[str] = []
    for rule in rules:
        for start in sorted(m for m in graph if rule.applies_to(m)):
            parent: dict[str, str] = {start: start}
            queue = deque([start])
            while queue:
                current = queue.popleft()
                for target in sorted(graph[current]):
                    if target in parent:
                        continue
                    parent[target] = current
                    queue.append(target)
            for reached in sorted(parent):
                if reached != start and within(reached, rule.forbidden):
                    chain = [reached]
                    while chain[-1] != start:
                        chain.append(parent[chain[-1]])
                    found.append(f"{rule.name}: {' -> '.join(reversed(chain))}")
    return found


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


# --- the checker, on a tree made to break every rule ----------------------------


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_sees_each_kind_of_violation(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "banger/__init__.py": "",
            "banger/cli/__init__.py": "",
            # the CLI reaches the daemon through a library, lazily
            "banger/cli/main.py": "def f():\n    from banger import lib\n",
            "banger/lib.py": "from banger.daemon.core import X\n",
            "banger/daemon/__init__.py": "",
            "banger/daemon/core.py": "from . import util\nX = 1\n",
            "banger/daemon/util.py": "",
            # the helper reads the config, type-only
            "banger/helper/__init__.py": "",
            "banger/helper/ops.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from banger.config.models import Config\n"
            ),
            "banger/config/__init__.py": "",
            "banger/config/models.py": "",
            # a cycle closed by a relative import inside a function
            "banger/a.py": "import banger.b\n",
            "banger/b.py": "def g():\n    from .a import thing\n",
            # a library importing the CLI
            "banger/c.py": "from banger.cli import main\n",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["banger.daemon.core"] == {"banger.daemon.util"}
    assert rule_violations(graph) == [
        "the CLI never imports the daemon or the store: "
        "banger.cli.main -> banger.lib -> banger.daemon.core",
        "the CLI never imports the daemon or the store: "
        "banger.cli.main -> banger.lib -> banger.daemon.core -> banger.daemon.util",
        "the helper never imports the daemon, the store or the config: "
        "banger.helper.ops -> banger.config.models",
        "libraries never import the daemon: banger.c -> banger.cli.main -> banger.lib "
        "-> banger.daemon.core",
        "libraries never import the daemon: banger.c -> banger.cli.main -> banger.lib "
        "-> banger.daemon.core -> banger.daemon.util",
        "libraries never import the daemon: banger.lib -> banger.daemon.core",
        "libraries never import the daemon: banger.lib -> banger.daemon.core -> banger.daemon.util",
        "nothing below the CLI imports it: banger.c -> banger.cli.main",
    ]
    assert cycles(graph) == [["banger.a", "banger.b"]]
    assert cycles(without(graph, {("banger.b", "banger.a")})) == []


def test_the_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "banger/__init__.py": "",
            "banger/cli/__init__.py": "",
            "banger/cli/main.py": "from banger import client\n",
            "banger/client.py": "import json\n",
            "banger/daemon/__init__.py": "",
            "banger/daemon/app.py": "from banger import client\nfrom banger.store import db\n",
            "banger/store/__init__.py": "",
            "banger/store/db.py": "",
        },
    )
    graph = import_graph(tmp_path)
    assert rule_violations(graph) == []
    assert cycles(graph) == []


# --- banger itself -------------------------------------------------------------


@functools.cache
def banger_graph() -> Graph:
    return import_graph()


def test_banger_keeps_its_import_boundaries() -> None:
    assert rule_violations(without(banger_graph(), KNOWN_EXCEPTIONS)) == []


def test_banger_has_no_import_cycles() -> None:
    assert cycles(without(banger_graph(), KNOWN_EXCEPTIONS)) == []


def test_known_exceptions_still_exist() -> None:
    graph = banger_graph()
    assert sorted(e for e in KNOWN_EXCEPTIONS if e[1] not in graph.get(e[0], ())) == []


def test_architecture_names_every_package() -> None:
    """docs/ARCHITECTURE.md's package table has a line for every package of banger."""
    doc = SRC.parent / "docs" / "ARCHITECTURE.md"
    if not doc.exists():
        pytest.skip("not a source checkout")
    rows = {
        line.split("|")[1].strip().split()[0].strip("`")
        for line in doc.read_text().splitlines()
        if line.startswith("| `banger")
    }
    packages = {m for m, (_, is_package) in module_files(SRC, "banger").items() if is_package}
    assert packages - rows == set()
