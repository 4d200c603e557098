"""The benchmark framework: per-user metrics (fast) and quick mode end to end (slow)."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


BENCHMARKS = ('accuracy', 'ablation', 'sparsity', 'convergence', 'sensitivity', 'efficiency',
              'scaling')


FIGURES = ('convergence', 'sensitivity', 'scaling')


STAMP_KEYS = ('command:', 'git commit:', 'machine:', 'torch ', 'torch_geometric ', 'date:')


def _run(*args, timeout=900):
    proc = subprocess.run([sys.executable, '-m', 'benchmarks.run', *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{args}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}'
    return proc.stdout


def _csv_numbers(path: Path) -> tuple[list[str], list[list[str]], list[float]]:
    lines = path.read_text().splitlines()
    comments = [ln for ln in lines if ln.startswith('#')]
    rows = list(csv.reader(ln for ln in lines if not ln.startswith('#')))
    numbers = []
    for row in rows[1:]:
        for cell in row:
            try:
                numbers.append(float(cell))
            except ValueError:
                pass
    return comments, rows, numbers


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path):
    out = tmp_path / 'bench'
    log = _run('all', '--quick', '--out', str(out), '--wandb', 'offline')
    assert 'FAILED' not in log

    for bench in BENCHMARKS:
        folder = out / bench
        md = (folder / f'{bench}.md').read_text()
        for key in STAMP_KEYS:
            assert key in md, f'{bench}.md lacks the stamp line {key!r}'
        assert 'QUICK MODE' in md and 'units present:' in md
        assert 'No finished units' not in md and 'Failed units' not in md
        plan = json.loads((folder / 'plan.json').read_text())
        units = list((folder / 'units').glob('*.json'))
        assert len(units) == len(plan['units']) > 0
        csvs = sorted(folder.glob('*.csv'))
        assert csvs, bench
        for path in csvs:
            comments, rows, numbers = _csv_numbers(path)
            text = '\n'.join(comments)
            for key in STAMP_KEYS:
                assert key in text, f'{path.name} lacks the stamp line {key!r}'
            assert len(rows) >= 2, path.name
            assert numbers and all(math.isfinite(x) for x in numbers), path.name

    from PIL import Image
    for bench in FIGURES:
        png = out / bench / f'{bench}.png'
        assert png.stat().st_size > 10_000
        with Image.open(png) as im:
            assert 'git commit:' in im.info.get('Description', '')
            assert im.size[0] > 300

    # real numbers: metrics in [0, 1], per-user values consistent with the evaluator
    for path in (out / 'accuracy' / 'units').glob('*.json'):
        rec = json.loads(path.read_text())
        assert 0.0 <= rec['test']['recall@20'] <= 1.0 and rec['best_epoch'] >= 1
        assert rec['per_user_check']['abs_diff'] < 1e-6
        # the stored per-user test metrics average to the evaluator's test metrics
        pu = rec['per_user']
        assert len(pu['users']) == len(pu['recall@20']) == len(pu['ndcg@20']) > 0
        assert pu['users'] == sorted(set(pu['users']))
        assert abs(sum(pu['recall@20']) / len(pu['users']) - rec['test']['recall@20']) < 1e-5
        assert abs(sum(pu['ndcg@20']) / len(pu['users']) - rec['test']['ndcg@20']) < 1e-5
        assert rec['stamp']['commit'] and rec['history'][0]['epoch_seconds'] > 0
        assert rec['wandb']['group'] == 'accuracy' and rec['wandb']['run_id']
    assert list((out / 'accuracy' / 'wandb').glob('offline-run-*'))
    scaling = [json.loads(p.read_text()) for p in (out / 'scaling' / 'units').glob('*.json')]
    assert all(u['status'] == 'ok' and u['critic_estimate']['parameters'] > 0 for u in scaling)
    eff = [json.loads(p.read_text()) for p in (out / 'efficiency' / 'units').glob('*.json')]
    assert all(u['peak_memory_mb'] >= u['rss_before_model_mb'] > 0 for u in eff)
    assert (out / 'accuracy' / 'accuracy_amazon-baby-interactions_at20.csv').is_file()

    # resumable: a second run trains nothing; report rebuilds every table from the units
    again = _run('accuracy', '--quick', '--out', str(out), '--wandb', 'disabled')
    assert 'running' not in again and 'done already' in again
    before = (out / 'sparsity' / 'sparsity_tiktok-mini_user_groups.csv').read_text()
    _run('report', '--out', str(out))
    after = (out / 'sparsity' / 'sparsity_tiktok-mini_user_groups.csv').read_text()
    strip = [ln for ln in before.splitlines() if not ln.startswith('#')]
    assert strip == [ln for ln in after.splitlines() if not ln.startswith('#')]

    # --max-minutes cuts a unit after an epoch
    out3 = tmp_path / 'bench3'
    _run('accuracy', '--quick', '--models', 'mf', '--seeds', '0', '--id-datasets', '--epochs', '5',
         '--patience', '0', '--max-minutes', '1e-6', '--out', str(out3), '--wandb', 'disabled')
    (rec,) = [json.loads(p.read_text()) for p in (out3 / 'accuracy' / 'units').glob('*.json')]
    assert rec['budget_cut_at_epoch'] == 1 and rec['epochs_run'] == 1
    assert 'stopped by the --max-minutes budget: 1' in (out3 / 'accuracy' / 'accuracy.md') \
        .read_text()


def test_accuracy_plans_the_tuned_presets_where_they_exist():
    """``run.py accuracy --tuned presets``: a model with a tuned preset on the dataset
    (``mmssl_pyg/configs/tuned/<model>-<dataset>.yaml``) runs its values, labelled ``tuned``
    with the preset's provenance; one without runs its preset."""
    from benchmarks import run as R
    from mmssl_pyg.training.presets import find_tuned_preset, read_yaml
    args = R.parse(['accuracy', '--tuned', 'presets', '--dataset', 'tiktok', '--models', 'mf',
                    'pop', '--seeds', '0', '--id-datasets'])
    units = {u.model: u for u in R.PLANS['accuracy'](args)}
    tuned = read_yaml(find_tuned_preset('mf', 'tiktok'))
    assert units['mf'].label == 'tuned' and units['mf'].meta['tuned_preset'] == 'mf-tiktok.yaml'
    assert units['mf'].model_options == tuned.get('model', {})
    assert units['mf'].train_options['lr'] == tuned['train']['lr']
    assert units['pop'].label == 'preset' and not units['pop'].meta
    with pytest.raises(SystemExit):  # the grid's tuned.json (run.py tune) is gone
        R.parse(['accuracy', '--tuned', 'tuned.json'])
