"""Data-parallel training (torchrun / gloo on CPU): collectives, sharded evaluation, the trainer
with an uneven number of batches, MMSSL's generated graphs gathered across processes, and
``mmssl-pyg train`` under ``torch.distributed.run`` against a single-process run."""
from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmssl_pyg.models import Batch, LightGCN
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.testing import synthetic_graph
from mmssl_pyg.training import BPRSampler, TrainConfig, Trainer, evaluate_embeddings
from mmssl_pyg.training.checkpoint import load_checkpoint
from mmssl_pyg.training.distributed import DistContext, state_digests

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class _CriticLightGCN(LightGCN):
    """LightGCN plus a linear critic: two optimisers, two backward passes per batch, and a
    BatchNorm whose running statistics differ between processes."""
    has_critic = True

    def __init__(self, graph, embedding_dim=8):
        super().__init__(graph, embedding_dim=embedding_dim)
        self.critic = torch.nn.Sequential(torch.nn.Linear(embedding_dim, 4),
                                          torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
        self.calls = 0

    def critic_parameters(self):
        return list(self.critic.parameters())

    def critic_loss(self, batch):
        self.calls += 1
        real = self.critic(self.item_emb(batch.pos).detach()).mean()
        fake = self.critic(self.item_emb(batch.neg).detach()).mean()
        return {'loss': fake - real, 'real': real}

    def loss(self, batch):
        out = super().loss(batch)
        for p in self.critic.parameters():
            p.requires_grad_(False)
        gen = -self.critic(self.item_emb(batch.neg)).mean()
        for p in self.critic.parameters():
            p.requires_grad_(True)
        out['loss'] = out['loss'] + 1e-2 * gen
        return out


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if 'seconds' not in k and 'memory' not in k}


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        ctx = DistContext.current()
        res = {'rank': ctx.rank, 'world': ctx.world_size, 'backend': ctx.backend}
        # variable-length all_gather (and bool tensors)
        res['gather'] = [t.tolist() for t in ctx.all_gather(torch.arange(rank + 2) + 10 * rank)]
        res['gather_bool'] = [t.tolist() for t in ctx.all_gather(torch.tensor([rank == 1]))]
        # gradient averaging: a gradient on both, on rank 1 only, on none; tiny buckets
        p, q, r = (torch.nn.Parameter(torch.zeros(n)) for n in (3, 2, 1))
        p.grad = torch.full((3,), rank + 1.0)
        q.grad = torch.full((2,), 4.0) if rank == 1 else None
        ctx.average_gradients([p, q, r], num_contributors=2, bucket_bytes=8)
        res['avg'] = [p.grad.tolist(), q.grad.tolist(), r.grad is None]
        # sharded evaluation == single-process evaluation
        graph = synthetic_graph(num_users=60, num_items=40)
        g = torch.Generator().manual_seed(0)
        u, i = torch.randn(60, 8, generator=g), torch.randn(40, 8, generator=g)
        res['eval_sharded'] = evaluate_embeddings(u, i, graph, 'val', (10, 20), distributed=ctx)
        res['eval_single'] = evaluate_embeddings(u, i, graph, 'val', (10, 20))
        # the trainer: 5 batches per epoch on 2 processes (3 + 2), replicas built differently
        torch.manual_seed(100 + rank)
        model = _CriticLightGCN(graph)
        cfg = TrainConfig(batch_size=16, batches_per_epoch=5, epochs=2, seed=3, progress=False,
                          device='cpu', ks=(10, 20))
        trainer = Trainer(model, graph, cfg, checkpoint_dir=Path(out_dir) / 'run')
        fit = trainer.fit()
        res['calls'] = model.calls
        res['history'] = [_strip(h) for h in fit.history]
        res['val'], res['test'] = fit.val, fit.test
        res['dist_log'] = trainer.dist_log
        res['digests'] = state_digests(model)
        # killed after epoch 1 and resumed (rebuilt from another seed): the same run
        for epochs, resume in ((1, False), (2, True)):
            torch.manual_seed(100 + rank + (1000 if resume else 0))
            cut = Trainer(_CriticLightGCN(graph), graph, TrainConfig(**{**cfg.to_dict(),
                                                                       'epochs': epochs}),
                          checkpoint_dir=Path(out_dir) / 'cut')
            resumed = cut.fit(resume=resume)
        res['resumed_history'] = [_strip(h) for h in resumed.history]
        res['resumed_test'] = resumed.test
        (Path(out_dir) / f'rank{rank}.json').write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_collectives_sharded_evaluation_and_trainer_on_two_processes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1))
    assert r0['world'] == r1['world'] == 2 and r0['backend'] == 'gloo'
    assert r0['gather'] == r1['gather'] == [[0, 1], [10, 11, 12]]
    assert r0['gather_bool'] == [[False], [True]]
    for r in (r0, r1):
        assert r['avg'] == [[1.5] * 3, [2.0] * 2, True]  # (1+2)/2, (0+4)/2, still None
        for k, v in r['eval_single'].items():
            # equal up to round-off: PyG sums each block's per-user values in float32
            assert r['eval_sharded'][k] == pytest.approx(v, rel=1e-6, abs=1e-9)
    assert r0['calls'] == 2 * 3 and r1['calls'] == 2 * 2  # batches 0,2,4 and 1,3 per epoch
    assert r0['history'] == r1['history'] and r0['val'] == r1['val']
    assert r0['test'] == r1['test'] and r0['digests'] == r1['digests']
    assert [h['dist/world_size'] for h in r0['history']] == [2, 2]
    for entry in r0['dist_log']:
        assert entry['digests'][0] == entry['digests'][1]
    # only rank 0 wrote the checkpoint, and it holds both processes' random states
    last = load_checkpoint(tmp_path / 'run' / 'last.pt')
    assert last['world_size'] == 2 and len(last['rng_ranks']) == 2
    assert not torch.equal(last['rng_ranks'][0]['torch'], last['rng_ranks'][1]['torch'])
    assert sorted(p.name for p in (tmp_path / 'run').iterdir()) == ['best.pt', 'last.pt']
    # a resumed data-parallel run continues every process's streams: the uninterrupted run
    for r in (r0, r1):
        assert r['resumed_history'] == r0['history'] and r['resumed_test'] == r0['test']


