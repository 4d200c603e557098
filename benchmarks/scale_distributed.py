"""MMSSL on large SYNTHETIC catalogues with 1 and 2 data-parallel processes: TIMING ONLY.

For every user count (items fixed, 200,000 by default) and process count, one run (a fresh
process, or ``torch.distributed.run --nproc_per_node=P --standalone`` for P > 1, gloo, one
thread per process) builds a random interaction graph (``--per-user`` distinct items per user,
uniform), random item features and MMSSL with a bounded critic (``critic_columns``), then:

1. times ``--warmup`` + ``--steps`` optimiser steps of the library's Trainer (one step = one
   mini-batch per process: critic step, model step, gradient all-reduce); the first
   ``--warmup`` are discarded;
2. fills every user's generated neighbours (random ids, as after a full epoch), times the
   epoch's end as the Trainer runs it (all_gather of the neighbours, the graph swap, the replica
   digest check), which a few-step epoch would understate;
3. reads the peak resident set (VmHWM) of every process.

Seconds per epoch are EXTRAPOLATED: ``ceil(ceil(|train| / batch) / P)`` steps x the median
timed step + the measured epoch end. Validation (full ranking of 200,000 items per user) is not
timed. The graphs and features are random: nothing here says anything about accuracy.

Writes ``benchmarks/results/scaling/distributed_scale.{csv,md}`` stamped with the command, git
commit, machine and date. Usage::

    python -m benchmarks.scale_distributed                        # 10k .. 1M users, 1 and 2
    python -m benchmarks.scale_distributed --users 10000 --procs 1 2 --steps 2   # quick
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import _common as C

HERE = Path(__file__).resolve().parent
OUT = HERE / 'results' / 'scaling'


# ---------------------------------------------------------------------------------------------
# worker (one process of one run)


def _vm(field: str) -> float:
    """``VmHWM`` (peak) / ``VmRSS`` (current) of this process in MiB."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(f'{field}:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def synthetic_graph(num_users: int, num_items: int, per_user: int, dims: list[int], seed: int):
    import torch

    from mmssl_pyg.data.graph import RecGraph
    g = torch.Generator().manual_seed(seed)
    # per_user distinct items per user: a random offset plus a random stride, mod num_items
    start = torch.randint(0, num_items, (num_users, 1), generator=g)
    stride = torch.randint(1, max(2, num_items // per_user), (num_users, 1), generator=g)
    items = (start + stride * torch.arange(per_user).view(1, -1)) % num_items
    users = torch.arange(num_users).repeat_interleave(per_user)
    ei = torch.stack([users, items.reshape(-1)])
    held = ei[:, :: per_user * 100]  # a few held-out pairs (unused: no evaluation is timed)
    feats = {f'm{m}': torch.rand(num_items, d, generator=g) for m, d in enumerate(dims)}
    return RecGraph(num_users, num_items, ei, held, held, feats, 'synthetic')


def worker(args) -> None:
    import torch

    from mmssl_pyg.models.mmssl import MMSSL
    from mmssl_pyg.training import TrainConfig, Trainer
    from mmssl_pyg.training.distributed import init_distributed, state_digests

    torch.set_num_threads(args.threads)
    args.users = args.users[0]  # one user count per worker
    ctx, device = init_distributed('cpu')
    rank, world = ctx.rank, ctx.world_size
    t0 = time.perf_counter()
    graph = synthetic_graph(args.users, args.items, args.per_user, args.dims, args.seed)
    torch.manual_seed(args.seed)
    k = args.topk
    model = MMSSL(graph, embedding_dim=args.embedding_dim, num_heads=args.heads,
                  topk_rate=k / args.items, critic_columns=args.critic_columns,
                  critic_batch_size=args.batch_size)
    assert model.k == k, (model.k, k)
    steps = args.warmup + args.steps
    cfg = TrainConfig(batch_size=args.batch_size, batches_per_epoch=steps * world, epochs=1,
                      seed=args.seed, device=device, progress=False, lr=5.5e-4)
    trainer = Trainer(model, graph, cfg, distributed=ctx)
    build_s = time.perf_counter() - t0
    rss_built = _vm('VmRSS')

    # 1. optimiser steps: time each one through the trainer's own step (one-step epochs would
    # add the epoch's end each time, so wrap the sampler instead)
    step_times = []
    original = trainer._backward_step
    marks = []

    def timed_backward(*a, **kw):
        original(*a, **kw)
        marks.append(time.perf_counter())

    trainer._backward_step = timed_backward
    model.train()
    n = len(trainer.sampler)
    batches = trainer._draw_epoch(n)
    start = time.perf_counter()
    for step in range(math.ceil(n / world)):
        batch = trainer._next_batch(batches, step)
        contributors = min(world, n - step * world)
        trainer.critic_optimizer.zero_grad(set_to_none=True)
        out = model.critic_loss(batch)
        trainer._check_finite(out, 'critic_loss', 1, step, n)
        trainer._backward_step(out['loss'], trainer.critic_optimizer, None,
                               trainer._critic_params, contributors)
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.critic_optimizer.zero_grad(set_to_none=True)
        out = model.loss(batch)
        trainer._check_finite(out, 'loss', 1, step, n)
        trainer._backward_step(out['loss'], trainer.optimizer, None, trainer._model_params,
                               contributors)
        step_times.append(marks[-1] - start)
        start = marks[-1]
    timed = step_times[args.warmup:]

    # 2. the end of a full epoch: every user has generated neighbours; this process holds
    # its share of them (users rank, rank + W, ...), as after an epoch of data-parallel steps
    g = torch.Generator().manual_seed(args.seed + rank)
    users = torch.arange(rank, args.users, world)
    model.graphs.pending = [(users, [torch.randint(0, args.items, (users.numel(), k), generator=g,
                                             dtype=torch.int32)
                               for _ in range(model.num_modalities)])]
    ctx.barrier()
    t1 = time.perf_counter()
    if ctx.enabled:
        model.gather_epoch_state(ctx.all_gather)
        ctx.average_buffers(model)
    t2 = time.perf_counter()
    model.on_epoch_end(1)
    t3 = time.perf_counter()
    digests = ctx.all_gather_object(state_digests(model)) if ctx.enabled else None
    t4 = time.perf_counter()
    edges = int(model.modality_edge_index(0).size(1))

    # one short forward after the swap: the step cost with the full generated graphs
    batch = trainer._next_batch(batches, 0)
    t5 = time.perf_counter()
    out = model.critic_loss(batch)
    out = model.loss(batch)
    out['loss'].backward()
    after_swap_s = time.perf_counter() - t5

    result = {
        'rank': rank, 'world': world, 'users': args.users, 'items': args.items,
        'train_edges': int(graph.num_train), 'k': k, 'modalities': model.num_modalities,
        'critic_columns': model.critic_width, 'embedding_dim': args.embedding_dim,
        'batch_size': args.batch_size, 'threads': args.threads,
        'build_s': build_s, 'step_s': timed, 'warmup_s': step_times[:args.warmup],
        'gather_s': t2 - t1, 'swap_s': t3 - t2, 'digest_s': t4 - t3,
        'step_after_swap_s': after_swap_s, 'generated_edges_per_modality': edges,
        'replicas_agree': None if digests is None else all(d == digests[0] for d in digests),
        'rss_built_mb': rss_built, 'peak_rss_mb': _vm('VmHWM'),
        'params': sum(p.numel() for p in model.parameters()),
        'critic_params': sum(p.numel() for p in model.critic_parameters()),
    }
    Path(args.result).with_suffix(f'.rank{rank}.json').write_text(json.dumps(result))
    ctx.shutdown()


# ---------------------------------------------------------------------------------------------
# driver


def _mem_available_mb() -> float:
    for line in Path('/proc/meminfo').read_text().splitlines():
        if line.startswith('MemAvailable:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def run_one(args, users: int, procs: int, tmp: Path) -> dict | None:
    result = tmp / f'u{users}-p{procs}.json'
    worker_args = ['worker', '--users', str(users), '--items', str(args.items),
                   '--per-user', str(args.per_user), '--dims', *map(str, args.dims),
                   '--embedding-dim', str(args.embedding_dim), '--heads', str(args.heads),
                   '--topk', str(args.topk), '--critic-columns', str(args.critic_columns),
                   '--batch-size', str(args.batch_size), '--steps', str(args.steps),
                   '--warmup', str(args.warmup), '--threads', str(args.threads),
                   '--seed', str(args.seed), '--result', str(result)]
    module = ['-m', 'benchmarks.scale_distributed']  # workers run from the repository root
    if procs == 1:
        cmd = [sys.executable, *module, *worker_args]
    else:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={procs}',
               '--standalone', *module, *worker_args]
    env = {**os.environ, 'OMP_NUM_THREADS': str(args.threads)}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=C.REPO, capture_output=True, text=True,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f'  users={users:,} procs={procs}: timed out after {args.timeout} s', flush=True)
        return {'users': users, 'procs': procs, 'status': f'timed out ({args.timeout} s)'}
    wall = time.perf_counter() - t0
    ranks = [json.loads(p.read_text()) for p in sorted(tmp.glob(f'{result.stem}.rank*.json'))]
    if proc.returncode != 0 or len(ranks) != procs:
        tail = (proc.stderr or proc.stdout)[-1500:]
        print(f'  users={users:,} procs={procs}: failed (rc {proc.returncode})\n{tail}',
              flush=True)
        return {'users': users, 'procs': procs, 'status': f'failed (rc {proc.returncode})'}
    return summarise(ranks, procs, wall)


def summarise(ranks: list[dict], procs: int, wall: float) -> dict:
    r0 = ranks[0]
    # a step ends when every process has averaged its gradients: take the slowest rank
    step = max(statistics.median(r['step_s']) for r in ranks)
    batches = math.ceil(r0['train_edges'] / r0['batch_size'])
    steps = math.ceil(batches / procs)
    end = max(r['gather_s'] + r['swap_s'] + r['digest_s'] for r in ranks)
    return {
        'users': r0['users'], 'items': r0['items'], 'procs': procs, 'status': 'ok',
        'train_edges': r0['train_edges'], 'batches_per_epoch': batches,
        'steps_per_epoch': steps, 'sec_per_step': step,
        'steps_timed': len(r0['step_s']),
        'epoch_end_s': end, 'gather_s': max(r['gather_s'] for r in ranks),
        'swap_s': max(r['swap_s'] for r in ranks),
        'digest_s': max(r['digest_s'] for r in ranks),
        'sec_per_epoch_extrapolated': steps * step + end,
        'step_after_swap_s': max(r['step_after_swap_s'] for r in ranks),
        'build_s': max(r['build_s'] for r in ranks),
        'peak_rss_mb_per_proc': max(r['peak_rss_mb'] for r in ranks),
        'peak_rss_mb_all_procs': sum(r['peak_rss_mb'] for r in ranks),
        'rss_after_build_mb': max(r['rss_built_mb'] for r in ranks),
        'params': r0['params'], 'critic_params': r0['critic_params'],
        'critic_columns': r0['critic_columns'], 'k': r0['k'],
        'generated_edges_per_modality': r0['generated_edges_per_modality'],
        'replicas_agree': r0['replicas_agree'], 'run_wall_s': wall,
    }


COLUMNS = ['users', 'items', 'procs', 'status', 'train_edges', 'batches_per_epoch',
           'steps_per_epoch', 'sec_per_step', 'steps_timed', 'epoch_end_s', 'gather_s',
           'swap_s', 'digest_s', 'sec_per_epoch_extrapolated', 'step_after_swap_s', 'build_s',
           'peak_rss_mb_per_proc', 'peak_rss_mb_all_procs', 'rss_after_build_mb', 'params',
           'critic_params', 'critic_columns', 'k', 'generated_edges_per_modality',
           'replicas_agree', 'run_wall_s']


def _fmt(v) -> str:
    if isinstance(v, float):
        return f'{v:,.0f}' if abs(v) >= 100 else f'{v:.2f}'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'{v:,}'
    return '' if v is None else str(v)


def write(rows: list[dict], args, stamp: dict, cuts: list[str], load: tuple) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / 'distributed_scale.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in COLUMNS})
    shown = ['users', 'procs', 'status', 'train_edges', 'steps_per_epoch', 'sec_per_step',
             'epoch_end_s', 'sec_per_epoch_extrapolated', 'peak_rss_mb_per_proc',
             'peak_rss_mb_all_procs', 'build_s', 'replicas_agree']
    lines = ['# MMSSL data-parallel scaling on SYNTHETIC graphs: TIMING ONLY', '',
             *[f'- {x}' for x in C.stamp_lines(stamp)],
             f'- load average when the sweep started (1/5/15 min): '
             f'{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (the 2 cores are shared with other '
             f'jobs: timings are noisy)',
             '',
             f'Random graphs: {args.items:,} items, {args.per_user} distinct random items per '
             f'user, {len(args.dims)} modalities of random features '
             f'({", ".join(map(str, args.dims))}-d); MMSSL embedding_dim={args.embedding_dim}, '
             f'{args.heads} heads, '
             f'k={args.topk} generated neighbours per user and modality, critic_columns='
             f'{args.critic_columns}, batch {args.batch_size} users; gloo on CPU, '
             f'{args.threads} thread(s) per process.',
             '',
             f'`sec_per_step`: median of {args.steps} timed optimiser steps (after {args.warmup} '
             f'warm-up), the slowest process; one step = one mini-batch per process (critic '
             f'step + model step + gradient all-reduce). `sec_per_epoch_extrapolated` = '
             f'steps_per_epoch x sec_per_step + epoch_end_s, where steps_per_epoch = '
             f'ceil(ceil(|train| / batch) / procs) and epoch_end_s is MEASURED with every '
             f"user's neighbours filled (all_gather + graph swap + replica digest check). Not "
             f'timed: validation/test ranking. `peak_rss_mb_per_proc`: VmHWM of the largest '
             f'process; `_all_procs`: their sum.', '',
             '| ' + ' | '.join(shown) + ' |', '|' + '---|' * len(shown)]
    for r in rows:
        lines.append('| ' + ' | '.join(_fmt(r.get(c)) for c in shown) + ' |')
    if cuts:
        lines += ['', 'Cut from the sweep:', *[f'- {c}' for c in cuts]]
    lines += ['', 'Full columns in `distributed_scale.csv`.', '']
    (out / 'distributed_scale.md').write_text('\n'.join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('mode', nargs='?', default='sweep', choices=['sweep', 'worker'])
    parser.add_argument('--users', type=int, nargs='+',
                        default=[10_000, 100_000, 300_000, 1_000_000])
    parser.add_argument('--procs', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--items', type=int, default=200_000)
    parser.add_argument('--per-user', type=int, default=10)
    parser.add_argument('--dims', type=int, nargs='+', default=[32, 16])
    parser.add_argument('--embedding-dim', type=int, default=64)
    parser.add_argument('--heads', type=int, default=4)
    parser.add_argument('--topk', type=int, default=10)
    parser.add_argument('--critic-columns', type=int, default=4096)
    parser.add_argument('--batch-size', type=int, default=1024)
    parser.add_argument('--steps', type=int, default=3, help='timed steps per process')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=1, help='torch threads per process')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--timeout', type=int, default=600, help='seconds per run')
    parser.add_argument('--budget', type=float, default=900, help='seconds for the sweep')
    parser.add_argument('--mem-reserve-mb', type=float, default=3072,
                        help='memory left free when deciding whether a run fits')
    parser.add_argument('--out', default=str(OUT), help='output folder')
    parser.add_argument('--result', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == 'worker':
        worker(args)
        return 0

    import tempfile

    stamp = C.stamp('cpu', C.command_line())
    load = os.getloadavg()
    rows, cuts = [], []
    per_proc: dict[int, list[tuple[int, float]]] = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for users in sorted(args.users):
            for procs in sorted(args.procs):
                elapsed = time.perf_counter() - t_start
                if elapsed > args.budget:
                    cuts.append(f'users={users:,}, procs={procs}: the sweep\'s {args.budget:.0f} s '
                                f'budget was spent ({elapsed:.0f} s)')
                    continue
                # predicted peak per process: linear in users from this process count's runs
                # (from the 1-process runs before any 2-process run)
                pts = per_proc.get(procs) or per_proc.get(1) or []
                need = None
                if len(pts) >= 2:
                    (u0, m0), (u1, m1) = pts[-2], pts[-1]
                    need = m1 + (m1 - m0) / (u1 - u0) * (users - u1)
                elif len(pts) == 1:  # proportional to the nodes (users + items)
                    need = pts[0][1] * (users + args.items) / (pts[0][0] + args.items)
                avail = _mem_available_mb() - args.mem_reserve_mb
                if need is not None and need * procs > avail:
                    cuts.append(f'users={users:,}, procs={procs}: predicted peak '
                                f'{need * procs / 1024:.1f} GiB for {procs} process(es) > '
                                f'{avail / 1024:.1f} GiB available (MemAvailable minus '
                                f'{args.mem_reserve_mb / 1024:.0f} GiB reserve)')
                    print('  cut:', cuts[-1], flush=True)
                    continue
                print(f'users={users:,} procs={procs} ...', flush=True)
                row = run_one(args, users, procs, Path(tmp))
                rows.append(row)
                if row.get('status') == 'ok':
                    per_proc.setdefault(procs, []).append((users, row['peak_rss_mb_per_proc']))
                    print(f'  {row["sec_per_step"]:.2f} s/step, epoch ~'
                          f'{row["sec_per_epoch_extrapolated"]:.0f} s, peak '
                          f'{row["peak_rss_mb_per_proc"]:.0f} MiB/process, wall '
                          f'{row["run_wall_s"]:.0f} s', flush=True)
                write(rows, args, stamp, cuts, load)
    write(rows, args, stamp, cuts, load)
    print(f'wrote {Path(args.out) / "distributed_scale.md"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
