"""Structure figures of the package for issue 17 ("Done when"): lines of code, functions over
60/100 lines, import circles and upward imports.

    python scripts/measure_structure.py [REPO_ROOT]

- lines of code: non-blank lines that are not comments, whole package;
- function length: from ``def`` to its last line (ast ``lineno``/``end_lineno``), nested
  functions counted on their own too;
- import circles: strongly connected components (> 1 module) of the module import graph, with
  the imports inside functions (``from xairobust.x import y`` counts as an edge to ``x`` and, when
  ``y`` is a module, to ``x.y``);
- upward imports: a module of a lower layer (``LAYER`` below) importing one of a higher layer,
  e.g. stages/ -> commands/, explain/ -> stages/.

Duplicate pairs come from the ``duplicates`` tool run in xairobust/ (not part of this script).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# Layers, lowest first: a module may import its own layer and lower ones only.
LAYER = {
    "errors": 0, "layout": 0, "registry": 0, "config": 0, "progress": 0, "provenance": 0, "devices": 0,
    "runs": 1, "validate": 1, "data": 1, "models": 1,
    "perturb": 2, "attacks": 2, "explain": 2, "metrics": 2, "training": 2, "manipulate": 2, "visualize": 2,
    "stages": 3, "report": 4, "batch": 5, "commands": 6, "cli_util": 6, "cli": 6,
}


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted((root / "xairobust").rglob("*.py")):
        name = ".".join(p.relative_to(root).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def import_edges(name: str, tree: ast.AST, mods: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xairobust"):
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {t for t in found if t in mods and t != name}


def circles(edges: dict[str, set[str]], nodes: list[str]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            strong(v)
    return out


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def main(root: Path) -> None:
    mods = modules(root)
    loc, long_functions, edges = 0, [], {}
    for name, path in mods.items():
        src = path.read_text()
        loc += sum(1 for line in src.splitlines() if line.strip() and not line.strip().startswith("#"))
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long_functions.append((n, f"{name}.{node.name}"))
        edges[name] = import_edges(name, tree, mods)
    up = sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs
                if layer(a) is not None and layer(b) is not None and layer(b) > layer(a))
    sccs = circles(edges, list(mods))
    print(f"lines of code (non-blank, non-comment): {loc}")
    print(f"functions > 60 lines: {len(long_functions)}; > 100 lines: {sum(n > 100 for n, _ in long_functions)}")
    for n, f in sorted(long_functions, reverse=True):
        print(f"    {n:4d} {f}")
    print(f"import circles (module SCCs, imports inside functions too): {len(sccs)}")
    for c in sccs:
        print("   ", c)
    print(f"upward imports: {len(up)}")
    for u in up:
        print("   ", u)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