def _mmssl_graph():
    g = torch.Generator().manual_seed(0)
    nu, ni = 24, 30
    ei = torch.stack([torch.randint(0, nu, (120,), generator=g),
                      torch.randint(0, ni, (120,), generator=g)])
    ei = torch.unique(torch.cat([ei, torch.stack([torch.arange(nu), torch.arange(nu) % ni])],
                                1), dim=1)
    from mmssl_pyg.data.graph import RecGraph
    feats = {'a': torch.rand(ni, 4, generator=g), 'b': torch.rand(ni, 3, generator=g)}
    return RecGraph(nu, ni, ei, ei[:, :3], ei[:, :3], feats, 'tiny')


def test_mmssl_gathers_every_process_generated_neighbours():
    graph = _mmssl_graph()
    replicas = []
    for _ in range(2):
        torch.manual_seed(0)
        replicas.append(MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1).train())
    sampler = BPRSampler(graph, batch_size=6, seed=0)
    batches = [sampler.sample() for _ in range(4)]
    for j, b in enumerate(batches):  # rank j % 2 trains on batch j
        replicas[j % 2].critic_loss(b)
    mine = [set(torch.cat([b.users for b in batches[r::2]]).tolist()) for r in (0, 1)]
    # rank 1's all_gather records its tensors; rank 0's returns [its own, rank 1's]
    sent = []
    replicas[1].gather_epoch_state(lambda t: (sent.append(t), [t])[1])
    it = iter(sent)
    replicas[0].gather_epoch_state(lambda t: [t, next(it)])
    replicas[0].on_epoch_end(1)
    replicas[1].on_epoch_end(1)
    has = replicas[0].graphs.has_generated
    assert set(has.nonzero().view(-1).tolist()) == mine[0] | mine[1]
    only1 = sorted(mine[1] - mine[0])
    assert only1, 'the batches should give rank 1 users of its own'
    # users seen only by rank 1 got rank 1's neighbours on rank 0
    for m in range(2):
        assert torch.equal(replicas[0].graphs.neighbours[m][only1],
                           replicas[1].graphs.neighbours[m][only1])
    assert state_digests(replicas[0])['extra'] != state_digests(replicas[1])['extra']


def test_gathered_graphs_equal_one_process_on_the_concatenated_batches():
    """Two replicas over two steps against one process on each step's two batches (rank
    order): the same generated graph, also for a user drawn by rank 1 at step 0 and by
    rank 0 at step 1 (the latest step wins, not the highest rank). The generator's weights
    change between the steps, so the two steps give a user different neighbours."""
    graph = _mmssl_graph()
    models = []
    for _ in range(3):  # rank 0, rank 1, one process
        torch.manual_seed(0)
        models.append(MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.2,
                            feature_dropout=0.0).train())
    sampler = BPRSampler(graph, batch_size=10, seed=1)
    batches = [sampler.sample() for _ in range(4)]  # step s: ranks 0, 1 get 2s, 2s + 1
    g = torch.Generator().manual_seed(2)
    for step in range(2):
        a, b = batches[2 * step], batches[2 * step + 1]
        models[0].critic_loss(a)
        models[1].critic_loss(b)
        models[2].critic_loss(Batch(torch.cat([a.users, b.users]), torch.cat([a.pos, b.pos]),
                                    torch.cat([a.neg, b.neg])))
        noise = torch.randn(models[0].generator.lins[0].weight.shape, generator=g)
        for model in models:  # the same update on every replica
            with torch.no_grad():
                model.generator.lins[0].weight.add_(noise)
    stale = set(batches[1].users.tolist()) & set(batches[2].users.tolist())
    stale -= set(batches[3].users.tolist())
    assert stale, 'the batches should draw a user at rank 1, step 0 and rank 0, step 1'
    step0 = {int(u): [n[m][j] for m in range(2)] for n_u, n in models[1].graphs.pending[:1]
             for j, u in enumerate(n_u)}
    # a two-process all_gather: rank 0's tensor, then rank 1's (calls in the same order)
    sent = []
    models[1].gather_epoch_state(lambda t: (sent.append(t), [t])[1])
    it = iter(sent)
    models[0].gather_epoch_state(lambda t: [t, next(it)])
    for model in (models[0], models[2]):
        model.on_epoch_end(1)
    assert torch.equal(models[0].graphs.has_generated, models[2].graphs.has_generated)
    for m in range(2):
        assert torch.equal(models[0].graphs.neighbours[m], models[2].graphs.neighbours[m])
    # the step-1 neighbours won over rank 1's step-0 ones, which differ for some such user
    assert any(not torch.equal(step0[u][m], models[0].graphs.neighbours[m][u])
               for u in stale for m in range(2))


