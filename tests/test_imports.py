"""The import graph: `fptq.kernels` is a leaf, and no module-level import cycle exists anywhere in
fptq (imports inside functions count; `if TYPE_CHECKING:` blocks do not run, so they do not)."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# module name -> source file; kernels/ is installed as fptq.kernels (pyproject's package-dir)
SOURCES = {
    **{
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (REPO / "fptq").rglob("*.py")
    },
    **{f"fptq.kernels.{p.stem}": p for p in (REPO / "kernels").glob("*.py")},
}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(module: str, path: Path):
    """Every fptq module `module` imports at run time (lazy imports included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()

    def visit(node):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for a in node.names:  # `from pkg import mod` imports the submodule pkg.mod
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in SOURCES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in out if m in SOURCES and m != module}


GRAPH = {m: _imports(m, p) for m, p in SOURCES.items()}


def test_graph_is_read():
    assert "fptq.kernels.gemm" in GRAPH and "fptq.kernels.reference" in GRAPH["fptq.kernels.gemm"]
    assert "fptq.weight" in GRAPH["fptq.scheme"] and "fptq.qlinear" in GRAPH["fptq.pipeline"]


def test_kernels_import_nothing_else_from_fptq():
    for m, deps in GRAPH.items():
        if m.startswith("fptq.kernels"):
            assert all(d.startswith("fptq.kernels.") for d in deps), (m, deps)


def test_no_import_cycles():
    state, stack = {}, []

    def dfs(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                dfs(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            dfs(m)


def test_kernels_folder_is_not_a_top_level_package():
    """transformers probes `kernels` (the PyPI kernel hub): from the repo root our folder must at
    most be an empty namespace, never a package with an origin."""
    code = "import importlib.util, sys; s = importlib.util.find_spec('kernels'); print(s and s.origin)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("None", "")
    assert not (REPO / "kernels" / "__init__.py").exists()
    assert importlib.util.find_spec("fptq.kernels.gemm") is not None
