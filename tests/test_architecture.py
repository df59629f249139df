"""The layers of docs/ARCHITECTURE.md, enforced by walking the imports of every module under src/.

- floors: a package imports only itself and packages on lower floors (texface < eg3d < faceworld < scd < inversion);
- no import circle between modules (imports inside functions count too: a late import does not break a circle);
- no module imports an entry-point module (one with ``if __name__ == "__main__":``, i.e. a ``python -m`` command);
- no package imports another package's private names (``_name``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import ROOT

SRC = ROOT / "src"
FLOORS = {"texface": 1, "eg3d": 2, "faceworld": 3, "scd": 4, "inversion": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_entry_point(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
               and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
               for node in tree.body)


def imports_of(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) of every import statement, relative imports resolved."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".") if is_package else module.split(".")[:-1]
                parent = parent[:len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, dict]:
    table = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        name = module_name(path)
        table[name] = {"path": path, "entry": is_entry_point(tree),
                       "imports": imports_of(tree, name, path.name == "__init__.py")}
    return table


def project_target(imported: str, names: list[str], modules: dict) -> list[str]:
    """The project modules an import statement reaches (``from pkg import mod`` reaches ``pkg.mod``)."""
    if imported.split(".")[0] not in FLOORS:
        return []
    targets = [imported] if imported in modules else []
    targets += [f"{imported}.{n}" for n in names if f"{imported}.{n}" in modules]
    return targets


def test_every_package_has_a_floor(modules):
    assert {name.split(".")[0] for name in modules} <= set(FLOORS)


def test_packages_import_only_their_own_floor_or_lower(modules):
    wrong = []
    for name, info in modules.items():
        floor = FLOORS[name.split(".")[0]]
        for imported, _ in info["imports"]:
            top = imported.split(".")[0]
            if top in FLOORS and FLOORS[top] > floor:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong


def test_no_module_imports_an_entry_point(modules):
    wrong = [f"{name} imports {target}" for name, info in modules.items() for imported, names in info["imports"]
             for target in project_target(imported, names, modules) if modules[target]["entry"] and target != name]
    assert not wrong, wrong


def test_no_package_imports_another_packages_private_names(modules):
    wrong = [f"{name} imports {n} from {imported}" for name, info in modules.items()
             for imported, names in info["imports"] for n in names
             if n.startswith("_") and imported.split(".")[0] in FLOORS and imported.split(".")[0] != name.split(".")[0]]
    assert not wrong, wrong


def test_no_import_circle(modules):
    graph = {name: {t for imported, names in info["imports"] for t in project_target(imported, names, modules)
                    if t != name} for name, info in modules.items()}
    # A package's __init__ is part of every import of its modules; ours only hand names on, so leave them out.
    graph = {name: {t for t in targets if modules[t]["path"].name != "__init__.py"} for name, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name)
            assert cycle is None, " -> ".join(cycle)


def test_the_checks_see_the_known_entry_points(modules):
    commands = {name for name, info in modules.items() if info["entry"]}
    assert {"eg3d.render", "eg3d.convert", "scd.generate", "scd.train", "scd.evaluate", "scd.convert",
            "scd.synthesize", "faceworld.dataset", "faceworld.fit", "faceworld.measure", "inversion.train",
            "inversion.evaluate", "inversion.invert", "inversion.encode", "inversion.convert"} <= commands
    assert not {"eg3d.frames", "scd.pipeline", "scd.synthetic", "texface.cli"} & commands
