"""The import rule: mbbench's modules form layers, and imports point down only; and the loading rule: one seam
builds a plan's model.

Every module under mbbench/ is read with `ast` (top-level, function-local and `TYPE_CHECKING` imports alike).
A module may import from a lower layer, or from its own layer without a cycle; never from a higher one. Some
pairs in one layer are refused too (the analytical model never reads the catalogue or the suites). No module
imports an mbbench module inside a function: a function-local import is for an optional extra (Ray, flash-attn,
onnxruntime, openvino), never to dodge a cycle. Every producer loads its model through `mbbench.loading`, the
only module outside `models/` and `engines/` that builds a model, prepares an engine or sets torch's threads;
`torch.compile` appears only under `engines/` and `models/`. docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mbbench"

# Lowest first. A module belongs to the first entry that names it or a package above it.
LAYERS: list[tuple[str, ...]] = [
    ("mbbench", "mbbench.records", "mbbench.errors", "mbbench.dtypes", "mbbench.formatting",
     "mbbench.progress", "mbbench.files", "mbbench.units", "mbbench.allocator", "mbbench.estimate"),
    ("mbbench.hardware", "mbbench.suites", "mbbench.batching", "mbbench.results"),
    ("mbbench.models", "mbbench.device"),
    ("mbbench.bench", "mbbench.engines", "mbbench.environment", "mbbench.verify"),
    ("mbbench.plan", "mbbench.loading", "mbbench.calibration", "mbbench.published"),
    ("mbbench.runner", "mbbench.compare", "mbbench.predict", "mbbench.validation", "mbbench.bands",
     "mbbench.prediction_check", "mbbench.sweep", "mbbench.measured_sweep",
     "mbbench.latency", "mbbench.serve", "mbbench.max_batch_trial"),
    ("mbbench.driver", "mbbench.matrix", "mbbench.cluster", "mbbench.report"),
    ("mbbench.commands", "mbbench.cli", "mbbench.entry"),
]
# Within a layer: (importer prefix, imported prefix) pairs that are refused all the same.
REFUSED = [
    ("mbbench.hardware", "mbbench.suites"), ("mbbench.hardware", "mbbench.batching"),
    ("mbbench.hardware", "mbbench.results"),
    ("mbbench.records", "mbbench"),  # records import nothing from mbbench
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int:
    """The layer of a module: its most specific entry (`mbbench` alone names only the package's __init__)."""
    best, depth = None, -1
    for index, names in enumerate(LAYERS):
        for prefix in names:
            matches = name == prefix if prefix == "mbbench" else within(name, prefix)
            if matches and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    if best is None:
        raise AssertionError(f"{name} has no layer: add it to LAYERS here and to docs/architecture.md")
    return best


def resolve(node: ast.ImportFrom | ast.Import, importer: str, path: Path, known: set[str]) -> list[str]:
    """The mbbench modules an import statement names (a `from package import module` names the module)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:
            package = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found = []
    for target in targets:
        if not within(target, "mbbench"):
            continue
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        found.append(target)
    return found


def imports() -> list[tuple[str, str, int, bool]]:
    """(importer, imported, line, inside a function) for every mbbench import in the package."""
    known = set(modules())
    edges = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges += [(name, target, node.lineno, id(node) in local)
                          for target in resolve(node, name, path, known) if target != name]
    return edges


def cycles(edges: list[tuple[str, str, int, bool]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for importer, imported, _, _ in edges:
        graph.setdefault(importer, set()).add(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def where(importer: str, line: int) -> str:
    return f"{modules()[importer].relative_to(PACKAGE.parent)}:{line}"


def violations(edges: list[tuple[str, str, int, bool]]) -> list[str]:
    """Every upward, refused or function-local import, named by file and line."""
    found = []
    for importer, imported, line, local in edges:
        if layer_of(imported) > layer_of(importer):
            found.append(f"{where(importer, line)}: {importer} (layer {layer_of(importer)}) imports {imported} "
                         f"(layer {layer_of(imported)}), which is above it")
        for a, b in REFUSED:
            if within(importer, a) and within(imported, b) and not within(imported, a):
                found.append(f"{where(importer, line)}: {importer} may not import {imported}")
        if local:
            found.append(f"{where(importer, line)}: {importer} imports {imported} inside a function "
                         "(only optional extras may be imported lazily)")
    return found


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_point_down_only():
    problems = violations(imports())
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    found = cycles(imports())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: an upward import, a cycle and a function-local import are each reported."""
    edges = [("mbbench.hardware.perfmodel", "mbbench.models.registry", 7, False),
             ("mbbench.plan", "mbbench.runner", 3, True), ("mbbench.runner", "mbbench.plan", 9, False)]
    problems = violations(edges)
    assert any("perfmodel.py:7" in p and "above it" in p for p in problems)
    assert any("plan.py:3" in p and "inside a function" in p for p in problems)
    assert cycles(edges) == [["mbbench.plan", "mbbench.runner"]]
    assert [p for p in violations([("mbbench.hardware.memory", "mbbench.suites", 2, False)]) if "may not" in p]


@pytest.mark.parametrize("name, layer", [("mbbench.records", 0), ("mbbench.hardware.perfmodel", 1),
                                         ("mbbench.models.registry", 2), ("mbbench.bench.trial", 3),
                                         ("mbbench.plan", 4), ("mbbench.loading", 4), ("mbbench.runner", 5),
                                         ("mbbench.max_batch_trial", 5), ("mbbench.matrix", 6),
                                         ("mbbench.commands.measure", 7), ("mbbench", 0)])
def test_layers_as_documented(name, layer):
    assert layer_of(name) == layer


# ------------------------------------------------------------------------------------------ the loading seam

# The producers of records and trials: each loads its model through `mbbench.loading` (issue 33).
PRODUCERS = ("mbbench.runner", "mbbench.compare", "mbbench.latency", "mbbench.serve", "mbbench.measured_sweep",
             "mbbench.max_batch_trial")
# What builds a model, prepares an engine or sets torch's threads: `loading` calls them, models/ and engines/
# define them; no other module may.
LOADING_CALLS = {"build_encoder", "prepare_engine", "apply_threads", "set_num_threads", "set_num_interop_threads"}
LOADING_OWNERS = ("mbbench.loading", "mbbench.models", "mbbench.engines")
COMPILE_OWNERS = ("mbbench.models", "mbbench.engines")  # where `torch.compile` may appear


def loading_calls(name: str, tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every use in `tree` of a loading step: a LOADING_CALLS name (called, referenced or
    imported), `registry.encoder`, and `torch.compile`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in LOADING_CALLS:
            through_loading = isinstance(node.value, ast.Name) and node.value.id == "loading"
            found += [] if through_loading else [(node.lineno, node.attr)]  # `loading.apply_threads` is the seam
        elif isinstance(node, ast.Attribute) and node.attr == "encoder" and \
                isinstance(node.value, ast.Name) and node.value.id == "registry":
            found.append((node.lineno, "registry.encoder"))
        elif isinstance(node, ast.Attribute) and node.attr == "compile" and \
                isinstance(node.value, ast.Name) and node.value.id == "torch":
            found.append((node.lineno, "torch.compile"))
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name in LOADING_CALLS
                      or (node.module == "torch" and alias.name == "compile")]
    return found


def loading_violations(sources: dict[str, str]) -> list[str]:
    """Every loading step outside its owners, and every producer that does not import `mbbench.loading`."""
    problems = []
    for name, source in sources.items():
        tree = ast.parse(source)
        for line, what in loading_calls(name, tree):
            owners = COMPILE_OWNERS if what == "torch.compile" else LOADING_OWNERS
            if not any(within(name, owner) for owner in owners):
                problems.append(f"{name}:{line}: {what} outside {', '.join(owners)} (load through mbbench.loading)")
        if name in PRODUCERS:
            imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                        and node.module == "mbbench" for alias in node.names}
            imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
            if "loading" not in imported and "mbbench.loading" not in imported:
                problems.append(f"{name}: a producer that does not load through mbbench.loading")
    return problems


