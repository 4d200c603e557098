"""benchmarks/op_profile.py: the operator profile of a training step."""
from __future__ import annotations

import csv

from benchmarks import op_profile


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
    md = (tmp_path / 'profile-tiktok-mini-cpu.md').read_text()
    assert md.startswith('# Operator profile of a training step on tiktok-mini (cpu)')
    assert 'git commit: ' in md and '2 mini-batches profiled per model' in md
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
