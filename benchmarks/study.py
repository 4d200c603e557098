"""The equal-budget study of benchmarks/PROTOCOL.md: one Optuna study per model and dataset.

Every study has the same number of finished trials, the same sampler and pruner settings, the
same learning-rate range, an L2 range of at least [1e-6, 1], the same epoch cap and patience, and
its own sampler seed. Each trial runs in its own process (``step`` runs one trial and exits) and
saves a checkpoint every epoch (``tune(trial_checkpoints=True)``, PROTOCOL.md amendment of
2026-12-07): a killed trial is retried from its last epoch by the next ``step``, so a kill loses
at most one epoch, and the study databases can be committed between trials::

    python -m benchmarks.study status                 # finished trials per study
    python -m benchmarks.study step [--models M ...] [--datasets D ...]   # one trial, then exit
    python -m benchmarks.study cross [--models M ...]  # winners on the other dataset (Sec. 8)
    python -m benchmarks.study defaults               # the rule's choice of each default
    python -m benchmarks.study final --models M --datasets D   # the winner's final units
    python -m benchmarks.study snapshot               # stage the databases for a commit
    python -m benchmarks.study table                  # the published tables (Sec. 7)
    benchmarks/study_loop.sh [--models M ...]         # step until every selected study is done

Results go to ``benchmarks/results/study/<dataset>/<model>/``: ``study.db`` (the Optuna
database: every trial with its parameters, per-epoch validation values, seconds, state),
``trials.log`` (one line per trial) and, once a trial has completed, the tuned preset
``<model>-<dataset>.yaml`` with its provenance. Trials are scored on validation only; the test
split is never read here (the final units of PROTOCOL.md's step 3 are the only ones that do).
``table`` writes ``study-final/study.md`` (:mod:`benchmarks.study_table`): per dataset, each
model's trials, selected configuration, metrics and comparison with MMSSL, shown only once every
study of the dataset has its trials and final units, and the study's cost.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Finished (complete or pruned) trials per study.
TRIALS = 20
#: Sampler and pruner of every study (PROTOCOL.md, "Search").
SETTINGS = {'startup_trials': 10, 'multivariate': True, 'prune_percentile': 25.0,
            'prune_warmup': 20, 'prune_startup': 5}
#: Options fixed for every trial of every study (PROTOCOL.md, "Training").
FIXED = ['epochs=400', 'patience=20']
MODELS = ('mf', 'lightgcn', 'vbpr', 'freedom', 'bm3', 'lattice', 'sgl', 'mmgcn', 'grcn',
          'mmssl')
DATASETS = ('movielens-100k', 'tiktok')
#: Every study in the order they run: cheap models first, both datasets per model.
PLAN = [(m, d) for m in MODELS for d in DATASETS]
OUT = ROOT / 'benchmarks' / 'results' / 'study'
#: Final units (PROTOCOL.md Sec. 5): the winner's tuned preset on these paired seeds.
FINAL_SEEDS = (0, 1, 2, 3, 4)
FINAL_OUT = ROOT / 'benchmarks' / 'results' / 'study-final'
TUNED = ROOT / 'mmssl_pyg' / 'configs' / 'tuned'


def sampler_seed(model: str, dataset: str) -> int:
    """A different TPE seed per study: 100 + the study's index in :data:`PLAN`."""
    return 100 + PLAN.index((model, dataset))


def study_dir(model: str, dataset: str, out: Path = OUT) -> Path:
    return out / dataset / model


def finished_trials(model: str, dataset: str, out: Path = OUT) -> int:
    """Complete plus pruned trials in the study's database (0 when it does not exist yet)."""
    db = study_dir(model, dataset, out) / 'study.db'
    if not db.is_file():
        return 0
    import sqlite3
    con = sqlite3.connect(f'file:{db}?mode=ro', uri=True)
    try:
        (n,) = con.execute("SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
                           ).fetchone()
    finally:
        con.close()
    return int(n)


def head_commit() -> str:
    """``<sha>`` of this checkout, ``+dirty`` when tracked files changed (results excluded)."""
    import subprocess
    sha = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--',
                            '.', ':!benchmarks/results'], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()
    return sha + ('+dirty' if dirty else '')


