"""The house rules, read from the source with ``ast``: who may import whom, and how big a room may grow.

- ``core/`` (the host) imports nothing from ``plugins/`` or ``targets/``: what it needs from a built-in is a hook
  or a method of the Technique/Target/Recovery/Strategy contract, so third-party plugins can do the same.
- plugins and targets do not import each other; a plugin uses no other plugin's private names.
- the board agent (``targets/agent.py``) imports nothing of edgeslim: it runs on boards without it.
- core modules import each other without a circle.
- no module over 400 lines (the agent excepted: one self-contained file by design), no function over 60.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"core": "edgeslim", "plugins": "edgeslim.plugins", "targets": "edgeslim.targets"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
AGENT = ROOT / "targets" / "agent.py"


def modules() -> list[tuple[str, Path]]:
    found = []
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found.append((name, path))
    return found


def imports(path: Path, include_type_checking: bool = False) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in ``path``, lazy ones included."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    if not include_type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def owner(module: str) -> str | None:
    """"core", "plugins" or "targets" for an edgeslim module name."""
    if module.startswith(("edgeslim.plugins", "edgeslim.targets")):
        return module.split(".")[1]
    return "core" if module == "edgeslim" or module.startswith("edgeslim.") else None


def test_the_rules_see_every_module():
    names = [name for name, _ in modules()]
    assert "edgeslim.search" in names and "edgeslim.plugins.greedy" in names and "edgeslim.targets.agent" in names


@pytest.mark.parametrize(("name", "path"), modules(), ids=[n for n, _ in modules()])
def test_imports_follow_the_layering(name: str, path: Path):
    here = owner(name)
    wrong = []
    for module, names, line in imports(path, include_type_checking=True):
        there = owner(module)
        if here == "core" and there in ("plugins", "targets"):
            wrong.append(f"line {line}: the host imports {module} (make it a hook or a contract method)")
        if {here, there} == {"plugins", "targets"}:
            wrong.append(f"line {line}: {here} imports {module} (shared helpers belong in core/)")
        if there in ("plugins", "targets") and module != name:
            private = [n for n in names if n.startswith("_")]
            if private:
                wrong.append(f"line {line}: uses {module}'s private {', '.join(private)}")
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong)


@pytest.mark.parametrize(("name", "path"), [m for m in modules() if m[0].startswith("edgeslim.plugins")],
                         ids=[n for n, _ in modules() if n.startswith("edgeslim.plugins")])
def test_no_plugin_reaches_into_another_plugins_private_members(name: str, path: Path):
    """``OtherPlugin._helper(...)``: a class imported from another plugin, used by a private member."""
    imported = {alias for module, names, _ in imports(path) if owner(module) == "plugins" and module != name
                for alias in names}
    tree = ast.parse(path.read_text())
    reaches = [f"line {node.lineno}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
               and node.value.id in imported and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not reaches, f"{path.relative_to(ROOT)}: " + "; ".join(reaches)


def test_the_board_agent_imports_nothing_of_edgeslim():
    found = [f"line {line}: {module}" for module, _, line in imports(AGENT, include_type_checking=True)
             if module == "edgeslim" or module.startswith("edgeslim.")]
    assert not found, "targets/agent.py runs on boards without edgeslim: " + "; ".join(found)


def test_core_modules_import_each_other_without_a_circle():
    graph: dict[str, set[str]] = {}
    for name, path in modules():
        if owner(name) == "core":
            graph[name] = {m for m, _, _ in imports(path) if owner(m) == "core" and m != name}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            circles.append(" -> ".join(trail[trail.index(node):] + [node]))
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])

    for start in graph:
        visit(start, [])
    assert not circles, "import circles: " + "; ".join(sorted(set(circles)))


@pytest.mark.parametrize(("name", "path"), [m for m in modules() if m[1] != AGENT],
                         ids=[n for n, p in modules() if p != AGENT])
def test_rooms_stay_small(name: str, path: Path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by responsibility"
    tree = ast.parse(path.read_text())
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"
