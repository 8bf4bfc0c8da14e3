"""The import graph of superserve, read from the source (ast): no cycles, and every import
between top-level parts goes down the layer order below. Function-level (lazy) imports count:
they run too."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "superserve"

# Bottom to top. A part may import only parts of lower layers (within a part, anything but a
# cycle). "superserve" is the package's own __init__ (the version, an environment default).
LAYERS: list[tuple[str, set[str]]] = [
    ("names: vocabularies and file layouts, the device setting; importing nothing of superserve",
     {"superserve", "outcome", "bundle_layout", "device"}),
    ("cores: the torch-free scheduler and workloads; the model and its data",
     {"scheduling", "workload", "supernet", "datasets"}),
    ("the simulator; loading a bundle into a model", {"sim", "embedded"}),
    ("offline profiling; the load client; SubGraph caching studies", {"profiling", "loadgen", "subgraph"}),
    ("training; the server", {"train", "serving"}),
    ("the Python client (the server's wire definitions, the load client's encoder)", {"client"}),
    ("experiments composing server, client and simulator", {"experiments"}),
    ("the command line", {"cli"}),
]
RANK = {part: k for k, (_, parts) in enumerate(LAYERS) for part in parts}

# Edges known to break the rules, each with the reason it is still there. Keep this short.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = {
    # ``superserve.Client``: the package's own __init__ imports the client lazily, in a module
    # __getattr__ that runs on first use of the name (never when a submodule is imported).
    ("superserve", "superserve.client"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the superserve modules (packages: their __init__) it imports."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets.add(mod)
                targets.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in files)
        # Importing a.b.c runs a/__init__ and a/b/__init__ first, unless they are the importer's
        # own packages (already running); naming one explicitly reads its namespace: an edge.
        own = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
        closed = set(targets)
        for t in targets:
            parts = t.split(".")
            closed.update(p for p in (".".join(parts[:k]) for k in range(1, len(parts))) if p not in own)
        graph[name] = {t for t in closed if t in files and t != name}
    return graph


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_part_has_a_layer():
    parts = {part_of(m) for m in import_graph()}
    assert parts <= set(RANK), f"add to LAYERS: {sorted(parts - set(RANK))}"


def test_imports_only_go_down():
    upward = []
    for a, targets in import_graph().items():
        for b in targets:
            pa, pb = part_of(a), part_of(b)
            if pa == pb or (a, b) in KNOWN_EXCEPTIONS:
                continue
            if not RANK[pb] < RANK[pa]:
                upward.append(f"{a} ({LAYERS[RANK[pa]][0]}) -> {b} ({LAYERS[RANK[pb]][0]})")
    assert not upward, "imports that do not go down:\n" + "\n".join(sorted(upward))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = {a: {b for b in bs if (a, b) not in KNOWN_EXCEPTIONS} for a, bs in import_graph().items()}
    assert not cycles(graph), "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles(graph))


def test_the_checker_sees_cycles_and_upward_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "superserve.sim" in graph["superserve.experiments.comparison"]
    assert "superserve.scheduling" in graph["superserve.sim.simulator"]  # the package's __init__ runs
    assert "superserve.scheduling" not in graph["superserve.scheduling.policy"]  # its own package


@pytest.mark.parametrize("client", ["superserve.loadgen", "superserve.client", "superserve.sim",
                                    "superserve.scheduling"])
def test_torch_free_parts_reach_no_torch_module(client):
    """The clients, the simulator and the scheduler never import the model's parts."""
    graph = import_graph()
    seen, todo = set(), [m for m in graph if m == client or m.startswith(client + ".")]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    heavy = {m for m in seen if part_of(m) in ("supernet", "datasets", "embedded", "profiling", "train")}
    assert not heavy, f"{client} reaches {sorted(heavy)}"