def check_commit(folder: Path, commit: str) -> None:
    """A study runs from one commit (PROTOCOL.md): the first trial records it in
    ``commit.txt``; a later trial from another commit (or a modified checkout) is refused. A
    dated amendment may move an unfinished study to a later commit: the amendment appends that
    commit as a new line, and trials then run from the last line only."""
    path = folder / 'commit.txt'
    if commit.endswith('+dirty'):
        raise SystemExit(f'{ROOT} has uncommitted changes to tracked files; run the study from '
                         f'a clean checkout of the study commit (benchmarks/PROTOCOL.md)')
    if not path.is_file():
        path.write_text(commit + '\n')
        return
    started = path.read_text().split()[-1]
    if started != commit:
        raise SystemExit(f'{folder.name} on {folder.parent.name}: this study runs from commit '
                         f'{started}, this checkout is {commit}. Continue it from a checkout of '
                         f'{started} (git worktree add <dir> {started}); a change of commit needs '
                         f'a dated amendment in benchmarks/PROTOCOL.md')


def _selected(args) -> list[tuple[str, str]]:
    return [(m, d) for m, d in PLAN if (not args.models or m in args.models)
            and (not args.datasets or d in args.datasets)]


def step(args) -> int:
    """Run one trial of the first selected study that has fewer than :data:`TRIALS`."""
    from mmssl_pyg.training.tune import tune
    for model, dataset in _selected(args):
        done = finished_trials(model, dataset, args.out)
        if done >= TRIALS:
            continue
        folder = study_dir(model, dataset, args.out)
        folder.mkdir(parents=True, exist_ok=True)
        check_commit(folder, head_commit())
        logfile = folder / 'trials.log'

        def log(line: str, logfile=logfile) -> None:
            print(line, flush=True)
            with open(logfile, 'a') as fh:
                fh.write(line + '\n')

        tune(model, dataset, done + 1, None, study_name=f'{model}-{dataset}',
             seed=sampler_seed(model, dataset), overrides=list(FIXED), device=args.device,
             wandb='disabled', run_dir=folder, preset_dir=folder, force=True, log=log,
             trial_checkpoints=True, **SETTINGS)
        return 0
    print('every selected study has its trials', flush=True)
    return 3


def winner_file(model: str, dataset: str, out: Path = OUT) -> Path:
    """The tuned preset a study writes: its best complete trial (PROTOCOL.md Sec. 5.1)."""
    return study_dir(model, dataset, out) / f'{model}-{dataset}.yaml'


def winner_params(model: str, dataset: str, out: Path = OUT) -> tuple[list[tuple], float]:
    """``([(key, value), ...], validation value)`` of a finished study's winner: its model and
    trainer values as overrides, as its trial got them."""
    from mmssl_pyg.training.presets import read_yaml
    data = read_yaml(winner_file(model, dataset, out))
    params = [(f'model.{k}', v) for k, v in (data.get('model') or {}).items()]
    params += [(f'train.{k}', v) for k, v in (data.get('train') or {}).items()]
    return params, float(data['provenance']['best_value'])


def cross_file(model: str, source: str, target: str, out: Path = OUT) -> Path:
    return study_dir(model, target, out) / f'cross-from-{source}.json'


def cross(args) -> int:
    """PROTOCOL.md Sec. 8: each winner of a model whose two studies are finished, run once on
    the other dataset (train seed 2023, the study's epoch cap and patience), scored on
    validation only; one JSON per run, skipped when present."""
    import json
    import time

    from mmssl_pyg.training.presets import parse_overrides
    from mmssl_pyg.training.run import RunRequest, prepare_run
    from mmssl_pyg.training.trainer import Trainer
    for model in [m for m in MODELS if not args.models or m in args.models]:
        if any(finished_trials(model, d, args.out) < TRIALS for d in DATASETS):
            print(f'{model}: a study is not finished; no cross-dataset runs yet', flush=True)
            continue
        for source in DATASETS:
            for target in [d for d in DATASETS if d != source]:
                path = cross_file(model, source, target, args.out)
                if path.is_file():
                    continue
                params, _ = winner_params(model, source, args.out)
                t0 = time.perf_counter()
                run = prepare_run(RunRequest(model=model, dataset=target, device=args.device,
                                             overrides=parse_overrides(FIXED) + params,
                                             progress=False))
                fit = Trainer(run.model, run.graph, run.options.train).fit(test=False)
                record = {'model': model, 'winner_of': source, 'dataset': target,
                          'params': [[k, v] for k, v in params], 'fixed': list(FIXED),
                          'seed': run.options.train.seed, 'val': fit.val,
                          'best_epoch': fit.best_epoch, 'epochs_run': len(fit.history),
                          'seconds': time.perf_counter() - t0, 'commit': head_commit(),
                          'command': 'python -m benchmarks.study cross'}
                path.write_text(json.dumps(record, indent=1) + '\n')
                print(f'{model}: winner of {source} on {target}: val recall@20 '
                      f'{fit.val["recall@20"]:.4f}', flush=True)
    return 0


