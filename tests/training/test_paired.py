"""The paired protocol: paired initialisation, the paired-difference interval and the
accuracy table built from unit files."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import _common as C
from benchmarks import _plan
from benchmarks import run as bench_run
from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models import GRCN, MF, MMSSL, LightGCN
from mmssl_pyg.training.seeding import id_embedding_tables, pair_id_embeddings

# Student-t quantiles t(0.975, df) from a printed table (not from scipy)
T975 = {2: 4.302652729911275, 4: 2.7764451051977987}


# ---------------------------------------------------------------------------------------------
# paired difference


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


# ---------------------------------------------------------------------------------------------
# paired initialisation


def _graph(num_users=60, num_items=40, modalities=2) -> RecGraph:
    g = torch.Generator().manual_seed(0)
    users = torch.arange(num_users).repeat_interleave(4)
    items = torch.randint(num_items, (users.numel(),), generator=g)
    ei = torch.unique(torch.stack([users, items]), dim=1)
    feats = {f'm{k}': torch.randn(num_items, 6, generator=g) for k in range(modalities)}
    return RecGraph(num_users, num_items, ei, ei[:, :10], ei[:, 10:20], feats, name='toy')


def test_same_seed_same_id_embeddings_across_models():
    graph = _graph()
    torch.manual_seed(0)
    lightgcn = LightGCN(graph, embedding_dim=32)
    torch.manual_seed(1)  # another global state: pairing must not depend on it
    mmssl = MMSSL(graph, embedding_dim=32)
    torch.manual_seed(0)
    mf = MF(graph, embedding_dim=32)
    # MMSSL draws other parameters between its ID tables: unpaired they differ
    assert not torch.equal(lightgcn.user_emb.weight, mmssl.user_emb.weight)
    state = torch.get_rng_state()
    for model in (lightgcn, mmssl):
        assert pair_id_embeddings(model, 5) == ['user', 'item']
    assert pair_id_embeddings(mf, 6) == ['user', 'item']
    assert torch.equal(torch.get_rng_state(), state)  # the global streams are untouched
    for role in ('user', 'item'):
        a = id_embedding_tables(lightgcn)[role]
        assert torch.equal(a, id_embedding_tables(mmssl)[role])
        assert not torch.equal(a, id_embedding_tables(mf)[role])  # another seed
    bound = math.sqrt(6 / (graph.num_users + 32))
    assert float(lightgcn.user_emb.weight.detach().abs().max()) <= bound  # still Xavier uniform


def test_pairing_keeps_each_models_rule_and_refuses_a_mismatch():
    graph = _graph(num_users=200, num_items=150)
    grcn = GRCN(graph, embedding_dim=16)
    assert grcn.id_init == 'xavier_normal' and pair_id_embeddings(grcn, 3) == ['user', 'item']
    bound = math.sqrt(6 / (graph.num_users + 16))
    assert float(grcn.user_id.weight.detach().abs().max()) > bound  # normal, not uniform
    model = LightGCN(graph, embedding_dim=16)
    with torch.no_grad():
        model.user_emb.weight.mul_(10)  # e.g. a model whose initialisation changed
    with pytest.raises(ValueError, match=r'LightGCN user ID table does not look '
                                         r'xavier_uniform-initialised.*id_init'):
        pair_id_embeddings(model, 0)


def test_unit_key_marks_paired_units_only():
    plain = C.Unit('accuracy', 'mf', 'tiktok-mini', 0)
    paired = C.Unit('accuracy', 'mf', 'tiktok-mini', 0, paired_init=True)
    keys = [C.unit_key(u, C.resolve(u, 'cpu'), 'cpu') for u in (plain, paired)]
    assert 'paired_init' not in keys[0] and keys[1]['paired_init'] is True
    assert C.key_hash(keys[0]) != C.key_hash(keys[1])


# ---------------------------------------------------------------------------------------------
# the accuracy table


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
