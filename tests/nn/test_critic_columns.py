"""MMSSL's bounded critic (``critic_columns``): a random subset of item columns per batch."""
from __future__ import annotations

import pytest
import torch

from mmssl_pyg.data.graph import RecGraph
from mmssl_pyg.models.base import Batch
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.nn.critic_memory import check_critic_memory, critic_memory_estimate
from mmssl_pyg.nn.lowrank import LowRankRows


def _graph(num_users=30, num_items=64, edges=150, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.stack([torch.randint(0, num_users, (edges,), generator=g),
                      torch.randint(0, num_items, (edges,), generator=g)])
    ei = torch.cat([ei, torch.stack([torch.arange(num_users),
                                     torch.arange(num_users) % num_items])], 1)
    ei = torch.unique(ei, dim=1)
    feats = {'img': torch.rand(num_items, 5, generator=g), 'txt': torch.rand(num_items, 3,
                                                                             generator=g)}
    return RecGraph(num_users, num_items, ei, ei[:, :3], ei[:, :3], feats, 'tiny')


def _batch(graph, n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    users = torch.randperm(graph.num_users, generator=g)[:n]
    ei = graph.train_edge_index
    pos = torch.stack([ei[1][ei[0] == u][0] for u in users.tolist()])
    return Batch(users, pos, torch.randint(0, graph.num_items, (n,), generator=g))


def _model(graph, **kw):
    torch.manual_seed(0)
    return MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1, **kw)


def test_select_columns_matches_the_dense_rows():
    torch.manual_seed(0)
    rows, n, r = 5, 40, 3
    index = torch.stack([torch.randint(0, rows, (30,)), torch.randint(0, n, (30,))])
    x = LowRankRows(rows, n, left=torch.randn(rows, r), right=torch.randn(n, r),
                    scale=torch.rand(rows), index=index, value=torch.randn(30),
                    dense=torch.randn(rows, n))
    cols = torch.randperm(n)[:12].sort().values
    sel = x.select_columns(cols)
    assert sel.num_cols == 12 and sel.num_rows == rows
    assert torch.allclose(sel.to_dense(), x.to_dense()[:, cols], atol=1e-5)
    w = torch.randn(7, 12)
    assert torch.allclose(sel.linear(w), x.to_dense()[:, cols] @ w.t(), atol=1e-4)


def test_critic_reads_the_same_columns_for_real_and_fake_rows(monkeypatch):
    graph = _graph()
    model = _model(graph, critic_columns=16)
    assert model.critic_width == 16
    assert model.critic.lin1.in_features == 16 and model.critic.lin1.out_features == 4
    seen = []
    original = LowRankRows.select_columns

    def spy(self, cols):
        seen.append(cols.clone())
        return original(self, cols)

    monkeypatch.setattr(LowRankRows, 'select_columns', spy)
    model.train()
    batch = _batch(graph)
    out = model.critic_loss(batch)
    cached = batch.cache['mmssl_forward']
    assert len(seen) == model.num_modalities + 1  # every fake block and the real rows
    assert all(torch.equal(c, seen[0]) for c in seen)
    cols = cached['critic_columns']
    assert torch.equal(cols, seen[0]) and cols.numel() == 16
    assert torch.equal(cols, cols.unique())  # sorted, distinct
    assert all(r.num_cols == 16 for r in cached['fake']) and cached['real'].num_cols == 16
    # the fake rows are Eq. 3's rows (normalised over all items) at those columns
    emb = cached['emb']
    row, col = model._train_entries(batch.users)
    full = model.generator.relation_rows(emb.user_modal[0][batch.users], emb.item_modal[0],
                                         row, col)
    assert torch.allclose(cached['fake'][0].to_dense(), full.to_dense()[:, cols], atol=1e-6)
    # loss() reuses the cached forward (same columns) and L_G reaches the model
    seen.clear()
    terms = model.loss(batch)
    assert not seen and torch.isfinite(terms['loss']) and torch.isfinite(out['loss'])
    terms['loss'].backward()
    assert model.generator.lins[0].weight.grad is not None


def test_columns_are_drawn_per_batch_and_reproducible():
    graph = _graph()
    model = _model(graph, critic_columns=16)
    torch.manual_seed(5)
    a = [model.draw_critic_columns() for _ in range(3)]
    torch.manual_seed(5)
    b = [model.draw_critic_columns() for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])
    # C >= n_items (or None): the paper's full-width critic, no subset drawn
    full = _model(graph, critic_columns=1000)
    assert full.critic_width == graph.num_items == full.critic.lin1.in_features
    model_none = _model(graph)
    model_none.train()
    batch = _batch(graph)
    model_none.critic_loss(batch)
    assert 'critic_columns' not in batch.cache['mmssl_forward']


def test_bad_critic_columns():
    for bad in (0, 4, 2.5, True):
        with pytest.raises(ValueError, match='critic_columns'):
            _model(_graph(), critic_columns=bad)


def test_memory_check_uses_the_column_count_on_a_200k_item_catalogue():
    n_items, c = 200_000, 4096
    # the full critic: 10^10 parameters, refused before allocation
    with pytest.raises(ValueError, match='critic_columns'):
        check_critic_memory(n_items, 2 * 1024)
    params, need = critic_memory_estimate(c, 2 * 1024)
    assert params < c * c / 4 + c * c / 32 + 10 * c and need < 2**30
    ei = torch.stack([torch.arange(50), torch.arange(50) * 3999])
    graph = RecGraph(50, n_items, ei, ei[:, :5], ei[:, :5], {'img': torch.rand(n_items, 2)},
                     'wide')
    with pytest.raises(ValueError, match='n_items=200,000'):
        MMSSL(graph, embedding_dim=4, num_heads=1, topk_rate=1e-4)
    model = MMSSL(graph, embedding_dim=4, num_heads=1, topk_rate=1e-4, critic_columns=c)
    assert model.critic.lin1.weight.shape == (c // 4, c)
    n_critic = sum(p.numel() for p in model.critic_parameters())
    assert n_critic == params
    model.train()
    users = torch.arange(8)
    batch = Batch(users, ei[1, :8], torch.randint(0, n_items, (8,)))
    out = model.critic_loss(batch)
    out['loss'].backward()
    assert torch.isfinite(out['loss']) and model.critic.lin1.weight.grad is not None
