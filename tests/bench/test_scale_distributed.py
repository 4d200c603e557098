"""Smoke tests of benchmarks/scale_distributed.py and benchmarks/critic_columns.py on tiny
settings (the full runs take ~15 minutes; their outputs are in benchmarks/results/scaling)."""
from __future__ import annotations

import csv

import pytest

from mmssl_pyg.testing import _run


@pytest.mark.slow
@pytest.mark.distributed
def test_scale_distributed_smoke(tmp_path):
    _run(['-m', 'benchmarks.scale_distributed', '--users', '3000', '--items', '4000', '--procs',
          '1', '2', '--steps', '1', '--warmup', '1', '--critic-columns', '256', '--dims', '8',
          '4', '--embedding-dim', '16', '--out', str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / 'distributed_scale.csv')))
    assert [(r['users'], r['procs'], r['status']) for r in rows] == [
        ('3000', '1', 'ok'), ('3000', '2', 'ok')]
    two = rows[1]
    assert two['replicas_agree'] == 'True' and int(two['steps_per_epoch']) == 15  # 30 batches
    assert int(two['generated_edges_per_modality']) == 3000 * 10  # every user, k = 10
    assert float(two['peak_rss_mb_per_proc']) > 0 and float(two['sec_per_step']) > 0
    md = (tmp_path / 'distributed_scale.md').read_text()
    assert 'TIMING ONLY' in md and 'git commit' in md and 'command:' in md