class _PairedSampler(BPRSampler):
    """A batch of ``2b`` users is two consecutive batches of ``b`` users drawn from one seeded
    stream: exactly the batches that ranks 0 and 1 of a 2-process run draw for one step."""

    def __init__(self, graph, batch_size, seed=0, batches_per_epoch=None):
        super().__init__(graph, batch_size // 2, seed, 2 * batches_per_epoch)
        self.num_batches = batches_per_epoch

    def sample(self):
        a, b = super().sample(), super().sample()
        return Batch(*(torch.cat([x, y]) for x, y in ((a.users, b.users), (a.pos, b.pos),
                                                      (a.neg, b.neg))))


#: Options under which a 2-process run and one process with the same effective batch do the
#: same arithmetic (see the test's docstring).
SAME_ARITHMETIC = ['feature_dropout=0.0', 'cl_weight=0.0', 'adv_weight=0.0']


@pytest.mark.slow
@pytest.mark.distributed
def test_cli_train_under_torchrun_matches_a_single_process_run(tmp_path, monkeypatch):
    """``mmssl-pyg train`` under torchrun (2 processes x 256 users per step) against one
    process training on the same 512 users per step, compared at float tolerance.

    Per step, process r computes the gradient of its batch's mean loss and the two are
    averaged; one process computes the gradient of the mean over both batches. For the
    per-user terms (BPR, L2) these are the same number: the mean of two means over 256 users
    is the mean over 512. Three parts of MMSSL make the two runs differ by design:

    * feature dropout: each process draws its own masks (seed + rank), so the averaged
      gradient mixes two masks where one process draws one (switched off here);
    * the contrastive loss (Eq. 11): its negatives are the other users of the batch, so two
      losses over 256 users are not one loss over 512 (switched off here);
    * the critic: its batch norm normalises with the batch's statistics, and the gradient
      penalty's alpha and the Gumbel noise come from per-process streams, so the critics
      differ, and L_G with them (``adv_weight=0``: the critic still trains, under torchrun
      with averaged gradients and buffers, but does not move the model).

    What is left differs only in float32 summation order (two gradients all-reduced against
    one sum over 512 rows). Two epochs are compared, so the second trains on the first's
    generated graphs: the weights and loss terms at float tolerance, the generated graphs
    exactly, the metrics up to the sharded evaluation's round-off. (The graphs are a discrete
    function of the weights: items with the same training users have identical relation
    scores; on tiktok-mini 2,872 items have 1,125 distinct rows of i^m and about a tenth of
    the users have such a tie at rank k. Both runs resolve those ties alike here; should
    round-off ever break one differently, the failure message says so.)
    """
    settings = ['--model', 'mmssl', '--dataset', 'tiktok-mini', '--epochs', '2', '--seed', '0',
                '--device', 'cpu', '--wandb', 'disabled', '--no-progress', *SAME_ARITHMETIC]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--standalone',
           '-m', 'mmssl_pyg.cli', 'train', *settings, 'batch_size=256', 'batches_per_epoch=6',
           '--run-dir', str(tmp_path / 'ddp')]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('mmssl on tiktok-mini: best epoch') == 1  # rank 0 prints

    # one process, the same 512 users per step (3 steps per epoch), in this process
    from mmssl_pyg.training import run, trainer
    monkeypatch.setattr(trainer, 'BPRSampler', _PairedSampler)
    threads = torch.get_num_threads()
    try:
        run.train_run(overrides=[*SAME_ARITHMETIC, 'batch_size=512', 'batches_per_epoch=3',
                                 'num_threads=1'],
                      **_kwargs(settings), run_dir=tmp_path / 'single')
    finally:
        torch.set_num_threads(threads)

    ddp = json.loads((tmp_path / 'ddp' / 'metrics.json').read_text())
    one = json.loads((tmp_path / 'single' / 'metrics.json').read_text())
    info = json.loads((tmp_path / 'ddp' / 'distributed.json').read_text())
    assert info['world_size'] == 2 and info['backend'] == 'gloo'
    # both processes swapped in the same generated graph (and hold the same weights) each epoch
    assert [e['epoch'] for e in info['epochs']] == [1, 2]
    for e in info['epochs']:
        assert e['digests'][0] == e['digests'][1]
    assert info['epochs'][0]['digests'][0]['extra'] != info['epochs'][1]['digests'][0]['extra']
    # the graph covers the users of every process's batches: those of all 12 batches
    graph = _tiktok_mini()
    sampler = BPRSampler(graph, 256, seed=0, batches_per_epoch=6)
    users = torch.cat([sampler.sample().users for _ in range(12)]).unique()
    ddp_state = load_checkpoint(tmp_path / 'ddp' / 'last.pt')['model']
    one_state = load_checkpoint(tmp_path / 'single' / 'last.pt')['model']
    extra = ddp_state['_extra_state']
    assert torch.equal(extra['has_generated'].nonzero().view(-1), users)
    # the sharded validation equals a single-process evaluation of the saved epoch
    again = run.evaluate_checkpoint(tmp_path / 'ddp' / 'best.pt', split='val', device='cpu')
    for k, v in ddp['val'].items():
        assert again['metrics'][k] == pytest.approx(v, rel=1e-6, abs=1e-9)

    # the two runs: weights and loss terms equal up to float32 round-off. Round-off in a
    # gradient is about 1e-7 of it, and so is the difference of most weights. Adam divides by
    # sqrt(v): where a gradient component is a near-cancelling sum, the same round-off is a
    # larger share of it (up to about 1% of Adam's first moment was seen), and an Adam update
    # is at most about lr; so a few weights may differ by a small fraction of one step.
    model_keys = [k for k in ddp_state if torch.is_tensor(ddp_state[k])
                  and not k.startswith('critic.')]
    assert 'user_emb.weight' in model_keys and 'generator.lins.0.weight' in model_keys
    lr, close, count = one['train']['lr'], 0, 0
    for k in model_keys:
        a, b = ddp_state[k], one_state[k]
        close += int(torch.isclose(a, b, rtol=1e-5, atol=1e-7).sum())
        count += a.numel()
        assert float((a - b).abs().max()) <= 1e-2 * lr, k
    assert close >= 0.999 * count, (close, count)
    assert len(ddp['history']) == len(one['history']) == 2
    for h_ddp, h_one in zip(ddp['history'], one['history']):
        for key in ('train/loss', 'train/bpr', 'train/reg'):
            assert h_ddp[key] == pytest.approx(h_one[key], rel=1e-6), key
        val_keys = [k for k in h_ddp if k.startswith('val/')]
        assert val_keys and all(h_ddp[k] == pytest.approx(h_one[k], rel=1e-6, abs=1e-9)
                                for k in val_keys)
    assert ddp['best_epoch'] == one['best_epoch']
    assert ddp['test'] == pytest.approx(one['test'], rel=1e-6, abs=1e-9)
    # the same generated neighbours
    one_extra = one_state['_extra_state']
    assert torch.equal(extra['has_generated'], one_extra['has_generated'])
    for a, b in zip(extra['neighbours'], one_extra['neighbours']):
        a, b = a.sort(1).values, b.sort(1).values
        if not torch.equal(a, b):
            tie = _items_by_training_users(graph)
            only_ties = torch.equal(tie[a.long()].sort(1).values, tie[b.long()].sort(1).values)
            pytest.fail(f'the generated neighbours of {int((a != b).any(1).sum())} users '
                        f'differ; ' + ('only between items with the same training users '
                                       '(tied relation scores broken differently by '
                                       'round-off)' if only_ties else 'not only tied items'))
    assert ddp['val']['recall@20'] > 0.007  # above a random ranking (20 / 2,872 items)


