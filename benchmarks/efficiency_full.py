"""Full-size efficiency of every model beside LightGCN, in one process (issue 24).

For each dataset, every model (LightGCN first) is trained through the library's
:class:`~mmssl_pyg.training.Trainer` with its preset, exactly as
``mmssl-pyg train --model M --dataset D`` resolves it, for ``--epochs`` full epochs (early
stopping off), one after the other in this one process, on ``--device`` with ``--threads``
torch threads. Per model it records:

* seconds per epoch: the median of epochs 2..n (the first epoch pays one-off costs);
* seconds per validation pass: the median over the evaluated epochs;
* seconds per typical trial: epochs to early stop x seconds per epoch + validation passes x
  seconds per validation pass, with the epochs run and validation passes taken from the
  committed accuracy units (``benchmarks/results/accuracy/units``, median over seeds) where
  they exist; the table names the units' label (``preset`` preferred, else ``tuned``: those
  ran with tuned lr / reg_weight, so their epoch counts are the tuned runs') or says
  ``no units`` and leaves the cell empty;
* peak memory: the process's resident set sampled every 20 ms while the model is built and
  trained (its own peak, including Python, torch and the dataset already resident); on CUDA
  also ``torch.cuda.max_memory_allocated``, reset per model;
* the ratio of the epoch (and of the trial) to LightGCN's, measured in the same run.

Writes ``benchmarks/results/efficiency/efficiency-full-<dataset>-<device>.{md,csv}``, headed by
the stamp (command, commit, machine) like the other benchmarks. A dataset that is not built
(``movielens-100k`` needs ``make movielens-100k``) is skipped with a note.

Usage::

    python -m benchmarks.efficiency_full --datasets tiktok movielens-100k --device cpu \\
        --threads 2 --epochs 4
    python -m benchmarks.efficiency_full --datasets tiktok-mini --epochs 2 --models lightgcn grcn
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

from benchmarks._common import _rss_mb, stamp, stamp_lines
from mmssl_pyg.models import MODELS, get_model_class
from mmssl_pyg.training import Trainer
from mmssl_pyg.training.run import RunRequest, load_graph, prepare_run

HERE = Path(__file__).resolve().parent

OUT = HERE / 'results' / 'efficiency'
ACCURACY_UNITS = HERE / 'results' / 'accuracy' / 'units'
BASE = 'lightgcn'
COLUMNS = ['model', 'dataset', 'device', 'parameters', 'epochs timed', 'epoch s (median 2..n)',
           'epoch ratio to lightgcn', 'validation pass s', 'epochs to early stop',
           'validation passes', 'units used', 'trial s', 'trial ratio to lightgcn',
           'peak RSS MiB', 'peak CUDA MiB', 'status']


class PeakRSS:
    """Peak resident set of this process while the ``with`` block runs, sampled every
    ``interval`` seconds by a thread (``VmHWM`` is process-wide and cannot be reset without
    ``/proc/self/clear_refs``, which slowed every later kernel tenfold on the test machine)."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak = interval, _rss_mb()
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def typical_trial(model: str, dataset: str) -> tuple[float | None, float | None, str]:
    """``(epochs run, validation passes, label)``: medians over the seeds of the committed
    accuracy units of ``model`` on ``dataset`` (label ``preset`` preferred, else ``tuned``)."""
    by_label: dict[str, list[dict]] = {}
    for path in sorted(ACCURACY_UNITS.glob(f'{model}__{dataset}__*.json')):
        unit = json.loads(path.read_text())
        if unit.get('status', 'ok') != 'ok' or unit['spec']['model'] != model \
                or unit['spec']['dataset'] != dataset or not unit.get('history'):
            continue
        by_label.setdefault(unit['spec'].get('label', ''), []).append(unit)
    for label in ('preset', 'tuned'):
        units = by_label.get(label)
        if units:
            epochs = statistics.median(u['epochs_run'] for u in units)
            evals = statistics.median(sum('eval_seconds' in h for h in u['history'])
                                      for u in units)
            return float(epochs), float(evals), f'{label} ({len(units)} seeds)'
    return None, None, 'no units'


def time_model(name: str, dataset: str, graph, args) -> dict:
    """Train ``name`` for ``args.epochs`` epochs with its preset; timings and peak memory."""
    device = torch.device(args.device)
    request = RunRequest(model=name, dataset=dataset, epochs=args.epochs, seed=args.seed,
                         device=args.device, progress=False,
                         overrides=['train.patience=0', f'train.num_threads={args.threads}'])
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss:
        run = prepare_run(request, data=(graph, None), preset_dataset=dataset)
        model, options = run.model, run.options
        params = sum(p.numel() for p in model.parameters())
        t0 = time.perf_counter()
        result = Trainer(model, graph, options.train).fit(test=False)
        wall = time.perf_counter() - t0
    hist = result.history
    epochs = [h['epoch_seconds'] for h in hist]
    evals = [h['eval_seconds'] for h in hist if 'eval_seconds' in h]
    row = {'model': name, 'dataset': dataset, 'device': str(device), 'parameters': params,
           'epochs timed': len(epochs),
           'epoch s (median 2..n)': statistics.median(epochs[1:] or epochs),
           'validation pass s': statistics.median(evals) if evals else None,
           'epoch_seconds': epochs, 'eval_seconds': evals, 'fit wall s': wall,
           'peak RSS MiB': rss.peak,
           'peak CUDA MiB': (torch.cuda.max_memory_allocated(device) / 2 ** 20
                             if device.type == 'cuda' else None),
           'status': 'ok'}
    n_ep, n_ev, label = typical_trial(name, dataset)
    row.update({'epochs to early stop': n_ep, 'validation passes': n_ev, 'units used': label})
    if n_ep is not None:
        row['trial s'] = n_ep * row['epoch s (median 2..n)'] + \
            (n_ev or 0) * (row['validation pass s'] or 0)
    del model, result
    return row


