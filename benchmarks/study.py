"""The equal-budget study of benchmarks/PROTOCOL.md: one Optuna study per model and dataset.

Every study has the same number of finished trials, the same sampler and pruner settings, the
same learning-rate range, an L2 range of at least [1e-6, 1], the same epoch cap and patience, and
its own sampler seed. Each trial runs in its own process (``step`` runs one trial and exits), so a
kill loses at most one trial and the study databases can be committed between trials::

    python benchmarks/study.py status                 # finished trials per study
    python benchmarks/study.py step [--models M ...] [--datasets D ...]   # one trial, then exit
    benchmarks/study_loop.sh [--models M ...]         # step until every selected study is done

Results go to ``benchmarks/results/study/<dataset>/<model>/``: ``study.db`` (the Optuna
database: every trial with its parameters, per-epoch validation values, seconds, state),
``trials.log`` (one line per trial) and, once a trial has completed, the tuned preset
``<model>-<dataset>.yaml`` with its provenance. Trials are scored on validation only; the test
split is never read here (the final units of PROTOCOL.md's step 3 are the only ones that do).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's mmssl_pyg, not another one installed

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


def status(args) -> int:
    print(f'{"model":10} {"dataset":16} finished / {TRIALS}   commit')
    for model, dataset in _selected(args):
        commit = study_dir(model, dataset, args.out) / 'commit.txt'
        print(f'{model:10} {dataset:16} {finished_trials(model, dataset, args.out):3d}        '
              f'{commit.read_text().split()[-1][:12] if commit.is_file() else "-"}')
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('command', choices=['step', 'status'])
    parser.add_argument('--models', nargs='*', choices=MODELS, default=None)
    parser.add_argument('--datasets', nargs='*', choices=DATASETS, default=None)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda', 'auto'])
    parser.add_argument('--out', type=Path, default=OUT,
                        help='results folder (default benchmarks/results/study)')
    args = parser.parse_args(argv)
    return step(args) if args.command == 'step' else status(args)


if __name__ == '__main__':
    sys.exit(main())
