"""The import graph of ``echo_vlsm`` and its layering rule, read from the source (no imports run).

    python tools/imports.py            # every module and the echo_vlsm modules it imports
    python tools/imports.py --layers   # one line per package: what it depends on
    python tools/imports.py --check    # exit 1 with one line per import that breaks the layers
                                       # or module (function) over 500 (80) lines
    python tools/imports.py --sizes    # the largest modules and functions (lines)

The rule (``docs/architecture.md``): notebooks -> pipeline/analysis/inference -> train -> models,
data, prompts, sdm -> floor 1 (grid, structures, io, paths, parallel, dataset, imaging,
device, errors, environment). A package
imports only what is on a lower floor or inside itself (floor-1 modules may import each
other); ``data``, ``prompts``, ``sdm`` and ``models`` do not import each other; no two modules
import each other, directly or around a loop, even through function-local imports.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "echo_vlsm"
#: Floors, lowest first; a module may import its own package and anything on a lower floor.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("grid", "structures", "io", "paths", "parallel", "dataset", "imaging", "errors",
     "device", "environment", "clinical", "__init__"),
    ("data", "prompts", "sdm", "models"),
    ("train",),
    ("pipeline", "analysis", "inference", "rehearsal"),
    ("cli", "__main__"),
)


def package_root() -> Path:
    return Path(__file__).resolve().parent.parent / PACKAGE


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _resolve_relative(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path, root: Path) -> dict[str, int]:
    """The ``echo_vlsm`` modules that ``path`` imports (anywhere in it), with a line number."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    known = all_modules(root)
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, path.name == "__init__.py", node)
                    if node.level else node.module or "")
            # ``from echo_vlsm.x import y`` imports echo_vlsm.x.y when y is a module.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            if target == PACKAGE or not target.startswith(PACKAGE + "."):
                continue
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != module:
                found.setdefault(target, node.lineno)
    return found


_MODULES: dict[Path, set[str]] = {}


def all_modules(root: Path) -> set[str]:
    if root not in _MODULES:
        _MODULES[root] = {module_name(p, root) for p in root.rglob("*.py")}
    return _MODULES[root]


def graph(root: Path | None = None) -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` for every module of the package."""
    root = root or package_root()
    return {module_name(p, root): imports_of(p, root) for p in sorted(root.rglob("*.py"))}


def top(module: str) -> str:
    """``echo_vlsm.data.camus`` -> ``data``; ``echo_vlsm`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor(part: str) -> int:
    for i, names in enumerate(FLOORS):
        if part in names:
            return i
    raise KeyError(f"{part}: not on any floor of tools/imports.py FLOORS; add it there")


def violations(g: dict[str, dict[str, int]], root: Path | None = None) -> list[str]:
    """One line per import that breaks the layering or closes a loop."""
    root = root or package_root()
    problems = []
    for module, targets in g.items():
        src = top(module)
        for target, line in targets.items():
            dst = top(target)
            if dst == src or module == PACKAGE:
                continue
            # floor 1 is a set of small modules that may use each other (loops are caught
            # below); above it, a part imports only lower floors.
            if floor(dst) > floor(src) or (floor(dst) == floor(src) and floor(src) > 0):
                problems.append(f"{module} (line {line}) imports {target}: {src} is on floor "
                                f"{floor(src) + 1}, {dst} on floor {floor(dst) + 1}")
    problems += [f"import loop: {' -> '.join(c)}" for c in cycles(g)]
    return problems


def cycles(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """Loops in the module graph (Tarjan's strongly connected components of size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, {}):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def sizes(root: Path | None = None, n: int = 10) -> tuple[list, list]:
    """The ``n`` largest modules (lines) and functions (lines, from ``def`` to its end)."""
    root = root or package_root()
    mods, funcs = [], []
    for p in root.rglob("*.py"):
        text = p.read_text()
        mods.append((len(text.splitlines()), module_name(p, root)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                funcs.append((node.end_lineno - node.lineno + 1,
                              f"{module_name(p, root)}.{node.name}"))
    return sorted(mods, reverse=True)[:n], sorted(funcs, reverse=True)[:n]


#: The limits that keep a module about one concern and a function readable on one screen.
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def size_problems(root: Path | None = None) -> list[str]:
    """One line per module over ``MAX_MODULE_LINES`` and function over ``MAX_FUNCTION_LINES``
    (with ruff's 100-column lines, so that the limits mean what they say)."""
    mods, funcs = sizes(root, n=10**6)
    return ([f"{name}: {n} lines (a module: at most {MAX_MODULE_LINES})"
             for n, name in mods if n > MAX_MODULE_LINES]
            + [f"{name}: {n} lines (a function: at most {MAX_FUNCTION_LINES})"
               for n, name in funcs if n > MAX_FUNCTION_LINES])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", action="store_true", help="one line per package")
    ap.add_argument("--check", action="store_true", help="exit 1 on a layering violation")
    ap.add_argument("--sizes", action="store_true", help="largest modules and functions")
    args = ap.parse_args(argv)
    g = graph()
    if args.sizes:
        mods, funcs = sizes()
        print("largest modules (lines):")
        for n, name in mods:
            print(f"  {n:5d}  {name}")
        print("largest functions (lines):")
        for n, name in funcs:
            print(f"  {n:5d}  {name}")
        return 0
    if args.check:
        problems = violations(g)
        too_long = size_problems()
        for p in problems + too_long:
            print(p)
        print(f"{len(problems)} layering problem(s) in {len(g)} modules; "
              f"{len(too_long)} module(s) or function(s) over the size limits")
        return 1 if problems or too_long else 0
    if args.layers:
        deps: dict[str, set[str]] = {}
        for module, targets in g.items():
            deps.setdefault(top(module), set()).update(
                top(t) for t in targets if top(t) != top(module))
        for part in sorted(deps, key=lambda p: (floor(p), p)):
            print(f"floor {floor(part) + 1}  {part:<10} -> {', '.join(sorted(deps[part])) or '-'}")
        return 0
    for module, targets in g.items():
        short = sorted(t.removeprefix(PACKAGE + ".") for t in targets)
        print(f"{module.removeprefix(PACKAGE + '.') or PACKAGE:<28} -> {', '.join(short) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