def _items_by_training_users(graph) -> torch.Tensor:
    """Class id per item: items with the same set of training users share one (their rows
    of i^m, hence their relation scores, are identical)."""
    keys = torch.unique(graph.train_edge_index[1] * graph.num_users + graph.train_edge_index[0])
    users_of = [[] for _ in range(graph.num_items)]
    for key in keys.tolist():
        users_of[key // graph.num_users].append(key % graph.num_users)
    ids: dict[tuple, int] = {}
    return torch.tensor([ids.setdefault(tuple(u), len(ids)) for u in users_of])


def _kwargs(settings: list[str]) -> dict:
    """``train_run`` keyword arguments of the ``--option value`` pairs in ``settings``."""
    out = {'wandb': 'disabled', 'progress': False}
    for flag, key, cast in (('--model', 'model', str), ('--dataset', 'dataset', str),
                            ('--epochs', 'epochs', int), ('--seed', 'seed', int),
                            ('--device', 'device', str)):
        out[key] = cast(settings[settings.index(flag) + 1])
    return out


def _tiktok_mini():
    from mmssl_pyg.training.run import load_graph
    return load_graph('tiktok-mini')


# ---------------------------------------------------------------------------------------------
# DistContext: alone, on two ranks played by two threads, on two gloo processes


def _collectives(ctx: DistContext, rank: int, out_dir: str) -> dict:
    """Every collective of DistContext on rank ``rank`` of two; the values are rank-dependent
    so that each result shows where it came from (expected: :func:`_expected`)."""
    res = {}
    # all_reduce_ in place: rank 0 holds [1, 5], rank 1 holds [3, 2]
    for op in ('sum', 'max', 'min', None):
        t = torch.tensor([1.0, 5.0]) if rank == 0 else torch.tensor([3.0, 2.0])
        out = ctx.all_reduce_(t) if op is None else ctx.all_reduce_(t, op)
        res[f'reduce_{op}'] = [out.tolist(), out is t]
    res['bcast'] = [ctx.broadcast_object({'from': rank}), ctx.broadcast_object(f'r{rank}', src=1)]
    res['gather_object'] = ctx.all_gather_object(['r', rank])
    # all_gather: the longer tensor on rank 0 (1-D), then on rank 1 (2-D floats, bools)
    res['gather'] = [[t.tolist(), str(t.dtype)] for t in ctx.all_gather(torch.arange(3 - rank))]
    res['gather_2d'] = [[t.tolist(), str(t.dtype)]
                        for t in ctx.all_gather(torch.full((rank + 1, 2), rank + 0.5))]
    res['gather_bool'] = [[t.tolist(), str(t.dtype)]
                          for t in ctx.all_gather(torch.tensor([True, False])[:rank + 1])]
    # barrier: rank 1 writes a file before it; rank 0 looks after it
    flag = Path(out_dir) / 'before-barrier'
    if rank == 1:
        time.sleep(0.5)
        flag.write_text('x')
    ctx.barrier()
    res['barrier'] = flag.exists()
    # average_gradients: p on both, q on rank 1 only, r on none, s float64 (its own bucket)
    p, q, r = (torch.nn.Parameter(torch.zeros(n)) for n in (3, 2, 1))
    s = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p.grad = torch.full((3,), rank + 1.0)
    q.grad = torch.full((2,), 4.0) if rank == 1 else None
    s.grad = torch.tensor([1.0, 2.0], dtype=torch.float64) * rank
    p_grad = p.grad
    ctx.average_gradients([p, q, r, s], num_contributors=2, bucket_bytes=12)
    res['avg'] = [p.grad.tolist(), q.grad.tolist(), r.grad is None, s.grad.tolist(),
                  str(s.grad.dtype), p.grad is p_grad]
    # one contributor (rank 0 had the last batch): its gradient, not half of it; zero
    # contributors count as one (the sum)
    a = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([2.0, 6.0]) if rank == 0 else None
    ctx.average_gradients([a], num_contributors=1)
    b = torch.nn.Parameter(torch.zeros(1))
    b.grad = torch.tensor([rank + 1.0])
    ctx.average_gradients([b], num_contributors=0)
    res['avg_one'], res['avg_none'] = a.grad.tolist(), b.grad.tolist()
    # broadcast_module / average_buffers: rank-dependent parameters and buffers
    for src in (1, None):
        m = _BufferModule(rank)
        ctx.broadcast_module(m) if src is None else ctx.broadcast_module(m, src=src)
        res[f'bmod_{src}'] = _module_values(m)
    m = _BufferModule(rank)
    ctx.average_buffers(m)
    res['avg_buffers'] = _module_values(m)
    return res


def _expected(rank: int) -> dict:
    """:func:`_collectives`' results on ``rank``, worked by hand."""
    return {
        'reduce_sum': [[4.0, 7.0], True], 'reduce_None': [[4.0, 7.0], True],
        'reduce_max': [[3.0, 5.0], True], 'reduce_min': [[1.0, 2.0], True],
        'bcast': [{'from': 0}, 'r1'],
        'gather_object': [['r', 0], ['r', 1]],
        'gather': [[[0, 1, 2], 'torch.int64'], [[0, 1], 'torch.int64']],
        'gather_2d': [[[[0.5, 0.5]], 'torch.float32'],
                      [[[1.5, 1.5], [1.5, 1.5]], 'torch.float32']],
        'gather_bool': [[[True], 'torch.bool'], [[True, False], 'torch.bool']],
        'barrier': True,
        # (1 + 2) / 2; (0 + 4) / 2; no gradient anywhere; (0 + 1) / 2, (0 + 2) / 2 in
        # float64; the existing gradient tensor is filled in place
        'avg': [[1.5] * 3, [2.0] * 2, True, [0.5, 1.0], 'torch.float64', True],
        'avg_one': [2.0, 6.0], 'avg_none': [3.0],
        # the parameter and persistent buffers of the source rank; the scratch buffer kept
        'bmod_1': [2.0, 2.0, 2.0, 6, 10.0 + rank],
        'bmod_None': [1.0, 0.0, 1.0, 5, 10.0 + rank],
        # floats averaged ((0 + 2) / 2, (1 + 2) / 2), the batch counter of rank 0
        'avg_buffers': [1.0 + rank, 1.0, 1.5, 5, 10.0 + rank],
    }


class _BufferModule(torch.nn.Module):
    """A parameter, a BatchNorm's buffers (float and integer) and a non-persistent buffer,
    every value depending on the rank."""

    def __init__(self, rank: int):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1, bias=False)
        self.bn = torch.nn.BatchNorm1d(1)
        with torch.no_grad():
            self.lin.weight.fill_(rank + 1.0)
            self.bn.running_mean.fill_(2.0 * rank)
            self.bn.running_var.fill_(1.0 + rank)
            self.bn.num_batches_tracked.fill_(5 + rank)
        self.register_buffer('scratch', torch.tensor([10.0 + rank]), persistent=False)


