"""MMSSL's bounded critic (``critic_columns=C``) against the paper's full-width critic.

1. Accuracy: MMSSL with its preset on a dataset (default tiktok-mini), the same seeds and a
   fixed number of epochs (no early stopping), for the full critic and each ``C``; reports
   VALIDATION Recall@20 per epoch and at the best epoch (the test split is not looked at).
   Each run is a fresh process (``--parallel`` at a time, one thread each).
2. Memory on a large catalogue (default 200,000 items): the critic's parameters and the
   estimate of :func:`mmssl_pyg.nn.critic_memory.critic_memory_estimate` for each width, and a
   MEASURED critic step (peak RSS, seconds) for each ``C`` on a synthetic random graph
   (TIMING / MEMORY ONLY); the full width is refused by the memory check, so only its estimate
   is shown.

Writes ``benchmarks/results/scaling/critic_columns.{csv,md}`` (stamped). Usage::

    python -m benchmarks.critic_columns --columns 512 1024 --seeds 0 1 --epochs 10
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import _common as C

HERE = Path(__file__).resolve().parent
OUT = HERE / 'results' / 'scaling'


def _vm(field: str = 'VmHWM') -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(f'{field}:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def accuracy_worker(dataset: str, columns: int | None, seed: int, epochs: int,
                    result: str) -> None:
    import torch

    from mmssl_pyg.training import Trainer
    from mmssl_pyg.training.device import seed_everything
    from mmssl_pyg.training.run import RunRequest, prepare_run

    torch.set_num_threads(1)
    overrides = [f'epochs={epochs}', 'patience=0', f'seed={seed}', 'progress=false',
                 'device=cpu', 'num_threads=1']
    if columns:
        overrides.append(f'model.critic_columns={columns}')
    run = prepare_run(RunRequest(model='mmssl', dataset=dataset, overrides=overrides))
    model, graph, options = run.model, run.graph, run.options
    trainer = Trainer(model, graph, options.train)
    # validation only: fit() would also test the selected epoch, which is not reported here
    from mmssl_pyg.training import evaluate
    seed_everything(seed)
    trainer.sampler.generator.manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        rec = trainer._train_epoch(epoch)
        val = evaluate(model, graph, 'val', options.train.ks)
        history.append({'epoch': epoch, 'val_recall@20': val['recall@20'],
                        'val_ndcg@20': val['ndcg@20'], 'epoch_seconds': rec['epoch_seconds'],
                        'critic_loss': rec.get('train/critic_loss'),
                        'loss': rec['train/loss']})
    Path(result).write_text(json.dumps({
        'dataset': dataset, 'columns': model.critic_width, 'full': columns is None,
        'num_items': graph.num_items, 'seed': seed, 'epochs': epochs, 'history': history,
        'critic_params': sum(p.numel() for p in model.critic_parameters()),
        'peak_rss_mb': _vm()}))


def memory_worker(items: int, columns: int, users: int, result: str) -> None:
    import torch

    from benchmarks.scale_distributed import synthetic_graph
    from mmssl_pyg.models.mmssl import MMSSL
    from mmssl_pyg.training import BPRSampler

    torch.set_num_threads(1)
    graph = synthetic_graph(users, items, 10, [32, 16], 0)
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=64, topk_rate=10 / items, critic_columns=columns)
    opt = torch.optim.Adam(model.critic_parameters(), lr=3e-4, betas=(0.5, 0.9))
    sampler = BPRSampler(graph, 1024, seed=0)
    model.train()
    before = _vm('VmRSS')
    times = []
    for _ in range(3):
        batch = sampler.sample()
        t0 = time.perf_counter()
        opt.zero_grad()
        out = model.critic_loss(batch)
        out['loss'].backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    Path(result).write_text(json.dumps({
        'items': items, 'users': users, 'columns': columns,
        'critic_params': sum(p.numel() for p in model.critic_parameters()),
        'rss_before_steps_mb': before, 'peak_rss_mb': _vm(),
        'critic_step_s': sorted(times)[1]}))


def _run(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.Popen(cmd, env=env, cwd=C.REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('mode', nargs='?', default='all', choices=['all', 'acc', 'mem'])
    parser.add_argument('--dataset', default='tiktok-mini')
    parser.add_argument('--columns', type=int, nargs='+', default=[512, 1024])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--parallel', type=int, default=2)
    parser.add_argument('--mem-items', type=int, default=200_000)
    parser.add_argument('--mem-users', type=int, default=10_000)
    parser.add_argument('--mem-columns', type=int, nargs='+', default=[1024, 4096, 16384])
    parser.add_argument('--timeout', type=int, default=1800)
    parser.add_argument('--out', default=str(OUT), help='output folder')
    parser.add_argument('--worker', nargs='+', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == 'acc':
            ds, cols, seed, epochs, result = rest
            accuracy_worker(ds, int(cols) or None, int(seed), int(epochs), result)
        else:
            items, cols, users, result = rest
            memory_worker(int(items), int(cols), int(users), result)
        return 0

    import tempfile

    from mmssl_pyg.nn.critic_memory import critic_memory_estimate
    stamp = C.stamp('cpu', C.command_line())
    load = os.getloadavg()
    script = ['-m', 'benchmarks.critic_columns']  # a worker process, from the repository root
    acc, mem = [], []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        if args.mode in ('all', 'acc'):
            for seed in args.seeds:
                for cols in [0, *args.columns]:
                    res = Path(tmp) / f'acc-{cols}-{seed}.json'
                    jobs.append(([sys.executable, *script, '--worker', 'acc', args.dataset,
                                  str(cols), str(seed), str(args.epochs), str(res)], res, acc))
        if args.mode in ('all', 'mem'):
            for cols in args.mem_columns:
                res = Path(tmp) / f'mem-{cols}.json'
                jobs.append(([sys.executable, *script, '--worker', 'mem', str(args.mem_items),
                              str(cols), str(args.mem_users), str(res)], res, mem))
        running: list = []
        t0 = time.perf_counter()
        while jobs or running:
            while jobs and len(running) < args.parallel:
                cmd, res, sink = jobs.pop(0)
                running.append((_run(cmd), res, sink, ' '.join(cmd[4:-1]), time.perf_counter()))
            time.sleep(2)
            for item in list(running):
                proc, res, sink, what, started = item
                if proc.poll() is None:
                    if time.perf_counter() - started > args.timeout:
                        proc.kill()  # reported as failed below, once it has exited
                    continue
                running.remove(item)
                if proc.returncode == 0 and res.is_file():
                    sink.append(json.loads(res.read_text()))
                    print(f'[{time.perf_counter() - t0:.0f} s] done: {what}', flush=True)
                else:
                    print(f'failed: {what}\n{proc.stderr.read()[-2000:]}', flush=True)
    write(acc, mem, args, stamp, load, critic_memory_estimate, Path(args.out))
    return 0


def write(acc, mem, args, stamp, load, estimate, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in acc:
        best = max(r['history'], key=lambda h: h['val_recall@20'])
        rows.append({'part': 'accuracy', 'dataset': r['dataset'], 'num_items': r['num_items'],
                     'critic_columns': 'all' if r['full'] else r['columns'],
                     'seed': r['seed'], 'epochs': r['epochs'],
                     'best_epoch': best['epoch'], 'best_val_recall@20': best['val_recall@20'],
                     'last_val_recall@20': r['history'][-1]['val_recall@20'],
                     'val_recall@20_per_epoch': ' '.join(f'{h["val_recall@20"]:.4f}'
                                                         for h in r['history']),
                     'critic_params': r['critic_params'],
                     'sec_per_epoch': sum(h['epoch_seconds'] for h in r['history'])
                     / len(r['history']), 'peak_rss_mb': r['peak_rss_mb']})
    rows.sort(key=lambda r: (str(r['critic_columns']), r['seed']))
    mrows = []
    for cols in [None, *sorted({m['columns'] for m in mem} | set(args.mem_columns))]:
        width = args.mem_items if cols is None else cols
        params, need = estimate(width, 2 * 1024)
        measured = next((m for m in mem if m['columns'] == cols), None)
        mrows.append({'part': 'memory', 'num_items': args.mem_items,
                      'critic_columns': 'all' if cols is None else cols,
                      'critic_params': params, 'estimated_critic_step_gib': need / 2**30,
                      'measured_peak_rss_mb': None if measured is None
                      else measured['peak_rss_mb'],
                      'measured_critic_step_s': None if measured is None
                      else measured['critic_step_s'],
                      'users': None if measured is None else measured['users']})
    keys = sorted({k for r in rows + mrows for k in r}, key=lambda k: (k != 'part', k))
    with open(out / 'critic_columns.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows + mrows)

    def fmt(v):
        if isinstance(v, float):
            return f'{v:.4f}' if abs(v) < 10 else f'{v:,.0f}'
        return f'{v:,}' if isinstance(v, int) else str(v)

    lines = ['# MMSSL critic_columns: bounded critic vs the full-width critic', '',
             *[f'- {x}' for x in C.stamp_lines(stamp)],
             f'- load average at the start (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / '
             f'{load[2]:.2f} (shared 2-core machine: seconds are noisy)', '',
             f'## Accuracy ({args.dataset}, preset settings, {args.epochs} epochs, no early '
             f'stopping, VALIDATION Recall@20; the test split is not used)', '']
    cols = ['critic_columns', 'seed', 'critic_params', 'best_epoch', 'best_val_recall@20',
            'last_val_recall@20', 'sec_per_epoch', 'val_recall@20_per_epoch']
    lines += ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    lines += ['| ' + ' | '.join(fmt(r[c]) for c in cols) + ' |' for r in rows]
    by: dict = {}
    for r in rows:
        by.setdefault(str(r['critic_columns']), []).append(r)
    lines += ['', 'Mean over seeds:', '', '| critic_columns | seeds | mean best val Recall@20 '
              '| mean last val Recall@20 |', '|---|---|---|---|']
    for k, rs in by.items():
        lines.append(f'| {k} | {len(rs)} | '
                     f'{sum(r["best_val_recall@20"] for r in rs) / len(rs):.4f} | '
                     f'{sum(r["last_val_recall@20"] for r in rs) / len(rs):.4f} |')
    lines += ['', f'## Memory on a {args.mem_items:,}-item catalogue (SYNTHETIC random graph, '
              f'{args.mem_users:,} users, TIMING / MEMORY ONLY)', '',
              'critic_params and the estimate (weights, gradients, Adam moments and the '
              'activations of 2 x 1,024 rows) are computed; the peak RSS (whole process: graph, '
              'model, one full forward) and the median of 3 critic steps are measured (a '
              "critic step includes the model's full-graph forward and the top-k search over "
              'all items, which dominate it). The full width is refused by the memory check, '
              'so only its estimate exists.', '']
    mcols = ['critic_columns', 'critic_params', 'estimated_critic_step_gib',
             'measured_peak_rss_mb', 'measured_critic_step_s']
    lines += ['| ' + ' | '.join(mcols) + ' |', '|' + '---|' * len(mcols)]
    lines += ['| ' + ' | '.join('' if r[c] is None else fmt(r[c]) for c in mcols) + ' |'
              for r in mrows]
    (out / 'critic_columns.md').write_text('\n'.join(lines) + '\n')
    print(f'wrote {out / "critic_columns.md"}')


if __name__ == '__main__':
    sys.exit(main())
