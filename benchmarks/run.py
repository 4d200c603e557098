#!/usr/bin/env python
"""Benchmarks of mmssl-pyg: one entry point, one subcommand per benchmark.

    python benchmarks/run.py accuracy    --dataset tiktok --seeds 0 1 2   # paper Table 2
    python benchmarks/run.py tune        --dataset tiktok                 # validation-only grid
    python benchmarks/run.py ablation    --seeds 0 1 2                    # Table 3
    python benchmarks/run.py sparsity                                     # Table 4
    python benchmarks/run.py convergence                                  # Figure 3
    python benchmarks/run.py sensitivity                                  # Figure 4
    python benchmarks/run.py efficiency                                   # time and memory
    python benchmarks/run.py scaling                                      # synthetic, timing only
    python benchmarks/run.py all --quick                                  # everything, smoke size
    python benchmarks/run.py report                                       # rebuild all tables

Every benchmark is a list of units (model, dataset, seed, configuration) trained by the one
runner of ``benchmarks/_common.py``; see ``benchmarks/README.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # mmssl_pyg without installing

import _common as C  # noqa: E402

BENCHMARKS = ('accuracy', 'tune', 'ablation', 'sparsity', 'convergence', 'sensitivity',
              'efficiency', 'scaling', 'estimator')
ID_DATASETS = ('amazon-baby-interactions', 'amazon-sports-interactions')

# Quick mode: every benchmark end to end on tiktok-mini in a few minutes (smoke test only).
QUICK_DATASET = 'tiktok-mini'
QUICK_TRAIN = {'epochs': 2, 'patience': 2, 'batch_size': 128, 'batches_per_epoch': 2}
QUICK_MODELS = {'accuracy': ['mf', 'lightgcn', 'mmssl'], 'tune': ['mf', 'mmssl'],
                'sparsity': ['mf', 'mmssl'], 'convergence': ['mf', 'lightgcn', 'mmssl'],
                'efficiency': ['mf', 'mmssl']}
QUICK_SEEDS = {'accuracy': [0, 1], 'sparsity': [0, 1]}
#: Seeds of accuracy and ablation by default (the paired protocol: at least 5).
PAIRED_SEEDS = 5
#: Rows of these models are "ours"; every other model is a baseline.
OURS = ('mmssl',)

# Paper Table 2 (TikTok has a text modality there that is not available here) and Table 3.
PAPER_TABLE2 = {
    'tiktok': {'mf': (0.0346, 0.0017, 0.0130), 'lightgcn': (0.0653, 0.0033, 0.0282),
               'sgl': (0.0603, 0.0030, 0.0238), 'vbpr': (0.0380, 0.0018, 0.0134),
               'mmgcn': (0.0730, 0.0036, 0.0307), 'grcn': (0.0804, 0.0036, 0.0350),
               'lattice': (0.0843, 0.0042, 0.0367), 'mmssl': (0.0921, 0.0046, 0.0392)},
    'amazon-baby-interactions': {'mf': (0.0440, 0.0024, 0.0200),
                                 'lightgcn': (0.0698, 0.0037, 0.0319),
                                 'sgl': (0.0678, 0.0036, 0.0296)},
    'amazon-sports-interactions': {'mf': (0.0430, 0.0023, 0.0202),
                                   'lightgcn': (0.0782, 0.0042, 0.0369),
                                   'sgl': (0.0779, 0.0041, 0.0361)},
}
PAPER_TABLE3_TIKTOK = {None: (0.0921, 0.0392), 'wo_asl': (0.0801, 0.0358),
                       'wo_cl': (0.0821, 0.0351), 'wo_gt': (0.0815, 0.0353),
                       'rp_gae': (0.0843, 0.0364)}
ABLATIONS = [(None, 'MMSSL'), ('wo_asl', 'w/o-ASL'), ('wo_cl', 'w/o-CL'), ('wo_gt', 'w/o-GT'),
             ('rp_gae', 'r/p-GAE')]

# Figure 4: one-at-a-time sweeps around the preset (the preset's own value is always added).
SWEEPS = {
    'num_layers': ('GNN layers L', [1, 2, 3, 4]),
    'aux_weight': ('λ (auxiliary weight, Gumbel transform)', [0, 10, 20, 50, 100, 150]),
    'gp_weight': ('γ (gradient penalty)', [0, 0.3, 1, 10, 50, 150]),
    'cl_temperature': ('τ_c (contrastive temperature)', [0.1, 0.3, 0.5, 0.7, 1.0]),
    'embedding_dim': ('embedding size d', [16, 32, 64, 128, 256]),
    # Not in the paper's Figure 4: the two weights that mix the modality views into the
    # embeddings (Eqs. 10 and 12), swept to find out where MMSSL loses to LightGCN here.
    'fusion_weight': ('ω (fusion weight, Eq. 12)', [0, 0.1, 0.3, 0.55, 1.0]),
    'modality_mix': ('μ (modality mix, Eq. 10)', [0, 0.1, 0.36, 1.0]),
    'feature_norm': ('raw feature scaling', ['standard', 'l2', 'none']),
}
QUICK_SWEEPS = {'num_layers': [1], 'aux_weight': [0], 'gp_weight': [1],
                'cl_temperature': [0.2], 'embedding_dim': [32], 'fusion_weight': [0.1],
                'modality_mix': [0.1], 'feature_norm': ['l2']}

# Synthetic scaling points (timing only): one axis grows, the others stay at TikTok's size;
# 'joint' grows everything up to Amazon-Sports (35,598 users, 18,357 items, 4,096 + 1,024-d).
TIKTOK_SIZE = (9308, 6710, (128, 128))
SCALING_AXES = {
    'users': [(u, 6710, (128, 128)) for u in (2500, 9308, 20000, 35598)],
    'items': [(9308, i, (128, 128)) for i in (2000, 6710, 12000, 18357)],
    'dims': [(9308, 6710, d) for d in ((128, 128), (512, 256), (1024, 512), (4096, 1024))],
    'joint': [(2500, 1500, (128, 128)), (9308, 6710, (128, 128)), (19445, 7050, (4096, 1024)),
              (35598, 18357, (4096, 1024))],
}
QUICK_SCALING = {'joint': [(300, 200, (32, 16)), (600, 400, (64, 32))]}
SCALING_X = {'users': ('users', lambda p: p[0]), 'items': ('items', lambda p: p[1]),
             'dims': ('total feature dims', lambda p: sum(p[2])),
             'joint': ('items (users and dims grow too)', lambda p: p[1])}


# ---------------------------------------------------------------------------------------------
# helpers shared by the plans


#: Row order of the tables: the popularity floor, then the paper's (ID-only, then multi-modal,
#: then MMSSL), others after.
PAPER_ORDER = ('pop', 'mf', 'lightgcn', 'sgl', 'vbpr', 'mmgcn', 'grcn', 'lattice', 'freedom', 'bm3',
               'mmssl')


def all_models() -> list[str]:
    """Every registered model, in :data:`PAPER_ORDER` first."""
    from mmssl_pyg.models import MODELS
    rank = {m: i for i, m in enumerate(PAPER_ORDER)}
    return sorted(MODELS, key=lambda m: (rank.get(m, len(rank)), m))


def id_only(model: str) -> bool:
    from mmssl_pyg.models import get_model_class
    return getattr(get_model_class(model), 'min_modalities', 0) == 0


def models_for(args, bench: str, default: list[str] | None = None) -> list[str]:
    if args.models:
        return args.models
    if args.quick and bench in QUICK_MODELS:
        return QUICK_MODELS[bench]
    return default if default is not None else all_models()


def seeds_for(args, bench: str, default: list[int]) -> list[int]:
    if args.seeds:
        return args.seeds
    return QUICK_SEEDS.get(bench, [0]) if args.quick else default


def dataset_for(args) -> str:
    return args.dataset or (QUICK_DATASET if args.quick else 'tiktok')


def set_options(args) -> tuple[dict, dict]:
    """``--set`` pairs: ``model.KEY=V`` go to the model, the rest to the trainer."""
    import yaml
    model, train = {}, {}
    for item in args.set or []:
        key, sep, raw = item.partition('=')
        if not sep or not key:
            raise SystemExit(f'--set {item!r}: expected KEY=VALUE, e.g. batch_size=2048 or '
                             f'model.embedding_dim=32')
        value = yaml.safe_load(raw)
        if key.startswith('model.'):
            model[key[len('model.'):]] = value
        else:
            train[key.removeprefix('train.')] = value
    return model, train


def train_options(args, **extra) -> dict:
    """Trainer overrides of every unit: quick settings <- benchmark's <- --epochs/--patience
    <- --set."""
    opts = dict(QUICK_TRAIN) if args.quick else {}
    opts.update(extra)
    if args.epochs is not None:
        opts['epochs'] = args.epochs
    if args.patience is not None:
        opts['patience'] = args.patience
    opts.update(set_options(args)[1])
    return opts


def unit(args, bench, model, dataset, seed, label='default', model_options=None, **kw):
    mopts = {**set_options(args)[0], **(model_options or {})}
    kw.setdefault('paired_init', bool(getattr(args, 'paired', True)))
    return C.Unit(bench, model, dataset, seed, label, mopts,
                  train_options(args, **kw.pop('train_extra', {})), **kw)


def load_tuned(path: str | None) -> dict:
    """``{dataset: {model: {'model': {...}, 'train': {...}}}}`` from a ``run.py tune``
    tuned.json; ``'presets'`` returns ``{'presets': True}`` (the tuned presets of
    ``mmssl-pyg tune``, looked up per model and dataset by :func:`tuned_preset`)."""
    if not path:
        return {}
    if path == 'presets':
        return {'presets': True}
    data = json.loads(Path(path).read_text())
    if 'settings' not in data:
        raise SystemExit(f'--tuned {path}: not a file written by `run.py tune` (no "settings" '
                         f'key); rerun the tune benchmark or pass its tuned.json')
    return data['settings']


# ---------------------------------------------------------------------------------------------
# plans: each benchmark is a list of units


def tuned_preset(model: str, dataset: str) -> dict | None:
    """The tuned preset ``mmssl-pyg tune`` wrote for ``model`` on ``dataset``
    (``mmssl_pyg/configs/tuned/``), as ``{'model', 'train', 'meta'}``, or ``None``."""
    from mmssl_pyg.training.config import find_tuned_preset, read_yaml
    path = find_tuned_preset(model, dataset)
    if path is None:
        return None
    data = read_yaml(path)
    prov = data.get('provenance') or {}
    return {'model': data.get('model') or {}, 'train': data.get('train') or {},
            'meta': {'tuned_preset': path.name, 'study': prov.get('study'),
                     'tuned_val': prov.get('best_value'), 'tuned_commit': prov.get('commit')}}


def plan_accuracy(args):
    tuned = load_tuned(args.tuned)
    seeds = seeds_for(args, 'accuracy', list(range(PAIRED_SEEDS)))
    models = models_for(args, 'accuracy')
    datasets = [(dataset_for(args), models)]
    id_sets = args.id_datasets if args.id_datasets is not None else \
        (list(ID_DATASETS[:1]) if args.quick else list(ID_DATASETS))
    datasets += [(d, [m for m in models if id_only(m)]) for d in id_sets]
    units = []
    for dataset, ms in datasets:
        for model in ms:
            t = tuned_preset(model, dataset) if tuned.get('presets') else \
                tuned.get(dataset, {}).get(model)
            for seed in seeds:
                units.append(unit(args, 'accuracy', model, dataset, seed,
                                  'tuned' if t else 'preset', (t or {}).get('model'),
                                  train_extra=(t or {}).get('train', {}),
                                  meta=dict((t or {}).get('meta') or {})))
    return units


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
            from mmssl_pyg.training.config import model_option_types
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


def plan_ablation(args):
    seeds = seeds_for(args, 'ablation', list(range(PAIRED_SEEDS)))
    dataset = dataset_for(args)
    return [unit(args, 'ablation', 'mmssl', dataset, seed, name,
                 {} if abl is None else {'ablation': abl}, meta={'ablation': abl})
            for abl, name in ABLATIONS for seed in seeds]


def plan_sparsity(args):
    seeds = seeds_for(args, 'sparsity', [0, 1, 2])
    dataset = dataset_for(args)
    return [unit(args, 'sparsity', m, dataset, s, 'preset')
            for m in models_for(args, 'sparsity') for s in seeds]


def plan_convergence(args):
    seeds = seeds_for(args, 'convergence', [0])
    dataset = dataset_for(args)
    return [unit(args, 'convergence', m, dataset, s, 'preset')
            for m in models_for(args, 'convergence') for s in seeds]


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


def _value(x) -> str:
    return x if isinstance(x, str) else f'{x:g}'


def plan_efficiency(args):
    models = models_for(args, 'efficiency')
    datasets = [(dataset_for(args), models)]
    id_sets = args.id_datasets if args.id_datasets is not None else \
        ([] if args.quick else list(ID_DATASETS))
    datasets += [(d, [m for m in models if id_only(m)]) for d in id_sets]
    extra = {'patience': 0, 'epochs': 2 if args.quick else 3}
    return [unit(args, 'efficiency', m, d, 0, 'timing', train_extra=extra, isolate=True)
            for d, ms in datasets for m in ms]


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


PLANS = {'accuracy': plan_accuracy, 'tune': plan_tune, 'ablation': plan_ablation,
         'sparsity': plan_sparsity, 'convergence': plan_convergence,
         'sensitivity': plan_sensitivity, 'efficiency': plan_efficiency,
         'estimator': plan_estimator,
         'scaling': plan_scaling}


# ---------------------------------------------------------------------------------------------
# reports: rebuilt from the unit JSON files only


def _ok(units):
    return [u for u in units if u.get('status') == 'ok']


def _by(units, *keys):
    out = defaultdict(list)
    for u in units:
        out[tuple(k(u) for k in keys)].append(u)
    return out


def _metric(units, split, name):
    return C.mean_std([u[split].get(name) for u in units])


def _config_id(u) -> str:
    """Digest of everything that determines a unit's result except its seed: units with the
    same model, label and digest are one row of the accuracy table, one unit per seed."""
    return C.key_hash({k: v for k, v in u['key'].items() if k != 'seed'})


def accuracy_rows(group: list[dict]) -> list[tuple[str, list[dict]]]:
    """``[(row name, units)]`` in table order: one row per model x settings label x
    configuration (``model`` alone when the model has one row)."""
    order = {m: i for i, m in enumerate(all_models())}
    rows = _by(group, lambda u: u['spec']['model'], lambda u: u['spec']['label'], _config_id)
    per_model = defaultdict(list)
    for key in rows:
        per_model[key[0]].append(key)
    out = []
    for model in sorted(per_model, key=lambda m: (order.get(m, 99), m)):
        keys = sorted(per_model[model])
        labels = defaultdict(int)
        for _, label, _ in keys:
            labels[label] += 1
        for key in keys:
            _, label, cfg = key
            name = model if len(keys) == 1 else \
                f'{model} ({label})' if labels[label] == 1 else f'{model} ({label}, {cfg[:6]})'
            out.append((name, rows[key]))
    return out


def _per_seed(units, split='test', name='recall@20') -> dict[int, float]:
    """``{seed: value}`` (a seed run twice with identical settings counts once)."""
    return {u['spec']['seed']: u[split][name] for u in units if u[split].get(name) is not None}


def report_accuracy(rep: C.Report):
    from mmssl_pyg.training.options import METRIC_NAMES
    units = _ok(rep.units)
    groups = _by(units, lambda u: u['spec']['dataset'])
    for (dataset,) in sorted(groups, key=lambda k: (k[0] in ID_DATASETS, k[0])):
        group = groups[(dataset,)]
        rows_units = accuracy_rows(group)
        paper = PAPER_TABLE2.get(dataset, {})
        baselines = [(name, us) for name, us in rows_units
                     if us[0]['spec']['model'] not in OURS]
        # the reference is chosen on validation (never on test), like every other choice
        best_name, best_units = max(
            baselines, key=lambda r: _metric(r[1], 'val', 'recall@20').mean
            if math.isfinite(_metric(r[1], 'val', 'recall@20').mean) else -math.inf,
            default=(None, None))
        best_seeds = _per_seed(best_units) if best_units else {}
        best_mean = _metric(best_units, 'test', 'recall@20').mean if best_units else math.nan
        rows = []
        for name, us in rows_units:
            model = us[0]['spec']['model']
            test_r = _metric(us, 'test', 'recall@20')
            cells = [name, ','.join(sorted({u['spec']['label'] for u in us})),
                     len(_per_seed(us)), C.Num(float(np.mean([u["best_epoch"] for u in us])), 1),
                     (_metric(us, 'val', 'recall@20')), test_r]
            cells += [(_metric(us, 'test', f'{m}@20')) for m in ('precision', 'ndcg')]
            if best_name is None:
                cells += ['n/a', 'n/a (no baseline row)']
            elif name == best_name:
                cells += ['1.00', 'reference (best baseline)']
            else:
                ratio = test_r.mean / best_mean if best_mean else math.nan
                cells += [f'{ratio:.2f}' if math.isfinite(ratio) else 'n/a',
                          C.paired_difference(_per_seed(us), best_seeds)]
            if paper:
                p = paper.get(model)
                cells.append('n/a' if p is None else f'{p[0]:.4f} / {p[1]:.4f} / {p[2]:.4f}')
            rows.append(cells)
        ref = best_name or 'the best baseline'
        cols = ['model', 'settings', 'seeds', 'selected epoch (mean)', 'val Recall@20',
                'test Recall@20', 'test Precision@20', 'test NDCG@20',
                'test Recall@20 / best baseline', 'paired diff test Recall@20 vs best baseline']
        md_cols = cols[:8] + [f'test Recall@20 / {ref}',
                              f'paired Δ test Recall@20 vs {ref} [95% CI]']
        paired = sum(1 for u in group if u.get('paired_init') is not None)
        notes = ['Test metrics at the epoch selected on validation Recall@20 (the test split '
                 'is evaluated once per unit); mean ± sample std over seeds; "seeds" counts the '
                 'distinct seeds of the row.',
                 f'Paired protocol: the reference row is the baseline (every model but '
                 f'{", ".join(OURS)}) with the highest mean validation Recall@20 (chosen on '
                 f'validation, never on test). Δ is the mean over the seeds both rows have of '
                 f'(row − reference), '
                 f'with the two-sided 95% Student-t interval mean ± t(0.975, n−1)·sd/√n; an '
                 f'interval above 0 means the row beats the reference by more than seed noise. '
                 f'The same seed gives every model the same mini-batch stream (for the same '
                 f'batch size) and, with paired initialisation, the same initial ID embeddings '
                 f'(for the same table shape and initialisation rule); {paired} of '
                 f'{len(group)} units here were initialised that way.']
        if paper:
            cols.append('paper R/P/N@20')
            md_cols.append(cols[-1])
            notes.append('Paper column: Table 2 of the MMSSL paper'
                         + (' (TikTok there has a 768-d text modality that is not available '
                            'here: these runs use image + audio)' if dataset == 'tiktok' else
                            ' (the paper\'s Amazon runs had image and text features; ID-only '
                            'models are comparable, splits may differ)'))
        slug = dataset.replace('/', '_')
        rep.add_table(f'accuracy_{slug}_at20', f'Accuracy on {dataset} @20', cols, rows, notes,
                      md=(md_cols, rows))
        for k in (10, 50):
            rows = []
            for name, us in rows_units:
                rows.append([name, len(_per_seed(us))] + [
                    (_metric(us, 'test', f'{m}@{k}')) for m in METRIC_NAMES])
            rep.add_table(f'accuracy_{slug}_at{k}', f'Accuracy on {dataset} @{k} (test)',
                          ['model', 'seeds', f'Recall@{k}', f'Precision@{k}', f'NDCG@{k}',
                           f'Hit@{k}'], rows)
    _long_csv(rep, units)


def _long_csv(rep: C.Report, units):
    """One row per unit with every metric: the raw data behind the tables."""
    names = sorted({k for u in units for k in u.get('test', {})})
    rows = [[u['spec']['model'], u['spec']['dataset'], u['spec']['label'], u['spec']['seed'],
             u['best_epoch'], u['epochs_run'], u.get('budget_cut_at_epoch') or '']
            + [u['val'].get(n) for n in names] + [u['test'].get(n) for n in names]
            for u in units]
    rep.add_table(f'{rep.benchmark}_units', 'All units (one row per model × dataset × seed × '
                  'configuration)', ['model', 'dataset', 'label', 'seed', 'selected epoch',
                                     'epochs run', 'budget cut at'] +
                  [f'val {n}' for n in names] + [f'test {n}' for n in names], rows,
                  markdown=False)


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
                    if ours is not None and m != 'mmssl' and v and math.isfinite(v) \
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


def same_train(a: dict, b: dict) -> bool:
    """Whether two units share every result-relevant trainer option except the seed."""
    def strip(u):
        return {k: v for k, v in u['key']['train'].items() if k != 'seed'}
    return strip(a) == strip(b)


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
                   'first-layer weights; the estimate is mmssl_pyg.nn.critic.'
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


REPORTS = {'accuracy': (report_accuracy, 'Accuracy (paper Table 2)'),
           'estimator': (report_estimator, 'MMSSL speed estimators vs the paper\'s (validation)'),
           'tune': (report_tune, 'Validation-only tuning grid'),
           'ablation': (report_ablation, 'Ablation (paper Table 3)'),
           'sparsity': (report_sparsity, 'Sparsity (paper Table 4)'),
           'convergence': (report_convergence, 'Convergence (paper Figure 3)'),
           'sensitivity': (report_sensitivity, 'Hyper-parameter sensitivity (paper Figure 4)'),
           'efficiency': (report_efficiency, 'Efficiency: time and memory'),
           'scaling': (report_scaling, 'MMSSL scaling (synthetic graphs, timing only)')}


def build_report(out: Path, bench: str, device: str = 'cpu') -> list[Path]:
    folder = Path(out) / bench
    units = C.load_units(out, bench)
    plan_path = folder / 'plan.json'
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    fn, title = REPORTS[bench]
    rep = C.Report(folder, bench, title, C.stamp(device), units, plan)
    if units:
        fn(rep)
    else:
        rep.add_text('No finished units yet.')
    failed = sorted((folder / 'failed').glob('*.json')) if (folder / 'failed').is_dir() else []
    done = {u['hash'] for u in units}
    fails = [json.loads(p.read_text()) for p in failed]
    fails = [f for f in fails if f['hash'] not in done]
    if fails:
        rep.add_text('## Failed units\n\n' + '\n'.join(
            f'- {f["spec"]["model"]}/{f["spec"]["dataset"]}/{f["spec"]["label"]}/'
            f's{f["spec"]["seed"]}: {f["error"][:300]}' for f in fails))
    rep.write()
    return rep.files


# ---------------------------------------------------------------------------------------------
# command line


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument('--out', default=None,
                   help='results folder (default benchmarks/results, or benchmarks/results/quick '
                        'with --quick)')
    p.add_argument('--quick', action='store_true',
                   help=f'smoke size: {QUICK_DATASET}, few models, {QUICK_TRAIN}')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--dataset', default=None, help='main dataset (default tiktok)')
    p.add_argument('--models', nargs='+', default=None, help='only these models')
    p.add_argument('--seeds', nargs='+', type=int, default=None)
    p.add_argument('--epochs', type=int, default=None, help='epoch cap (default: preset)')
    p.add_argument('--patience', type=int, default=None,
                   help='early-stopping patience in evaluations (default: preset; 0 = off)')
    p.add_argument('--max-minutes', type=float, default=None,
                   help='wall-clock budget per unit; a cut unit tests its best epoch so far')
    p.add_argument('--set', nargs='+', default=None, metavar='KEY=VALUE',
                   help='trainer options for every unit, e.g. batch_size=2048')
    p.add_argument('--wandb', default='offline', choices=['disabled', 'offline', 'online'])
    p.add_argument('--force', action='store_true', help='redo units that already have results')
    p.add_argument('--no-reuse', action='store_true',
                   help="do not copy identical finished units from other benchmarks' folders")
    p.add_argument('--progress', action=argparse.BooleanOptionalAction, default=None,
                   help='per-epoch progress bars (default: when stdout is a terminal)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--id-datasets', nargs='*', default=None,
                   help=f'ID-only datasets for accuracy/efficiency (default {list(ID_DATASETS)}'
                        f'; with --quick: accuracy {ID_DATASETS[0]}, efficiency none)')
    p.add_argument('--tuned', default=None, metavar='FILE|presets',
                   help='accuracy: settings chosen by `run.py tune` (its tuned.json), or '
                        '"presets": the tuned presets of `mmssl-pyg tune` '
                        '(mmssl_pyg/configs/tuned/<model>-<dataset>.yaml, where present)')
    p.add_argument('--paired', action=argparse.BooleanOptionalAction, default=True,
                   help='paired seeds (default on): the same seed gives every model the same '
                        'initial ID embeddings (see benchmarks/README.md)')
    p.add_argument('--lr-factors', nargs='+', type=float, default=None,
                   help='tune: multiples of the preset lr (default 0.5 1 2)')
    p.add_argument('--reg-factors', nargs='+', type=float, default=None,
                   help='tune: multiples of the preset reg_weight (default 0.1 1 10)')
    p.add_argument('--params', nargs='+', choices=list(SWEEPS), default=None,
                   help='sensitivity: parameters to sweep (default all)')
    p.add_argument('--axes', nargs='+', choices=list(SCALING_AXES), default=None,
                   help='scaling: axes to grow (default all)')
    p.add_argument('--batches', type=int, default=None,
                   help='scaling: mini-batches timed per epoch (default 3)')


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    sub = parser.add_subparsers(dest='command', required=True)
    for name in BENCHMARKS + ('all',):
        add_common(sub.add_parser(name, help=REPORTS[name][1] if name in REPORTS
                                  else 'every benchmark in turn'))
    rep = sub.add_parser('report', help='rebuild every table and figure from the unit files')
    rep.add_argument('--out', default=None)
    rep.add_argument('--quick', action='store_true', help='the quick results folder')
    rep.add_argument('--threads', type=int, default=None)
    rep.add_argument('benchmarks', nargs='*', default=[],
                     help=f'which to rebuild (default: every one with a folder): {BENCHMARKS}')
    one = sub.add_parser('_unit', help=argparse.SUPPRESS)  # internal: one isolated unit
    for a in ('--spec', '--result', '--out', '--device', '--wandb'):
        one.add_argument(a)
    one.add_argument('--stamp-command', default=None)
    one.add_argument('--max-minutes', type=float, default=None)
    one.add_argument('--progress', action='store_true')
    one.add_argument('--threads', type=int, default=None)
    args = parser.parse_args(argv)
    if getattr(args, 'out', None) is None and args.command != '_unit':
        args.out = str(C.DEFAULT_OUT / 'quick' if args.quick else C.DEFAULT_OUT)
    if getattr(args, 'progress', None) is None:
        args.progress = sys.stdout.isatty()
    if getattr(args, 'quick', False) and not args.threads:
        args.threads = 1  # a smoke test: one thread is robust on a shared, loaded machine
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if getattr(args, 'threads', None):
        import torch
        torch.set_num_threads(args.threads)
    if args.command == '_unit':
        spec = C.Unit.from_dict(json.loads(Path(args.spec).read_text()))
        rec = C.run_unit(spec, Path(args.out), args.device, args.wandb, args.max_minutes,
                         args.progress, args.stamp_command)
        C.write_json(Path(args.result), rec)
        return 0
    out = Path(args.out)
    if args.command == 'report':
        unknown = [b for b in args.benchmarks if b not in BENCHMARKS]
        if unknown:
            raise SystemExit(f'report: unknown benchmark(s) {unknown}; choose from {BENCHMARKS}')
        benches = args.benchmarks or [b for b in BENCHMARKS if (out / b).is_dir()]
        for b in benches:
            files = build_report(out, b)
            print(f'{b}: wrote {", ".join(str(f.relative_to(out)) for f in files)}')
        return 0
    from mmssl_pyg.training import resolve_device
    resolve_device(args.device)  # fail early when cuda is asked for and absent
    benches = BENCHMARKS if args.command == 'all' else (args.command,)
    if args.command == 'all':  # accuracy first: its units are reused by the others
        benches = ('accuracy', 'ablation', 'sparsity', 'convergence', 'sensitivity', 'tune',
                   'efficiency', 'scaling')
    failures, t0 = [], time.perf_counter()
    for b in benches:
        print(f'=== {b} ===', flush=True)
        _, failed = C.execute(PLANS[b](args), args, b)
        failures += failed
        files = build_report(out, b, args.device)
        print(f'{b}: wrote {", ".join(str(f.relative_to(out)) for f in files)}', flush=True)
    print(f'finished in {time.perf_counter() - t0:.0f}s; results under {out}', flush=True)
    if failures:
        print(f'{len(failures)} unit(s) failed:\n  ' + '\n  '.join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
