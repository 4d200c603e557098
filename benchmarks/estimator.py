"""MMSSL's speed estimators against the paper's, paired by seed, on validation."""
from __future__ import annotations

from benchmarks import _common as C
from benchmarks._plan import PAIRED_SEEDS, _by, _long_csv, _ok, dataset_for, seeds_for, unit

#: MMSSL's training estimators: the paper's exact one (every interpolate in the gradient
#: penalty, every batch user in L_G, a critic step every mini-batch) and the library default.
ESTIMATORS = (
    ('paper estimator', {'gp_samples': None, 'adv_samples': None}, {'critic_every': 1}),
    ('default', {}, {}))


def plan_estimator(args):
    seeds = seeds_for(args, 'estimator', list(range(PAIRED_SEEDS)))
    dataset = dataset_for(args)
    return [unit(args, 'estimator', 'mmssl', dataset, s, name, mopts, train_extra=topts,
                 meta={'estimator': name})
            for s in seeds for name, mopts, topts in ESTIMATORS]


def report_estimator(rep: C.Report):
    """Validation Recall@20 per epoch of MMSSL's estimators (the default, and any other
    configuration run under another label) against the paper's, paired by seed (the test
    split is not used), and the seconds per epoch."""
    units = _ok(rep.units)
    ref = ESTIMATORS[0][0]
    for (dataset,), group in _by(units, lambda u: u['spec']['dataset']).items():
        labels = [ref] + sorted({u['spec']['label'] for u in group} - {ref})
        per = {name: [u for u in group if u['spec']['label'] == name] for name in labels}
        if len(labels) < 2 or not per[ref]:
            continue
        epochs = min(len(u['history']) for us in per.values() for u in us)
        vals = {name: [{u['spec']['seed']: u['history'][e].get('val/recall@20') for u in us}
                       for e in range(epochs)] for name, us in per.items()}
        rows = []
        for e in range(epochs):
            cells = [e + 1] + [C.mean_std([x for x in vals[n][e].values() if x is not None])
                               for n in labels]
            cells += [C.paired_difference(vals[n][e], vals[ref][e]) for n in labels[1:]]
            rows.append(cells)
        secs = [C.mean_std([sum(h['epoch_seconds'] for h in u['history'][:epochs]) / epochs
                            for u in per[n]]) for n in labels]
        rows.append(['s / epoch', *secs, *([''] * (len(labels) - 1))])
        desc = []
        for n in labels:
            u = per[n][0]
            desc.append(f"{n}: critic_every={u['train'].get('critic_every', 1)}, "
                        f"gp_samples={u['model_kwargs'].get('gp_samples')}, "
                        f"adv_samples={u['model_kwargs'].get('adv_samples')}, seeds "
                        f"{sorted(u2['spec']['seed'] for u2 in per[n])}")
        cols = ['epoch', *[f'val Recall@20, {n}' for n in labels],
                *[f'paired Δ {n} − {ref} [95% CI]' for n in labels[1:]]]
        notes = [f'MMSSL on {dataset}, {epochs} epochs, no early stopping; paired seeds; '
                 f'mean ± std over seeds; validation split only.', *desc,
                 'Seconds per epoch are wall-clock as the units ran (the machine was shared '
                 'during some of them); benchmarks/speed.py is the timing reference.']
        rep.add_table(f'estimator_{dataset}', f'MMSSL estimators on {dataset}', cols, rows,
                      notes)
    _long_csv(rep, units)


PLAN = plan_estimator
REPORT = (report_estimator, "MMSSL speed estimators vs the paper's (validation)")
