"""The benchmark framework: per-user metrics (fast) and quick mode end to end (slow)."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import _common as C

ROOT = Path(__file__).resolve().parents[2]

BENCHMARKS = ('accuracy', 'ablation', 'sparsity', 'convergence', 'sensitivity', 'efficiency',
              'scaling')
FIGURES = ('convergence', 'sensitivity', 'scaling')
STAMP_KEYS = ('command:', 'git commit:', 'machine:', 'torch ', 'torch_geometric ', 'date:')


# ---------------------------------------------------------------------------------------------
# fast


def test_per_user_metrics_match_the_evaluator():
    from mmssl_pyg.training.evaluator import evaluate_embeddings, heldout_pairs
    graph = C.load_graph('tiktok-mini')
    g = torch.Generator().manual_seed(0)
    user = torch.randn(graph.num_users, 8, generator=g)
    item = torch.randn(graph.num_items, 8, generator=g)
    item[:50] += 3.0  # a few popular items so that some held-out pairs are hit
    for split in ('val', 'test'):
        ref = evaluate_embeddings(user, item, graph, split, ks=(20,))
        pu = C.per_user_metrics(user, item, graph, split, k=20, batch_size=97)
        assert pu['hit'].sum() > 0
        assert float(pu['ndcg'].mean()) == pytest.approx(ref['ndcg@20'], abs=1e-9)
        assert float(pu['recall'].mean()) == pytest.approx(ref['recall@20'], abs=1e-9)
        assert float(pu['hit'].mean()) == pytest.approx(ref['hit@20'], abs=1e-9)
        # every hit is one held-out pair found; per-item counts add up to the per-user ones
        n_heldout = pu['item_heldout'].sum()
        assert int(n_heldout) == heldout_pairs(graph, split).size(1)
        assert (pu['item_hits'] <= pu['item_heldout']).all()
    groups = C.group_metrics(pu, graph)
    assert sum(gr['users'] for gr in groups['user_groups']) == pu['users'].numel()
    weighted = sum(gr['users'] * gr['ndcg@20'] for gr in groups['user_groups'])
    assert weighted / pu['users'].numel() == pytest.approx(float(pu['ndcg'].mean()), abs=1e-9)
    assert sum(gr['pairs'] for gr in groups['item_groups']) == int(n_heldout)


def test_quantile_edges_cover_every_value():
    values = np.array([1, 1, 1, 1, 2, 2, 3, 5, 8, 40])
    edges = C.quantile_edges(values, 5)
    assert edges[0] == 1 and edges[-1] == 41 and edges == sorted(set(edges))
    counts = [((values >= lo) & (values < hi)).sum() for lo, hi in zip(edges, edges[1:])]
    assert sum(counts) == values.size and min(counts) > 0


def test_unit_key_ignores_benchmark_and_label_but_not_options():
    a = C.Unit('accuracy', 'mf', 'tiktok-mini', 0, 'preset')
    b = C.Unit('sparsity', 'mf', 'tiktok-mini', 0, 'other label')
    c = C.Unit('accuracy', 'mf', 'tiktok-mini', 0, model_options={'reg_weight': 1e-3})
    keys = [C.key_hash(C.unit_key(u, C.resolve(u, 'cpu'), 'cpu')) for u in (a, b, c)]
    assert keys[0] == keys[1] != keys[2]


# ---------------------------------------------------------------------------------------------
# slow: quick mode end to end


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


def test_stored_units_keep_their_hashes_when_options_are_added():
    """A committed full-TikTok MMSSL unit (from before ``cold_items`` existed) is found again:
    its stored key is what the runner computes today for its spec, so an option added later at
    its neutral value (``C.LATER_OPTIONS``) does not orphan finished or half-run units."""
    import json
    from pathlib import Path
    path = next(Path(__file__).resolve().parents[2].glob(
        'benchmarks/results/accuracy/units/mmssl__tiktok__preset__s0__462b6cf2f234.json'))
    record = json.loads(path.read_text())
    assert not set(C.LATER_OPTIONS) & set(record['key']['model_kwargs'])
    assert C.LATER_OPTIONS == {'cold_items': 'none', 'cl_pairing': 'overall'}
    unit = C.Unit(**record['spec'])
    key = C.unit_key(unit, C.resolve(unit, 'cpu'), 'cpu')
    assert key == record['key'] and C.key_hash(key) == record['hash'] == '462b6cf2f234'
    # the option at a non-neutral value is part of the key
    other = C.Unit(**{**record['spec'], 'model_options': {
        **record['spec']['model_options'], 'cold_items': 'features'}})
    assert C.unit_key(other, C.resolve(other, 'cpu'), 'cpu')['model_kwargs']['cold_items'] == \
        'features'


def test_stored_units_keep_their_hashes_when_an_option_is_renamed():
    """A committed FREEDOM unit from before ``feat_norm`` became ``feature_norm`` is found
    again: its key keeps the former name (``Formerly('feat_norm')`` in the signature)."""
    import json
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / \
        'benchmarks/results/accuracy/units/freedom__tiktok__tuned__s0__2581f78e54eb.json'
    record = json.loads(path.read_text())
    assert record['key']['model_kwargs']['feat_norm'] == 'l2'
    unit = C.Unit(**record['spec'])
    options = C.resolve(unit, 'cpu')
    assert 'feature_norm' not in options.model_kwargs  # the class default, l2
    key = C.unit_key(unit, options, 'cpu')
    assert key == record['key'] and C.key_hash(key) == record['hash'] == '2581f78e54eb'
