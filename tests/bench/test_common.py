"""Tests of ``benchmarks/_common.py``.

The benchmark framework: per-user metrics (fast) and quick mode end to end (slow).

The paired protocol: paired initialisation, the paired-difference interval and the
accuracy table built from unit files."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import _common as C
from benchmarks import _plan
from benchmarks import run as bench_run

# Student-t quantiles t(0.975, df) from a printed table (not from scipy)
T975 = {2: 4.302652729911275, 4: 2.7764451051977987}


def _unit(model, seed, recall, label='preset', dataset='tiktok-mini', epochs=5):
    key = {'model': model, 'dataset': dataset, 'seed': seed, 'kind': 'train',
           'train': {'epochs': epochs}}
    metrics = {f'{m}@{k}': recall for m in ('recall', 'precision', 'ndcg', 'hit')
               for k in (10, 20, 50)}
    return {'spec': {'model': model, 'dataset': dataset, 'label': label, 'seed': seed,
                     'kind': 'train'},
            'key': key, 'hash': C.key_hash(key), 'status': 'ok', 'val': dict(metrics),
            'test': metrics, 'best_epoch': 3, 'epochs_run': epochs, 'history': [{}],
            'train': {'epochs': epochs, 'patience': 2, 'batches_per_epoch': None},
            'stamp': C.stamp('cpu', 'test'), 'paired_init': ['user', 'item']}


def _read_csv(path: Path) -> list[dict]:
    lines = [x for x in path.read_text().splitlines() if not x.startswith('#')]
    return list(csv.DictReader(lines))


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
    # derived from the declarations (Neutral): a new option with a neutral value joins it
    assert {'cold_items': 'none', 'cl_pairing': 'overall'}.items() <= C.LATER_OPTIONS.items()
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


def test_paired_difference_matches_a_hand_computation():
    a = {0: 0.10, 1: 0.12, 2: 0.11, 7: 0.5}   # seed 7 has no partner: ignored
    b = {0: 0.09, 1: 0.10, 2: 0.10, 3: 0.2}   # seed 3 likewise
    # differences 0.01, 0.02, 0.01: mean 0.04/3, sd sqrt(((-1/300)^2 + (2/300)^2
    # + (-1/300)^2) / 2) = sqrt(6/90000 / 2) = 1/(100 sqrt 3)
    mean, sd = 0.04 / 3, 1 / (100 * math.sqrt(3))
    half = T975[2] * sd / math.sqrt(3)
    d = C.paired_difference(a, b)
    assert d.n == 3
    assert d.mean == pytest.approx(mean, abs=1e-12)
    assert d.sd == pytest.approx(sd, abs=1e-12)
    assert (d.lo, d.hi) == (pytest.approx(mean - half, abs=1e-9),
                            pytest.approx(mean + half, abs=1e-9))
    assert str(d) == f'{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]'
    one = C.paired_difference({0: 0.3}, {0: 0.1, 1: 0.2})
    assert one.n == 1 and one.mean == pytest.approx(0.2) and math.isnan(one.lo)
    assert str(one) == '+0.2000 (1 seed: no interval)'
    none = C.paired_difference({0: 0.3}, {1: 0.2})
    assert none.n == 0 and str(none) == 'n/a (no common seeds)'


def test_unit_key_marks_paired_units_only():
    plain = C.Unit('accuracy', 'mf', 'tiktok-mini', 0)
    paired = C.Unit('accuracy', 'mf', 'tiktok-mini', 0, paired_init=True)
    keys = [C.unit_key(u, C.resolve(u, 'cpu'), 'cpu') for u in (plain, paired)]
    assert 'paired_init' not in keys[0] and keys[1]['paired_init'] is True
    assert C.key_hash(keys[0]) != C.key_hash(keys[1])


def test_accuracy_table_reports_paired_difference_to_the_best_baseline(tmp_path):
    recalls = {'pop': [0.02] * 5, 'mf': [0.05, 0.06, 0.04, 0.05, 0.05],
               'lightgcn': [0.10, 0.12, 0.11, 0.09, 0.13],
               'mmssl': [0.11, 0.14, 0.12, 0.10, 0.15]}
    units = [_unit(m, s, r) for m, rs in recalls.items() for s, r in enumerate(rs)]
    units.append(_unit('mf', 0, 0.07, epochs=9))  # another configuration: its own row
    folder = tmp_path / 'accuracy' / 'units'
    folder.mkdir(parents=True)
    for i, u in enumerate(units):
        (folder / f'u{i}__{u["hash"]}.json').write_text(json.dumps(u))
    bench_run.build_report(tmp_path, 'accuracy')
    rows = {r['model']: r for r in _read_csv(tmp_path / 'accuracy' /
                                             'accuracy_tiktok-mini_at20.csv')}
    names = list(rows)
    assert names[0] == 'pop' and names[-2:] == ['lightgcn', 'mmssl']
    assert len([n for n in names if n.startswith('mf (preset, ')]) == 2  # two configurations
    assert rows['lightgcn']['paired diff test Recall@20 vs best baseline mean'] == \
        'reference (best baseline)'
    mm = rows['mmssl']
    d = [0.01, 0.02, 0.01, 0.01, 0.02]  # by hand: mean 0.014, sd sqrt(30e-6)
    half = T975[4] * math.sqrt(30e-6) / math.sqrt(5)
    assert float(mm['paired diff test Recall@20 vs best baseline mean']) == \
        pytest.approx(sum(d) / 5, rel=1e-5)
    assert float(mm['paired diff test Recall@20 vs best baseline lo95']) == \
        pytest.approx(0.014 - half, rel=1e-5)
    assert float(mm['paired diff test Recall@20 vs best baseline hi95']) == \
        pytest.approx(0.014 + half, rel=1e-5)
    assert float(mm['test Recall@20 / best baseline']) == pytest.approx(0.124 / 0.11, abs=0.01)
    assert mm['seeds'] == '5' and rows['pop']['seeds'] == '5'
    assert float(rows['pop']['paired diff test Recall@20 vs best baseline mean']) == \
        pytest.approx(0.02 - 0.11, rel=1e-5)
    md = (tmp_path / 'accuracy' / 'accuracy.md').read_text()
    assert 'paired Δ test Recall@20 vs lightgcn [95% CI]' in md
    assert f'| +0.0140 [{0.014 - half:+.4f}, {0.014 + half:+.4f}] |' in md
    assert '21 of 21 units here were initialised that way' in md


def test_accuracy_settings_name_budget_cuts_notes_and_mmssl_paper_is_ours(tmp_path):
    """The settings column counts budget-cut units and shows row_notes.yaml's note for the
    configuration; `mmssl-paper` never becomes the reference baseline."""
    import yaml
    recalls = {'lightgcn': [0.10, 0.12, 0.11, 0.09, 0.13],
               'mmssl-paper': [0.20, 0.21, 0.22, 0.20, 0.21]}
    units = [_unit(m, s, r) for m, rs in recalls.items() for s, r in enumerate(rs)]
    units[1]['budget_cut_at_epoch'] = 4
    folder = tmp_path / 'accuracy' / 'units'
    folder.mkdir(parents=True)
    for i, u in enumerate(units):
        (folder / f'u{i}__{u["hash"]}.json').write_text(json.dumps(u))
    bench = bench_run
    cfg = _plan._config_id(units[5])
    (tmp_path / 'accuracy' / 'row_notes.yaml').write_text(yaml.safe_dump({cfg[:6]: 'the paper'}))
    bench.build_report(tmp_path, 'accuracy')
    rows = {r['model']: r for r in _read_csv(tmp_path / 'accuracy' /
                                             'accuracy_tiktok-mini_at20.csv')}
    assert rows['lightgcn']['settings'] == 'preset; 1 of 5 units budget-cut'
    assert rows['mmssl-paper']['settings'] == 'preset; the paper'
    assert rows['lightgcn']['paired diff test Recall@20 vs best baseline mean'] == \
        'reference (best baseline)'


def test_units_present_counts_the_last_plan_and_the_others_apart():
    # a results folder holds the last command's plan and units of earlier commands: the
    # count says how many planned units exist, which are missing and how many others there are
    plan = {'units': [{'hash': h, 'model': 'mf', 'dataset': 'tiktok', 'label': 'tuned',
                       'seed': s} for h, s in (('a', 0), ('b', 1))]}
    units = [{'hash': 'a'}, {'hash': 'x'}, {'hash': 'y'}]
    lines = C.Report(Path('.'), 'accuracy', 'title', {}, units, plan).cut_lines()
    assert lines[0] == ('units present: 1 of 2 planned by the last command; missing: '
                        'mf/tiktok/tuned/s1; 2 more from earlier commands')
    lines = C.Report(Path('.'), 'accuracy', 'title', {}, units[:1], plan).cut_lines()
    assert lines[0] == ('units present: 1 of 2 planned by the last command; missing: '
                        'mf/tiktok/tuned/s1')


def test_run_attached_passes_a_kill_on_to_the_process_it_started(tmp_path):
    """``study final`` runs the accuracy benchmark, which runs each unit in its own process:
    a SIGTERM to the top process must stop the child too (it used to finish its units)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    pid_file = tmp_path / 'child.pid'
    child = (f'import os, time; open({str(pid_file)!r}, "w").write(str(os.getpid())); '
             'time.sleep(120)')
    parent = ('import sys; from benchmarks._common import run_attached; '
              f'sys.exit(run_attached([sys.executable, "-c", {child!r}]))')
    proc = subprocess.Popen([sys.executable, '-c', parent], cwd=C.REPO)
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):  # the child was stopped and reaped, not orphaned
        os.kill(child_pid, 0)


def test_run_attached_returns_the_childs_exit_code():
    import sys
    assert C.run_attached([sys.executable, '-c', 'raise SystemExit(3)']) == 3
    assert C.run_attached([sys.executable, '-c', 'pass']) == 0
