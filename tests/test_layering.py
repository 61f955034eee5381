"""The package's layering, read from the source: every `distil` import, at module level or inside a
function (a lazy import is still a dependency), points down the layers, and no modules import each other
round in a circle. Nothing is imported to check this."""

from __future__ import annotations

import ast
from pathlib import Path

import distil

SRC = Path(distil.__file__).parent
# What every layer may use: errors, the generic registry, atomic writes, the optional transformers import.
BASE = ("distil.errors", "distil.registry", "distil.fileio", "distil.hf_common")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The distil modules `name` imports anywhere in its source (`from pkg import module` counts the module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("distil"):
            assert node.module is not None
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("distil"))
    return {m for m in found if m != name}


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _violations(package: str, allowed: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{name} imports {dep}"
        for name in MODULES
        if _within(name, (package,))
        for dep in _imports(name)
        if not _within(dep, allowed)
    )


def test_data_and_models_import_only_themselves_and_the_base_modules() -> None:
    # data/ reads its options through protocols (e.g. unlabeled.UnlabeledRule), not the recipe schema.
    assert _violations("distil.data", ("distil.data", *BASE)) == []
    assert _violations("distil.models", ("distil.models", *BASE)) == []


def test_the_training_loop_leaves_display_and_metrics_to_its_callers() -> None:
    # The loop reports to whatever progress display it is given (engine.EpochReporter)...
    above = ("distil.report", "distil.run", "distil.api", "distil.cli")
    upward = sorted(
        f"{name} imports {dep}"
        for name in MODULES
        if _within(name, ("distil.train",))
        for dep in _imports(name)
        if _within(dep, above)
    )
    assert upward == []
    # ...and sharded_metrics reduces the evaluation it is given (distributed.ShardEvaluation).
    assert not [dep for dep in _imports("distil.train.distributed") if _within(dep, ("distil.measure",))]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = {name: {m for m in _imports(name) if m in MODULES} for name in MODULES}
    assert _cycles(graph) == []
