"""Tests written for mutants of ``make mutate`` that survived in ``models/mmssl.py``,
``nn/encoder.py`` and ``nn/losses.py``: the model's argument checks and their defaults, its
wiring of the scale options and of ``Batch.final``, the shared adjacency, and the WGAN-GP
losses with their defaults. Every expected value is derived here (by hand, from a dense
computation or from the documented contract). See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_mmssl_model import _batch, _dense_adj, _graph, _model, _sym

from mmssl_pyg.nn import BipartiteConv, LowRankRows, RelationCritic
from mmssl_pyg.nn.adjacency import BipartiteAdjacency
from mmssl_pyg.nn.encoder import modality_aware_views
from mmssl_pyg.nn.losses import (
    critic_objective,
    projected_gradient_penalty,
    relation_reconstruction_loss,
    sampled_generator_loss,
)


# --------------------------------------------------------------------------- model arguments
def test_sample_options_defaults_minimum_and_messages():
    """Args: ``gp_samples`` 64 and ``adv_samples`` 128 by default, ``None`` allowed, at least
    2, and an error that says what ``None`` means."""
    graph = _graph()
    model = _model(graph)
    assert (model.gp_samples, model.adv_samples) == (64, 128)
    small = _model(graph, gp_samples=2, adv_samples=2)  # the minimum is accepted
    assert (small.gp_samples, small.adv_samples) == (2, 2)
    assert _model(graph, gp_samples=None, adv_samples=None).gp_samples is None
    cases = [({'gp_samples': 1}, "MMSSL: option 'gp_samples' expects an integer >= 2 (or "
                                 "null: every interpolate), got 1"),
             ({'adv_samples': 1}, "MMSSL: option 'adv_samples' expects an integer >= 2 (or "
                                  "null: every batch user), got 1")]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as err:
            _model(graph, **kwargs)
        assert str(err.value) == message


def test_max_critic_memory_is_the_budget_of_the_memory_check():
    """A one-byte budget refuses any critic (free memory would let this tiny one through);
    a budget of the estimate itself is enough. Estimate by hand for 20 items and
    2 modalities x 1,024 rows: hidden widths 5 and 2, 100 + 5 + 10 + 2 + 2 + 1 + 2 * 7 = 134
    parameters, 16 * 134 + 4 * 2048 * (3 * 20 + 12 * 7) bytes."""
    graph = _graph()
    need = 16 * 134 + 4 * 2048 * (3 * 20 + 12 * 7)
    with pytest.raises(ValueError, match=r'\(max_critic_memory\)'):
        _model(graph, max_critic_memory=1)
    with pytest.raises(ValueError, match=rf'\({need - 1:,} bytes\) available'):
        _model(graph, max_critic_memory=need - 1)
    assert _model(graph, max_critic_memory=need).critic is not None
    # the ablations without a critic do not check
    assert _model(graph, max_critic_memory=1, ablation='wo_asl').critic is None


@pytest.mark.parametrize('norm', ['sym', 'row'])
def test_one_adjacency_when_the_generator_norm_is_the_encoders(norm):
    """Eq. 2 (``norm``) and Eq. 10 (always symmetric) read the same training graph: with
    ``norm='sym'`` the model holds one normalised adjacency, not two equal copies."""
    graph = _graph()
    model = _model(graph, norm=norm)
    adjs = {id(m) for m in model.modules() if isinstance(m, BipartiteAdjacency)}
    assert (model.generator_adj is model.encoder_adj) == (norm == 'sym')
    assert len(adjs) == (1 if norm == 'sym' else 2)
    a = _dense_adj(model.train_edge_index)
    want = _sym(a) if norm == 'sym' else a / a.sum(1, keepdim=True).clamp(min=1).sqrt()
    assert torch.allclose(model.generator_adj.ui.to_dense(), want, atol=1e-6)
    assert torch.allclose(model.encoder_adj.ui.to_dense(), _sym(a), atol=1e-6)


# --------------------------------------------------------------------------- model wiring
def test_encode_applies_mix_scale_and_item_fusion_scale():
    """Eqs. 10 and 12 with ``mix_scale='relative'`` and ``fusion_scale='relative'``, from a
    dense symmetric adjacency: E^(0) = E + mu * mean||E|| * normalize(h) per side, two
    LightGCN layers averaged, then e*_i = E_bar_i + omega * mean||E_bar_i|| *
    sum_m normalize(i^m)."""
    graph = _graph()
    model = _model(graph, feature_dropout=0.0, mix_scale='relative', fusion_scale='relative',
                   modality_mix=0.4, fusion_weight=0.5).eval()
    with torch.no_grad():
        model.user_emb.weight.mul_(3.0)  # mean row norms far from the paper's scale 1
        model.item_emb.weight.mul_(4.0)
        emb = model.encode()
        uw, iw = model.user_emb.weight, model.item_emb.weight
        su, si = uw.norm(dim=1).mean(), iw.norm(dim=1).mean()
        assert su > 1.5 and si > 1.5
        a = _sym(_dense_adj(model.train_edge_index))
        u = [uw + 0.4 * su * F.normalize(emb.user_fused, dim=1)]
        i = [iw + 0.4 * si * F.normalize(emb.item_fused, dim=1)]
        for _ in range(2):
            u, i = u + [a @ i[-1]], i + [a.t() @ u[-1]]
        assert torch.allclose(emb.user_graph, sum(u) / 3, atol=1e-5)
        assert torch.allclose(emb.item_graph, sum(i) / 3, atol=1e-5)
        s_item = emb.item_graph.norm(dim=1).mean()
        assert abs(float(s_item) - 1.0) > 0.2
        unit = sum(F.normalize(x, dim=1) for x in emb.item_modal)
        assert torch.allclose(emb.item, emb.item_graph + 0.5 * s_item * unit, atol=1e-5)


def test_top_k_is_collected_for_the_final_users_of_a_batch_only():
    """``Batch.final``: the top-k search runs for the users no later batch redraws; their
    neighbours are those a search over the whole batch gives them."""
    graph = _graph()
    rows = {}
    for final in (None, torch.tensor([True, False, True, False, False, True])):
        model = _model(graph, feature_dropout=0.0).train()
        batch = _batch(graph)
        batch.final = final
        model.critic_loss(batch)
        (users, neighbours), = model.graphs.pending
        rows[final is None] = users, neighbours
    users_all, nbs_all = rows[True]
    users_final, nbs_final = rows[False]
    keep = torch.tensor([0, 2, 5])
    assert torch.equal(users_all, _batch(graph).users)
    assert torch.equal(users_final, users_all[keep])
    for full, part in zip(nbs_all, nbs_final):
        assert torch.equal(part.sort(1).values, full[keep].sort(1).values)


# --------------------------------------------------------------------------- encoder
class _CountingAdjacency:
    """An adjacency that counts the aggregations run over it."""

    def __init__(self, adj: BipartiteAdjacency):
        self.adj, self.calls = adj, 0

    def to_users(self, conv, x):
        self.calls += 1
        return self.adj.to_users(conv, x)

    def to_items(self, conv, x):
        self.calls += 1
        return self.adj.to_items(conv, x)


def test_modality_aware_views_aggregate_a_shared_graph_once():
    """Eq. 8 per modality graph; modalities that share one graph object share its
    aggregation (one ``to_users`` and one ``to_items`` per distinct graph)."""
    torch.manual_seed(0)
    e1 = torch.tensor([[0, 0, 1, 2, 3], [0, 1, 1, 2, 4]])
    e2 = torch.tensor([[0, 1, 2, 3, 3], [3, 0, 4, 1, 2]])
    shared = _CountingAdjacency(BipartiteAdjacency(e1, 4, 5, 'sym', 'coo'))
    other = _CountingAdjacency(BipartiteAdjacency(e2, 4, 5, 'sym', 'coo'))
    ux, ix = torch.randn(4, 3), torch.randn(5, 3)
    user_views, item_views = modality_aware_views([shared, other, shared], BipartiteConv(),
                                                  ux, ix)
    assert (shared.calls, other.calls) == (2, 2)
    for k, e in enumerate((e1, e2, e1)):
        a = _sym(_dense_adj(e, 4, 5))
        assert torch.allclose(user_views[k], a @ ix, atol=1e-6)
        assert torch.allclose(item_views[k], a.t() @ ux, atol=1e-6)


# --------------------------------------------------------------------------- losses
def _critic(width: int) -> RelationCritic:
    """An eval-mode critic (no dropout) with steep batch norms: its input gradient depends on
    the input, so the gradient penalty depends on which alpha meets which row."""
    torch.manual_seed(1)
    critic = RelationCritic(width, dropout=(0.0, 0.0), output_scale=10.0).eval()
    with torch.no_grad():
        for bn in (critic.norm1, critic.norm2):
            bn.running_var.fill_(0.05)
    return critic


def _penalty_by_hand(critic, real, fake, alpha):
    """WGAN-GP on dense interpolated rows, the critic applied as head(x W1^T + b1)."""
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    d = critic.head(x @ critic.lin1.weight.t() + critic.lin1.bias)
    grad, = torch.autograd.grad(d.sum(), x)
    return (grad.norm(dim=1) - 1).pow(2).mean()


def test_critic_objective_defaults_by_hand():
    """Eq. 7 with the defaults: gamma = 0.3 and the projected gradient penalty with one
    alpha ~ U(0, 1) per row (drawn from torch's generator), every interpolate used; the real
    rows are scored once per modality's fake block."""
    critic = _critic(12)
    g = torch.Generator().manual_seed(2)
    real = torch.rand(4, 12, generator=g) * 2
    fake = [-torch.rand(4, 12, generator=g), torch.rand(4, 12, generator=g) * 4]
    torch.manual_seed(5)
    out = critic_objective(critic, real, fake)
    torch.manual_seed(5)
    alpha = torch.rand(8, 1)

    def d(x):
        return critic.head(x @ critic.lin1.weight.t() + critic.lin1.bias)

    real_rep, fake_all = torch.cat([real, real]), torch.cat(fake)
    gp = _penalty_by_hand(critic, real_rep, fake_all, alpha)
    assert gp > 1e-2
    wasserstein = d(fake_all).mean() - d(real_rep).mean()
    assert abs(float(wasserstein.detach())) > 1e-2
    assert torch.allclose(out['critic'], wasserstein, atol=1e-5)
    assert torch.allclose(out['gradient_penalty'], gp, rtol=1e-4)
    assert torch.allclose(out['loss'], wasserstein + 0.3 * gp, atol=1e-5)


def test_gradient_penalty_uses_every_row_in_order_unless_fewer_samples_are_asked():
    """``num_samples`` at or above the number of rows: every interpolate, alpha row r for
    row r (here wider rows than the critic's hidden width 10 of 40 items)."""
    critic = _critic(40)
    g = torch.Generator().manual_seed(3)
    real, fake = torch.rand(6, 40, generator=g) * 3, -torch.rand(6, 40, generator=g) * 3
    z_real, z_fake = critic.project(real), critic.project(fake)
    assert z_real.shape == (6, 10)
    alpha = torch.linspace(0.05, 0.95, 6).unsqueeze(1)
    want = _penalty_by_hand(critic, real, fake, alpha)
    for num_samples in (None, 6, 9):
        got = projected_gradient_penalty(critic, z_real, z_fake, alpha, num_samples=num_samples)
        assert torch.allclose(got, want, rtol=1e-4), num_samples
    # fewer samples: the rows torch.randperm draws, alpha given for the chosen rows
    torch.manual_seed(4)
    got = projected_gradient_penalty(critic, z_real, z_fake, alpha[:3], num_samples=3)
    torch.manual_seed(4)
    pick = torch.randperm(6)[:3]
    assert torch.allclose(got, _penalty_by_hand(critic, real[pick], fake[pick], alpha[:3]),
                          rtol=1e-4)


def _low_rank_blocks(rows: int, width: int, blocks: int = 2) -> list[LowRankRows]:
    g = torch.Generator().manual_seed(6)
    return [LowRankRows(rows, width, left=torch.randn(rows, 3, generator=g),
                        right=torch.rand(width, 3, generator=g)) for _ in range(blocks)]


def test_sampled_generator_loss_by_hand_and_draws_only_below_the_batch_size():
    """Eq. 6: -mean D(fake) over every block's rows; ``num_samples`` below the batch size
    averages over the same drawn rows of each block; otherwise nothing is drawn (torch's
    generator is left as it was)."""
    critic = _critic(16)
    fake = _low_rank_blocks(5, 16)
    dense = torch.cat([r.to_dense() for r in fake])

    def d(x):
        return critic.head(x @ critic.lin1.weight.t() + critic.lin1.bias)

    want = -d(dense).mean()
    assert abs(float(want.detach())) > 1e-2
    for num_samples in (None, 5, 7):
        torch.manual_seed(8)
        state = torch.get_rng_state()
        got = sampled_generator_loss(critic, fake, num_samples)
        assert torch.equal(torch.get_rng_state(), state), num_samples  # no draw
        assert torch.allclose(got, want, atol=1e-5), num_samples
    torch.manual_seed(9)
    got = sampled_generator_loss(critic, fake, 3)
    torch.manual_seed(9)
    pick = torch.randperm(5)[:3]
    rows = torch.cat([r.to_dense()[pick] for r in fake])
    assert torch.allclose(got, -d(rows).mean(), atol=1e-5)


def test_relation_reconstruction_loss_with_one_modality_by_hand():
    """r/p-GAE with a single modality (``min_modalities = 1``): weighted BCE written out,
    positive weight = negatives / positives = (2 * 4 - 3) / 3."""
    g = torch.Generator().manual_seed(0)
    u, i = torch.randn(2, 3, generator=g), torch.randn(4, 3, generator=g)
    row, col = torch.tensor([0, 0, 1]), torch.tensor([1, 3, 0])
    got = relation_reconstruction_loss([u], [i], row, col)
    logits = u @ i.t()
    y = torch.zeros(2, 4)
    y[row, col] = 1.0
    pos_weight = 5 / 3
    p = torch.sigmoid(logits)
    want = -(pos_weight * y * p.log() + (1 - y) * (1 - p).log()).mean()
    assert torch.allclose(got, want, atol=1e-6)