def test_every_producer_loads_through_loading():
    sources = {name: path.read_text(encoding="utf-8") for name, path in modules().items()}
    assert set(PRODUCERS) <= set(sources)
    problems = loading_violations(sources)
    assert not problems, "\n".join(problems)


def test_the_loading_rule_catches_a_second_way_to_load():
    """The rule can fail: a producer compiling its own forward (the old `service_model`), building through the
    registry, or setting threads itself; and a producer that never imports `loading`."""
    sources = {
        "mbbench.latency": "from mbbench import loading\nforward = torch.compile(encoder.__call__, dynamic=True)\n",
        "mbbench.serve": "from mbbench.models import registry\nencoder = registry.encoder(spec, options)\n",
        "mbbench.runner": "from mbbench import engines, loading\nengines.apply_threads(plan.threads)\n"
                          "loading.apply_threads(plan.threads)\n",
        "mbbench.compare": "from torch import compile\n",
        "mbbench.engines.torch_engines": "torch.compile(module)\ntorch.set_num_threads(1)\n",
        "mbbench.loading": "registry.encoder(spec, options)\nengines.prepare_engine(engine)\n",
    }
    problems = loading_violations(sources)
    assert any(p.startswith("mbbench.latency:2: torch.compile") for p in problems)
    assert any(p.startswith("mbbench.serve:2: registry.encoder") for p in problems)
    assert any(p.startswith("mbbench.runner:2: apply_threads") for p in problems)
    assert not any(p.startswith("mbbench.runner:3") for p in problems)  # through the seam
    assert any(p.startswith("mbbench.compare:1: compile") for p in problems)
    assert "mbbench.compare: a producer that does not load through mbbench.loading" in problems
    assert "mbbench.serve: a producer that does not load through mbbench.loading" in problems
    assert not [p for p in problems if p.startswith(("mbbench.engines", "mbbench.loading"))]