def _module_values(m: _BufferModule) -> list:
    return [m.lin.weight.item(), m.bn.running_mean.item(), m.bn.running_var.item(),
            m.bn.num_batches_tracked.item(), m.scratch.item()]


class _ThreadRanks:
    """torch.distributed's collectives as documented, for ranks played by threads of this
    process: each call hands every rank's input to every rank (a barrier before and after),
    then applies the collective's rule. Like gloo, ``all_gather`` needs equal shapes and
    dtypes. A rank that skips a collective breaks the barrier (10 s) instead of hanging."""

    def __init__(self, world: int):
        self.world, self.slots = world, [None] * world
        self.sync = threading.Barrier(world, timeout=10)
        self.local = threading.local()

    def _exchange(self, value) -> list:
        self.slots[self.local.rank] = value
        self.sync.wait()
        out = list(self.slots)
        self.sync.wait()
        return out

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM):
        stacked = torch.stack(self._exchange(tensor.clone()))
        rule = {dist.ReduceOp.SUM: lambda x: x.sum(0), dist.ReduceOp.MAX: lambda x: x.amax(0),
                dist.ReduceOp.MIN: lambda x: x.amin(0)}
        tensor.copy_(next(f for o, f in rule.items() if o == op)(stacked))

    def all_gather(self, out, tensor):
        values = self._exchange(tensor.clone())
        assert len(out) == self.world
        for o, v in zip(out, values):
            assert o.shape == v.shape and o.dtype == v.dtype, 'gloo needs equal shapes'
            o.copy_(v)

    def broadcast(self, tensor, src):
        tensor.copy_(self._exchange(tensor.clone())[src])

    def broadcast_object_list(self, box, src):
        box[:] = copy.deepcopy(self._exchange(list(box))[src])

    def all_gather_object(self, out, obj):
        out[:] = copy.deepcopy(self._exchange(obj))

    def barrier(self):
        self.sync.wait()


def test_distributed_context_alone_is_a_no_op():
    alone = DistContext()
    assert (alone.rank, alone.world_size, alone.local_rank, alone.backend,
            alone.owns_group) == (0, 1, 0, None, False)
    assert not alone.enabled and alone.is_main
    assert DistContext(rank=1, world_size=2).enabled and not DistContext(rank=1).is_main
    t = torch.tensor([1.0, 2.0])
    assert alone.all_reduce_(t, 'max') is t and t.tolist() == [1.0, 2.0]
    obj = {'a': 1}
    assert alone.broadcast_object(obj, src=1) is obj
    assert alone.all_gather_object(obj) == [obj]
    gathered = alone.all_gather(t)
    assert len(gathered) == 1 and gathered[0] is t
    alone.barrier()
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([4.0, 6.0])
    q = torch.nn.Parameter(torch.zeros(1))
    alone.average_gradients([p, q], num_contributors=2)
    assert p.grad.tolist() == [4.0, 6.0] and q.grad is None
    m = _BufferModule(3)
    alone.broadcast_module(m)
    alone.average_buffers(m)
    assert _module_values(m) == [4.0, 6.0, 4.0, 8, 13.0]
    alone.shutdown()
    assert not alone.owns_group


def _on_thread_ranks(monkeypatch, play) -> list:
    """``play(rank)`` on two thread ranks of this process, torch.distributed's collectives
    being :class:`_ThreadRanks`'; returns the two results (re-raises a rank's error)."""
    ranks = _ThreadRanks(2)
    for name in ('all_reduce', 'all_gather', 'broadcast', 'broadcast_object_list',
                 'all_gather_object', 'barrier'):
        monkeypatch.setattr(dist, name, getattr(ranks, name))
    results, errors = [None, None], []

    def run(rank):
        ranks.local.rank = rank
        try:
            results[rank] = play(rank)
        except BaseException as err:  # noqa: BLE001 (re-raised in the test's thread)
            errors.append(err)
            ranks.sync.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return results


