"""Tests written for mutants of ``make mutate`` that survived the other tests: defaults,
random draws and options of the layers in ``mmssl_pyg/nn/`` and the MMSSL model, each against
a value derived here (by hand, from a dense computation or from the documented contract).
See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmssl_pyg.nn import RelationCritic, cross_modal_info_nce, gradient_penalty
from mmssl_pyg.nn.losses import projected_gradient_penalty


# --------------------------------------------------------------------------- losses
def test_info_nce_default_temperature_is_one_half():
    torch.manual_seed(0)
    h, e = torch.randn(5, 3), torch.randn(5, 3)
    cos = F.normalize(h, dim=1) @ F.normalize(e, dim=1).t()
    by_hand = -(torch.log_softmax(cos / 0.5, dim=1).diag()).mean()
    assert torch.allclose(cross_modal_info_nce(h, e), by_hand, atol=1e-6)


def _nonlinear_critic(width: int = 12) -> RelationCritic:
    """A critic whose input gradient depends on the input (so the penalty depends on alpha)."""
    torch.manual_seed(1)
    critic = RelationCritic(width, dropout=(0.0, 0.0)).eval()
    with torch.no_grad():
        for bn in (critic.norm1, critic.norm2):
            bn.running_var.fill_(0.05)  # steep batch norms: a visibly nonlinear critic
    return critic


def _penalty_by_hand(critic, real, fake, alpha):
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(x).sum(), x)
    return (grad.norm(dim=1) - 1).pow(2).mean()


def test_gradient_penalty_draws_one_alpha_per_row():
    critic = _nonlinear_critic()
    real, fake = torch.rand(6, 12) * 3, -torch.rand(6, 12) * 3
    torch.manual_seed(7)
    drawn = gradient_penalty(critic, real, fake)
    torch.manual_seed(7)
    alpha = torch.rand(6, 1)  # what "one alpha ~ U(0, 1) per row" draws
    assert torch.allclose(drawn, _penalty_by_hand(critic, real, fake, alpha), atol=1e-6)
    # and one alpha for all rows would be another number
    shared = alpha[:1].expand(6, 1)
    assert not torch.allclose(drawn, _penalty_by_hand(critic, real, fake, shared), atol=1e-4)


def test_projected_gradient_penalty_draws_one_alpha_per_row_and_uses_the_method():
    critic = _nonlinear_critic()
    real, fake = torch.rand(6, 12) * 3, -torch.rand(6, 12) * 3
    z_real, z_fake = critic.project(real), critic.project(fake)
    torch.manual_seed(7)
    drawn = projected_gradient_penalty(critic, z_real, z_fake)
    torch.manual_seed(7)
    alpha = torch.rand(6, 1)
    assert torch.allclose(drawn, _penalty_by_hand(critic, real, fake, alpha), atol=1e-5)
    shared = alpha[:1].expand(6, 1)
    assert not torch.allclose(drawn, _penalty_by_hand(critic, real, fake, shared), atol=1e-4)
    # the method argument reaches the critic's input-gradient norm
    seen = []
    norm = critic.input_gradient_norm
    critic.input_gradient_norm = lambda g, method='auto': (seen.append(method), norm(g, method))[1]
    for method in ('direct', 'gram'):
        projected_gradient_penalty(critic, z_real, z_fake, alpha, method=method)
    assert seen == ['direct', 'gram']