def default_choice(model: str, out: Path = OUT) -> dict | None:
    """PROTOCOL.md Sec. 8's rule for a model with both studies and both cross runs: each
    winner's mean over the two datasets of (its validation Recall@20 / the best validation
    Recall@20 of that dataset's study); the default is the winner with the higher mean (an
    exact tie goes to the first dataset of :data:`DATASETS`). ``None`` until all four
    figures exist."""
    import json
    best, score = {}, {}
    for d in DATASETS:
        if not winner_file(model, d, out).is_file():
            return None
        best[d] = winner_params(model, d, out)[1]
    for source in DATASETS:
        ratios = []
        for target in DATASETS:
            if target == source:
                ratios.append(1.0)  # the winner is its own study's best
                continue
            path = cross_file(model, source, target, out)
            if not path.is_file():
                return None
            ratios.append(json.loads(path.read_text())['val']['recall@20'] / best[target])
        score[source] = sum(ratios) / len(ratios)
    chosen = max(DATASETS, key=lambda d: (score[d], -DATASETS.index(d)))
    return {'model': model, 'best': best, 'score': score, 'default_from': chosen}


def defaults(args) -> int:
    """Print the rule's figures and choice for every model that has them."""
    for model in [m for m in MODELS if not args.models or m in args.models]:
        c = default_choice(model, args.out)
        if c is None:
            print(f'{model:10} not yet (needs both studies and both cross-dataset runs)')
            continue
        scores = ', '.join(f'winner of {d}: {c["score"][d]:.4f}' for d in DATASETS)
        print(f'{model:10} {scores} -> default from the {c["default_from"]} study')
    return 0


def final_command(model: str, dataset: str, out: Path = FINAL_OUT) -> list[str]:
    """The accuracy benchmark that makes a study's final units: its tuned preset, the study's
    epoch cap and patience (:data:`FIXED`), :data:`FINAL_SEEDS`, one thread, no W&B."""
    fixed = [a for kv in FIXED for a in (f'--{kv.split("=")[0]}', kv.split('=')[1])]
    return [sys.executable, '-m', 'benchmarks.run', 'accuracy', '--dataset', dataset,
            '--models', model, '--id-datasets', '--tuned', 'presets', *fixed,
            '--seeds', *map(str, FINAL_SEEDS), '--no-reuse', '--wandb', 'disabled',
            '--threads', '1', '--no-progress', '--out', str(out)]


def check_final(model: str, dataset: str, out: Path = OUT, tuned: Path = TUNED,
                commit: str | None = None) -> None:
    """Refuse a study's final units unless the study is finished and this checkout runs its
    winner: ``<tuned>/<model>-<dataset>.yaml`` byte-identical to the study's tuned preset and
    committed, nothing else modified (the units record the commit they ran from)."""
    label = f'{model} on {dataset}'
    done = finished_trials(model, dataset, out)
    if done < TRIALS:
        raise SystemExit(f'{label}: the study has {done} of {TRIALS} finished trials; its final '
                         f'units run once it is finished (benchmarks/PROTOCOL.md Sec. 5)')
    winner, preset = winner_file(model, dataset, out), tuned / f'{model}-{dataset}.yaml'
    if not preset.is_file() or preset.read_bytes() != winner.read_bytes():
        raise SystemExit(f'{label}: {preset} is not the study\'s winner. Fix: copy {winner} to '
                         f'{preset}, commit it, and run final from a clean checkout of that '
                         f'commit')
    import subprocess
    tracked = subprocess.run(['git', 'ls-files', '--error-unmatch', preset.name],
                             cwd=preset.parent, capture_output=True).returncode == 0
    commit = commit if commit is not None else head_commit()
    if not tracked or commit.endswith('+dirty'):
        raise SystemExit(f'{label}: the checkout at {ROOT} has uncommitted changes (or {preset} '
                         f'is not committed). Fix: commit them and run final from a clean '
                         f'checkout; the units record the commit they ran from')


def final(args) -> int:
    """Run the final units of each selected study (PROTOCOL.md Sec. 5), after the checks of
    :func:`check_final`; the accuracy benchmark skips units already in ``--final-out``."""
    from benchmarks._common import run_attached
    selected = _selected(args)
    for model, dataset in selected:
        check_final(model, dataset, args.out)
    for model, dataset in selected:
        cmd = final_command(model, dataset, args.final_out)
        print(' '.join(cmd[1:]), flush=True)
        if run_attached(cmd, cwd=ROOT):  # a kill of this process stops the units too
            return 1
    return 0


