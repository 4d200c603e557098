"""The exploration notebooks in ``notebooks/``: committed without outputs, and each one runs
top to bottom headless (nbclient) on the bundled data, asserts its key outputs in its own
"Checks" cell, and draws a figure in every cell that shows one.

The execution tests start one kernel per notebook with *this* interpreter: a throw-away
``python3`` kernel spec in a temporary folder is put first on ``JUPYTER_PATH``, so nothing is
registered globally and a kernel spec of another Python on the machine is never picked up.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / 'notebooks'
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob('*.ipynb'))
#: Seconds one cell may run, and the whole notebook (kernel start included).
CELL_TIMEOUT = 300
NOTEBOOK_TIMEOUT = 600


def _ids(path: Path) -> str:
    return path.stem


def test_notebooks_present():
    assert NOTEBOOKS, f'no notebook found in {NOTEBOOK_DIR}'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=_ids)
def test_committed_without_outputs(path: Path):
    nb = json.loads(path.read_text(encoding='utf-8'))
    assert nb.get('nbformat') == 4, f'{path.name}: not an nbformat 4 notebook'
    assert nb.get('metadata', {}).get('kernelspec', {}).get('name') == 'python3', (
        f'{path.name}: metadata.kernelspec.name must be python3')
    dirty = [i for i, cell in enumerate(nb['cells']) if cell['cell_type'] == 'code'
             and (cell.get('outputs') or cell.get('execution_count') is not None)]
    assert not dirty, (
        f'{path.name}: code cells {dirty} carry outputs or execution counts; clear them before '
        f'committing (jupyter nbconvert --clear-output --inplace {path.relative_to(ROOT)})')


@pytest.fixture
def kernel_for_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``python3`` kernel spec running ``sys.executable``, first on ``JUPYTER_PATH``."""
    spec_dir = tmp_path / 'jupyter' / 'kernels' / 'python3'
    spec_dir.mkdir(parents=True)
    spec = {'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
            'display_name': 'Python 3 (tests)', 'language': 'python'}
    (spec_dir / 'kernel.json').write_text(json.dumps(spec), encoding='utf-8')
    monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
    # plots render to PNG outputs (as in Jupyter), the kernel inherits this environment
    monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    monkeypatch.setenv('WANDB_MODE', 'disabled')
    return 'python3'


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize('path', NOTEBOOKS, ids=_ids)
def test_notebook_runs(path: Path, kernel_for_this_python: str):
    nbformat = pytest.importorskip('nbformat')
    nbclient = pytest.importorskip('nbclient')
    pytest.importorskip('ipykernel')
    pytest.importorskip('matplotlib')

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name=kernel_for_this_python, allow_errors=False,
        resources={'metadata': {'path': str(NOTEBOOK_DIR)}})
    start = time.monotonic()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            left = NOTEBOOK_TIMEOUT - (time.monotonic() - start)
            if left <= 0:
                pytest.fail(f'{path.name} ran past {NOTEBOOK_TIMEOUT} s (stopped before cell '
                            f'{index})')
            # A cell never runs past the notebook's overall deadline.
            client.timeout = max(1, int(min(CELL_TIMEOUT, left)))
            client.execute_cell(cell, index)   # raises CellExecutionError on an error
    elapsed = time.monotonic() - start
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
              if o.get('output_type') == 'error']
    assert not errors, f'{path.name}: {errors[0].get("ename")}: {errors[0].get("evalue")}'
    assert any(c.cell_type == 'code' and 'assert ' in c.source for c in nb.cells), (
        f'{path.name}: no cell asserts the notebook\'s outputs')
    blank = [i for i, c in enumerate(nb.cells) if c.cell_type == 'code'
             and 'plt.show()' in c.source
             and not any('image/png' in o.get('data', {}) for o in c.get('outputs', []))]
    assert not blank, f'{path.name}: cells {blank} call plt.show() but produced no figure'
    print(f'{path.name}: executed in {elapsed:.1f} s')
