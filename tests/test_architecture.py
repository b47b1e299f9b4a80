"""The package layout as a test: every import in app/ points down the data flow.

vote in (api, connectors) -> stored (votes) -> aggregated and exported (labels, over the pure
numpy in aggregation) -> trained (training, which reads labels). Components are ranked top to
bottom; a module may import its own component or one ranked below it, never one beside or
above it. Imports inside functions count too, so none can hide a cycle; only imports of
third-party libraries are ignored. Inside a component the modules' imports form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"

# Top to bottom. Components on one line are peers: neither may import the other.
RANKS: list[tuple[str, ...]] = [
    ("cli",),  # the command line: starts servers and workers, runs the demo
    ("main",),  # create_app(): routers, error handlers, lifespan
    ("api", "ui"),  # the web layer: routers, dependencies, error handlers; the dashboard
    ("connectors",),  # labeling tools' payloads -> vote records
    ("training",),  # 5. trained: jobs, sweeps, the torch trainer
    ("votes",),  # 1-2. vote in, stored
    ("labels",),  # 3-4. aggregated, exported
    ("tasks",),  # the procrastinate app: what the worker runs
    ("webhooks", "auth"),
    ("outbound",),  # HTTP to user-given URLs, behind the network policy
    ("aggregation",),  # pure numpy
    ("db",),
    ("logging",),
    ("config", "errors"),
]
RANK = {component: i for i, line in enumerate(RANKS) for component in line}


def modules() -> dict[str, Path]:
    out = {}
    for path in APP.rglob("*.py"):
        parts = path.relative_to(APP.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = modules()


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported(module: str, path: Path) -> set[str]:
    """Every app module `module` imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and name != "app":
                out.add(name)
    return out


GRAPH = {module: imported(module, path) for module, path in MODULES.items()}


def test_every_component_has_a_rank() -> None:
    unranked = sorted({component(m) for m in MODULES} - set(RANK) - {""})
    assert not unranked, f"add these to RANKS in {__file__}: {unranked}"


def test_imports_point_down() -> None:
    wrong = []
    for module, targets in sorted(GRAPH.items()):
        source = component(module)
        for target in sorted(targets):
            dest = component(target)
            if not source or not dest or dest == source:
                continue
            if RANK[dest] <= RANK[source]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that climb up or sideways:\n" + "\n".join(wrong)


def test_no_import_cycle() -> None:
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> None:
        seen[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if seen.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in seen:
                visit(target)
        path.pop()
        seen[module] = 2

    for module in sorted(GRAPH):
        if module not in seen:
            visit(module)


def test_few_modules_outside_the_domain_packages() -> None:
    flat = sorted(p.stem for p in APP.glob("*.py") if p.stem != "__init__")
    assert flat == ["config", "errors", "logging", "main", "outbound", "tasks"], flat
