"""Smoke tests of benchmarks/scale_distributed.py and benchmarks/critic_columns.py on tiny
settings (the full runs take ~15 minutes; their outputs are in benchmarks/results/scaling)."""
from __future__ import annotations

import csv

import pytest

from mmssl_pyg.testing import _run


@pytest.mark.slow
def test_critic_columns_smoke(tmp_path):
    _run(['-m', 'benchmarks.critic_columns', '--epochs', '1', '--seeds', '0', '--columns', '256',
          '--mem-items', '4000', '--mem-users', '2000', '--mem-columns', '256',
          '--out', str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / 'critic_columns.csv')))
    acc = [r for r in rows if r['part'] == 'accuracy']
    assert sorted(r['critic_columns'] for r in acc) == ['256', 'all']
    assert all(0 <= float(r['best_val_recall@20']) <= 1 for r in acc)
    mem = {r['critic_columns']: r for r in rows if r['part'] == 'memory'}
    assert float(mem['256']['measured_peak_rss_mb']) > 0
    assert mem['all']['measured_peak_rss_mb'] == ''  # the full width: an estimate only
    assert 'VALIDATION Recall@20' in (tmp_path / 'critic_columns.md').read_text()
