"""The import graph: `fptq.kernels` is a leaf, the quantization core imports nothing from the study
or analysis layers, the specs import no method implementation, and no import cycle exists anywhere
in fptq: imports inside functions count, and so do type-only imports (`if TYPE_CHECKING:`), since a
cycle there is a layering error waiting for its first run-time import."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# module name -> source file; kernels/ is installed as fptq.kernels (pyproject's package-dir)
SOURCES = {
    **{
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (REPO / "fptq").rglob("*.py")
    },
    **{f"fptq.kernels.{p.stem}": p for p in (REPO / "kernels").glob("*.py")},
    **{f"fptq.analysis.{p.stem}": p for p in (REPO / "analysis").glob("*.py")},
}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(module: str, path: Path, type_only: bool = True):
    """Every fptq module `module` imports (lazy imports included; type-only ones if `type_only`)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()

    def visit(node):
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_only:
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
RUNTIME = {m: _imports(m, p, type_only=False) for m, p in SOURCES.items()}


def test_graph_is_read():
    assert "fptq.kernels.gemm" in GRAPH and "fptq.kernels.reference" in GRAPH["fptq.kernels.gemm"]
    assert (
        "fptq.quant.qlinear" in GRAPH["fptq.quant.pipeline"]
        and "fptq.quant.methods" in GRAPH["fptq.quant.scheme"]
    )
    # type-only imports are in the graph, not in the run-time one
    assert "fptq.quant.scheme" in GRAPH["fptq.quant.weight.gptq"]
    assert "fptq.quant.scheme" not in RUNTIME["fptq.quant.weight.gptq"]
    assert "fptq.analysis.tables" in GRAPH["fptq.analysis.report"]


def _closure(m):
    seen, todo = set(), [m]
    while todo:
        for d in GRAPH[todo.pop()]:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_layers():
    """kernels -> quantization core -> models / eval -> study -> analysis, never back."""
    for m in GRAPH:
        deps = GRAPH[m]
        if m.startswith(("fptq.quant", "fptq.kernels")):
            bad = {d for d in deps if d.startswith(("fptq.study", "fptq.analysis"))}
            assert not bad, (m, bad)
        if m.startswith(("fptq.models", "fptq.eval")):
            assert not {d for d in deps if d.startswith(("fptq.study", "fptq.analysis"))}, m
        if m.startswith("fptq.study"):
            assert not {d for d in deps if d.startswith("fptq.analysis")}, m


def test_specs_import_no_method_implementation():
    """The scheme names methods and reads the registries; the implementations register themselves
    (fptq.quant.methods.BUILTIN, plug-ins), so no spec depends on any of them, even indirectly."""
    impl = ("fptq.quant.weight.", "fptq.quant.act.", "fptq.quant.transforms.", "fptq.quant.pipeline")
    for spec in ("fptq.quant.scheme", "fptq.study.spec"):
        assert not {d for d in _closure(spec) if d.startswith(impl)}, spec


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


@pytest.mark.parametrize("folder", ["kernels", "analysis"])
def test_folder_is_not_a_top_level_package(folder):
    """transformers probes `kernels` (the PyPI kernel hub), and PyPI has an `analysis` too: from the
    repo root our folders must at most be empty namespaces, never packages with an origin."""
    code = f"import importlib.util, sys; s = importlib.util.find_spec({folder!r}); print(s and s.origin)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("None", "")
    assert not (REPO / folder / "__init__.py").exists()
    assert importlib.util.find_spec(
        {"kernels": "fptq.kernels.gemm", "analysis": "fptq.analysis.tables"}[folder]
    )
