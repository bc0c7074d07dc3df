"""The package's layers, as the README draws them: each imports only from the layers below it,
and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

import nbserve

PACKAGE = Path(nbserve.__file__).parent

# Lowest first. A module may import from its own room and from every room of a lower layer.
LAYERS = [
    ["nbserve._version", "nbserve.errors", "nbserve.files", "nbserve.progress"],
    ["nbserve.logs", "nbserve.config"],
    ["nbserve.handlers"],
    ["nbserve.store"],
    ["nbserve.serving"],
    ["nbserve.api", "nbserve.benchmark"],
    ["nbserve.ray_serve"],
    ["nbserve.cli"],
    ["nbserve.notebook", "nbserve.extension"],
    ["nbserve.__main__", "nbserve"],
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("nbserve",) + path.relative_to(PACKAGE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The nbserve modules ``name`` imports, wherever in the file (a deferred import is still
    a dependency), except under ``if TYPE_CHECKING:`` (a name for annotations, never run)."""
    found = set()
    tree = ast.parse(path.read_text())
    for block in ast.walk(tree):
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING":
            block.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # ``from a import b`` imports the module a.b where there is one, else names from a.
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                       else node.module for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imports(name, path, known) for name, path in known.items()}


def room_of(module: str) -> tuple[int, str]:
    best = None
    for level, rooms in enumerate(LAYERS):
        for room in rooms:
            if module == room or module.startswith(room + "."):
                if best is None or len(room) > len(best[1]):
                    best = (level, room)
    assert best is not None, f"{module} is in no layer"
    return best


def test_every_module_sits_in_a_layer_and_imports_only_from_below():
    crossings = []
    for module, targets in graph().items():
        level, room = room_of(module)
        for target in targets:
            target_level, target_room = room_of(target)
            if target_level > level or (target_level == level and target_room != room):
                crossings.append(f"{module} -> {target}")
    assert not crossings, "\n".join(sorted(crossings))


def test_no_import_circle():
    edges = graph()
    circles = []
    # Tarjan's strongly connected components: any with two or more modules is a circle.
    index, low, stack, on_stack, counter = {}, {}, [], set(), [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert not circles, circles
