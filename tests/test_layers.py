"""Layers point down (issue 28): a stage never imports a later one, the choices never the estimator.

Each import runs in a fresh interpreter, and ``sys.modules`` says what it loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

_ABOVE_STAGES = ("tacluster.estimator", "tacluster.methods", "tacluster.run", "tacluster.report",
                 "tacluster.choices")
#: module imported (its package's ``__init__`` runs first, so each covers its stage package)
#: -> packages it must not load
RULES = {
    "tacluster.embed.reader": _ABOVE_STAGES,
    "tacluster.nouns": _ABOVE_STAGES,
    "tacluster.counterparts": _ABOVE_STAGES,
    "tacluster.cluster": _ABOVE_STAGES,
    "tacluster.choices": ("tacluster.estimator", "tacluster.methods", "tacluster.run", "tacluster.report"),
    "tacluster.train": _ABOVE_STAGES,
    "tacluster.evaluate": _ABOVE_STAGES,
    "tacluster.report.reading": ("tacluster.estimator", "tacluster.methods", "tacluster.run"),
}


def _loaded(module: str) -> list[str]:
    code = f"import importlib, json, sys; importlib.import_module({module!r}); print(json.dumps(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


@pytest.mark.parametrize("module", sorted(RULES))
def test_importing_a_layer_loads_nothing_above_it(module):
    loaded = _loaded(module)
    above = [m for m in loaded for banned in RULES[module] if m == banned or m.startswith(banned + ".")]
    assert not above, f"importing {module} loaded {above}"


#: stage folder -> packages no module in it may import, at the top or inside a function
STAGE_RULES = {
    **{stage: _ABOVE_STAGES for stage in ("embed", "nouns", "counterparts", "cluster", "train", "evaluate")},
    "report": ("tacluster.estimator", "tacluster.methods", "tacluster.run", "tacluster.choices"),
    "choices": ("tacluster.estimator", "tacluster.methods", "tacluster.run", "tacluster.report"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in ``path``, wherever it sits (lazy imports too),
    except under ``if TYPE_CHECKING:`` (never run)."""
    out = []

    def visit(node) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return out


@pytest.mark.parametrize("stage", sorted(STAGE_RULES))
def test_no_stage_module_imports_a_later_layer_even_lazily(stage):
    bad = [f"{path.relative_to(SRC)}:{line} imports {name}"
           for path in sorted((SRC / "tacluster" / stage).rglob("*.py"))
           for line, name in _imports(path)
           for banned in STAGE_RULES[stage] if name == banned or name.startswith(banned + ".")]
    assert not bad, bad


def _module_graph() -> dict[str, set[str]]:
    """tacluster module -> the tacluster modules it imports (any import statement, lazy ones too)."""
    names = {}
    for path in (SRC / "tacluster").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for mod, path in names.items():
        edges = set()
        for _, name in _imports(path):
            # "from a.b import c": the module a.b.c when there is one, else a.b
            while name and name not in names:
                name = name.rpartition(".")[0]
            if name.startswith("tacluster") and name != mod:
                edges.add(name)
        graph[mod] = edges
    return graph


def test_no_import_cycles_between_modules():
    """No module reaches itself through imports (a package's ``__init__`` re-exporting its own
    modules is not counted: it is the package, not a cycle between stages)."""
    graph = _module_graph()
    for mod in graph:  # drop package -> own submodule edges (re-exports)
        graph[mod] = {e for e in graph[mod] if not e.startswith(mod + ".")}
    cycles = []
    for start in sorted(graph):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert not cycles, cycles[:5]


def _docstring_lines(node) -> int:
    first = node.body[0] if getattr(node, "body", None) else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


#: Issue 28's size rules, docstrings not counted.
MAX_FUNCTION_LINES = 60
MAX_ESTIMATOR_LINES = 250


def test_no_function_in_src_is_over_60_lines():
    long = []
    for path in sorted((SRC / "tacluster").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({size} lines)")
    assert not long, long


def test_the_estimator_class_stays_thin():
    """TextAidedClustering validates, resolves K and calls the fitters; the methods live in their stages."""
    tree = ast.parse((SRC / "tacluster" / "estimator.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TextAidedClustering")
    docs = _docstring_lines(cls) + sum(_docstring_lines(f) for f in ast.walk(cls) if isinstance(f, ast.FunctionDef))
    assert cls.end_lineno - cls.lineno + 1 - docs <= MAX_ESTIMATOR_LINES
