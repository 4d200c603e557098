"""MMSSL's training speed beside LightGCN's, in one process, with a per-part breakdown.

For each MMSSL configuration (the preset default, and the paper's exact estimator:
``gp_samples=None``, ``critic_every=1``) this times whole training epochs through the
library's :class:`~mmssl_pyg.training.Trainer` (the same code path as ``mmssl-pyg train``) and
reports seconds per mini-batch, seconds per epoch, and the epoch's ratio to a LightGCN epoch
timed in the same process. The breakdown wraps the model's methods with timers: full-graph
forward (Eqs. 1-2, 8-12), generated rows (Eq. 3), top-k search, real rows (Eq. 5), critic
projection, critic head, gradient penalty, the critic and model backward + optimiser steps, and
one validation pass. Times are wall-clock on the given number of threads; run it on a quiet
machine. Writes ``benchmarks/results/speed/speed.{json,md}`` (stamped).

Usage::

    python -m benchmarks.speed --dataset tiktok --threads 2            # full epochs
    python -m benchmarks.speed --dataset tiktok-mini --paper-batches 2  # quick check
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict
from pathlib import Path

import torch

from benchmarks._common import _rss_mb, stamp, stamp_lines, write_json
from mmssl_pyg.training import Trainer
from mmssl_pyg.training.evaluator import evaluate
from mmssl_pyg.training.run import RunRequest, load_graph, prepare_run

HERE = Path(__file__).resolve().parent

OUT = HERE / 'results' / 'speed'
#: MMSSL configurations: name -> overrides on top of the preset
CONFIGS = {
    'default': [],
    'paper estimator': ['gp_samples=null', 'adv_samples=null', 'critic_every=1'],
}
#: (label, owner attribute path, method) wrapped with a timer; inclusive times
PARTS = [
    ('full-graph forward (encode)', '', 'encode'),
    ('generated rows (Eq. 3)', 'generator', 'relation_rows'),
    ('top-k search', '', '_collect_topk'),
    ('real rows (Eq. 5)', '', 'real_rows'),
    ('critic projection W1 x', 'critic', 'project'),
    ('critic head', 'critic', 'head'),
    ('critic_loss (forward, incl. GP)', '', 'critic_loss'),
    ('loss (forward, incl. L_G)', '', 'loss'),
]


class Timers:
    def __init__(self, sync):
        self.total = defaultdict(float)
        self.calls = defaultdict(int)
        self.sync = sync

    @contextlib.contextmanager
    def time(self, label):
        self.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.total[label] += time.perf_counter() - t0
            self.calls[label] += 1

    def wrap(self, obj, name, label):
        fn = getattr(obj, name)

        def timed(*args, **kwargs):
            with self.time(label):
                return fn(*args, **kwargs)
        setattr(obj, name, timed)


def _sync_for(device):
    if device.type == 'cuda':
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _trainer(model_name, graph, dataset, overrides, device, threads, batches=None):
    """A trainer of the run assembled on ``graph`` (preset <- ``overrides``, seed 0)."""
    updates = {'num_threads': threads, 'batches_per_epoch': batches}
    request = RunRequest(model=model_name, dataset=dataset, seed=0, device=device,
                         progress=False, overrides=[*overrides, *(
                             f'train.{k}={v}' for k, v in updates.items() if v is not None)])
    run = prepare_run(request, data=(graph, None), preset_dataset=dataset)
    return Trainer(run.model, graph, run.options.train), run.options


def instrument(trainer, timers: Timers):
    """Wrap the parts of :data:`PARTS`, the gradient penalty and the optimiser steps of
    ``trainer`` with timers; returns a function that removes the module-level wrapper."""
    import mmssl_pyg.models.mmssl as mmssl_module
    model = trainer.model
    for label, owner, method in PARTS:
        obj = model if not owner else getattr(model, owner)
        if obj is not None and hasattr(obj, method):
            timers.wrap(obj, method, label)
    gp = mmssl_module.projected_gradient_penalty

    def timed_gp(*a, **kw):
        with timers.time('gradient penalty (Eq. 7)'):
            return gp(*a, **kw)
    mmssl_module.projected_gradient_penalty = timed_gp
    step = trainer._backward_step

    def timed_step(loss, optimizer, *a):
        label = ('critic backward + Adam step' if optimizer is trainer.critic_optimizer
                 else 'model backward + AdamW step')
        with timers.time(label):
            return step(loss, optimizer, *a)
    trainer._backward_step = timed_step

    def restore():
        mmssl_module.projected_gradient_penalty = gp
    return restore


def time_epochs(trainer, epochs):
    """Seconds of each of ``epochs`` training epochs (the trainer's own epoch loop)."""
    out = []
    for e in range(1, epochs + 1):
        sync = _sync_for(trainer.device)
        sync()
        t0 = time.perf_counter()
        trainer._train_epoch(e)
        sync()
        out.append(time.perf_counter() - t0)
    return out


def run(args):
    graph = load_graph(args.dataset)
    device = torch.device(args.device if args.device != 'auto' else
                          ('cuda' if torch.cuda.is_available() else 'cpu'))
    result = {'dataset': args.dataset, 'threads': args.threads, 'device': str(device),
              'stamp': stamp(str(device)), 'configs': {}}
    # LightGCN: one warm-up epoch, then the timed ones
    lg, _ = _trainer('lightgcn', graph, args.dataset, [], str(device), args.threads)
    time_epochs(lg, 1)
    lg_epoch = min(time_epochs(lg, args.lightgcn_epochs))
    result['lightgcn_epoch_seconds'] = lg_epoch
    result['lightgcn_batches_per_epoch'] = len(lg.sampler)
    print(f'lightgcn: {lg_epoch:.3f} s per epoch ({len(lg.sampler)} batches)', flush=True)
    del lg
    for name in args.configs:
        batches = args.paper_batches if name == 'paper estimator' else args.batches
        trainer, opts = _trainer('mmssl', graph, args.dataset, CONFIGS[name], str(device),
                                 args.threads, batches)
        n = len(trainer.sampler)
        timers = Timers(_sync_for(trainer.device))
        model = trainer.model
        restore = instrument(trainer, timers)
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        try:
            seconds = time_epochs(trainer, args.epochs)
        finally:
            restore()
        with timers.time('validation (full ranking)'):
            evaluate(model, graph, 'val', ks=opts.train.ks)
        epoch = min(seconds)
        batches_timed = n * args.epochs
        per_batch = epoch / n
        full_epoch = per_batch * result['lightgcn_batches_per_epoch'] \
            if batches is not None else epoch
        rec = {
            'overrides': CONFIGS[name],
            'model_options': {k: getattr(model, k, None)
                              for k in ('gp_samples', 'adv_samples', 'critic_columns')},
            'critic_every': getattr(opts.train, 'critic_every', 1),
            'batches_per_epoch_timed': n,
            'epoch_seconds_measured': seconds,
            'seconds_per_batch': per_batch,
            'epoch_seconds': full_epoch,
            'epoch_ratio_to_lightgcn': full_epoch / lg_epoch,
            'breakdown_seconds_per_batch': {k: v / batches_timed for k, v in timers.total.items()
                                            if not k.startswith('validation')},
            'validation_seconds': timers.total['validation (full ranking)'],
            'peak_rss_mb': _rss_mb('VmHWM'),
            'peak_gpu_mb': (torch.cuda.max_memory_allocated(device) / 2**20
                            if device.type == 'cuda' else None),
        }
        result['configs'][name] = rec
        print(f'mmssl [{name}]: {per_batch:.3f} s per batch, {full_epoch:.1f} s per epoch, '
              f'{rec["epoch_ratio_to_lightgcn"]:.1f}x LightGCN', flush=True)
        del trainer, model
    if 'default' in result['configs'] and 'paper estimator' in result['configs']:
        result['speedup_default_vs_paper_estimator'] = (
            result['configs']['paper estimator']['seconds_per_batch']
            / result['configs']['default']['seconds_per_batch'])
    return result


def report(result) -> str:
    lines = [f'# MMSSL training speed ({result["dataset"]}, {result["device"]}, '
             f'{result["threads"]} threads)', '']
    lines += [f'- {x}' for x in stamp_lines(result['stamp'])]
    lines += ['', f'LightGCN: {result["lightgcn_epoch_seconds"]:.3f} s per epoch '
              f'({result["lightgcn_batches_per_epoch"]} mini-batches).', '',
              '| MMSSL configuration | s / mini-batch | s / epoch | epoch / LightGCN epoch | '
              'validation pass (s) | peak RSS (MB) | peak GPU (MB) |',
              '|---|---|---|---|---|---|---|']
    for name, rec in result['configs'].items():
        gpu = '-' if rec['peak_gpu_mb'] is None else f'{rec["peak_gpu_mb"]:.0f}'
        timed = '' if rec['batches_per_epoch_timed'] == result['lightgcn_batches_per_epoch'] \
            else f' (from {rec["batches_per_epoch_timed"]} batches)'
        mo = rec['model_options']
        lines.append(f'| {name} (critic_every={rec["critic_every"]}, '
                     f'gp_samples={mo.get("gp_samples")}, adv_samples={mo.get("adv_samples")}) | '
                     f'{rec["seconds_per_batch"]:.3f} | {rec["epoch_seconds"]:.1f}{timed} | '
                     f'{rec["epoch_ratio_to_lightgcn"]:.1f} | {rec["validation_seconds"]:.2f} | '
                     f'{rec["peak_rss_mb"]:.0f} | {gpu} |')
    if 'speedup_default_vs_paper_estimator' in result:
        lines += ['', f'Default vs paper estimator: '
                  f'{result["speedup_default_vs_paper_estimator"]:.1f}x faster per mini-batch.']
    lines += ['', '## Where a mini-batch goes (seconds per mini-batch, inclusive; nested parts '
              'overlap)', '']
    names = list(result['configs'])
    labels = []
    for name in names:
        labels += [k for k in result['configs'][name]['breakdown_seconds_per_batch']
                   if k not in labels]
    lines += ['| part | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(names)]
    for label in labels:
        cells = [result['configs'][n]['breakdown_seconds_per_batch'].get(label) for n in names]
        lines.append(f'| {label} | ' + ' | '.join('-' if c is None else f'{c:.4f}'
                                                  for c in cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataset', default='tiktok')
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--epochs', type=int, default=1, help='timed MMSSL epochs (min is kept)')
    p.add_argument('--lightgcn-epochs', type=int, default=3)
    p.add_argument('--paper-batches', type=int, default=None,
                   help='time the paper estimator on this many mini-batches only (its epoch '
                        'is then extrapolated)')
    p.add_argument('--batches', type=int, default=None,
                   help='time every MMSSL configuration on this many mini-batches per epoch '
                        '(exploration; the epoch is extrapolated)')
    p.add_argument('--add', nargs='+', default=[], metavar='NAME:KEY=VALUE,...',
                   help='extra MMSSL configurations, e.g. "fast:gp_samples=64,critic_every=8"')
    p.add_argument('--configs', nargs='+', default=None,
                   help=f'configurations to time (default: {list(CONFIGS)} plus --add)')
    p.add_argument('--out', type=Path, default=OUT)
    args = p.parse_args(argv)
    for spec in args.add:
        name, _, kv = spec.partition(':')
        CONFIGS[name] = [x for x in kv.split(',') if x]
    if args.configs is None:
        args.configs = list(CONFIGS)
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f'unknown configuration(s) {unknown}; known: {list(CONFIGS)}')
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = '' if args.dataset == 'tiktok' and args.device == 'cpu' else \
        f'-{args.dataset}-{args.device.replace(":", "")}'
    write_json(args.out / f'speed{tag}.json', result)
    (args.out / f'speed{tag}.md').write_text(report(result))
    print(report(result))


if __name__ == '__main__':
    main()
