"""Where a model's training step spends its time: an operator profile at full size (issue 24).

For each model, with its preset as ``mmssl-pyg train --model M --dataset D`` resolves it, the
trainer runs 2 mini-batches (critic and model steps, exactly as in training) as a warm-up, then
one full epoch under :mod:`torch.profiler` (``--batches N``: epochs of N mini-batches, for smoke
runs; work a model does once per epoch is then over-weighted). Operators are
grouped by name and sorted by self time (CPU time, or device time with ``--device cuda``); the
table gives each one's seconds per mini-batch, its share of the profiled self time and its
calls per mini-batch. Self times add up to the step's operator time; Python overhead between
operators is not in them, so the shares say which kernels to make cheaper, not the epoch's
wall-clock split. Profiling adds overhead of its own: time epochs with
``benchmarks.efficiency_full``, not with this.

It also counts the **dense floating-point work** of a step: the multiply-adds of every matrix
product whose operands are both dense (``mm``, ``addmm``, ``bmm``, ``baddbmm``, forward and
backward; sparse-by-dense products and element-wise operators are not counted), per mini-batch
and per epoch (over one more epoch), and measures this machine's dense product rate
(``--threads`` threads, a 2,048-square ``float32`` product, best of 5). Their ratio is a floor
for the epoch: the time the dense products alone would take at that rate, whatever else is made
faster.

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
import math
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks._common import stamp, stamp_lines
from mmssl_pyg.models import MODELS
from mmssl_pyg.training import Trainer
from mmssl_pyg.training.run import RunRequest, prepare_run

OUT = Path(__file__).resolve().parent / 'results' / 'efficiency'
COLUMNS = ['model', 'operator', 'self s per batch', 'share %', 'calls per batch']


class DenseFlops(TorchDispatchMode):
    """Counts ``2 m k n`` for every matrix product (``mm``, ``addmm``, ``bmm``, ``baddbmm``)
    whose two factors are dense, while active (forward and backward alike)."""

    def __init__(self):
        super().__init__()
        self.flops = 0
        aten = torch.ops.aten
        self._factors = {aten.mm.default: (0, 1), aten.bmm.default: (0, 1),
                         aten.addmm.default: (1, 2), aten.baddbmm.default: (1, 2)}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        which = self._factors.get(func)
        if which is not None:
            a, b = args[which[0]], args[which[1]]
            if a.layout == torch.strided and b.layout == torch.strided:
                self.flops += 2 * a.numel() * b.shape[-1]  # (batch x) m x k, times n
        return func(*args, **(kwargs or {}))


def dense_rate(device: str = 'cpu', size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of one ``size`` x ``size`` ``float32`` product on ``device`` (best of
    ``repeats``, after a warm-up), at the current torch thread count."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = math.inf
    for i in range(repeats + 1):
        if device != 'cpu':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device != 'cpu':
            torch.cuda.synchronize()
        if i:  # the first one is the warm-up
            best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


def profile_model(name: str, dataset: str, batches: int | None = None, device: str = 'cpu',
                  threads: int = 2, seed: int = 2023) -> tuple[list[dict], dict]:
    """Rows (one per operator, largest self time first) of one profiled epoch of ``name`` on
    ``dataset`` (all its mini-batches, or ``batches``), after a short unprofiled one, and the
    model's summary (mini-batches per epoch, dense GFLOP per mini-batch, counted over one more
    such epoch). Whole epochs, so work a model does once per epoch is weighted as in
    training."""
    from torch.profiler import ProfilerActivity, profile
    overrides = ['train.patience=0', f'train.num_threads={threads}']
    if batches:
        overrides.append(f'train.batches_per_epoch={batches}')
    run = prepare_run(RunRequest(model=name, dataset=dataset, seed=seed, device=device,
                                 progress=False, overrides=overrides))
    trainer = Trainer(run.model, run.graph, run.options.train)
    sampler = trainer.sampler
    n = len(sampler)
    summary = {'model': name, 'batches per epoch': n if trainer.trains else 0,
               'dense GFLOP per batch': 0.0}
    if not trainer.trains:
        return [], summary
    # warm-up (one-off allocations, caches, lazy initialisation): an epoch of at most 2
    # mini-batches; the sampler's loop length is its num_batches
    sampler.num_batches = min(n, 2)
    trainer._train_epoch(1)
    sampler.num_batches = n
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
    rows = [{'model': name, 'operator': e.key,
             'self s per batch': getattr(e, attr) / 1e6 / n,
             'share %': 100.0 * getattr(e, attr) / total,
             'calls per batch': e.count / n} for e in events]
    with DenseFlops() as counter:
        trainer._train_epoch(3)
    summary['dense GFLOP per batch'] = counter.flops / 1e9 / n
    summary['self s per batch'] = total / 1e6 / n
    return rows, summary


SUMMARY = ['model', 'batches per epoch', 'operator s per batch', 'dense GFLOP per batch',
           'dense GFLOP per epoch', 'dense-product floor s per epoch']


def summary_rows(summaries: list[dict], rate: float) -> list[dict]:
    """Per model: the counted dense work per mini-batch and per full epoch, and the epoch's
    floor at ``rate`` GFLOP/s (the dense products alone)."""
    rows = []
    for m in summaries:
        per_epoch = m['dense GFLOP per batch'] * m['batches per epoch']
        rows.append({'model': m['model'], 'batches per epoch': m['batches per epoch'],
                     'operator s per batch': m.get('self s per batch'),
                     'dense GFLOP per batch': m['dense GFLOP per batch'],
                     'dense GFLOP per epoch': per_epoch,
                     'dense-product floor s per epoch': per_epoch / rate})
    return rows


def render(rows_by_model: dict[str, list[dict]], summaries: list[dict], rate: float,
           dataset: str, args, st: dict, top: int) -> str:
    lines = [f'# Operator profile of a training step on {dataset} ({args.device})', '']
    lines += [f'- {x}' for x in stamp_lines(st)]
    epoch = f'epochs of {args.batches} mini-batches' if args.batches else 'full epochs'
    lines += [f'- threads: {args.threads}; per model, after 2 unprofiled mini-batches, one epoch '
              f'profiled and one counted ({epoch}); seed {args.seed}; every model with its '
              f'preset for {dataset}',
              f'- dense product rate of this machine: {rate:.1f} GFLOP/s (2,048-square float32 '
              f'product, {args.threads} threads, best of 5)', '',
              '*Dense GFLOP*: the multiply-adds (x 2) of every matrix product with two dense '
              'factors, forward and backward (sparse-by-dense products and element-wise '
              'operators not counted). *Floor*: the full epoch\'s dense GFLOP at the rate above, '
              'the time those products alone would take.', '',
              '| ' + ' | '.join(SUMMARY) + ' |', '|' + '---|' * len(SUMMARY)]
    for r in summary_rows(summaries, rate):
        op = r['operator s per batch']
        lines.append(f'| {r["model"]} | {r["batches per epoch"]} | '
                     f'{"–" if op is None else f"{op:.3f}"} | '
                     f'{r["dense GFLOP per batch"]:.2f} | {r["dense GFLOP per epoch"]:.1f} | '
                     f'{r["dense-product floor s per epoch"]:.2f} |')
    lines += ['', 'Per model: the self time of each operator (the time inside it, not in the '
              'operators it calls), per mini-batch, and its share of the profiled self time; the '
              'profiler adds overhead, so use `benchmarks.efficiency_full` for epoch seconds.', '']
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
    p.add_argument('--batches', type=int, default=None,
                   help='mini-batches per profiled epoch (default: a full epoch)')
    p.add_argument('--top', type=int, default=12, help='operators per model in the Markdown')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--seed', type=int, default=2023)
    p.add_argument('--out', type=Path, default=OUT)
    args = p.parse_args(argv)
    if (args.batches is not None and args.batches < 1) or args.top < 1:
        p.error('--batches and --top must be positive')
    torch.set_num_threads(args.threads)
    st = stamp(args.device)
    rows_by_model, summaries = {}, []
    for name in args.models:
        print(f'{args.dataset}: profiling {name} ...', file=sys.stderr, flush=True)
        try:
            rows_by_model[name], summary = profile_model(name, args.dataset, args.batches,
                                                         args.device, args.threads, args.seed)
        except (ValueError, OSError) as err:  # bad dataset or options: one line, no traceback
            print(f'error: {err}', file=sys.stderr)
            return 2
        summaries.append(summary)
    rate = dense_rate(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f'profile-{args.dataset}-{args.device}'
    base.with_suffix('.md').write_text(
        render(rows_by_model, summaries, rate, args.dataset, args, st, args.top) + '\n')
    with open(base.with_suffix('.csv'), 'w', newline='') as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for rows in rows_by_model.values():
            w.writerows([r[c] for c in COLUMNS] for r in rows)
    with open(args.out / f'profile-{args.dataset}-{args.device}-summary.csv', 'w',
              newline='') as fh:
        w = csv.writer(fh)
        w.writerow(SUMMARY)
        w.writerows([r[c] for c in SUMMARY] for r in summary_rows(summaries, rate))
    print(f'wrote {base.with_suffix(".md")}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
