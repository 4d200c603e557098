"""MMSSL's adversarial terms (Eqs. 4-7) computed by hand from the critic's layers, and their
direction checked by one gradient step: a flipped sign in either Wasserstein loss fails here.

The expected values are built from the dense relation rows, the critic's first layer applied
as a plain matrix product and :meth:`RelationCritic.head`, and an autograd gradient penalty
on dense interpolated rows; none of them reuses the model's own loss outputs."""
from __future__ import annotations

import pytest
import torch
from test_mmssl_model import _batch, _graph, _model

import mmssl_pyg.models.mmssl as mmssl_module
from mmssl_pyg.nn.losses import wasserstein_critic_loss, wasserstein_generator_loss


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


def _critic_model(graph, mode: str):
    """MMSSL without dropout (rows and critic deterministic), the release's critic output
    scale (100) and batch norms with non-trivial running statistics, in ``mode``."""
    model = _model(graph, feature_dropout=0.0, critic_dropout=(0.0, 0.0),
                   critic_output_scale=100.0)
    critic = model.critic
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for bn in (critic.norm1, critic.norm2):
            bn.running_mean.copy_(torch.rand(bn.num_features, generator=g) * 0.4 - 0.2)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.copy_(torch.rand(bn.num_features, generator=g) * 0.2 - 0.1)
        critic.lin3.bias.fill_(0.3)
    return model.train(mode == 'train')


def _fixed_alpha(monkeypatch):
    """Make the critic step use a known alpha per row (it draws one when given None)."""
    seen = []
    original = mmssl_module.projected_gradient_penalty

    def with_alpha(critic, z_real, z_fake, alpha=None, method='auto', num_samples=None):
        # the tiny batches here have fewer rows than gp_samples: every interpolate is used
        assert num_samples is None or num_samples >= z_real.size(0)
        alpha = torch.linspace(0.05, 0.95, z_real.size(0)).unsqueeze(1)
        seen.append(alpha)
        return original(critic, z_real, z_fake, alpha, method)

    monkeypatch.setattr(mmssl_module, 'projected_gradient_penalty', with_alpha)
    return seen


def _dense_critic(critic):
    """D(x) for dense rows: the first layer as a matrix product, then the critic's head."""
    return lambda x: critic.head(x @ critic.lin1.weight.t() + critic.lin1.bias)


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_critic_step_equals_eq7_by_hand(monkeypatch, mode):
    graph = _graph()
    model = _critic_model(graph, mode)
    alphas = _fixed_alpha(monkeypatch)
    batch = _batch(graph)
    out = model.critic_loss(batch)
    cached = batch.cache['mmssl_forward']
    num_m = model.num_modalities
    real = cached['real'].to_dense().detach()                          # [B, n_i]
    fake = torch.cat([r.to_dense() for r in cached['fake']]).detach()   # [M*B, n_i]
    D = _dense_critic(model.critic)
    real_rep = real.repeat(num_m, 1)  # every modality's fake block is scored against A_B
    d_real, d_fake = D(real_rep), D(fake)
    # gradient penalty: autograd through D on the dense interpolated rows
    alpha, = alphas
    x_hat = (alpha * real_rep + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(D(x_hat).sum(), x_hat)
    gp = (grad.norm(dim=1) - 1).pow(2).mean()
    assert gp > 1e-3  # a penalty that matters in the total below
    expected = d_fake.mean() - d_real.mean() + model.gp_weight * gp
    # D is about 57 here: float32 round-off of the means is about 1e-5
    assert torch.allclose(out['critic'], d_fake.mean() - d_real.mean(), atol=1e-4)
    assert torch.allclose(out['gradient_penalty'], gp, rtol=1e-4)
    assert torch.allclose(out['loss'], expected, atol=1e-4)
    # Eq. 6 on the same (cached) fake rows, with gradient to the generator
    terms = model.loss(batch)
    assert torch.allclose(terms['generator'], -D(fake).mean(), atol=1e-4)


def test_a_critic_step_separates_real_from_fake_and_a_generator_step_fools_it():
    """Direction of Eqs. 6-7, independent of any formula: a small gradient step on the critic
    loss raises D(real) - D(fake); one on the model loss (adversarial term only) raises
    D(fake) of the new fake rows."""
    graph = _graph()
    model = _critic_model(graph, 'eval')
    model.gp_weight = 0.0  # the Wasserstein part alone
    batch = _batch(graph)
    D = _dense_critic(model.critic)

    def gap(cached):
        real = cached['real'].to_dense().detach().repeat(model.num_modalities, 1)
        fake = torch.cat([r.to_dense() for r in cached['fake']]).detach()
        with torch.no_grad():
            return float(D(real).mean() - D(fake).mean()), fake

    model.critic_loss(batch)
    before, _ = gap(batch.cache['mmssl_forward'])
    opt = torch.optim.SGD(model.critic_parameters(), lr=1.0)
    for _ in range(5):
        opt.zero_grad()
        model.critic_loss(batch)['loss'].backward()
        opt.step()
    after, fake_before = gap(batch.cache['mmssl_forward'])
    assert after > before + 1e-4

    model.adv_weight, model.cl_weight, model.reg_weight, model.modality_reg_weight = \
        1.0, 0.0, 0.0, 0.0
    terms = model.loss(batch)
    model_opt = torch.optim.SGD(model.model_parameters(), lr=0.5)
    model_opt.zero_grad()
    (terms['loss'] - terms['bpr']).backward()  # the adversarial term alone
    model_opt.step()
    with torch.no_grad():
        fresh = model._batch_forward(batch)
        fake_after = torch.cat([r.to_dense() for r in fresh['fake']])
        assert float(D(fake_after).mean()) > float(D(fake_before).mean()) + 1e-6