def test_distributed_context_collectives_on_two_thread_ranks(tmp_path, monkeypatch):
    """The collectives of two ranks in this process (fast; the gloo test below runs the same
    body on two processes and expects the same values)."""
    def play(rank):
        ctx = DistContext(rank, 2, rank, 'gloo')
        res = _collectives(ctx, rank, str(tmp_path))
        ctx.average_gradients([], num_contributors=2)  # nothing to average: no hang
        # three parameters of one size in one (default-sized) bucket: each reads its own slice
        three = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
        for k, t in enumerate(three):
            t.grad = torch.full((2,), 10.0 * k + rank)
        ctx.average_gradients(three, num_contributors=2)
        return res, [t.grad.tolist() for t in three]

    results = _on_thread_ranks(monkeypatch, play)
    for rank in (0, 1):
        res, three = results[rank]
        assert res == _expected(rank), rank
        # parameter k: (10 k + 0 + 10 k + 1) / 2 on both ranks
        assert three == [[0.5, 0.5], [10.5, 10.5], [20.5, 20.5]], rank


class _StepSampler(BPRSampler):
    """One process standing for two ranks: its batch ``s`` is the ranks' batches of step ``s``
    of a 2-process run on the same stream, concatenated (rank 0's alone in the last step of an
    epoch with an odd number of batches)."""

    def __init__(self, graph, batch_size, seed=0, batches_per_epoch=None):
        super().__init__(graph, batch_size, seed, batches_per_epoch)
        self.draws, self.num_batches, self.step = batches_per_epoch, -(-batches_per_epoch // 2), 0

    def sample(self):
        take = min(2, self.draws - 2 * (self.step % self.num_batches))
        self.step += 1
        draw = super().sample
        parts = [draw() for _ in range(take)]
        return Batch(*(torch.cat(x) for x in zip(*((b.users, b.pos, b.neg) for b in parts))))


@pytest.mark.parametrize('batches', [4, 5])
def test_trainer_on_two_thread_ranks_equals_one_process_on_both_batches(batches, tmp_path,
                                                                        monkeypatch):
    """Two LightGCN replicas (built differently: rank 0's weights are broadcast), ``batches``
    batches of 8 users per epoch: each step averages the gradients of the ranks' batch mean
    losses (rank 0's alone in the last step of 5), which for LightGCN's per-user terms (BPR,
    L2) is one process's gradient on the step's users (:class:`_StepSampler`), so the weights
    and metrics agree at float32 round-off (and the epoch's mean loss terms with 4 batches,
    where every step has two); only rank 0 writes checkpoints, which hold both ranks' random
    states."""
    from mmssl_pyg.training import trainer as trainer_module
    graph = synthetic_graph(num_users=60, num_items=40)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(LightGCN(graph, embedding_dim=8))
    start = {k: v.clone() for k, v in models[0].state_dict().items()}
    settings = dict(batch_size=8, batches_per_epoch=batches, epochs=2, seed=3, progress=False,
                    device='cpu', ks=(10, 20))

    def play(rank):
        trainer = Trainer(models[rank], graph, TrainConfig(**settings),
                          checkpoint_dir=tmp_path / 'run' if rank == 0 else tmp_path / 'r1',
                          distributed=DistContext(rank, 2, rank, 'gloo'))
        fit = trainer.fit()
        return fit, trainer.dist_log, state_digests(models[rank])

    (fit0, log0, dig0), (fit1, log1, dig1) = _on_thread_ranks(monkeypatch, play)
    assert [_strip(h) for h in fit0.history] == [_strip(h) for h in fit1.history]
    assert (fit0.val, fit0.test) == (fit1.val, fit1.test)
    # the peak memory is the larger of the two ranks' (all-reduced with max)
    assert [h['peak_memory_mb'] for h in fit0.history] == [h['peak_memory_mb']
                                                          for h in fit1.history]
    assert dig0 == dig1 and [e['epoch'] for e in log0] == [1, 2] and log0 == log1
    assert all(e['digests'][0] == e['digests'][1] for e in log0)
    assert log0[0]['digests'][0] != log0[1]['digests'][0]  # the weights moved
    assert [h['dist/world_size'] for h in fit0.history] == [2, 2]
    assert sorted(p.name for p in (tmp_path / 'run').iterdir()) == ['best.pt', 'last.pt']
    assert not (tmp_path / 'r1').exists()
    last = load_checkpoint(tmp_path / 'run' / 'last.pt')
    assert last['world_size'] == 2 and len(last['rng_ranks']) == 2

    monkeypatch.setattr(trainer_module, 'BPRSampler', _StepSampler)
    one = LightGCN(graph, embedding_dim=8)
    one.load_state_dict(start)
    ref = Trainer(one, graph, TrainConfig(**settings)).fit()
    assert ref.history[0]['epoch'] == 1 and 'dist/world_size' not in ref.history[0]
    for k, v in one.state_dict().items():
        assert torch.allclose(models[0].state_dict()[k], v, rtol=1e-5, atol=1e-7), k
    if batches == 4:
        for h2, h1 in zip(fit0.history, ref.history, strict=True):
            for key in ('train/loss', 'train/bpr', 'train/reg'):
                assert h2[key] == pytest.approx(h1[key], rel=1e-6), key
    assert fit0.best_epoch == ref.best_epoch
    assert fit0.test == pytest.approx(ref.test, rel=1e-6, abs=1e-9)


class _DriftingLightGCN(LightGCN):
    """LightGCN whose epoch end moves one weight by its rank: the replicas of rank 1 and up
    diverge from rank 0 after the first epoch."""

    def __init__(self, graph, rank):
        super().__init__(graph, embedding_dim=8)
        self.rank = rank

    def on_epoch_end(self, epoch):
        super().on_epoch_end(epoch)
        with torch.no_grad():
            self.user_emb.weight[0, 0] += self.rank


def test_trainer_stops_when_the_replicas_diverge(monkeypatch):
    graph = synthetic_graph(num_users=60, num_items=40)
    models = [_DriftingLightGCN(graph, rank) for rank in (0, 1)]
    settings = dict(batch_size=8, batches_per_epoch=2, epochs=2, seed=3, progress=False,
                    device='cpu', ks=(10, 20))

    def play(rank):
        Trainer(models[rank], graph, TrainConfig(**settings),
                distributed=DistContext(rank, 2, rank, 'gloo')).fit()

    with pytest.raises(RuntimeError) as err:
        _on_thread_ranks(monkeypatch, play)
    digests = [state_digests(m) for m in models]
    assert digests[0] != digests[1]
    assert str(err.value) == (f'data-parallel replicas diverged after epoch 1: the model state '
                              f'of rank(s) [1] differs from rank 0 ({digests})')


def test_current_reads_the_default_process_group(monkeypatch):
    monkeypatch.setattr(dist, 'is_available', lambda: True)
    monkeypatch.setattr(dist, 'is_initialized', lambda: False)
    assert DistContext.current() == DistContext()
    monkeypatch.setattr(dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(dist, 'get_world_size', lambda: 1)
    assert DistContext.current() == DistContext()
    monkeypatch.setattr(dist, 'get_world_size', lambda: 4)
    monkeypatch.setattr(dist, 'get_rank', lambda: 3)
    monkeypatch.setattr(dist, 'get_backend', lambda: 'nccl')
    monkeypatch.setenv('LOCAL_RANK', '1')
    assert DistContext.current() == DistContext(3, 4, 1, 'nccl', False)
    monkeypatch.delenv('LOCAL_RANK')
    assert DistContext.current() == DistContext(3, 4, 0, 'nccl', False)
    monkeypatch.setattr(dist, 'is_available', lambda: False)
    assert DistContext.current() == DistContext()


def _context_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """:func:`_collectives` on real gloo processes, started by init_distributed as under
    torchrun (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* in the environment)."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from mmssl_pyg.training.distributed import init_distributed
    ctx, device = init_distributed('cpu', timeout_minutes=1.0)  # a hang fails within a minute
    now = DistContext.current()
    res = _collectives(ctx, rank, out_dir)
    res['ctx'] = [ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend, ctx.owns_group, device]
    res['current'] = [now.rank, now.world_size, now.local_rank, now.backend, now.owns_group]
    ctx.shutdown()
    res['after_shutdown'] = [dist.is_initialized(), ctx.owns_group]
    (Path(out_dir) / f'ctx{rank}.json').write_text(json.dumps(res))


@pytest.mark.distributed
def test_distributed_context_collectives_on_two_gloo_processes(tmp_path):
    mp.spawn(_context_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        res = json.loads((tmp_path / f'ctx{rank}.json').read_text())
        assert res.pop('ctx') == [rank, 2, rank, 'gloo', True, 'cpu']
        assert res.pop('current') == [rank, 2, rank, 'gloo', False]
        assert res.pop('after_shutdown') == [False, False]
        assert res == _expected(rank)


def test_buckets_split_by_size_and_dtype_and_state_tensors_once_each():
    from mmssl_pyg.training.distributed import _buckets, _persistent_buffers, _state_tensors
    p, q, s = (torch.nn.Parameter(torch.zeros(n)) for n in (3, 2, 4))  # 12, 8, 16 bytes
    r = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))  # 8 bytes
    assert list(_buckets([p, q, r, s], 20)) == [[p, q], [r], [s]]  # 12 + 8 = 20 fits
    assert list(_buckets([p, q, r, s], 19)) == [[p], [q], [r], [s]]
    assert list(_buckets([s, p], 4)) == [[s], [p]]  # larger than a bucket: alone
    assert list(_buckets([p, q, s], 64 << 20)) == [[p, q, s]]
    assert list(_buckets([], 8)) == []
    # a full bucket is yielded and the next one starts empty: 16 + 16 fills 32 twice
    w, x, y, z = (torch.nn.Parameter(torch.zeros(4)) for _ in range(4))
    assert list(_buckets([w, x, y, z], 32)) == [[w, x], [y, z]]

    shared = torch.ones(2)
    root = torch.nn.Module()
    root.register_buffer('keep', torch.zeros(1))
    root.register_buffer('scratch', torch.zeros(1), persistent=False)
    root.register_buffer('unset', None)
    root.bn = torch.nn.BatchNorm1d(2)
    root.a, root.b = torch.nn.Module(), torch.nn.Module()
    root.a.register_buffer('x', shared)
    root.b.register_buffer('x', shared)
    root.lin = torch.nn.Linear(2, 1)
    bufs = [root.keep, root.bn.running_mean, root.bn.running_var, root.bn.num_batches_tracked,
            shared, shared]
    assert [id(b) for b in _persistent_buffers(root)] == [id(b) for b in bufs]
    want = [root.bn.weight, root.bn.bias, root.lin.weight, root.lin.bias, *bufs[:5]]
    assert [id(t) for t in _state_tensors(root)] == [id(t) for t in want]


class _Extra(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0]))
        self.register_buffer('mask', torch.tensor([True, False]))
        self.register_buffer('empty', torch.zeros(0, 3))
        self.state = {'b': [1, 2], 'a': 'x', 2: 'two', 10: 'ten'}

    def get_extra_state(self):
        return self.state

    def set_extra_state(self, state):
        self.state = state


def test_state_digests_by_hand():
    # the bytes fed to SHA-256, spelled out: each key, then dtype and shape, then the raw
    # little-endian values (bool as uint8, nothing for an empty tensor); extra-state dicts in
    # key order, lists as '[<len>' and their items, other values by repr
    weights = hashlib.sha256(b'w' + b'torch.float32(1,)' + struct.pack('<f', 1.0)
                             + b'mask' + b'torch.uint8(2,)' + bytes([1, 0])
                             + b'empty' + b'torch.float32(0, 3)').hexdigest()
    # keys in the order of their text: '10' before '2' before 'a' (and mixed types allowed)
    extra = hashlib.sha256(b'_extra_state' + b'10' + b"'ten'" + b'2' + b"'two'" + b'a' + b"'x'"
                           + b'b' + b'[2' + b'1' + b'2')
    module = _Extra()
    assert state_digests(module) == {'weights': weights, 'extra': extra.hexdigest()}
    plain = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        plain.weight.fill_(1.0)
    assert state_digests(plain) == {
        'weights': hashlib.sha256(b'weight' + b'torch.float32(1, 1)'
                                  + struct.pack('<f', 1.0)).hexdigest(),
        'extra': hashlib.sha256().hexdigest()}
    # a list of two one-item lists is not one two-item list
    module.state = [[1], [2]]
    one = state_digests(module)['extra']
    module.state = [[1, 2]]
    assert state_digests(module)['extra'] != one


def _refused(device) -> str:
    from mmssl_pyg.training.distributed import init_distributed
    with pytest.raises(RuntimeError) as err:
        init_distributed(device)
    return str(err.value)


def test_env_world_size_and_init_distributed_messages_in_full(monkeypatch):
    from mmssl_pyg.training.distributed import env_world_size, init_distributed
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(var, raising=False)
    assert env_world_size() == 1
    assert init_distributed() == (DistContext(), 'auto')
    assert init_distributed(torch.device('cpu')) == (DistContext(), 'cpu')
    monkeypatch.setenv('WORLD_SIZE', '')
    assert env_world_size() == 1
    monkeypatch.setenv('WORLD_SIZE', '1')
    assert init_distributed('cuda') == (DistContext(), 'cuda')
    monkeypatch.setenv('WORLD_SIZE', '3')
    assert env_world_size() == 3
    launch = ('is not set: launch with torchrun (python -m torch.distributed.run), which sets '
              'RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT')
    assert _refused('cpu') == f'WORLD_SIZE=3 but RANK, LOCAL_RANK {launch}'
    monkeypatch.setenv('WORLD_SIZE', '2')  # two processes are already a data-parallel run
    assert _refused('cpu') == f'WORLD_SIZE=2 but RANK, LOCAL_RANK {launch}'
    monkeypatch.setenv('WORLD_SIZE', '3')
    monkeypatch.setenv('RANK', '0')
    assert _refused('cpu') == f'WORLD_SIZE=3 but LOCAL_RANK {launch}'
    monkeypatch.setenv('RANK', '2')
    monkeypatch.setenv('LOCAL_RANK', '1')
    monkeypatch.setattr(dist, 'is_available', lambda: False)
    assert _refused('cpu') == ('this torch build has no torch.distributed; cannot run with '
                               'WORLD_SIZE=3')
    monkeypatch.setattr(dist, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for device in ('cuda', 'cuda:1'):
        assert _refused(device) == (f'device {device!r} was asked for but CUDA is not '
                                    f'available; use --device cpu (gloo) for CPU processes')
    # a GPU machine, as far as init_distributed can tell: NCCL on cuda:LOCAL_RANK
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert _refused('auto') == ('LOCAL_RANK=1 but this machine has 1 GPU(s): use '
                                '--nproc_per_node <= the number of GPUs')
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    chosen, started = [], []
    monkeypatch.setattr(torch.cuda, 'set_device', chosen.append)
    monkeypatch.setattr(dist, 'is_initialized', lambda: bool(started))
    monkeypatch.setattr(dist, 'init_process_group',
                        lambda backend, timeout: started.append((backend, timeout)))
    monkeypatch.setattr(dist, 'get_backend', lambda: started[0][0])
    ctx, device = init_distributed('auto', timeout_minutes=0.5)
    assert (ctx, device) == (DistContext(2, 3, 1, 'nccl', True), 'cuda:1')
    assert chosen == [1] and started == [('nccl', datetime.timedelta(seconds=30))]
    # a group that already exists is reused, and not owned (shutdown leaves it)
    ctx, device = init_distributed('cuda:0')
    assert (ctx, device) == (DistContext(2, 3, 1, 'nccl', False), 'cuda:1')
    assert chosen == [1, 1] and len(started) == 1
    # CPU processes: gloo, whatever CUDA says; the default timeout is 30 minutes
    started.clear()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert init_distributed('auto') == (DistContext(2, 3, 1, 'gloo', True), 'cpu')
    assert started == [('gloo', datetime.timedelta(minutes=30))]
    started.clear()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert init_distributed('cpu') == (DistContext(2, 3, 1, 'gloo', True), 'cpu')
    assert chosen == [1, 1]


def test_shutdown_ends_only_a_group_it_started(monkeypatch):
    ended = []
    monkeypatch.setattr(dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(dist, 'destroy_process_group', lambda: ended.append(1))
    DistContext(0, 2, 0, 'gloo', owns_group=False).shutdown()
    assert ended == []
    ctx = DistContext(0, 2, 0, 'gloo', owns_group=True)
    ctx.shutdown()
    assert ended == [1] and ctx == DistContext(0, 2, 0, 'gloo', owns_group=False)
    ctx.shutdown()
    assert ended == [1]
    monkeypatch.setattr(dist, 'is_initialized', lambda: False)  # ended elsewhere already
    ctx = DistContext(0, 2, 0, 'gloo', owns_group=True)
    ctx.shutdown()
    assert ended == [1] and not ctx.owns_group
