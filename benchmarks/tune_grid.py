"""Validation-only tuning grid: lr x reg_weight factors of each preset."""
from __future__ import annotations

import math
from collections import defaultdict

from benchmarks import _common as C
from benchmarks._plan import _by, _metric, _ok, dataset_for, models_for, seeds_for, unit


def plan_tune(args):
    seeds = seeds_for(args, 'tune', [0])
    dataset = dataset_for(args)
    lr_f = args.lr_factors or ([1, 2] if args.quick else [0.5, 1, 2])
    reg_f = args.reg_factors or ([1] if args.quick else [0.1, 1, 10])
    units = []
    from mmssl_pyg.models import get_model_class
    for model in models_for(args, 'tune'):
        if not getattr(get_model_class(model), 'trainable', True):
            continue  # popularity: nothing to tune
        base = C.resolve(unit(args, 'tune', model, dataset, 0), args.device)
        lr0 = base.train.lr
        reg0 = base.model_kwargs.get('reg_weight')
        if reg0 is None:
            from mmssl_pyg.models import get_model_class
            from mmssl_pyg.training.options import model_option_types
            reg0 = (model_option_types(get_model_class(model)) or {}).get('reg_weight')
        for fl in lr_f:
            for fr in reg_f:
                mopts = {} if reg0 is None else {'reg_weight': float(f'{reg0 * fr:.6g}')}
                lr = float(f'{lr0 * fl:.6g}')
                label = f'lr={lr:g},reg_weight={mopts.get("reg_weight", "n/a")}'
                for seed in seeds:
                    units.append(unit(args, 'tune', model, dataset, seed, label, mopts,
                                      train_extra={'lr': lr},
                                      meta={'lr_factor': fl, 'reg_factor': fr}))
    return units


def report_tune(rep: C.Report):
    units = _ok(rep.units)
    settings = defaultdict(dict)
    chosen_rows, all_rows = [], []
    for (dataset, model), group in sorted(_by(units, lambda u: u['spec']['dataset'],
                                              lambda u: u['spec']['model']).items()):
        configs = _by(group, lambda u: u['spec']['label'])
        scored = []
        for (label,), us in configs.items():
            m, s, n = _metric(us, 'val', 'recall@20')
            scored.append((m, label, us, s, n))
        scored.sort(key=lambda t: -t[0] if math.isfinite(t[0]) else math.inf)
        best = scored[0]
        for m, label, _, s, n in scored:
            all_rows.append([dataset, model, label, n, C.MeanStd(m, s, n),
                             'selected' if label == best[1] else ''])
        u0 = best[2][0]
        chosen = {'model': {'reg_weight': u0['model_kwargs']['reg_weight']}
                  if 'reg_weight' in u0['model_kwargs'] else {},
                  'train': {'lr': u0['train']['lr']},
                  'val_recall@20': best[0], 'configs_tried': len(scored),
                  'seeds': sorted({u['spec']['seed'] for u in best[2]})}
        settings[dataset][model] = chosen
        chosen_rows.append([dataset, model, best[1], len(scored), C.Num(best[0])])
    rep.add_table('tune_selected', 'Selected settings (validation Recall@20 only)',
                  ['dataset', 'model', 'selected', 'configs tried', 'val Recall@20'],
                  chosen_rows, ['Selection uses validation Recall@20 only; the test split of '
                                'these runs is not read by this report. Every model gets the '
                                'same grid size (lr × reg_weight factors around its preset). '
                                'Use with: `run.py accuracy --tuned '
                                f'{rep.folder / "tuned.json"}`'])
    rep.add_table('tune_grid', 'Every configuration tried (validation Recall@20)',
                  ['dataset', 'model', 'configuration', 'seeds', 'val Recall@20', ''], all_rows)
    path = rep.folder / 'tuned.json'
    C.write_json(path, {'selected_on': 'validation recall@20', 'stamp': rep.stamp,
                        'settings': settings})
    rep.files.append(path)


PLAN = plan_tune
REPORT = (report_tune, 'Validation-only tuning grid')
