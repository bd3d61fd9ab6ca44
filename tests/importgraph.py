"""The project's own import graph, read from the source (AST), for the layout tests.

``python -m tests.importgraph stages/train.py`` prints a stage's import closure in the form
``dvc.yaml`` lists its code deps.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("anime_avatar", "stages", "pipelines")


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imported_modules(path: Path) -> set[str]:
    """Every project module ``path`` imports, at the top or inside functions (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # "from package import module" imports the submodule too.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if _module_file(name) is not None}


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of every module outside the standard library and the project that ``path``'s
    closure imports, at the top or inside functions."""
    imported: set[str] = set()
    for file in closure(path):
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            imported.update(n.split(".")[0] for n in names)
    return imported - set(sys.stdlib_module_names) - {"__future__", *PACKAGES}


def unlisted_imports(path: Path, distributions: tuple[str, ...] | list[str]) -> set[str]:
    """The third-party modules ``path``'s closure imports that none of ``distributions`` provides (a module
    may come from several distributions, e.g. mlflow from mlflow or mlflow-skinny: one of them is enough)."""
    from importlib.metadata import packages_distributions

    by_module = packages_distributions()
    allowed = {d.lower() for d in distributions}
    return {m for m in third_party_imports(path) if not {d.lower() for d in by_module.get(m, [m])} & allowed}


def _with_parents(name: str) -> list[str]:
    """A module and the packages above it (importing a.b.c runs a/__init__ and a/b/__init__)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def module_name(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def closure(path: Path) -> set[Path]:
    """The files Python runs when it imports (or runs) ``path``: itself and its project imports, transitively."""
    seen: set[Path] = set()
    todo = [path.resolve()]
    todo += [_module_file(p) for p in _with_parents(module_name(path))[:-1]]
    while todo:
        current = todo.pop()
        if current is None or current in seen:
            continue
        seen.add(current)
        for name in imported_modules(current):
            todo.extend(_module_file(p) for p in _with_parents(name))
    return seen


def graph(package: str = "anime_avatar") -> dict[str, set[str]]:
    """module -> the project modules it imports, for every module of ``package``."""
    edges = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        edges[module_name(path)] = {m for m in imported_modules(path) if _module_file(m) is not None}
    # "from pkg import mod" also names "pkg"; keep the module itself, normalised to real files
    return {name: {module_name(_module_file(m)) for m in targets} - {name} for name, targets in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (package __init__ files excluded: importing a package's submodule is not a
    cycle through the package), each as the list of modules around it."""
    found = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges or (ROOT / nxt.replace(".", "/") / "__init__.py").is_file():
                continue
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


CODE_ROOTS = ("anime_avatar/", "stages/", "pipelines/")


def sync_dvc_deps(dvc_yaml: Path) -> list[str]:
    """Rewrite each stage's code deps in ``dvc_yaml`` to its import closure, keeping the data deps, their order
    and the file's comments; the names of the stages changed."""
    lines = dvc_yaml.read_text().splitlines()
    out: list[str] = []
    changed: list[str] = []
    stage = module = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage = line.strip().rstrip(":")
        if line.strip().startswith("cmd: python -m "):
            module = ROOT / (line.strip().removeprefix("cmd: python -m ").replace(".", "/") + ".py")
        out.append(line)
        if line.strip() == "deps:" and module is not None:
            old = []
            i += 1
            while i < len(lines) and lines[i].strip().startswith("- "):
                old.append(lines[i])
                i += 1
            data = [entry for entry in old if not entry.strip().removeprefix("- ").startswith(CODE_ROOTS)]
            code = [f"      - {f.relative_to(ROOT).as_posix()}" for f in sorted(closure(module))]
            out.extend(data + code)
            if old != data + code:
                changed.append(str(stage))
            continue
        i += 1
    dvc_yaml.write_text("\n".join(out) + "\n")
    return changed


if __name__ == "__main__":
    # python -m tests.importgraph --sync: dvc.yaml's code deps made equal to each stage's import closure.
    if sys.argv[1:] == ["--sync"]:
        print("stages whose deps changed:", ", ".join(sync_dvc_deps(ROOT / "dvc.yaml")) or "none")
    for arg in sys.argv[1:]:
        if arg != "--sync":
            for file in sorted(closure(ROOT / arg)):
                print(f"      - {file.relative_to(ROOT).as_posix()}")
