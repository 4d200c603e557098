"""Convergence (paper Figure 3): validation Recall@20 against epoch and seconds."""
from __future__ import annotations

from benchmarks import _common as C
from benchmarks._plan import _by, _ok, all_models, dataset_for, models_for, seeds_for, unit


def plan_convergence(args):
    seeds = seeds_for(args, 'convergence', [0])
    dataset = dataset_for(args)
    return [unit(args, 'convergence', m, dataset, s, 'preset')
            for m in models_for(args, 'convergence') for s in seeds]


def report_convergence(rep: C.Report):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    units = _ok(rep.units)
    order = {m: i for i, m in enumerate(all_models())}
    curve_rows, summary = [], []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (dataset, model, seed), (u,) in sorted(
            ((k, v[:1]) for k, v in _by(units, lambda u: u['spec']['dataset'],
                                        lambda u: u['spec']['model'],
                                        lambda u: u['spec']['seed']).items()),
            key=lambda kv: (kv[0][0], order.get(kv[0][1], 99), kv[0][2])):
        wall, xs, ts, ys = 0.0, [], [], []
        for h in u['history']:
            wall += (h.get('epoch_seconds') or 0.0) + (h.get('eval_seconds') or 0.0)
            if 'val/recall@20' in h:
                xs.append(h['epoch'])
                ts.append(wall)
                ys.append(h['val/recall@20'])
            curve_rows.append([dataset, model, seed, h['epoch'], round(wall, 3),
                               h.get('epoch_seconds'), h.get('train/loss'),
                               h.get('val/recall@20'), h.get('val/ndcg@20')])
        label = f'{model} ({dataset}, seed {seed})'
        ax1.plot(xs, ys, marker='.', label=label)
        ax2.plot(ts, ys, marker='.', label=label)
        best = max(ys) if ys else float('nan')
        t95 = next((t for t, y in zip(ts, ys) if y >= 0.95 * best), float('nan'))
        e95 = next((x for x, y in zip(xs, ys) if y >= 0.95 * best), None)
        summary.append([model, dataset, seed, u['epochs_run'], u['best_epoch'], C.Num(best),
                        e95, C.Num(t95, 1), C.Num(wall, 1)])
    from matplotlib.ticker import MaxNLocator
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_xlabel('epoch')
    ax2.set_xlabel('wall-clock seconds (training + validation)')
    for ax in (ax1, ax2):
        ax.set_ylabel('validation Recall@20')
        ax.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc='lower right')
    fig.suptitle('Convergence: validation Recall@20 (Figure 3 of the paper uses Amazon-Baby)')
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    rep.add_table('convergence_summary', 'Convergence summary',
                  ['model', 'dataset', 'seed', 'epochs run', 'selected epoch',
                   'best val Recall@20', 'first epoch ≥95% of best', 'seconds to ≥95% of best',
                   'total seconds'], summary,
                  ['Seconds are the trainer\'s epoch_seconds + eval_seconds, cumulated.'])
    rep.add_table('convergence_curves', 'Convergence curves (per epoch)',
                  ['dataset', 'model', 'seed', 'epoch', 'wall seconds', 'epoch seconds',
                   'train loss', 'val Recall@20', 'val NDCG@20'], curve_rows)
    rep.add_figure(fig, 'convergence', 'Validation Recall@20 vs epoch and vs wall-clock seconds')


PLAN = plan_convergence
REPORT = (report_convergence, 'Convergence (paper Figure 3)')
