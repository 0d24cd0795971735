"""Imports go one way: ``daemon -> hgext_hosting -> mercurial, peewee`` (issue 11).

Every module's imports are read with :mod:`ast`, those inside functions too (a
lazy import is still a dependency), without importing anything.  The rules:

- ``hgext_hosting`` never imports ``daemon`` (the daemon is one face of the
  extension's operations, not a part of them);
- ``hgext_hosting.policy`` is a pure leaf: the standard library and
  ``hgext_hosting.names`` only, so that every face and the push path share it;
- the modules of ``hgext_hosting`` import each other without a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hgext_hosting", "daemon")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules ``name`` imports anywhere in its file (``from pkg import mod`` counts as pkg.mod)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_parser_sees_lazy_and_relative_imports():
    """The reader itself: a function-level relative import is an edge (else every check is blind)."""
    edges = graph()
    assert "hgext_hosting.names" in edges["hgext_hosting.policy"]
    assert "hgext_hosting.site" in edges["daemon.worker"]
    assert "mercurial" in {top(m) for m in edges["hgext_hosting.site"]}  # imported inside functions only


def test_hgext_hosting_never_imports_daemon():
    wrong = sorted((name, dep) for name, deps in graph().items() if top(name) == "hgext_hosting"
                   for dep in deps if top(dep) == "daemon")
    assert wrong == [], f"hgext_hosting imports the daemon: {wrong}"


def test_policy_is_a_pure_leaf():
    allowed = set(sys.stdlib_module_names) | {"__future__", "hgext_hosting.names"}
    deps = graph()["hgext_hosting.policy"]
    wrong = sorted(d for d in deps if d not in allowed and top(d) not in allowed
)
    assert wrong == [], f"policy imports {wrong}: it may import only the standard library and names"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among ``edges`` as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep in edges and dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_hgext_hosting_has_no_import_cycle():
    ours = {name: {d for d in deps if top(d) == "hgext_hosting"
}
            for name, deps in graph().items() if top(name) == "hgext_hosting"}
    cycle = find_cycle(ours)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
])
def test_find_cycle(edges, expected):
    assert find_cycle(edges) == expected


def run_probe(code: str) -> None:
    """Run ``code`` in a fresh interpreter (an import's effects show only the first time); it must succeed."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_cli_loads_neither_the_repository_machinery_nor_twisted():
    """Every ``hg-hosting`` command is a new process: importing the program must not load
    ``mercurial.hg`` (and with it localrepo, revlogs, bundle2) nor Twisted, which only the
    repository commands and ``serve`` use.  They cost ~0.2 s of CPU per process."""
    run_probe("import sys\n"
              "import daemon.cli, hgext_hosting.admin\n"
              "daemon.cli.build_parser()\n"
              "heavy = sorted(m for m in ('mercurial.hg', 'mercurial.localrepo', 'twisted') if m in sys.modules)\n"
              "assert not heavy, heavy\n")


def test_importing_the_daemon_changes_nothing_in_mercurial():
    """hgweb's permission hook is installed by the daemon's factory (``setup_hgweb``), not by an import.

    A fresh interpreter: an import's side effects show only the first time.
    """
    run_probe("from mercurial.hgweb import common\n"
              "before = list(common.permhooks)\n"
              "import daemon.app, daemon.service, daemon.pages, daemon.cli\n"
              "assert common.permhooks == before, common.permhooks\n"
              "daemon.app.setup_hgweb()\n"
              "daemon.app.setup_hgweb()\n"
              "assert common.permhooks == [*before, daemon.app.hosting_permhook], common.permhooks\n")