def _dump(db: Path) -> list[str]:
    """The SQL text of a database's schema and rows (equal for equal content, whatever the
    file's page layout and header counters)."""
    import sqlite3
    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def snapshot(args) -> int:
    """Stage every study folder under ``--out`` in its git checkout for a commit while the
    studies run: each ``study.db`` through SQLite's backup API (a consistent copy even while a
    trial writes to it), integrity-checked, its blob staged with ``git update-index`` unless its
    rows equal the committed copy's (a copy's header differs anyway); the text
    files (``trials.log``, ``commit.txt``, tuned presets, cross runs) with ``git add``; and a
    regenerated ``status.md``. It stages only: ``git commit`` (without ``-a``) follows."""
    import shutil
    import sqlite3
    import subprocess
    import tempfile

    out = args.out.resolve()
    top = Path(subprocess.run(['git', 'rev-parse', '--show-toplevel'], cwd=out, check=True,
                              capture_output=True, text=True).stdout.strip())
    tmp = Path(tempfile.mkdtemp())
    try:
        for db in sorted(out.glob('*/*/study.db')):
            copy = tmp / 'study.db'
            copy.unlink(missing_ok=True)
            src = sqlite3.connect(f'file:{db}?mode=ro', uri=True, timeout=60)
            dst = sqlite3.connect(copy)
            try:
                src.backup(dst)
                (ok,) = dst.execute('PRAGMA integrity_check').fetchone()
            finally:
                dst.close()
                src.close()
            if ok != 'ok':
                raise SystemExit(f'{db}: integrity_check says {ok!r}; nothing staged for it')
            rel = db.relative_to(top)
            head = subprocess.run(['git', 'show', f'HEAD:{rel}'], cwd=top, capture_output=True)
            if head.returncode == 0:  # a copy's header changes even when no row does
                committed = tmp / 'head.db'
                committed.write_bytes(head.stdout)
                if _dump(committed) == _dump(copy):
                    continue
            sha = subprocess.run(['git', 'hash-object', '-w', str(copy)], cwd=top, check=True,
                                 capture_output=True, text=True).stdout.strip()
            subprocess.run(['git', 'update-index', '--add', '--cacheinfo', f'100644,{sha},{rel}'],
                           cwd=top, check=True)
            print(f'staged {rel}', flush=True)
    finally:
        shutil.rmtree(tmp)
    texts = [str(f.relative_to(top)) for f in sorted(out.glob('*/*/*'))
             if f.is_file() and not f.name.startswith('study.db')]
    from benchmarks.study_report import collect, render
    (out / 'status.md').write_text(render(collect(out), out=out))
    texts += [str(p.relative_to(top)) for p in [out / 'status.md'] if p.is_file()]
    if texts:
        subprocess.run(['git', 'add', '--', *texts], cwd=top, check=True)
    return 0


def table(args) -> int:
    """Write the published tables of PROTOCOL.md Sec. 7 (:mod:`benchmarks.study_table`); print
    where each dataset stands against their gate, and no figure."""
    from benchmarks.study_table import MalformedResult, write_tables
    try:
        path, lines = write_tables(args.out, args.final_out)
    except MalformedResult as err:
        raise SystemExit(str(err)) from None
    for line in lines:
        print(line, flush=True)
    print(f'wrote {path}', flush=True)
    return 0


def status(args) -> int:
    print(f'{"model":10} {"dataset":16} finished / {TRIALS}   commit')
    for model, dataset in _selected(args):
        commit = study_dir(model, dataset, args.out) / 'commit.txt'
        print(f'{model:10} {dataset:16} {finished_trials(model, dataset, args.out):3d}        '
              f'{commit.read_text().split()[-1][:12] if commit.is_file() else "-"}')
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('command',
                        choices=['step', 'status', 'cross', 'defaults', 'final', 'snapshot',
                                 'table'])
    parser.add_argument('--models', nargs='*', choices=MODELS, default=None)
    parser.add_argument('--datasets', nargs='*', choices=DATASETS, default=None)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda', 'auto'])
    parser.add_argument('--out', type=Path, default=OUT,
                        help='results folder (default benchmarks/results/study)')
    parser.add_argument('--final-out', type=Path, default=FINAL_OUT,
                        help='final units folder (default benchmarks/results/study-final)')
    args = parser.parse_args(argv)
    if args.command == 'table' and (args.models is not None or args.datasets is not None):
        parser.error('table covers every model and dataset (PROTOCOL.md Sec. 7); drop --models '
                     'and --datasets')
    return {'step': step, 'status': status, 'cross': cross, 'defaults': defaults,
            'final': final, 'snapshot': snapshot, 'table': table}[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
