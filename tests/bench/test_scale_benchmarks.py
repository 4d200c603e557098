"""Smoke tests of benchmarks/scale_distributed.py and benchmarks/critic_columns.py on tiny
settings (the full runs take ~15 minutes; their outputs are in benchmarks/results/scaling)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


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
