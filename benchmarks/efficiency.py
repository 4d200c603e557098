"""Efficiency: seconds per epoch and peak memory of every model."""
from __future__ import annotations

from benchmarks import _common as C
from benchmarks._plan import ID_DATASETS, _ok, all_models, dataset_for, id_only, models_for, unit


def plan_efficiency(args):
    models = models_for(args, 'efficiency')
    datasets = [(dataset_for(args), models)]
    id_sets = args.id_datasets if args.id_datasets is not None else \
        ([] if args.quick else list(ID_DATASETS))
    datasets += [(d, [m for m in models if id_only(m)]) for d in id_sets]
    extra = {'patience': 0, 'epochs': 2 if args.quick else 3}
    return [unit(args, 'efficiency', m, d, 0, 'timing', train_extra=extra, isolate=True)
            for d, ms in datasets for m in ms]


def report_efficiency(rep: C.Report):
    units = _ok(rep.units)
    order = {m: i for i, m in enumerate(all_models())}
    rows = []
    for u in sorted(units, key=lambda u: (u['spec']['dataset'],
                                          order.get(u['spec']['model'], 99))):
        ep = u['epoch_seconds']
        warm = ep[1:] if len(ep) > 1 else ep
        rows.append([u['spec']['model'], u['spec']['dataset'], u['stamp']['device'],
                     u['parameters'], len(ep), C.Num(ep[0], 2), C.Num(C._mean(warm), 2),
                     C.Num(C._mean(u['eval_seconds']), 2), C.Num(u['peak_memory_mb'], 0),
                     C.Num(u['rss_before_model_mb'], 0), u.get('peak_memory_kind', '')])
    rep.add_table('efficiency', 'Training and evaluation cost per model and dataset',
                  ['model', 'dataset', 'device', 'parameters', 'epochs timed',
                   'first epoch s', 'later epochs s (mean)', 'validation eval s (mean)',
                   'peak memory MiB', 'RSS before model MiB', 'peak memory is'], rows,
                  ['Each unit runs in its own process. Peak memory: on CPU the process\'s peak '
                   'resident set (VmHWM: includes Python, torch and the dataset; compare the '
                   'RSS before the model was built), on CUDA torch.cuda.max_memory_allocated. '
                   'Epochs are full-size unless the header says mini-batches per epoch is '
                   'capped (quick mode).'])


PLAN = plan_efficiency
REPORT = (report_efficiency, 'Efficiency: time and memory')
