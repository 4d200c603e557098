"""Tests written for mutants of ``make mutate`` that survived the other tests: defaults,
random draws and options of the layers in ``mmssl_pyg/nn/`` and the MMSSL model, each against
a value derived here (by hand, from a dense computation or from the documented contract).
See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

import mmssl_pyg.nn.critic as critic_module
from mmssl_pyg.data.graph import bipartite_adjacency
from mmssl_pyg.nn import (
    BipartiteConv,
    RelationCritic,
    cross_modal_info_nce,
    gradient_penalty,
    knn_edge_index,
)
from mmssl_pyg.nn.conv import is_sparse_tensor_available
from mmssl_pyg.nn.critic import (
    available_memory,
    check_critic_memory,
    critic_hidden_sizes,
    critic_memory_estimate,
    gumbel_noise,
    gumbel_transform,
)
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


# --------------------------------------------------------------------------- topk
@pytest.mark.parametrize('cosine', [True, False])
def test_knn_edge_index_matches_a_dense_reference(cosine):
    torch.manual_seed(0)
    x = torch.randn(9, 4) * torch.rand(9, 1) * 5  # rows of different norms
    edge_index = knn_edge_index(x, 3, block_size=4, cosine=cosine)
    y = F.normalize(x, dim=1) if cosine else x
    scores = y @ y.t()
    scores.fill_diagonal_(float('-inf'))  # no self loops
    want = scores.topk(3, dim=1).indices
    assert edge_index.shape == (2, 27)
    assert torch.equal(edge_index[0], torch.arange(9).repeat_interleave(3))
    assert torch.equal(edge_index[1].view(9, 3).sort(1).values, want.sort(1).values)
    assert torch.equal(knn_edge_index(x, 3, cosine=cosine), edge_index)  # default block size


# --------------------------------------------------------------------------- conv
def test_message_and_aggregate_is_the_sparse_product():
    """The fused path PyG takes for sparse adjacencies (a SparseTensor with torch-sparse)."""
    torch.manual_seed(0)
    ei = torch.stack([torch.randint(0, 5, (12,)), torch.randint(0, 7, (12,))]).unique(dim=1)
    adj_ui, _ = bipartite_adjacency(ei, 5, 7)  # [users, items]
    x = torch.randn(7, 3)
    want = adj_ui.to_dense() @ x
    conv = BipartiteConv()
    assert torch.allclose(conv.message_and_aggregate(adj_ui, (x, None)), want, atol=1e-6)
    assert torch.allclose(conv.message_and_aggregate(adj_ui, x), want, atol=1e-6)


def test_sparse_tensor_availability_follows_the_installed_package():
    installed = importlib.util.find_spec('torch_sparse') is not None
    assert is_sparse_tensor_available() == installed


# --------------------------------------------------------------------------- critic
def test_gumbel_transform_defaults_and_bad_formula():
    torch.manual_seed(0)
    a = (torch.rand(3, 6) < 0.4).float()
    g = torch.randn(3, 6)
    # documented defaults: scale 1e-5, temperature 0.005, the paper's formula
    want = torch.softmax((a + 1e-5 * g) / 0.005, dim=1)
    assert torch.allclose(gumbel_transform(a, g), want, atol=1e-6)
    with pytest.raises(ValueError) as err:
        gumbel_transform(a, g, formula='other')
    assert str(err.value) == "formula must be 'paper' or 'release', got 'other'"


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


def test_critic_memory_estimate_by_hand():
    # n = 80 items: widths 20 and 10; Linear(80, 20), Linear(20, 10), Linear(10, 1) and two
    # batch norms (weight and bias each)
    params = (80 * 20 + 20) + (20 * 10 + 10) + (10 + 1) + 2 * (20 + 10)
    # 16 bytes per parameter, plus 4 bytes x rows x (3 n + 12 (h1 + h2))
    activations = 4 * 7 * (3 * 80 + 12 * (20 + 10))
    assert critic_memory_estimate(80, 7) == (params, 16 * params + activations)
    assert critic_hidden_sizes(80) == (20, 10) and critic_hidden_sizes(3) == (1, 1)
    assert sum(p.numel() for p in RelationCritic(80).parameters()) == params


def test_critic_memory_check_boundary_and_message():
    _, need = critic_memory_estimate(80, 7)
    assert check_critic_memory(80, 7, max_bytes=need) == need  # exactly enough fits
    with pytest.raises(ValueError) as err:
        check_critic_memory(80, 7, max_bytes=need - 1)
    msg = str(err.value)
    assert msg.startswith('The MMSSL critic (Eq. 4) reads rows of n_items=80 values; its first '
                          'layer alone has n_items^2/4 weights, 1,901 parameters in all.')
    assert f'about {need / 2**30:,.2f} GiB ({need:,} bytes), more than the ' \
           f'{(need - 1) / 2**30:,.2f} GiB ({need - 1:,} bytes) available (max_critic_memory)' \
           in msg
    assert "Fix: let the critic read a random subset of item columns per step (MMSSL " \
           "critic_columns=4096, for example)" in msg


def test_available_memory_on_cpu_is_the_physical_memory():
    import os
    got, what = available_memory('cpu')
    assert got == os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    assert what == 'physical memory of this machine'
    assert available_memory() == (got, what)  # default device: the CPU
    with open('/proc/meminfo') as f:  # MemTotal is the physical memory less the kernel's
        total_kib = int(next(line for line in f if line.startswith('MemTotal')).split()[1])
    assert 0.8 * got <= total_kib * 1024 <= got


def test_gumbel_noise_by_hand():
    gen = torch.Generator().manual_seed(3)
    got = gumbel_noise((4, 5), generator=gen)
    u = torch.rand((4, 5), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got, -torch.log(-torch.log(u + 1e-8) + 1e-8))
    assert torch.equal(gumbel_noise((4, 5), torch.Generator().manual_seed(3), 'cpu'), got)


@pytest.mark.parametrize('rows', [7, 8, 9])
def test_input_gradient_norm_auto_picks_the_cheaper_method(rows, monkeypatch):
    torch.manual_seed(0)
    critic = RelationCritic(36)               # h = 9, n = 36
    g = torch.randn(rows, 9)
    want = (g @ critic.lin1.weight).norm(dim=1)
    for method in ('gram', 'direct', 'auto'):
        assert torch.allclose(critic.input_gradient_norm(g, method), want, atol=1e-5)
    assert torch.allclose(critic.input_gradient_norm(g), want, atol=1e-5)  # default 'auto'
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
