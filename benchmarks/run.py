#!/usr/bin/env python
"""Benchmarks of mmssl-pyg: one entry point, one subcommand per benchmark.

    python -m benchmarks.run accuracy    --dataset tiktok --seeds 0 1 2   # paper Table 2
    python -m benchmarks.run ablation    --seeds 0 1 2                    # Table 3
    python -m benchmarks.run sparsity                                     # Table 4
    python -m benchmarks.run convergence                                  # Figure 3
    python -m benchmarks.run sensitivity                                  # Figure 4
    python -m benchmarks.run efficiency                                   # time and memory
    python -m benchmarks.run scaling                                      # synthetic, timing only
    python -m benchmarks.run all --quick                                  # everything, smoke size
    python -m benchmarks.run report                                       # rebuild all tables

Every benchmark is a list of units (model, dataset, seed, configuration) trained by the one
runner of ``benchmarks/_common.py``; see ``benchmarks/README.md``. Run it from the repository
root (``benchmarks`` is a package).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import _common as C

# one module per benchmark: its plan and its report
from benchmarks import (
    ablation,
    accuracy,
    convergence,
    efficiency,
    estimator,
    scaling,
    sensitivity,
    sparsity,
)
from benchmarks._plan import (
    BENCHMARKS,
    ID_DATASETS,
    QUICK_DATASET,
    QUICK_TRAIN,
    SCALING_AXES,
    SWEEPS,
)

MODULES = {'accuracy': accuracy, 'ablation': ablation, 'sparsity': sparsity,
           'convergence': convergence, 'sensitivity': sensitivity, 'efficiency': efficiency,
           'scaling': scaling, 'estimator': estimator}
PLANS = {name: m.PLAN for name, m in MODULES.items()}
REPORTS = {name: m.REPORT for name, m in MODULES.items()}


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
    p.add_argument('--tuned', default=None, choices=['presets'],
                   help='accuracy: "presets": the tuned presets of `mmssl-pyg tune` '
                        '(mmssl_pyg/configs/tuned/<model>-<dataset>.yaml, where present)')
    p.add_argument('--paired', action=argparse.BooleanOptionalAction, default=True,
                   help='paired seeds (default on): the same seed gives every model the same '
                        'initial ID embeddings (see benchmarks/README.md)')
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
        benches = ('accuracy', 'ablation', 'sparsity', 'convergence', 'sensitivity',
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
