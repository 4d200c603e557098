"""MMSSL's speed options: the deferred top-k search (exact), the subsampled gradient penalty
(``gp_samples``) and the critic schedule (``critic_every``)."""
from __future__ import annotations

import math

import pytest
import torch
from test_critic_columns import _graph

from mmssl_pyg.models import MMSSL
from mmssl_pyg.nn.critic import RelationCritic
from mmssl_pyg.nn.losses import projected_gradient_penalty
from mmssl_pyg.training import TrainConfig, Trainer
from mmssl_pyg.training.options import ConfigError

FAST = dict(batch_size=8, progress=False, seed=3, ks=(10, 20), num_threads=1, device='cpu',
            patience=0)


def _fit(graph, epochs=2, model_kw=None, **cfg):
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1, **(model_kw or {}))
    trainer = Trainer(model, graph, TrainConfig(**{**FAST, 'epochs': epochs, **cfg}))
    return trainer.fit(), model, trainer


def _strip(history):
    return [{k: v for k, v in h.items() if 'seconds' not in k and 'memory' not in k}
            for h in history]


def test_final_marks_each_users_last_batch_of_the_epoch():
    graph = _graph()
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1)
    trainer = Trainer(model, graph, TrainConfig(**{**FAST, 'batches_per_epoch': 7}))
    state = trainer.sampler.state_dict()
    batches = trainer._draw_epoch(7)
    trainer.sampler.load_state_dict(state)
    again = [trainer.sampler.sample() for _ in range(7)]  # the same stream, one at a time
    assert all(torch.equal(a.users, b.users) and torch.equal(a.neg, b.neg)
               for a, b in zip(batches, again))
    for i, b in enumerate(batches):
        later = set().union(*[set(x.users.tolist()) for x in batches[i + 1:]])
        expected = torch.tensor([u not in later for u in b.users.tolist()])
        assert torch.equal(b.final, expected)
    # every drawn user is final exactly once
    finals = torch.cat([b.users[b.final] for b in batches])
    assert sorted(finals.tolist()) == sorted(set(torch.cat([b.users for b in batches]).tolist()))


def test_deferred_topk_gives_the_same_run_and_searches_fewer_rows(monkeypatch):
    graph = _graph()
    rows = []
    original = MMSSL._collect_topk

    def spy(self, users, modal_b, item_modal, row, col, final):
        rows.append(int(users.numel()) if final is None else int(final.sum()))
        return original(self, users, modal_b, item_modal, row, col, final)

    monkeypatch.setattr(MMSSL, '_collect_topk', spy)
    fast, model_a, _ = _fit(graph, batches_per_epoch=6)
    searched = sum(rows)
    rows.clear()
    draw = Trainer._draw_epoch

    def no_final(self, n):
        batches = draw(self, n)
        for b in batches:
            b.final = None
        return batches

    monkeypatch.setattr(Trainer, '_draw_epoch', no_final)
    full, model_b, _ = _fit(graph, batches_per_epoch=6)
    assert searched < sum(rows) == 2 * 6 * FAST['batch_size']
    assert _strip(fast.history) == _strip(full.history)
    assert fast.val == full.val and fast.test == full.test
    for a, b in zip(model_a.graphs.neighbours, model_b.graphs.neighbours):
        assert torch.equal(a, b)
    assert torch.equal(model_a.graphs.has_generated, model_b.graphs.has_generated)
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if isinstance(sa[k], torch.Tensor))


