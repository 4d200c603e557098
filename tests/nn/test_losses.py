"""Tests of ``mmssl_pyg/nn/losses.py``.

MMSSL's adversarial terms (Eqs. 4-7) computed by hand from the critic's layers, and their
direction checked by one gradient step: a flipped sign in either Wasserstein loss fails here.

The expected values are built from the dense relation rows, the critic's first layer applied
as a plain matrix product and :meth:`RelationCritic.head`, and an autograd gradient penalty
on dense interpolated rows; none of them reuses the model's own loss outputs.

MMSSL's speed options: the deferred top-k search (exact), the subsampled gradient penalty
(``gp_samples``) and the critic schedule (``critic_every``).

Tests written for mutants of ``make mutate`` that survived in ``models/mmssl.py``,
``nn/encoder.py`` and ``nn/losses.py``: the model's argument checks and their defaults, its
wiring of the scale options and of ``Batch.final``, the shared adjacency, and the WGAN-GP
losses with their defaults. Every expected value is derived here (by hand, from a dense
computation or from the documented contract). See ``benchmarks/results/mutation/report.md``.

Which views the contrastive loss of Eq. 11 pairs (``cl_pairing``, issue 15): the paper's
``'overall'``, ``'items'`` (also items against their overall embedding) and ``'views'``
(modality view against modality view). Expected values are computed by hand.

MMSSL building blocks against dense references written here: attention (Eq. 9), critic
(Eq. 4), gradient penalty (Eqs. 6-7), InfoNCE (Eq. 11), relation rows and top-k (Eq. 3).

Tests written for mutants of ``make mutate`` that survived the other tests: defaults,
random draws and options of the layers in ``mmssl_pyg/nn/`` and the MMSSL model, each against
a value derived here (by hand, from a dense computation or from the documented contract).
See ``benchmarks/results/mutation/report.md``.

Mixed precision (``TrainConfig.precision``) as far as a CPU can test it: bf16 autocast
trains, fp16 is refused with the fix, and the critic's gradient penalty stays float32."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmssl_pyg.models import MMSSL
from mmssl_pyg.nn import (
    LowRankRows,
    RelationCritic,
    cross_modal_info_nce,
    gradient_penalty,
    projected_gradient_penalty,
)
from mmssl_pyg.nn.losses import (
    contrastive_pairs,
    critic_objective,
    relation_reconstruction_loss,
    sampled_generator_loss,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)
from mmssl_pyg.testing import _tiny_graph
from mmssl_pyg.utils.options import declared_options


def _critic_and_rows(rows=12, width=32, seed=0):
    torch.manual_seed(seed)
    critic = RelationCritic(width, dropout=(0.0, 0.0))
    z_real = torch.randn(rows, width // 4, requires_grad=True)
    z_fake = torch.randn(rows, width // 4, requires_grad=True)
    return critic, z_real, z_fake


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


def _low_rank_blocks(rows: int, width: int, blocks: int = 2) -> list[LowRankRows]:
    g = torch.Generator().manual_seed(6)
    return [LowRankRows(rows, width, left=torch.randn(rows, 3, generator=g),
                        right=torch.rand(width, 3, generator=g)) for _ in range(blocks)]


E = math.e


def _nll(pos, *others):
    """-log(e^pos / (e^pos + sum e^others)), by hand."""
    return -math.log(E ** pos / (E ** pos + sum(E ** o for o in others)))


def _nonlinear_critic(width: int = 12) -> RelationCritic:
    """A critic whose input gradient depends on the input (so the penalty depends on alpha)."""
    torch.manual_seed(1)
    critic = RelationCritic(width, dropout=(0.0, 0.0)).eval()
    with torch.no_grad():
        for bn in (critic.norm1, critic.norm2):
            bn.running_var.fill_(0.05)  # steep batch norms: a visibly nonlinear critic
    return critic


def _penalty_drawn_by_hand(critic, real, fake, alpha):
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(x).sum(), x)
    return (grad.norm(dim=1) - 1).pow(2).mean()


def _critic_precision():
    torch.manual_seed(0)
    return RelationCritic(32, dropout=(0.0, 0.0)).eval()


def test_wasserstein_losses_by_hand():
    d_real = torch.tensor([1.0, 3.0])            # mean 2
    d_fake = torch.tensor([0.5, 1.0, 1.5, 2.0])  # mean 1.25
    penalty = torch.tensor(2.0)
    # Eq. 7: mean D(fake) - mean D(real) + gamma * GP = 1.25 - 2 + 0.3 * 2
    assert float(wasserstein_critic_loss(d_real, d_fake, penalty, 0.3)) == pytest.approx(-0.15)
    assert float(wasserstein_critic_loss(d_real, d_fake, penalty)) == pytest.approx(-0.15)
    assert float(wasserstein_critic_loss(d_real, d_fake, penalty, 2.0)) == pytest.approx(3.25)
    # Eq. 6: -mean D(fake)
    assert float(wasserstein_generator_loss(d_fake)) == pytest.approx(-1.25)


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


def test_info_nce_leaves_a_repeated_node_out_of_its_own_negatives():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])  # unit rows (1,0), (0,1), (1,0)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    ids = torch.tensor([5, 7, 5])  # rows 0 and 2 are one item
    # row 0: positive cos 1; row 1 (cos 0) is a negative, row 2 is the same item: left out
    # row 1: positive 1; negatives: row 0 (0) and row 2 (0.8)
    # row 2: positive 0.6; row 0 left out, row 1 (0) a negative
    want = (_nll(1, 0) + _nll(1, 0, 0.8) + _nll(0.6, 0)) / 3
    got = cross_modal_info_nce(a, t, temperature=1.0, ids=ids)
    assert got.item() == pytest.approx(want, abs=1e-6)
    # without ids every other row is a negative (the paper's users are distinct)
    plain = (_nll(1, 0, 0.6) + _nll(1, 0, 0.8) + _nll(0.6, 1, 0)) / 3
    assert cross_modal_info_nce(a, t, 1.0).item() == pytest.approx(plain, abs=1e-6)
    # distinct ids give the plain loss
    assert torch.allclose(cross_modal_info_nce(a, t, 1.0, ids=torch.tensor([0, 1, 2])),
                          cross_modal_info_nce(a, t, 1.0))
    # intra-view negatives cos(a_u, a_u') skip the anchor itself and the repeated item too:
    # row 0 adds a_1 (0); row 1 adds a_0 (0) and a_2 (0); row 2 adds a_1 (0)
    intra = (_nll(1, 0, 0) + _nll(1, 0, 0.8, 0, 0) + _nll(0.6, 0, 0)) / 3
    got = cross_modal_info_nce(a, t, 1.0, intra_view_negatives=True, ids=ids)
    assert got.item() == pytest.approx(intra, abs=1e-6)


def test_contrastive_pairs_by_pairing():
    g = torch.Generator().manual_seed(0)
    uv = [torch.randn(5, 3, generator=g) for _ in range(2)]
    iv = [torch.randn(4, 3, generator=g) for _ in range(2)]
    user, item = torch.randn(5, 3, generator=g), torch.randn(4, 3, generator=g)
    users, items = torch.tensor([4, 0, 2]), torch.tensor([1, 3, 1])

    paper = contrastive_pairs('overall', uv, user[users], iv, item[items], users, items)
    assert len(paper) == 2
    for (a, t, ids), h in zip(paper, uv):
        assert torch.equal(a, h[users]) and torch.equal(t, user[users]) and ids is None

    both = contrastive_pairs('items', uv, user[users], iv, item[items], users, items)
    assert len(both) == 4
    for (a, t, ids), (a0, t0, _) in zip(both[:2], paper):
        assert torch.equal(a, a0) and torch.equal(t, t0) and ids is None
    for (a, t, ids), h in zip(both[2:], iv):
        assert torch.equal(a, h[items]) and torch.equal(t, item[items])
        assert torch.equal(ids, items)

    views = contrastive_pairs('views', uv, user[users], iv, item[items], users, items)
    assert len(views) == 2  # (m0, m1) and (m1, m0)
    assert torch.equal(views[0][0], uv[0][users]) and torch.equal(views[0][1], uv[1][users])
    assert torch.equal(views[1][0], uv[1][users]) and torch.equal(views[1][1], uv[0][users])
    assert views[0][2] is None and views[1][2] is None
    three = contrastive_pairs('views', uv + [user], user[users], iv, item[items], users, items)
    assert len(three) == 6  # every ordered pair of 3 modalities

    # the paper's pairing is the default, listed first, and the neutral value of unit keys
    option = declared_options(MMSSL)['cl_pairing']
    assert option.rule.choices == ('overall', 'items', 'views')
    assert option.default == option.neutral == 'overall'


# --------------------------------------------------------------------------- Eqs. 6-7
def test_gradient_penalty_linear_critic_by_hand():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 1)
    real, fake = torch.rand(5, 6), torch.rand(5, 6)
    gp = gradient_penalty(lambda x: lin(x).squeeze(-1), real, fake)
    # D(x) = w.x + b has gradient w everywhere: GP = (||w|| - 1)^2 whatever alpha is
    expected = (lin.weight.norm() - 1) ** 2
    assert torch.allclose(gp, expected, atol=1e-6)
    gp.backward()  # gradient of the penalty w.r.t. w: 2 (||w|| - 1) w / ||w||
    w = lin.weight.detach()
    assert torch.allclose(lin.weight.grad, 2 * (w.norm() - 1) * w / w.norm(), atol=1e-6)


@pytest.mark.parametrize('mode', ['eval', 'train'])
@pytest.mark.parametrize('method', ['gram', 'direct'])
def test_projected_gradient_penalty_matches_dense(mode, method):
    torch.manual_seed(0)
    critic = RelationCritic(40, dropout=(0.0, 0.0))
    critic.train(mode == 'train')  # train: batch-norm statistics couple the rows
    real = LowRankRows(6, 40, torch.randn(6, 3), torch.randn(40, 3), torch.rand(6),
                       torch.tensor([[0, 1, 5], [3, 3, 39]]), torch.randn(3))
    fake = torch.rand(6, 40)
    alpha = torch.rand(6, 1)
    dense = gradient_penalty(critic, real.to_dense(), fake, alpha)
    g_dense = torch.autograd.grad(dense, list(critic.parameters()))
    proj = projected_gradient_penalty(critic, critic.project(real), critic.project(fake), alpha,
                                      method=method)
    g_proj = torch.autograd.grad(proj, list(critic.parameters()))
    assert torch.allclose(proj, dense, rtol=1e-4, atol=1e-6)
    for a, b in zip(g_proj, g_dense):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


# --------------------------------------------------------------------------- Eq. 11
def test_info_nce_dense_reference_and_gradient():
    torch.manual_seed(0)
    h, e = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    loss = cross_modal_info_nce(h, e, temperature=0.5)
    ref = 0.0
    for u in range(6):
        cos = [F.cosine_similarity(h[u], e[v], dim=0) / 0.5 for v in range(6)]
        ref = ref - torch.log(torch.exp(cos[u]) / sum(torch.exp(c) for c in cos))
    assert torch.allclose(loss, ref / 6, atol=1e-5)
    gh, ge = torch.autograd.grad(loss, [h, e])
    assert gh.abs().sum() > 0 and ge.abs().sum() > 0
    # intra-view negatives (release): cos(h_u, h_u') for u' != u join the denominator
    loss2 = cross_modal_info_nce(h, e, 0.5, intra_view_negatives=True)
    ref2 = 0.0
    for u in range(6):
        cross = [F.cosine_similarity(h[u], e[v], dim=0) / 0.5 for v in range(6)]
        intra = [F.cosine_similarity(h[u], h[v], dim=0) / 0.5 for v in range(6) if v != u]
        denom = sum(torch.exp(c) for c in cross) + sum(torch.exp(c) for c in intra)
        ref2 = ref2 - torch.log(torch.exp(cross[u]) / denom)
    assert torch.allclose(loss2, ref2 / 6, atol=1e-5)


# --------------------------------------------------------------------------- losses
def test_info_nce_default_temperature_is_one_half():
    torch.manual_seed(0)
    h, e = torch.randn(5, 3), torch.randn(5, 3)
    cos = F.normalize(h, dim=1) @ F.normalize(e, dim=1).t()
    by_hand = -(torch.log_softmax(cos / 0.5, dim=1).diag()).mean()
    assert torch.allclose(cross_modal_info_nce(h, e), by_hand, atol=1e-6)


def test_gradient_penalty_draws_one_alpha_per_row():
    critic = _nonlinear_critic()
    real, fake = torch.rand(6, 12) * 3, -torch.rand(6, 12) * 3
    torch.manual_seed(7)
    drawn = gradient_penalty(critic, real, fake)
    torch.manual_seed(7)
    alpha = torch.rand(6, 1)  # what "one alpha ~ U(0, 1) per row" draws
    assert torch.allclose(drawn, _penalty_drawn_by_hand(critic, real, fake, alpha), atol=1e-6)
    # and one alpha for all rows would be another number
    shared = alpha[:1].expand(6, 1)
    assert not torch.allclose(drawn, _penalty_drawn_by_hand(critic, real, fake, shared), atol=1e-4)


def test_projected_gradient_penalty_draws_one_alpha_per_row_and_uses_the_method():
    critic = _nonlinear_critic()
    real, fake = torch.rand(6, 12) * 3, -torch.rand(6, 12) * 3
    z_real, z_fake = critic.project(real), critic.project(fake)
    torch.manual_seed(7)
    drawn = projected_gradient_penalty(critic, z_real, z_fake)
    torch.manual_seed(7)
    alpha = torch.rand(6, 1)
    assert torch.allclose(drawn, _penalty_drawn_by_hand(critic, real, fake, alpha), atol=1e-5)
    shared = alpha[:1].expand(6, 1)
    assert not torch.allclose(drawn, _penalty_drawn_by_hand(critic, real, fake, shared), atol=1e-4)
    # the method argument reaches the critic's input-gradient norm
    seen = []
    norm = critic.input_gradient_norm
    critic.input_gradient_norm = lambda g, method='auto': (seen.append(method), norm(g, method))[1]
    for method in ('direct', 'gram'):
        projected_gradient_penalty(critic, z_real, z_fake, alpha, method=method)
    assert seen == ['direct', 'gram']


def test_projected_gradient_penalty_upcasts_bfloat16_inputs():
    critic = _nonlinear_critic()
    torch.manual_seed(2)
    z_real, z_fake = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    alpha = torch.rand(5, 1)
    want = projected_gradient_penalty(critic, z_real, z_fake, alpha)
    low = [t.bfloat16() for t in (z_real, z_fake, alpha)]
    got = projected_gradient_penalty(critic, *low)
    assert got.dtype == torch.float32
    # the bfloat16 inputs, cast to float32 first, then combined in float32
    exact = projected_gradient_penalty(critic, *(t.float() for t in low))
    assert torch.equal(got, exact)
    assert torch.allclose(got, want, rtol=0.05)
    dense = gradient_penalty(critic, torch.rand(5, 12).bfloat16(), torch.rand(5, 12).bfloat16(),
                             alpha.bfloat16())
    assert dense.dtype == torch.float32


def test_gae_loss_with_a_single_positive():
    """r/p-GAE's positive weight is negatives / positives; one positive in the batch."""
    graph = _tiny_graph()
    model = MMSSL(graph, embedding_dim=8, num_heads=2, ablation='rp_gae').eval()
    counts = torch.bincount(graph.train_edge_index[0], minlength=graph.num_users)
    user = int((counts == 1).nonzero()[0])
    users = torch.tensor([user])
    emb = model.encode()
    row, col = model._train_entries(users)
    assert row.numel() == 1
    target = torch.zeros(1, graph.num_items)
    target[0, col] = 1.0
    pos_weight = torch.tensor(float(graph.num_items - 1))  # 19 negatives / 1 positive
    want = torch.stack([F.binary_cross_entropy_with_logits(u[users] @ i.t(), target,
                                                           pos_weight=pos_weight)
                        for u, i in zip(emb.user_modal, emb.item_modal)]).mean()
    got = relation_reconstruction_loss([u[users] for u in emb.user_modal], emb.item_modal,
                                       row, col)
    assert torch.allclose(got, want, atol=1e-6)


