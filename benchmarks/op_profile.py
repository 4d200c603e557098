"""Where a model's training step spends its time: an operator profile at full size (issue 24).

For each model, with its preset as ``mmssl-pyg train --model M --dataset D`` resolves it, the
trainer runs ``--batches`` mini-batches of one epoch (critic and model steps, exactly as in
training) as a warm-up, then ``--batches`` more under :mod:`torch.profiler`. Operators are
grouped by name and sorted by self time (CPU time, or device time with ``--device cuda``); the
table gives each one's seconds per mini-batch, its share of the profiled self time and its
calls per mini-batch. Self times add up to the step's operator time; Python overhead between
operators is not in them, so the shares say which kernels to make cheaper, not the epoch's
wall-clock split. Profiling adds overhead of its own: time epochs with
``benchmarks.efficiency_full``, not with this.

Writes ``benchmarks/results/efficiency/profile-<dataset>-<device>.{md,csv}`` (the Markdown
table keeps the ``--top`` operators per model, the CSV all of them), headed by the stamp
(command, commit, machine) like the other benchmarks.

Usage::

    python -m benchmarks.op_profile --dataset tiktok --models lightgcn mmgcn mmssl --threads 2
    python -m benchmarks.op_profile --dataset tiktok-mini --models mf --batches 2 --out /tmp/p
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from benchmarks._common import stamp, stamp_lines
from mmssl_pyg.models import MODELS
from mmssl_pyg.training import Trainer
from mmssl_pyg.training.run import RunRequest, prepare_run

OUT = Path(__file__).resolve().parent / 'results' / 'efficiency'
COLUMNS = ['model', 'operator', 'self s per batch', 'share %', 'calls per batch']


def profile_model(name: str, dataset: str, batches: int, device: str = 'cpu',
                  threads: int = 2, seed: int = 2023) -> list[dict]:
    """Rows (one per operator, largest self time first) of ``batches`` profiled mini-batches
    of ``name`` on ``dataset``, after as many unprofiled ones."""
    from torch.profiler import ProfilerActivity, profile
    request = RunRequest(model=name, dataset=dataset, seed=seed, device=device, progress=False,
                         overrides=[f'train.batches_per_epoch={batches}', 'train.patience=0',
                                    f'train.num_threads={threads}'])
    run = prepare_run(request)
    trainer = Trainer(run.model, run.graph, run.options.train)
    if not trainer.trains:
        return []
    trainer._train_epoch(1)  # warm-up: one-off allocations, caches, lazy initialisation
    cuda = torch.device(device).type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        trainer._train_epoch(2)
        if cuda:
            torch.cuda.synchronize()
    attr = 'self_device_time_total' if cuda else 'self_cpu_time_total'
    events = [e for e in prof.key_averages() if getattr(e, attr) > 0]
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return [{'model': name, 'operator': e.key,
             'self s per batch': getattr(e, attr) / 1e6 / batches,
             'share %': 100.0 * getattr(e, attr) / total,
             'calls per batch': e.count / batches} for e in events]


def render(rows_by_model: dict[str, list[dict]], dataset: str, args, st: dict,
           top: int) -> str:
    lines = [f'# Operator profile of a training step on {dataset} ({args.device})', '']
    lines += [f'- {x}' for x in stamp_lines(st)]
    lines += [f'- threads: {args.threads}; {args.batches} mini-batches profiled per model after '
              f'{args.batches} unprofiled ones; seed {args.seed}; every model with its preset '
              f'for {dataset}', '',
              'Self time of each operator (the time inside it, not in the operators it calls), '
              'per mini-batch, and its share of the profiled self time; the profiler adds '
              'overhead, so use `benchmarks.efficiency_full` for epoch seconds.', '']
    for name, rows in rows_by_model.items():
        total = sum(r['self s per batch'] for r in rows)
        lines += [f'## {name}: {total:.3f} s of operator self time per mini-batch', '']
        if not rows:
            lines += ['(not trained: nothing to profile)', '']
            continue
        lines += ['| operator | self s per batch | share % | calls per batch |',
                  '|---|---|---|---|']
        lines += [f'| `{r["operator"]}` | {r["self s per batch"]:.4f} | {r["share %"]:.1f} | '
                  f'{r["calls per batch"]:g} |' for r in rows[:top]]
        rest = rows[top:]
        if rest:
            lines.append(f'| ({len(rest)} more) | {sum(r["self s per batch"] for r in rest):.4f}'
                         f' | {sum(r["share %"] for r in rest):.1f} | |')
        lines.append('')
    return '\n'.join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataset', default='tiktok')
    p.add_argument('--models', nargs='+', default=['lightgcn', 'mmgcn', 'mmssl'],
                   choices=sorted(MODELS))
    p.add_argument('--batches', type=int, default=3, help='mini-batches profiled per model')
    p.add_argument('--top', type=int, default=12, help='operators per model in the Markdown')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--seed', type=int, default=2023)
    p.add_argument('--out', type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.batches < 1 or args.top < 1:
        p.error('--batches and --top must be positive')
    torch.set_num_threads(args.threads)
    st = stamp(args.device)
    rows_by_model = {}
    for name in args.models:
        print(f'{args.dataset}: profiling {name} ...', file=sys.stderr, flush=True)
        try:
            rows_by_model[name] = profile_model(name, args.dataset, args.batches, args.device,
                                                args.threads, args.seed)
        except (ValueError, OSError) as err:  # bad dataset or options: one line, no traceback
            print(f'error: {err}', file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f'profile-{args.dataset}-{args.device}'
    base.with_suffix('.md').write_text(render(rows_by_model, args.dataset, args, st, args.top)
                                       + '\n')
    with open(base.with_suffix('.csv'), 'w', newline='') as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for rows in rows_by_model.values():
            w.writerows([r[c] for c in COLUMNS] for r in rows)
    print(f'wrote {base.with_suffix(".md")}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
