"""The package's layers, checked from its imports.

``worker`` is layered (README, "Layout"): a pure ``core`` that imports no Faust, Redis or
Kafka client; ``config`` (settings, security, the shipped definitions); ``ports``, the
Protocols the runtime and the operator commands are written against; ``adapters`` behind
them, the only home of the Redis and Kafka clients; the ``runtime`` (the Faust app, its
agents, the HTTP views); ``ops``, the operator commands; ``devtools`` (embedded stack,
generator, demo), which nothing but the command line imports; and ``cli``. This test
reads every import of every module, those inside functions and ``TYPE_CHECKING`` blocks
too, and fails on one against the direction, on a client library outside its home, and
on an import circle between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "worker"

#: The layers each layer may import (itself included); ``package`` is ``worker/__init__``.
ALLOWED: dict[str, frozenset[str]] = {
    "package": frozenset(),
    "core": frozenset({"core"}),
    "config": frozenset({"config", "core"}),
    "ports": frozenset({"ports", "core"}),
    "adapters": frozenset({"adapters", "ports", "config", "core"}),
    "runtime": frozenset({"runtime", "adapters", "ports", "config", "core"}),
    "ops": frozenset({"ops", "runtime", "adapters", "ports", "config", "core"}),
    "devtools": frozenset({"devtools", "ops", "runtime", "adapters", "ports", "config", "core"}),
    "cli": frozenset({"cli", "devtools", "ops", "runtime", "adapters", "ports", "config", "core"}),
}
#: Where each client library may be imported.
CLIENT_HOMES: dict[str, frozenset[str]] = {
    # devtools: the embedded Redis Cluster forms itself with CLUSTER commands
    "redis": frozenset({"adapters", "devtools"}),
    "aiokafka": frozenset({"adapters"}),
    "kafka": frozenset({"adapters", "devtools"}),
    "faust": frozenset({"adapters", "runtime"}),
    "mode": frozenset({"adapters", "runtime"}),
    "aiohttp": frozenset({"adapters", "runtime"}),
}


def layer_of(module: str) -> str:
    """The layer of a ``worker`` module (its first package below ``worker``).

    >>> layer_of("worker.core.features.view"), layer_of("worker.ports"), layer_of("worker")
    ('core', 'ports', 'package')
    """
    parts = module.split(".")
    return "package" if len(parts) == 1 else parts[1]


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[tuple[str, int]]:
    """Every module ``path`` imports, absolute, with its line: ``from x import y`` yields
    ``x.y`` when that is a module of the package, else ``x``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module_name(path).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if _is_module(candidate) else base), node.lineno


def _is_module(name: str) -> bool:
    if not name.startswith("worker"):
        return False
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def package_imports() -> dict[str, list[tuple[str, int]]]:
    """``module -> [(imported module, line), ...]`` for every module of ``worker``."""
    return {module_name(path): list(imports_of(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def violations(graph: Mapping[str, Iterable[tuple[str, int]]]) -> list[str]:
    """Imports against the layer direction, and client libraries outside their homes.

    >>> violations({"worker.core.x": [("worker.runtime.app", 3), ("redis", 4)]})
    ['worker.core.x:3 (core) imports worker.runtime.app (runtime)', 'worker.core.x:4 (core) \
imports redis, which only adapters and devtools may import']
    >>> violations({"worker.runtime.app": [("worker.core.events", 1), ("faust", 2)]})
    []
    """
    found = []
    for module, imported in graph.items():
        layer = layer_of(module)
        for target, line in imported:
            if target == "worker" or target.startswith("worker."):
                other = layer_of(target)
                if other not in ALLOWED[layer]:
                    found.append(f"{module}:{line} ({layer}) imports {target} ({other})")
                continue
            root = target.split(".")[0]
            homes = CLIENT_HOMES.get(root)
            if homes is not None and layer not in homes:
                where = " and ".join(sorted(homes))
                found.append(
                    f"{module}:{line} ({layer}) imports {target}, which only {where} may import"
                )
    return found


def circles(graph: Mapping[str, Iterable[tuple[str, int]]]) -> list[list[str]]:
    """The import circles between modules of the package (Tarjan's strongly connected
    components of two modules or more).

    >>> circles({"worker.a": [("worker.b", 1)], "worker.b": [("worker.a", 1)], "worker.c": []})
    [['worker.a', 'worker.b']]
    """
    edges = {m: sorted({t for t, _ in targets if t in graph}) for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(found)


def test_every_import_goes_with_the_layers() -> None:
    graph = package_imports()
    assert set(map(layer_of, graph)) <= set(ALLOWED), "a module outside the known layers"
    assert violations(graph) == []


def test_no_import_circles() -> None:
    assert circles(package_imports()) == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from worker.runtime import app\n    import redis\n")
    assert [name for name, _ in imports_of(source)] == ["worker.runtime.app", "redis"]