def _critic_and_rows(rows=12, width=32, seed=0):
    torch.manual_seed(seed)
    critic = RelationCritic(width, dropout=(0.0, 0.0))
    z_real = torch.randn(rows, width // 4, requires_grad=True)
    z_fake = torch.randn(rows, width // 4, requires_grad=True)
    return critic, z_real, z_fake


def test_gp_samples_is_the_penalty_of_the_drawn_rows():
    critic, z_real, z_fake = _critic_and_rows()
    torch.manual_seed(11)
    pick = torch.randperm(12)[:5]
    alpha = torch.rand(5, 1)
    expected = projected_gradient_penalty(critic, z_real[pick], z_fake[pick], alpha)
    torch.manual_seed(11)
    got = projected_gradient_penalty(critic, z_real, z_fake, alpha, num_samples=5)
    assert torch.allclose(got, expected, atol=1e-6)
    # S >= R: every row, the exact penalty
    torch.manual_seed(2)
    full = projected_gradient_penalty(critic, z_real, z_fake, torch.rand(12, 1))
    torch.manual_seed(2)
    assert torch.allclose(projected_gradient_penalty(critic, z_real, z_fake, torch.rand(12, 1),
                                                     num_samples=12), full)


def test_subset_penalties_average_to_the_full_penalty():
    # With per-row critic outputs (batch norm in eval mode) the full penalty is the mean of the
    # per-row penalties, so the mean over uniform subsets equals it: the estimator is unbiased.
    critic, z_real, z_fake = _critic_and_rows()
    critic.eval()
    alpha = torch.rand(12, 1)
    full = projected_gradient_penalty(critic, z_real, z_fake, alpha)
    per_row = torch.stack([projected_gradient_penalty(critic, z_real[r:r + 1],
                                                      z_fake[r:r + 1], alpha[r:r + 1])
                           for r in range(12)])
    assert torch.allclose(per_row.mean(), full, atol=1e-6)
    subsets = torch.combinations(torch.arange(12), 3)  # every subset of 3 rows
    assert torch.allclose(per_row[subsets].mean(1).mean(), full, atol=1e-6)


def test_gp_samples_gradient_reaches_every_critic_layer_and_model_uses_it():
    graph = _graph()
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1, gp_samples=4)
    assert model.gp_samples == 4
    calls = []
    import mmssl_pyg.models.mmssl as module
    original = module.projected_gradient_penalty

    def spy(critic, z_real, z_fake, **kw):
        calls.append(kw.get('num_samples'))
        return original(critic, z_real, z_fake, **kw)

    module.projected_gradient_penalty = spy
    try:
        from test_critic_columns import _batch
        model.train()
        out = model.critic_loss(_batch(graph))
    finally:
        module.projected_gradient_penalty = original
    assert calls == [4]
    out['loss'].backward()
    assert all(p.grad is not None for p in model.critic_parameters())


@pytest.mark.parametrize('bad', [0, 1, 2.5, True, 'x'])
def test_bad_gp_samples(bad):
    with pytest.raises(ValueError, match='gp_samples'):
        MMSSL(_graph(), embedding_dim=8, num_heads=2, gp_samples=bad)


def test_critic_every_runs_the_critic_on_every_kth_batch_of_the_run(monkeypatch):
    graph = _graph()
    calls = []
    original = MMSSL.critic_loss

    def spy(self, batch):
        out = original(self, batch)
        calls.append(float(out['loss']))
        return out

    monkeypatch.setattr(MMSSL, 'critic_loss', spy)
    result, _, _ = _fit(graph, epochs=2, batches_per_epoch=4, critic_every=3)
    # global steps 0..7: the critic runs at 0, 3 (epoch 1) and 6 (epoch 2)
    assert len(calls) == 3
    h1, h2 = result.history
    assert math.isclose(h1['train/critic_loss'], (calls[0] + calls[1]) / 2, rel_tol=1e-6)
    assert math.isclose(h2['train/critic_loss'], calls[2], rel_tol=1e-6)
    assert 'train/generator' in h1  # L_G still enters every model step
    calls.clear()
    _fit(graph, epochs=1, batches_per_epoch=4)
    assert len(calls) == 4  # default: every batch, as in the paper


@pytest.mark.parametrize('bad', [0, -2])
def test_bad_critic_every(bad):
    with pytest.raises(ConfigError, match='critic_every'):
        TrainConfig(critic_every=bad)


def test_select_rows_matches_the_dense_rows():
    from mmssl_pyg.nn.lowrank import LowRankRows
    torch.manual_seed(0)
    rows, n, r = 6, 30, 3
    index = torch.stack([torch.randint(0, rows, (25,)), torch.randint(0, n, (25,))])
    x = LowRankRows(rows, n, left=torch.randn(rows, r), right=torch.randn(n, r),
                    scale=torch.rand(rows), index=index, value=torch.randn(25),
                    dense=torch.randn(rows, n))
    pick = torch.tensor([4, 0, 2])
    sub = x.select_rows(pick)
    assert sub.num_rows == 3 and sub.num_cols == n
    assert torch.allclose(sub.to_dense(), x.to_dense()[pick], atol=1e-6)
    w = torch.randn(7, n)
    assert torch.allclose(sub.linear(w), x.to_dense()[pick] @ w.t(), atol=1e-5)


def test_adv_samples_is_the_generator_loss_of_the_drawn_users():
    from test_critic_columns import _batch
    graph = _graph()
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1, adv_samples=3,
                  critic_dropout=(0.0, 0.0))
    model.train()
    batch = _batch(graph)
    model.critic_loss(batch)
    fake = batch.cache['mmssl_forward']['fake']
    torch.manual_seed(5)
    terms = model.loss(batch)
    torch.manual_seed(5)
    pick = torch.randperm(len(batch))[:3]
    # by hand from the dense generated rows: the critic's first layer, then its head
    x = torch.cat([r.to_dense()[pick] for r in fake], 0)
    d = model.critic.head(x @ model.critic.lin1.weight.t() + model.critic.lin1.bias)
    assert torch.allclose(terms['generator'], -d.mean(), atol=1e-5)
    assert terms['generator'].requires_grad


@pytest.mark.parametrize('bad', [0, 1, 2.5, True])
def test_bad_adv_samples(bad):
    with pytest.raises(ValueError, match='adv_samples'):
        MMSSL(_graph(), embedding_dim=8, num_heads=2, adv_samples=bad)
