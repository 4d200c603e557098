r"""Tests of ``mmssl_pyg/nn/critic.py``.

MMSSL building blocks against dense references written here: attention (Eq. 9), critic
(Eq. 4), gradient penalty (Eqs. 6-7), InfoNCE (Eq. 11), relation rows and top-k (Eq. 3).

Tests written for mutants of ``make mutate`` that survived the other tests: defaults,
random draws and options of the layers in ``mmssl_pyg/nn/`` and the MMSSL model, each against
a value derived here (by hand, from a dense computation or from the documented contract).
See ``benchmarks/results/mutation/report.md``.

Issue 24: the shared products of MMSSL's critic and attention give the numbers of the
per-block / per-token computations they replaced.

- :func:`~mmssl_pyg.nn.lowrank.linear_blocks` (the critic's first layer over the real and
  every fake block at once, :math:`\mathbf{W}_1` read by one product) against each block's
  dense rows times :math:`\mathbf{W}_1^{\top}`, values and the gradients of every input,
  for the sparse residual with and without gradient (the critic step's and the generator
  loss's paths), a block without a low-rank part (the w/o-GT real rows) and a dense one;
- :meth:`~mmssl_pyg.nn.attention.CrossModalAttention.pooled` (mean over the tokens before
  the output projection) against ``pool(attention(x))``, values and gradients.

The end-to-end check (every loss term, metric and final embedding of a seeded run on
tiktok-mini against numbers recorded before the rewrites) is
``tests/models/test_mmssl.py``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mmssl_pyg.nn.critic as critic_module
from mmssl_pyg.nn import (
    RelationCritic,
    gradient_penalty,
)
from mmssl_pyg.testing import _blocks


# --------------------------------------------------------------------------- Eq. 4
def test_critic_architecture_and_dense_reference():
    torch.manual_seed(0)
    critic = RelationCritic(64).eval()
    assert critic.lin1.weight.shape == (16, 64) and critic.lin2.weight.shape == (8, 16)
    assert critic.lin3.weight.shape == (1, 8)
    with torch.no_grad():
        for bn in (critic.norm1, critic.norm2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
    x = torch.rand(5, 64)

    def bn(z, m):
        return (z - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias

    z = F.leaky_relu(x @ critic.lin1.weight.t() + critic.lin1.bias, 0.2)
    z = F.leaky_relu(bn(z, critic.norm1) @ critic.lin2.weight.t() + critic.lin2.bias, 0.2)
    ref = torch.sigmoid(bn(z, critic.norm2) @ critic.lin3.weight.t() + critic.lin3.bias)[:, 0]
    assert torch.allclose(critic(x), ref, atol=1e-6)
    release = RelationCritic(64, output_scale=100.0, negative_slope=1.0).eval()
    release.load_state_dict(critic.state_dict())
    assert 'output_scale=100.0' in str(release)
    assert ((release(x) > 0) & (release(x) < 100)).all()


def test_gradient_penalty_finite_differences():
    torch.manual_seed(0)
    critic = RelationCritic(16).double().eval()  # deterministic: finite differences apply
    real, fake = torch.rand(3, 16, dtype=torch.double), torch.rand(3, 16, dtype=torch.double)
    alpha = torch.rand(3, 1, dtype=torch.double)
    x_hat = alpha * real + (1 - alpha) * fake
    eps, norms = 1e-6, []
    for r in range(3):
        grad = torch.zeros(16, dtype=torch.double)
        for j in range(16):
            e = torch.zeros(16, dtype=torch.double)
            e[j] = eps
            with torch.no_grad():
                grad[j] = (critic((x_hat[r] + e)[None]) - critic((x_hat[r] - e)[None]))[0] \
                    / (2 * eps)
        norms.append(grad.norm())
    expected = torch.stack([(n - 1) ** 2 for n in norms]).mean()
    assert torch.allclose(gradient_penalty(critic, real, fake, alpha), expected, atol=1e-7)


def test_relation_critic_documented_defaults_and_repr():
    critic = RelationCritic(40)
    assert critic.dropout == (0.31, 0.5) and critic.negative_slope == 0.2
    assert critic.output_scale == 1.0
    assert repr(critic) == ('RelationCritic(40 -> 10 -> 5 -> 1, dropout=(0.31, 0.5), '
                            'negative_slope=0.2, output_scale=1.0)')
    # the defaults are the ones the forward pass uses: eval mode, by hand
    critic.eval()
    x = torch.rand(3, 40)

    def bn(z, m):
        return (z - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias

    z = F.leaky_relu(bn(F.leaky_relu(x @ critic.lin1.weight.t() + critic.lin1.bias, 0.2),
                        critic.norm1) @ critic.lin2.weight.t() + critic.lin2.bias, 0.2)
    want = torch.sigmoid(bn(z, critic.norm2) @ critic.lin3.weight.t() + critic.lin3.bias)[:, 0]
    assert torch.allclose(critic(x), want, atol=1e-6)
    # training mode drops with the documented rates: about 31% of the first hidden layer
    critic.train()
    seen = []
    hook = critic.lin2.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    torch.manual_seed(0)
    critic(torch.rand(400, 40))
    hook.remove()
    assert abs(float((seen[0] == 0).float().mean()) - 0.31) < 0.03
    seen.clear()  # and about half of the second
    hook = critic.lin3.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    critic(torch.rand(400, 40))
    hook.remove()
    assert abs(float((seen[0] == 0).float().mean()) - 0.5) < 0.04


@pytest.mark.parametrize('rows', [7, 8, 9])
def test_input_gradient_norm_auto_picks_the_cheaper_method(rows, monkeypatch):
    torch.manual_seed(0)
    critic = RelationCritic(36)               # h = 9, n = 36
    g = torch.randn(rows, 9)
    want = (g @ critic.lin1.weight).norm(dim=1)
    for method in ('gram', 'direct', 'auto'):
        assert torch.allclose(critic.input_gradient_norm(g, method), want, atol=1e-5)
    assert torch.allclose(critic.input_gradient_norm(g), want, atol=1e-5)  # default 'auto'
    small = 1e-3 * g  # norms far below 1: no clamping but of an exact zero
    for method in ('gram', 'direct'):
        assert torch.allclose(critic.input_gradient_norm(small, method), 1e-3 * want,
                              rtol=1e-4)
    # 'gram' costs 2 h^2 n + 3 R h^2 = 5,832 + 243 R, 'direct' 3 R h n = 972 R: equal at
    # R = 8 (direct: gram only when strictly cheaper), gram from 9 rows on. Which one ran
    # shows in whether the Gram matrix was formed.
    formed = []
    monkeypatch.setattr(critic_module._Gram, 'apply',
                        lambda w: (formed.append(1), w @ w.t())[1])
    critic.input_gradient_norm(g, 'auto')
    assert bool(formed) == (rows == 9)
    with pytest.raises(ValueError) as err:
        critic.input_gradient_norm(g, 'fast')
    assert str(err.value) == "method must be 'auto', 'gram' or 'direct', got 'fast'"


def test_critic_project_blocks_equals_project_of_each_block():
    critic = RelationCritic(9)
    blocks, _ = _blocks(False, torch.Generator().manual_seed(1))
    for got, block in zip(critic.project_blocks(blocks), blocks):
        assert torch.allclose(got, critic.project(block.to_dense()), atol=1e-5)
    dense = [b.to_dense().detach() for b in blocks]  # dense rows: block by block
    for got, x in zip(critic.project_blocks(dense), dense):
        assert torch.equal(got, critic.project(x))
