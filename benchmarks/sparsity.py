"""Sparsity (paper Table 4): metrics by user-degree and item-popularity group."""
from __future__ import annotations

import math

from benchmarks import _common as C
from benchmarks._plan import OURS, _by, _ok, all_models, dataset_for, models_for, seeds_for, unit


def plan_sparsity(args):
    seeds = seeds_for(args, 'sparsity', [0, 1, 2])
    dataset = dataset_for(args)
    return [unit(args, 'sparsity', m, dataset, s, 'preset')
            for m in models_for(args, 'sparsity') for s in seeds]


def report_sparsity(rep: C.Report):
    units = [u for u in _ok(rep.units) if 'groups' in u]
    order = {m: i for i, m in enumerate(all_models())}
    k = C.K_GROUPS
    for (dataset,), group in _by(units, lambda u: u['spec']['dataset']).items():
        per = _by(group, lambda u: u['spec']['model'])
        models = sorted((m for (m,) in per), key=lambda m: order.get(m, 99))
        for side, count, metric, title in (
                ('user_groups', 'users', f'ndcg@{k}',
                 f'NDCG@{k} by user training-interaction count'),
                ('item_groups', 'pairs', f'recall@{k}',
                 f'Recall@{k} of held-out interactions by item training popularity')):
            ref = per[(models[0],)][0]['groups'][side]
            heads = [f'[{g["lo"]},{g["hi"]})' for g in ref]
            ours = None
            if 'mmssl' in models:
                ours = [C.mean_std([u['groups'][side][j][metric] for u in per[('mmssl',)]])[0]
                        for j in range(len(ref))]
            rows = [[f'n {count}', ''] + [g[count] for g in ref]]
            md_rows = [[f'n {count}'] + [C.fmt(g[count]) for g in ref]]
            for m in models:
                us = per[(m,)]
                values = [C.mean_std([u['groups'][side][j][metric] for u in us]).mean
                          for j in range(len(ref))]
                rows.append([m, len(us)] + values)
                cells = [f'{m} ({len(us)} seeds)']
                for j, v in enumerate(values):
                    cell = C.fmt(v)
                    if ours is not None and m not in OURS and v and math.isfinite(v) \
                            and math.isfinite(ours[j]):
                        cell += f' (MMSSL {(ours[j] - v) / v * 100:+.0f}%)'
                    cells.append(cell)
                md_rows.append(cells)
            what = 'users' if side == 'user_groups' else 'items'
            notes = [f'Test split, weights of the validation-selected epoch; groups are '
                     f'quantiles of the training-interaction count of the {what} with held-out '
                     f'test interactions (half-open [lo,hi)); mean over seeds. Per-user values '
                     f'are computed by benchmarks/_common.py (blockwise ranking from '
                     f'get_embedding()) because the shared evaluator reports means only; their '
                     f'mean matches the evaluator\'s NDCG@{k} (largest difference over units: '
                     f'{max(u["per_user_check"]["abs_diff"] for u in group):.2e}).']
            if side == 'item_groups':
                notes.append('Cell = held-out (user, item) pairs of the group\'s items found in '
                             f'the user\'s top {k} / held-out pairs of those items.')
            rep.add_table(f'sparsity_{dataset}_{side}', f'{title} ({dataset})',
                          ['model', 'seeds'] + heads, rows, notes,
                          md=(['model'] + heads, md_rows))


PLAN = plan_sparsity
REPORT = (report_sparsity, 'Sparsity (paper Table 4)')
