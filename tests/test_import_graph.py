"""The package's import graph: no cycle, and the layers of docs STYLE (``cli`` -> ``training``
-> ``models`` -> ``nn`` -> ``data`` -> ``utils``) imported downwards only.

The graph is read from the source with :mod:`ast`, not by importing: an edge ``a -> b`` is any
``import`` / ``from ... import`` in ``a`` that names ``b`` (a name imported from a package's
``__init__`` counts as an edge to the submodule when one has that name, else to the package).
Imports inside functions and under ``if TYPE_CHECKING:`` count too: a lazy import hides a
circle, it does not remove it. The implicit import of a parent package (``import a.b`` runs
``a/__init__.py``) is not an edge, and a package's ``__init__`` re-exporting its own
submodules is the public path, not a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mmssl_pyg

PACKAGE = Path(mmssl_pyg.__file__).parent
#: lower layers first; a module may import its own layer and the ones before it
LAYERS = ('utils', 'data', 'nn', 'models', 'training', 'cli')


def _modules(root: Path, package: str) -> dict[str, Path]:
    modules = {}
    for path in sorted(root.rglob('*.py')):
        parts = [package, *path.relative_to(root).with_suffix('').parts]
        modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    return modules


def import_graph(root: Path = PACKAGE, package: str = 'mmssl_pyg'
                 ) -> dict[str, set[tuple[str, int]]]:
    """``{module: {(imported module, line)}}`` of the modules of the package in ``root``,
    imports inside functions included."""
    modules = _modules(root, package)
    graph: dict[str, set[tuple[str, int]]] = {m: set() for m in modules}
    for name, path in modules.items():
        here = name if path.name == '__init__.py' else name.rpartition('.')[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    anchor = here.split('.')[:len(here.split('.')) - node.level + 1]
                    base = '.'.join(anchor + ([node.module] if node.module else []))
                targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base
                           for a in node.names]
            else:
                continue
            graph[name] |= {(t, node.lineno) for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    edges = {m: sorted({t for t, _ in out}) for m, out in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> int | None:
    part = module.split('.')[1] if '.' in module else None
    return LAYERS.index(part) if part in LAYERS else None


def test_the_graph_counts_lazy_relative_and_absolute_imports(tmp_path):
    # the circle data/catalog <-> dataset <-> stats, closed by imports inside functions
    pkg = tmp_path / 'pkg'
    (pkg / 'data').mkdir(parents=True)
    (pkg / '__init__.py').write_text('')
    (pkg / 'data' / '__init__.py').write_text('from .catalog import load\n')
    (pkg / 'data' / 'dataset.py').write_text('from .stats import stats\n')
    (pkg / 'data' / 'catalog.py').write_text('from pkg.data.dataset import Dataset\n')
    (pkg / 'data' / 'stats.py').write_text(
        'def stats():\n    from .catalog import load\n    from . import dataset\n')
    graph = import_graph(pkg, 'pkg')
    assert graph['pkg.data.stats'] == {('pkg.data.catalog', 2), ('pkg.data.dataset', 3)}
    assert graph['pkg.data.catalog'] == {('pkg.data.dataset', 1)}
    assert graph['pkg.data'] == {('pkg.data.catalog', 1)}
    assert _cycles(graph) == [['pkg.data.catalog', 'pkg.data.dataset', 'pkg.data.stats']]
    (pkg / 'data' / 'stats.py').write_text('def stats():\n    return {}\n')
    assert _cycles(import_graph(pkg, 'pkg')) == []


def test_cycles_are_found():
    graph = {'a': {('b', 1)}, 'b': {('c', 2)}, 'c': {('a', 3)}, 'd': {('a', 4)}}
    assert _cycles(graph) == [['a', 'b', 'c']]


def test_no_import_cycle():
    graph = import_graph()
    cycles = _cycles(graph)
    detail = ['; '.join(f'{m} -> {t} (line {n})' for m in c for t, n in sorted(graph[m])
                        if t in c) for c in cycles]
    assert not cycles, ('import cycles (move the shared code down to the module both need, '
                        'or a name to the module that owns it):\n' + '\n'.join(detail))


@pytest.mark.parametrize('layer', LAYERS)
def test_layers_import_downwards_only(layer):
    graph = import_graph()
    upward = sorted(f'{m} -> {t} (line {n})' for m, out in graph.items()
                    if _layer(m) == LAYERS.index(layer) for t, n in out
                    if _layer(t) is not None and _layer(t) > _layer(m))
    assert not upward, f'{layer} imports a layer above it: {upward}'
