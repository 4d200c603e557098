"""benchmarks/op_profile.py: the operator profile of a training step."""
from __future__ import annotations

import csv

import pytest
import torch

from benchmarks import op_profile


def test_dense_flops_counts_dense_products_forward_and_backward_only():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4, requires_grad=True)
    adj = torch.eye(5).to_sparse_csr()
    with op_profile.DenseFlops() as counter:
        y = lin(adj @ x)  # the sparse-by-dense product is not counted
        y.sum().backward()
    # forward 5x4 @ 4x3, grad of the input 5x3 @ 3x4, grad of the weight 3x5 @ 5x4:
    # 2 * 60 multiply-adds each
    assert counter.flops == 3 * 2 * 5 * 4 * 3
    with op_profile.DenseFlops() as counter:
        torch.bmm(torch.randn(2, 3, 4), torch.randn(2, 4, 5))
        torch.randn(3) * torch.randn(3)  # element-wise: not counted
    assert counter.flops == 2 * 2 * 3 * 4 * 5


def test_summary_rows_scale_by_epoch_and_rate():
    [row] = op_profile.summary_rows([{'model': 'm', 'batches per epoch': 30,
                                      'dense GFLOP per batch': 2.0, 'self s per batch': 0.5}],
                                    rate=60.0)
    assert row['dense GFLOP per epoch'] == 60.0
    assert row['dense-product floor s per epoch'] == pytest.approx(1.0)


def test_profile_table_per_model_sorted_with_shares_that_add_up(tmp_path, capsys):
    assert op_profile.main(['--dataset', 'tiktok-mini', '--models', 'mf', 'mmssl', 'pop',
                            '--batches', '2', '--top', '5', '--threads', '1',
                            '--out', str(tmp_path)]) == 0
    with open(tmp_path / 'profile-tiktok-mini-cpu.csv') as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == op_profile.COLUMNS
    for model in ('mf', 'mmssl'):
        mine = [r for r in rows if r['model'] == model]
        seconds = [float(r['self s per batch']) for r in mine]
        assert seconds == sorted(seconds, reverse=True) and seconds[-1] > 0
        assert abs(sum(float(r['share %']) for r in mine) - 100.0) < 1e-6
        assert all(float(r['calls per batch']) > 0 for r in mine)
        assert len({r['operator'] for r in mine}) == len(mine)  # grouped by name
    mmssl_ops = {r['operator'] for r in rows if r['model'] == 'mmssl'}
    assert {'aten::mm', 'aten::topk'} <= mmssl_ops  # dense products, Eq. 5's top-k
    assert not [r for r in rows if r['model'] == 'pop']  # nothing trained, nothing profiled
    with open(tmp_path / 'profile-tiktok-mini-cpu-summary.csv') as fh:
        summary = {r['model']: r for r in csv.DictReader(fh)}
    assert list(summary) == ['mf', 'mmssl', 'pop']
    assert float(summary['mf']['dense GFLOP per batch']) == 0.0  # embeddings and dot products
    assert float(summary['mmssl']['dense GFLOP per batch']) > 0.0
    assert int(summary['pop']['batches per epoch']) == 0
    md = (tmp_path / 'profile-tiktok-mini-cpu.md').read_text()
    assert '- dense product rate of this machine: ' in md
    assert md.startswith('# Operator profile of a training step on tiktok-mini (cpu)')
    assert 'git commit: ' in md
    assert 'one epoch profiled and one counted (epochs of 2 mini-batches)' in md
    assert '## mf: ' in md and '## mmssl: ' in md and '(not trained: nothing to profile)' in md
    mmssl = md.split('## mmssl: ')[1].split('##')[0]
    table = [line for line in mmssl.splitlines() if line.startswith('| `')]
    assert len(table) == 5  # --top, then one line for the rest
    n_rest = sum(r['model'] == 'mmssl' for r in rows) - 5
    assert f'| ({n_rest} more) |' in mmssl


def test_unknown_dataset_is_one_line(tmp_path, capsys):
    assert op_profile.main(['--dataset', 'no-such-data', '--models', 'mf',
                            '--out', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err and 'error: ' in err and 'no-such-data' in err
    assert not list(tmp_path.iterdir())
