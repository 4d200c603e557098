"""Ablation (paper Table 3): MMSSL against w/o-ASL, w/o-CL, w/o-GT and r/p-GAE."""
from __future__ import annotations

import math

from benchmarks import _common as C
from benchmarks._plan import (
    ABLATIONS,
    PAIRED_SEEDS,
    PAPER_TABLE3_TIKTOK,
    _by,
    _long_csv,
    _metric,
    _ok,
    dataset_for,
    seeds_for,
    unit,
)


def plan_ablation(args):
    seeds = seeds_for(args, 'ablation', list(range(PAIRED_SEEDS)))
    dataset = dataset_for(args)
    return [unit(args, 'ablation', 'mmssl', dataset, seed, name,
                 {} if abl is None else {'ablation': abl}, meta={'ablation': abl})
            for abl, name in ABLATIONS for seed in seeds]


def report_ablation(rep: C.Report):
    units = _ok(rep.units)
    for (dataset,), group in _by(units, lambda u: u['spec']['dataset']).items():
        per = _by(group, lambda u: u['model_kwargs'].get('ablation'))
        full = per.get((None,))
        full_r = _metric(full, 'test', 'recall@20')[0] if full else float('nan')
        rows = []
        for abl, name in ABLATIONS:
            us = per.get((abl,))
            if not us:
                continue
            r, n = _metric(us, 'test', 'recall@20'), _metric(us, 'test', 'ndcg@20')
            delta = (r[0] - full_r) / full_r * 100 if full and full_r else float('nan')
            cells = [name, len(us), (_metric(us, 'val', 'recall@20')), r,
                     n, (_metric(us, 'test', 'precision@20')),
                     'reference' if abl is None else
                     'n/a' if not math.isfinite(delta) else f'{delta:+.1f}%']
            if dataset == 'tiktok':
                p = PAPER_TABLE3_TIKTOK[abl]
                cells.append(f'{p[0]:.4f} / {p[1]:.4f}')
            rows.append(cells)
        cols = ['variant', 'seeds', 'val Recall@20', 'test Recall@20', 'test NDCG@20',
                'test Precision@20', 'Δ test Recall@20 vs MMSSL']
        notes = ['Test metrics at the validation-selected epoch; mean ± std over seeds.']
        if dataset == 'tiktok':
            cols.append('paper Recall / NDCG@20')
            notes.append('Paper column: Table 3, TikTok (with text features there).')
        rep.add_table(f'ablation_{dataset}', f'Ablation on {dataset}', cols, rows, notes)
    _long_csv(rep, units)


PLAN = plan_ablation
REPORT = (report_ablation, 'Ablation (paper Table 3)')
