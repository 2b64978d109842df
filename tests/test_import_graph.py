"""The package graph is a DAG: engine library and client at the bottom, the HTTP-free core,
then the HTTP layer and the worker side by side (docs/architecture.md, "Layers").

Static: every import statement in the source (lazy ones inside functions included) is an
edge between packages; no cycle may exist, and the core may not import upwards. Runtime:
importing the worker loads no web framework, importing the API loads no torch.
"""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("trajx", "app", "worker")
# The nodes of the graph: a module belongs to the longest of these prefixes it starts with.
# `trajx` is split into its sub-packages so the CLI, the demo and the engine are checked too.
NODES = ("app.core", "app", "worker")


def node_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "trajx":
        return ".".join(parts[:2])
    return next((n for n in NODES if module == n or module.startswith(n + ".")), None)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m.split(".")[0] in TOP_LEVEL}


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for top in TOP_LEVEL:
        for path in (ROOT / top).rglob("*.py"):
            source = node_of(module_name(path))
            for target in map(node_of, imported_modules(path)):
                if target and target != source:
                    graph[source].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_graph_has_no_cycle():
    graph = package_graph()
    assert graph, "no imports found: the test reads the wrong folders"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_each_layer_imports_only_downwards():
    graph = package_graph()
    assert not {n for n in graph.get("app.core", ()) if n in ("app", "worker")}, graph["app.core"]
    assert "app" not in graph.get("worker", set()), "the worker imports the HTTP layer"
    assert not {n for n, targets in graph.items() if n.startswith("trajx.") and targets & {"app", "app.core", "worker"}}


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _loaded_after(imports: list[str], prefixes: tuple[str, ...]) -> list[str]:
    code = (f"import sys\nfor m in {imports!r}: __import__(m)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({prefixes!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout)  # a printed list of strings


def _modules(top: str) -> list[str]:
    return sorted(module_name(p) for p in (ROOT / top).rglob("*.py") if p.name != "__main__.py")


@pytest.mark.slow  # imports torch in a fresh interpreter
def test_the_worker_loads_no_web_framework():
    worker_modules = [m for m in _modules("worker") if m != "worker.celery_app"] + ["worker.celery_app"]
    assert _loaded_after(worker_modules, ("fastapi", "starlette", "uvicorn")) == []


def test_the_api_and_the_core_load_no_torch():
    # Nor numba: the API image installs neither (it compiles the engine's assignment solver).
    assert _loaded_after(_modules("app"), ("torch", "numba")) == []
