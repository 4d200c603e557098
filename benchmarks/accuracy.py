"""Accuracy (paper Table 2): every model on a dataset over paired seeds, with the paired
difference to the best baseline chosen on validation."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from benchmarks import _common as C
from benchmarks._plan import (
    ID_DATASETS,
    OURS,
    PAIRED_SEEDS,
    PAPER_TABLE2,
    _by,
    _config_id,
    _long_csv,
    _metric,
    _ok,
    all_models,
    dataset_for,
    id_only,
    models_for,
    seeds_for,
    tuned_preset,
    unit,
)
from mmssl_pyg.training.significance import PairedTest


def plan_accuracy(args):
    seeds = seeds_for(args, 'accuracy', list(range(PAIRED_SEEDS)))
    models = models_for(args, 'accuracy')
    datasets = [(dataset_for(args), models)]
    id_sets = args.id_datasets if args.id_datasets is not None else \
        (list(ID_DATASETS[:1]) if args.quick else list(ID_DATASETS))
    datasets += [(d, [m for m in models if id_only(m)]) for d in id_sets]
    units = []
    for dataset, ms in datasets:
        for model in ms:
            t = tuned_preset(model, dataset) if args.tuned == 'presets' else None
            for seed in seeds:
                units.append(unit(args, 'accuracy', model, dataset, seed,
                                  'tuned' if t else 'preset', (t or {}).get('model'),
                                  train_extra=(t or {}).get('train', {}),
                                  meta=dict((t or {}).get('meta') or {})))
    return units


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


def user_means(units, name: str = 'recall@20') -> tuple[list[int], np.ndarray] | None:
    """Each test user's ``name`` averaged over the row's seeds (one unit per seed; a seed run
    twice counts once), from the per-user lists the units store, or ``None`` when a unit has
    none (units from before per-user storage) or the units disagree on the users."""
    by_seed = {u['spec']['seed']: u for u in units}
    users, values = None, []
    for seed in sorted(by_seed):
        pu = by_seed[seed].get('per_user')
        if not pu or name not in pu:
            return None
        if users is None:
            users = list(pu['users'])
        elif list(pu['users']) != users:
            return None
        values.append(np.asarray(pu[name], dtype=np.float64))
    if users is None:
        return None
    return users, np.mean(values, axis=0)


class Comparison(NamedTuple):
    """``ours`` against one other row (:func:`user_level_comparisons`)."""
    other: str
    #: seeds both rows have
    seeds: int
    #: ``ours - other`` of test ``name`` paired by seed, with its 95% t-interval
    seed_diff: C.PairedDiff
    #: the user-level test of ``ours - other`` (users averaged over the common seeds)
    users: PairedTest
    #: ``users.p_value`` Holm-adjusted across the comparisons
    p_holm: float
    #: ``'<ours> wins'``, ``'<other> wins'`` or ``'tie'`` (PROTOCOL.md Sec. 6)
    verdict: str


def user_level_comparisons(rows_units, ours: str, name: str = 'recall@20',
                           resamples: int = 10_000) -> tuple[list[Comparison], list[str]]:
    """``ours`` against every other row (PROTOCOL.md Sec. 6): the seed-paired test difference
    with its t-interval and, over test users (each user's metric averaged over the seeds both
    rows have), the mean difference with its bootstrap interval and the Wilcoxon p-value,
    Holm-corrected across the comparisons. A difference is a win or a loss only when the seed
    interval excludes 0 and the Holm p is below 0.05, on the same side; otherwise a tie. Rows
    without per-user lists are left out (and named in the returned list of skipped rows)."""
    from mmssl_pyg.training.significance import holm, paired_user_test
    by_name = dict(rows_units)
    ours_units = by_name[ours]
    ours_seeds = {u['spec']['seed'] for u in ours_units}
    tests, skipped = [], []
    for other, us in rows_units:
        if other == ours:
            continue
        common = ours_seeds & {u['spec']['seed'] for u in us}
        a = user_means([u for u in ours_units if u['spec']['seed'] in common], name)
        b = user_means([u for u in us if u['spec']['seed'] in common], name)
        if not common or a is None or b is None or a[0] != b[0]:
            skipped.append(other)
            continue
        seed_diff = C.paired_difference(_per_seed(ours_units, name=name),
                                        _per_seed(us, name=name))
        tests.append((other, len(common), seed_diff,
                      paired_user_test(a[1], b[1], resamples=resamples, seed=0)))
    adjusted = holm([t.p_value for *_, t in tests])
    out = []
    for (other, n, seed_diff, t), p_holm in zip(tests, adjusted):
        verdict = 'tie'
        if p_holm < 0.05 and seed_diff.lo > 0 and t.mean_difference > 0:
            verdict = f'{ours} wins'
        elif p_holm < 0.05 and seed_diff.hi < 0 and t.mean_difference < 0:
            verdict = f'{other} wins'
        out.append(Comparison(other, n, seed_diff, t, p_holm, verdict))
    return out, skipped


def user_level_rows(rows_units, ours: str, name: str = 'recall@20', resamples: int = 10_000):
    """:func:`user_level_comparisons` as table rows: ``[row, common seeds, seed-paired
    difference, test users, user-level difference [interval], Wilcoxon p, Holm p, verdict]``,
    and the skipped rows."""
    comparisons, skipped = user_level_comparisons(rows_units, ours, name, resamples)
    rows = []
    for c in comparisons:
        t = c.users
        rows.append([c.other, c.seeds, c.seed_diff, t.users,
                     f'{t.mean_difference:+.4f} [{t.low:+.4f}, {t.high:+.4f}]',
                     f'{t.p_value:.3g}', f'{c.p_holm:.3g}', c.verdict])
    return rows, skipped


def row_notes(folder) -> dict[str, str]:
    """``{configuration digest prefix: note}`` from ``row_notes.yaml`` in the results folder:
    what a configuration is, in words (e.g. that an older preset is the paper's), shown in the
    settings column. The digest names the row; the note only explains it."""
    import yaml
    path = Path(folder) / 'row_notes.yaml'
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return {str(k): str(v) for k, v in data.items()}


def _settings(us, notes: dict[str, str]) -> str:
    text = ','.join(sorted({u['spec']['label'] for u in us}))
    cut = sum(1 for u in us if u.get('budget_cut_at_epoch'))
    if cut:
        text += f'; {cut} of {len(us)} units budget-cut'
    cfg = _config_id(us[0])
    for prefix, note in notes.items():
        if cfg.startswith(prefix):
            text += f'; {note}'
    return text


def report_accuracy(rep: C.Report):
    from mmssl_pyg.training.options import METRIC_NAMES
    units = _ok(rep.units)
    notes_by_cfg = row_notes(rep.folder)
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
            cells = [name, _settings(us, notes_by_cfg),
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
        for ours in [n for n, us in rows_units if us[0]['spec']['model'] == 'mmssl']:
            user_rows, skipped = user_level_rows(rows_units, ours)
            if not user_rows:
                continue
            rep.add_table(
                f'accuracy_{slug}_users_{ours}', f'{ours} against every row on {dataset}, '
                'over seeds and over test users (test Recall@20)',
                ['row', 'common seeds', f'seed-paired Δ ({ours} − row) [95% t]', 'test users',
                 'user-level Δ [95% bootstrap]', 'Wilcoxon p', 'Holm p', 'verdict'],
                user_rows,
                ['User level: each test user\'s Recall@20 averaged over the seeds both rows '
                 'have; the mean paired difference with a percentile bootstrap interval '
                 '(10,000 resamples of users, seed 0) and the two-sided Wilcoxon signed-rank '
                 'p-value (zero differences dropped), Holm-corrected across the rows of this '
                 'table (mmssl_pyg.training.significance; benchmarks/PROTOCOL.md Sec. 6).',
                 'Verdict: a win only when the seed interval and the Holm p (< 0.05) agree; '
                 'otherwise a tie.']
                + ([f'Left out (units without per-user lists): {", ".join(skipped)}.']
                   if skipped else []))
        for k in (10, 50):
            rows = []
            for name, us in rows_units:
                rows.append([name, len(_per_seed(us))] + [
                    (_metric(us, 'test', f'{m}@{k}')) for m in METRIC_NAMES])
            rep.add_table(f'accuracy_{slug}_at{k}', f'Accuracy on {dataset} @{k} (test)',
                          ['model', 'seeds', f'Recall@{k}', f'Precision@{k}', f'NDCG@{k}',
                           f'Hit@{k}'], rows)
    _long_csv(rep, units)


PLAN = plan_accuracy
REPORT = (report_accuracy, 'Accuracy (paper Table 2)')
