"""Data-parallel training (torchrun / gloo on CPU): collectives, sharded evaluation, the trainer
with an uneven number of batches, MMSSL's generated graphs gathered across processes, and
``mmssl-pyg train`` under ``torch.distributed.run`` against a single-process run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_training_utils import synthetic_graph

from mmssl_pyg.models import LightGCN
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.training import BPRSampler, TrainConfig, Trainer, evaluate_embeddings
from mmssl_pyg.training.checkpoint import load_checkpoint
from mmssl_pyg.training.distributed import DistContext, state_digests

ROOT = Path(__file__).resolve().parents[1]


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
    has = replicas[0]._has_generated
    assert set(has.nonzero().view(-1).tolist()) == mine[0] | mine[1]
    only1 = sorted(mine[1] - mine[0])
    assert only1, 'the batches should give rank 1 users of its own'
    # users seen only by rank 1 got rank 1's neighbours on rank 0
    for m in range(2):
        assert torch.equal(replicas[0]._neighbours[m][only1], replicas[1]._neighbours[m][only1])
    assert state_digests(replicas[0])['extra'] != state_digests(replicas[1])['extra']


@pytest.mark.slow
@pytest.mark.distributed
def test_cli_train_under_torchrun_matches_a_single_process_run(tmp_path):
    settings = ['--model', 'mmssl', '--dataset', 'tiktok-mini', '--epochs', '2', '--seed', '0',
                '--device', 'cpu', '--wandb', 'disabled', '--no-progress',
                'batch_size=256', 'batches_per_epoch=6']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--standalone',
           '-m', 'mmssl_pyg.cli', 'train', *settings, '--run-dir', str(tmp_path / 'ddp')]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('mmssl on tiktok-mini: best epoch') == 1  # rank 0 prints
    single = subprocess.run([sys.executable, '-m', 'mmssl_pyg.cli', 'train', *settings,
                             'num_threads=1', '--run-dir', str(tmp_path / 'single')],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

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
    sampler_graph = _tiktok_mini()
    sampler = BPRSampler(sampler_graph, 256, seed=0, batches_per_epoch=6)
    users = torch.cat([sampler.sample().users for _ in range(12)]).unique()
    extra = load_checkpoint(tmp_path / 'ddp' / 'last.pt')['model']['_extra_state']
    assert torch.equal(extra['has_generated'].nonzero().view(-1), users)
    # the sharded validation equals a single-process evaluation of the saved best epoch
    from mmssl_pyg.training.run import evaluate_checkpoint
    again = evaluate_checkpoint(tmp_path / 'ddp' / 'best.pt', split='val', device='cpu')
    for k, v in ddp['val'].items():
        assert again['metrics'][k] == pytest.approx(v, rel=1e-6, abs=1e-9)
    # Comparable accuracy: 336 validation users with one held-out item each give a run's
    # Recall@20 (about 0.025 here) a binomial standard error of about 0.009; the data-parallel
    # run takes half as many optimiser steps of twice the batch, so it is not the same run, and
    # 0.03 is about 2.5 standard errors of the difference of two such runs. Both must also beat
    # a random ranking (20 / 2,872 items = 0.007).
    r_ddp, r_one = ddp['val']['recall@20'], one['val']['recall@20']
    assert abs(r_ddp - r_one) <= 0.03, (r_ddp, r_one)
    assert min(r_ddp, r_one) > 0.007
    assert len(ddp['history']) == len(one['history']) == 2


def _tiktok_mini():
    from mmssl_pyg.training.run import load_graph
    return load_graph('tiktok-mini')
