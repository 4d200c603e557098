"""MMSSL scaling on synthetic graphs (timing and memory only)."""
from __future__ import annotations

from collections import defaultdict

from benchmarks import _common as C
from benchmarks._plan import QUICK_SCALING, SCALING_AXES, SCALING_X


def plan_scaling(args):
    axes = QUICK_SCALING if args.quick else {a: SCALING_AXES[a]
                                             for a in (args.axes or SCALING_AXES)}
    batch = 128 if args.quick else 1024
    extra = {'epochs': 2, 'patience': 0, 'batches_per_epoch': args.batches or
             (2 if args.quick else 3), 'batch_size': batch}
    units = []
    for axis, points in axes.items():
        for users, items, dims in points:
            name = C.synthetic_name(users, items, dims)
            u = C.Unit('scaling', 'mmssl', name, 0, f'{axis}:{name}', {},
                       {**extra}, kind='timing', isolate=True,
                       synthetic={'num_users': users, 'num_items': items, 'dims': list(dims)},
                       meta={'axis': axis})
            for k in ('epochs', 'patience'):  # --epochs etc. do not apply: fixed timing runs
                u.train_options[k] = extra[k]
            units.append(u)
    return units


def report_scaling(rep: C.Report):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows, series = [], defaultdict(list)
    for u in rep.units:
        s, axis = u['spec']['synthetic'], u['spec']['meta'].get('axis', 'joint')
        point = (s['num_users'], s['num_items'], tuple(s['dims']))
        est = u.get('critic_estimate', {})
        if u.get('status') != 'ok':
            rows.append([axis, *point[:2], 'x'.join(map(str, point[2])), est.get('parameters'),
                         C.Num(est.get('bytes', float('nan')) / 2**30, 2), u['status'],
                         '', '', '', u.get('reason', '')[:120]])
            continue
        bpe = u['train']['batches_per_epoch']
        per_batch = u['epoch_seconds'][-1] / bpe
        rows.append([axis, *point[:2], 'x'.join(map(str, point[2])), est.get('parameters'),
                     C.Num(est.get('bytes', float('nan')) / 2**30, 2), 'ok',
                     C.Num(per_batch, 3), C.Num(u['epoch_seconds'][0] / bpe, 3),
                     C.Num(C._mean(u['eval_seconds']), 2), C.Num(u['peak_memory_mb'], 0)])
        series[axis].append((SCALING_X[axis][1](point), per_batch, u['peak_memory_mb']))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    rep.add_table('scaling', 'MMSSL scaling on SYNTHETIC graphs — TIMING ONLY',
                  ['axis', 'users', 'items', 'feature dims', 'critic parameters',
                   'critic step estimate GiB', 'status', 's / mini-batch (warm epoch)',
                   's / mini-batch (first epoch)', 'eval s', 'peak memory MiB'], rows,
                  ['Random graphs (about 6 items per user, uniform) and random Gaussian '
                   'features: timings and memory only, never an accuracy. Each point trains '
                   '2 epochs of a few mini-batches (critic step + model step each) in its own '
                   'process; the warm column is the second epoch. The critic has n_items²/4 '
                   'first-layer weights; the estimate is mmssl_pyg.nn.critic_memory.'
                   'critic_memory_estimate, and MMSSL refuses a critic that does not fit.'])
    axes_present = [a for a in SCALING_X if series.get(a)]
    fig, axes = plt.subplots(1, max(len(axes_present), 1),
                             figsize=(3.6 * max(len(axes_present), 1), 3.4), squeeze=False)
    for ax, a in zip(axes[0], axes_present):
        pts = sorted(series[a])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='o', color='C0')
        ax.set_xlabel(SCALING_X[a][0])
        ax.set_ylabel('s / mini-batch', color='C0')
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in pts], [p[2] for p in pts], marker='s', linestyle='--',
                 color='C1')
        ax2.set_ylabel('peak memory MiB', color='C1')
        ax.set_title(f'grow {a}', fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle('MMSSL scaling, synthetic random graphs and features: TIMING ONLY')
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    rep.add_figure(fig, 'scaling', 'Seconds per mini-batch (solid) and peak memory (dashed) '
                   'on synthetic graphs (timing only, random features)')


PLAN = plan_scaling
REPORT = (report_scaling, 'MMSSL scaling (synthetic graphs, timing only)')