def add_ratios(rows: list[dict]) -> None:
    base = next((r for r in rows if r['model'] == BASE and r['status'] == 'ok'), None)
    for r in rows:
        if base is None or r['status'] != 'ok':
            continue
        r['epoch ratio to lightgcn'] = r['epoch s (median 2..n)'] / base['epoch s (median 2..n)']
        if r.get('trial s') is not None and base.get('trial s'):
            r['trial ratio to lightgcn'] = r['trial s'] / base['trial s']


def _cell(x, md: bool) -> str:
    if x is None:
        return '' if not md else '–'
    if isinstance(x, float):
        if x != x:
            return '' if not md else '–'
        return f'{x:.3g}' if abs(x) < 10 else f'{x:.1f}' if abs(x) < 1000 else f'{x:.0f}'
    return str(x)


def write_outputs(rows: list[dict], dataset: str, args, st: dict, notes: list[str]) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f'efficiency-full-{dataset}-{torch.device(args.device).type}'
    lines = [f'# Efficiency on full-size {dataset} (one process, ratios to LightGCN)', '']
    lines += [f'- {x}' for x in stamp_lines(st)]
    lines += [f'- threads: {args.threads}; epochs per model: {args.epochs} (early stopping off; '
              f'epoch s is the median of epochs 2..{args.epochs}); seed {args.seed}; '
              f'every model with its preset for {dataset} (as `mmssl-pyg train --model M '
              f'--dataset {dataset}` resolves it)', '']
    lines += ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    lines += ['| ' + ' | '.join(_cell(r.get(c), True) for c in COLUMNS) + ' |' for r in rows]
    lines += ['', 'Epochs to early stop and validation passes: medians over the seeds of the '
              'committed accuracy units (`benchmarks/results/accuracy/units`) of the label named '
              'in *units used* (`tuned` units ran with the tuned lr / reg_weight, so their epoch '
              'counts are the tuned runs\'; the timings here use the untuned preset); *trial s* '
              '= epochs x epoch s + validation passes x validation pass s, empty where no unit '
              'exists. Peak RSS: the process\'s resident set sampled every 20 ms while the '
              'model is built and trained (includes Python, torch and the dataset); peak CUDA: '
              'torch.cuda.max_memory_allocated.']
    lines += [f'- {n}' for n in notes]
    (base.with_suffix('.md')).write_text('\n'.join(lines) + '\n')
    with open(base.with_suffix('.csv'), 'w', newline='') as fh:
        for x in stamp_lines(st):
            fh.write(f'# {x}\n')
        w = csv.writer(fh)
        w.writerow(COLUMNS + ['epoch_seconds', 'eval_seconds'])
        for r in rows:
            w.writerow([_cell(r.get(c), False) if not isinstance(r.get(c), float)
                        else repr(r[c]) for c in COLUMNS]
                       + [' '.join(f'{x:.4f}' for x in r.get('epoch_seconds', [])),
                          ' '.join(f'{x:.4f}' for x in r.get('eval_seconds', []))])
    return base.with_suffix('.md')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--datasets', nargs='+', default=['tiktok', 'movielens-100k'])
    p.add_argument('--models', nargs='+', default=None,
                   help='default: every registered model (LightGCN is always added)')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--epochs', type=int, default=4, help='epochs per model (>= 2)')
    p.add_argument('--seed', type=int, default=2023)
    p.add_argument('--out', type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error('--epochs must be >= 2 (epoch 1 is not timed)')
    models = [m for m in (args.models or list(MODELS)) if m != BASE]
    models = [BASE] + models
    torch.set_num_threads(args.threads)
    for dataset in args.datasets:
        try:
            graph = load_graph(dataset)
        except (FileNotFoundError, ValueError) as err:
            print(f'skipping {dataset}: {err}', file=sys.stderr)
            continue
        st = stamp(args.device)
        rows, notes = [], []
        for name in models:
            if len(graph.features) < get_model_class(name).min_modalities:
                notes.append(f'{name}: skipped, {dataset} has no item features')
                continue
            print(f'{dataset}: {name} ...', file=sys.stderr, flush=True)
            try:
                rows.append(time_model(name, dataset, graph, args))
            except Exception as err:  # noqa: BLE001 - recorded in the table, the run goes on
                traceback.print_exc()
                rows.append({'model': name, 'dataset': dataset, 'device': args.device,
                             'status': f'failed: {type(err).__name__}: {err}'[:200]})
            r = rows[-1]
            print(f'  epoch {r.get("epoch s (median 2..n)")} s, eval {r.get("validation pass s")}'
                  f' s, peak RSS {r.get("peak RSS MiB")}', file=sys.stderr, flush=True)
        add_ratios(rows)
        print(f'wrote {write_outputs(rows, dataset, args, st, notes)}', file=sys.stderr)


if __name__ == '__main__':
    main()
