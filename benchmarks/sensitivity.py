"""Hyper-parameter sensitivity (paper Figure 4): one-at-a-time sweeps of MMSSL's options."""
from __future__ import annotations

import math
from collections import defaultdict

from benchmarks import _common as C
from benchmarks._plan import (
    QUICK_SWEEPS,
    SWEEPS,
    _metric,
    _ok,
    _value,
    dataset_for,
    same_train,
    seeds_for,
    unit,
)


def plan_sensitivity(args):
    seeds = seeds_for(args, 'sensitivity', [0])
    dataset = dataset_for(args)
    params = args.params or list(SWEEPS)
    units = [unit(args, 'sensitivity', 'mmssl', dataset, s, 'default', meta={'param': None})
             for s in seeds]
    for p in params:
        values = QUICK_SWEEPS[p] if args.quick else SWEEPS[p][1]
        units += [unit(args, 'sensitivity', 'mmssl', dataset, s, f'{p}={v}', {p: v},
                       meta={'param': p, 'value': v}) for v in values for s in seeds]
    return units


def report_sensitivity(rep: C.Report):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    units = _ok(rep.units)
    defaults = [u for u in units if u['spec']['meta'].get('param') is None]
    if not defaults:
        rep.add_text('No default-point unit yet: nothing to report.')
        return
    base = defaults[0]['model_kwargs']
    params = [p for p in SWEEPS if any(u['spec']['meta'].get('param') == p for u in units)]
    fig, axes = plt.subplots(1, max(len(params), 1), figsize=(3.4 * max(len(params), 1), 3.4),
                             squeeze=False)
    rows = []
    for ax, p in zip(axes[0], params):
        points = defaultdict(list)
        for u in units:
            diff = {k for k in set(base) | set(u['model_kwargs'])
                    if base.get(k) != u['model_kwargs'].get(k)}
            if diff <= {p} and same_train(u, defaults[0]):
                points[u['model_kwargs'].get(p)].append(u)
        order = SWEEPS[p][1]  # numbers sort by value, names (feature_norm) by the sweep's order
        xs = sorted(points, key=lambda x: (order.index(x), 0) if isinstance(x, str)
                    and x in order else (float(x), 1))
        val = [_metric(points[x], 'val', 'recall@20') for x in xs]
        test = [_metric(points[x], 'test', 'recall@20') for x in xs]
        for x, v, t in zip(xs, val, test):
            us = points[x]
            rows.append([p, _value(x), 'yes' if x == base.get(p) else '', v[2], v,
                         t, (_metric(us, 'test', 'ndcg@20'))])
        pos = list(range(len(xs)))
        ax.errorbar(pos, [v[0] for v in val], yerr=[v[1] if math.isfinite(v[1]) else 0
                                                    for v in val],
                    marker='o', label='validation R@20 (selection metric)')
        ax.plot(pos, [t[0] for t in test], marker='s', linestyle='--',
                label='test R@20 at val-selected epoch')
        ax.set_xticks(pos, [_value(x) for x in xs])
        if base.get(p) in xs:
            ax.axvline(xs.index(base.get(p)), color='0.7', linestyle=':')
        ax.set_title(SWEEPS[p][0], fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel('Recall@20')
    axes[0][0].legend(fontsize=7)
    fig.suptitle('MMSSL sensitivity (one parameter at a time; dotted line = preset value)')
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    rep.add_table('sensitivity', 'Sensitivity of MMSSL (one-at-a-time sweeps)',
                  ['parameter', 'value', 'preset', 'seeds', 'val Recall@20',
                   'test Recall@20 (at val-selected epoch)', 'test NDCG@20 (at val-selected '
                   'epoch)'], rows,
                  ['Read the validation column to compare settings; the test columns are '
                   'reported for the epoch chosen on validation and were not used to choose '
                   'anything.'])
    rep.add_figure(fig, 'sensitivity', 'MMSSL sensitivity: validation Recall@20 (solid) and '
                   'test Recall@20 at the validation-selected epoch (dashed)')


PLAN = plan_sensitivity
REPORT = (report_sensitivity, 'Hyper-parameter sensitivity (paper Figure 4)')
