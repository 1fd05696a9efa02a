"""The package's layers as README's "Layout" draws them: every import (lazy ones included) goes down or sideways,
never up, no module imports itself back, and the cluster code loads nothing beyond the standard library."""
import ast
import subprocess
import sys

from conftest import REPO

# Each package of effnet and what it may import besides itself (the layers, bottom up).
MAY_IMPORT = {
    "core": set(),
    "models": {"core"},
    "cluster": {"core"},
    "formats": {"core", "models"},  # a trained run's model file needs the family's custom layers to load
    "data": {"core", "formats"},
    "stages": {"core", "models", "formats", "data", "cluster"},  # doctor checks the cluster requests
    "cli": {"core", "stages"},
    "__main__": {"cli"},
}
# The only imports of one stage by another: the benchmark times what they run.
STAGE_IMPORTS = {("benchmark", "train"), ("benchmark", "export")}


def imports() -> dict[str, set[str]]:
    """{module: the effnet modules it imports anywhere in its code}."""
    sources = {}
    for path in (REPO / "effnet").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        sources[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in sources.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("effnet"):
                # `from package import module` imports the module; `from module import name`, the module
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in sources else node.module
                          for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("effnet")}
        graph[module] = {i for i in found if i in sources and i != module}
    return graph


def layer(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_every_import_goes_down_a_layer_or_stays_in_its_own():
    upward = []
    for module, found in imports().items():
        if module == "effnet":
            continue
        for imported in found:
            if imported == "effnet" or layer(imported) == layer(module):
                continue
            if layer(imported) not in MAY_IMPORT[layer(module)]:
                upward.append(f"{module} -> {imported}")
    assert not upward


def test_a_stage_imports_no_other_stage_but_what_the_benchmark_times():
    crossing = set()
    for module, found in imports().items():
        if layer(module) != "stages" or module == "effnet.stages":
            continue
        for imported in found:
            if layer(imported) == "stages" and imported != "effnet.stages":
                pair = (module.split(".")[2], imported.split(".")[2])
                if pair[0] != pair[1]:
                    crossing.add(pair)
    assert crossing == STAGE_IMPORTS


def test_no_module_imports_itself_back():
    graph = imports()
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # a package's __init__ importing its own modules is how Python loads it, not a cycle of ideas
    assert [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)] == []


def test_the_cluster_code_and_the_run_directory_map_load_only_the_standard_library():
    code = ("import sys; before = set(sys.modules); import effnet.cluster.requests, effnet.cluster.job, "
            "effnet.cluster.ledger, effnet.core.layout; "
            "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == ["['effnet']"]
