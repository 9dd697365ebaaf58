"""The package's layers (README, Architecture): every module of workflow/animbench belongs to
one layer and imports only from its own layer and the layers below it; no import circle.

Imports are read with `ast` from the source, at any depth (a lazy import inside a function
counts as much as one at the top: it runs all the same), relative imports resolved."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "workflow" / "animbench"

# layer -> the layers it may import from (its own included)
ALLOWED: dict[str, frozenset[str]] = {
    "foundation": frozenset({"foundation"}),
    "networks": frozenset({"foundation", "networks"}),
    "data": frozenset({"foundation", "networks", "data"}),
    "models": frozenset({"foundation", "networks", "models"}),
    "train": frozenset({"foundation", "networks", "data", "models", "train"}),
    "evaluate": frozenset({"foundation", "networks", "data", "models", "evaluate"}),
    "application": frozenset(
        {"foundation", "networks", "data", "models", "train", "evaluate", "application"}
    ),
    "cli": frozenset(
        {"foundation", "networks", "data", "models", "train", "evaluate", "application", "cli"}
    ),
}

# modules by name; packages (the name and everything under it) by their package name
LAYERS: dict[str, str] = {
    # foundation: what every layer stands on
    "animbench": "foundation",  # __init__: __version__
    "animbench.errors": "foundation",
    "animbench.files": "foundation",  # atomic writes
    "animbench.device": "foundation",  # resolve_device
    "animbench.checkpoint": "foundation",  # the checkpoint format
    "animbench.mappings": "foundation",  # merge of nested configuration mappings
    "animbench.downloads": "foundation",  # download with sha256
    "animbench.weights": "foundation",  # the one weights cache and its missing-file policy
    "animbench.pose_env": "foundation",  # the isolated openpifpaf environment
    # standard networks in their published layouts (torchvision/timm/reference), above it
    "animbench.networks": "networks",
    # the layers above those
    "animbench.data": "data",
    "animbench.models": "models",
    "animbench.train": "train",
    "animbench.evaluate": "evaluate",
    "animbench.config": "application",  # validates against the models' presets
    "animbench.animate": "application",
    "animbench.stats": "application",
    "animbench.table_rows": "application",  # the long format every results table shares
    "animbench.capacity": "application",  # table1: parameters and FLOPs of built presets
    "animbench.tables": "application",
    "animbench.report": "application",  # package: markup, charts, gifs, tables, page
    "animbench.cli": "cli",
}
PACKAGES = {
    "animbench.networks",
    "animbench.data",
    "animbench.models",
    "animbench.train",
    "animbench.evaluate",
    "animbench.report",
}


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """(dotted module name, is a package __init__) of a source file under `root` (the
    package's folder, whose name is the top-level package)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imported_modules(source: str, module: str, is_package: bool, known: Iterable[str]) -> set:
    """The modules of `known` that `source` (module `module`) imports, at any depth."""
    known = set(known)
    top = module.split(".")[0]
    package = module if is_package else module.rpartition(".")[0]

    def resolve(name: str) -> str | None:
        # the longest known module the dotted name lies in
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` mod
            names = [
                f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name == top or name.startswith(top + "."):
                resolved = resolve(name)
                if resolved and resolved != module:
                    found.add(resolved)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, for every .py file under `root`."""
    files = {path: module_name(path, root) for path in sorted(root.rglob("*.py"))}
    known = {name for name, _ in files.values()}
    return {
        name: imported_modules(path.read_text(encoding="utf-8"), name, is_package, known)
        for path, (name, is_package) in files.items()
    }


def layer_of(module: str, layers: Mapping[str, str] = LAYERS) -> str | None:
    """A module's layer: its own entry, else its sub-package's (networks, data, models, train,
    evaluate). A new top-level module has none until it is given one."""
    if module in layers:
        return layers[module]
    package = module.rpartition(".")[0]
    while package:
        if package in PACKAGES:
            return layers[package]
        package = package.rpartition(".")[0]
    return None


def layer_violations(
    graph: Mapping[str, set[str]],
    layers: Mapping[str, str] = LAYERS,
    allowed: Mapping[str, frozenset[str]] = ALLOWED,
) -> list[str]:
    """One line per module with no layer and per import from a layer not below or beside."""
    problems = []
    for module in sorted(graph):
        layer = layer_of(module, layers)
        if layer is None:
            problems.append(f"{module}: in no layer (add it to LAYERS and to README)")
            continue
        for target in sorted(graph[module]):
            target_layer = layer_of(target, layers)
            if target_layer not in allowed[layer]:
                problems.append(f"{module} ({layer}) imports {target} ({target_layer})")
    return problems


def import_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle (a → b → … → a) per strongly connected component with a circle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(node: str) -> None:  # the package's graph is shallow: recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)

    cycles = []
    for component in components:
        members = set(component)
        start = min(component)
        # breadth-first from start back to start, inside the component: a shortest circle
        paths = {start: [start]}
        queue = [start]
        cycle = None
        while queue and cycle is None:
            node = queue.pop(0)
            for succ in sorted(graph.get(node, ())):
                if succ == start:
                    cycle = paths[node] + [start]
                    break
                if succ in members and succ not in paths:
                    paths[succ] = paths[node] + [succ]
                    queue.append(succ)
        cycles.append(cycle)
    return sorted(cycles)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_ROOT)


def test_every_module_imports_only_its_layer_and_below(graph):
    assert "animbench.checkpoint" in graph and "animbench.train.trainer" in graph  # read at all
    assert layer_violations(graph) == []


def test_no_import_circle(graph):
    assert import_cycles(graph) == [], "\n".join(" -> ".join(c) for c in import_cycles(graph))


def test_layer_rules_of_the_issue():
    """Issue 16: models and data import nothing from train, evaluate, animate or the CLI;
    evaluate nothing from train; the standard networks (part 5) stand on the foundation only."""
    for low in ("data", "models"):
        assert not {"train", "evaluate", "application", "cli"} & ALLOWED[low]
    assert ALLOWED["networks"] == {"foundation", "networks"}
    assert all("networks" in ALLOWED[layer] for layer in ALLOWED if layer != "foundation")
    assert "train" not in ALLOWED["evaluate"]
    assert ALLOWED["foundation"] == {"foundation"}
    assert all(layer in ALLOWED for layer in LAYERS.values())
    assert {layer_of(m) for m in PACKAGES} == {
        "networks",
        "data",
        "models",
        "train",
        "evaluate",
        "application",
    }


def test_checker_catches_planted_violations_and_circles(tmp_path: Path):
    """The checks read a planted package: the test above cannot pass for want of reading."""
    root = tmp_path / "animbench"
    for folder in ("models", "train", "evaluate"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "errors.py").write_text("import os\n")
    (root / "checkpoint.py").write_text("from .errors import *\n")
    (root / "models" / "fomm.py").write_text(
        "from animbench import checkpoint\n\ndef f():\n    from ..train import trainer\n"
    )
    (root / "train" / "trainer.py").write_text("from animbench.models.fomm import f\n")
    (root / "evaluate" / "metrics.py").write_text("import animbench.train.trainer\n")
    (root / "stray.py").write_text("")

    planted = import_graph(root)
    assert planted["animbench.models.fomm"] == {"animbench.checkpoint", "animbench.train.trainer"}
    assert planted["animbench.checkpoint"] == {"animbench.errors"}
    assert layer_violations(planted) == [
        "animbench.evaluate.metrics (evaluate) imports animbench.train.trainer (train)",
        "animbench.models.fomm (models) imports animbench.train.trainer (train)",
        "animbench.stray: in no layer (add it to LAYERS and to README)",
    ]
    assert import_cycles(planted) == [
        ["animbench.models.fomm", "animbench.train.trainer", "animbench.models.fomm"]
    ]


def test_cycle_finder_on_a_synthetic_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    upward = {"animbench.errors": {"animbench.cli"}, "animbench.cli": set()}
    assert layer_violations(upward) == ["animbench.errors (foundation) imports animbench.cli (cli)"]