def test_projected_gradient_penalty_is_float32_under_bf16_autocast():
    critic = _critic_precision()
    # the first layer's outputs, as the critic step computes them (they carry W1's graph)
    z_real = torch.randn(6, 8).bfloat16().requires_grad_()
    z_fake = torch.randn(6, 8).bfloat16().requires_grad_()
    alpha = torch.rand(6, 1)
    seen = []
    hook = critic.lin2.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.is_autocast_enabled('cpu')
        with_amp = projected_gradient_penalty(critic, z_real, z_fake, alpha)
        assert torch.is_autocast_enabled('cpu')  # restored after the penalty
    hook.remove()
    assert with_amp.dtype == torch.float32
    assert seen == [(torch.float32, torch.float32)]  # the critic head ran in float32
    reference = projected_gradient_penalty(critic, z_real.float(), z_fake.float(), alpha)
    assert torch.equal(with_amp, reference)
    # whereas under autocast an ordinary linear layer runs in bfloat16
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = critic.lin2(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16


def test_dense_gradient_penalty_is_float32_under_bf16_autocast():
    critic = _critic_precision()
    real, fake = torch.rand(4, 32).bfloat16(), torch.rand(4, 32).bfloat16()
    alpha = torch.rand(4, 1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        gp = gradient_penalty(critic, real, fake, alpha)
    assert gp.dtype == torch.float32
    assert torch.equal(gp, gradient_penalty(critic, real.float(), fake.float(), alpha))
