"""What the benchmark files share: the list of benchmarks, quick-mode settings, paper
reference numbers, option helpers that turn command-line arguments into units, and the small
helpers the reports use. Each benchmark's plan and report live in its own file
(``accuracy.py``, ``ablation.py``, ...); ``run.py`` is the command line."""
from __future__ import annotations

from collections import defaultdict

from benchmarks import _common as C

BENCHMARKS = ('accuracy', 'ablation', 'sparsity', 'convergence', 'sensitivity', 'efficiency',
              'scaling', 'estimator')
ID_DATASETS = ('amazon-baby-interactions', 'amazon-sports-interactions')

# Quick mode: every benchmark end to end on tiktok-mini in a few minutes (smoke test only).
QUICK_DATASET = 'tiktok-mini'
QUICK_TRAIN = {'epochs': 2, 'patience': 2, 'batch_size': 128, 'batches_per_epoch': 2}
QUICK_MODELS = {'accuracy': ['mf', 'lightgcn', 'mmssl'],
                'sparsity': ['mf', 'mmssl'], 'convergence': ['mf', 'lightgcn', 'mmssl'],
                'efficiency': ['mf', 'mmssl']}
QUICK_SEEDS = {'accuracy': [0, 1], 'sparsity': [0, 1]}
#: Seeds of accuracy and ablation by default (the paired protocol: at least 5).
PAIRED_SEEDS = 5
#: Rows of these models are "ours"; every other model is a baseline.
OURS = ('mmssl', 'mmssl-paper')

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
# `mmssl-paper` is the same model with the paper's values: the paper's row serves both names.
PAPER_TABLE2['tiktok']['mmssl-paper'] = PAPER_TABLE2['tiktok']['mmssl']
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
               'mmssl', 'mmssl-paper')


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


# ---------------------------------------------------------------------------------------------
# plans: each benchmark is a list of units


def tuned_preset(model: str, dataset: str) -> dict | None:
    """The tuned preset ``mmssl-pyg tune`` wrote for ``model`` on ``dataset``
    (``mmssl_pyg/configs/tuned/``), as ``{'model', 'train', 'meta'}``, or ``None``."""
    from mmssl_pyg.training.presets import find_tuned_preset, read_yaml
    path = find_tuned_preset(model, dataset)
    if path is None:
        return None
    data = read_yaml(path)
    prov = data.get('provenance') or {}
    return {'model': data.get('model') or {}, 'train': data.get('train') or {},
            'meta': {'tuned_preset': path.name, 'study': prov.get('study'),
                     'tuned_val': prov.get('best_value'), 'tuned_commit': prov.get('commit')}}


def _value(x) -> str:
    return x if isinstance(x, str) else f'{x:g}'


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
    key = {k: v for k, v in u['key'].items() if k != 'seed'}
    if isinstance(key.get('train'), dict):  # the trainer options hold the seed too
        key['train'] = {k: v for k, v in key['train'].items() if k != 'seed'}
    return C.key_hash(key)


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


def same_train(a: dict, b: dict) -> bool:
    """Whether two units share every result-relevant trainer option except the seed."""
    def strip(u):
        return {k: v for k, v in u['key']['train'].items() if k != 'seed'}
    return strip(a) == strip(b)

