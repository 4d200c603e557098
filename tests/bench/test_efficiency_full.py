"""benchmarks/efficiency_full.py: a two-epoch run on tiktok-mini writes the stamped table
and CSV with LightGCN's ratio 1, and the typical trial comes from the committed units."""
from __future__ import annotations

import csv

from benchmarks import efficiency_full as E


def test_typical_trial_reads_the_committed_accuracy_units():
    epochs, evals, label = E.typical_trial('lightgcn', 'tiktok')
    assert label.startswith('preset') and epochs >= 1 and evals >= 1
    assert E.typical_trial('no-such-model', 'tiktok') == (None, None, 'no units')


def test_smoke_run_writes_table_and_csv(tmp_path):
    E.main(['--datasets', 'tiktok-mini', '--epochs', '2', '--models', 'mf', 'grcn',
            '--threads', '1', '--out', str(tmp_path)])
    md = (tmp_path / 'efficiency-full-tiktok-mini-cpu.md').read_text()
    assert 'git commit:' in md and 'machine:' in md and 'command:' in md
    lines = (tmp_path / 'efficiency-full-tiktok-mini-cpu.csv').read_text().splitlines()
    rows = list(csv.DictReader(line for line in lines if not line.startswith('#')))
    assert [r['model'] for r in rows] == ['lightgcn', 'mf', 'grcn']
    assert all(r['status'] == 'ok' for r in rows)
    assert float(rows[0]['epoch ratio to lightgcn']) == 1.0
    for r in rows:
        assert float(r['epoch s (median 2..n)']) > 0 and float(r['peak RSS MiB']) > 0
        assert len(r['epoch_seconds'].split()) == 2
