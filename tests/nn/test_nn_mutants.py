"""Tests written for mutants of ``make mutate`` that survived the other tests: defaults,
random draws and options of the layers in ``mmssl_pyg/nn/`` and the MMSSL model, each against
a value derived here (by hand, from a dense computation or from the documented contract).
See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

import mmssl_pyg.models.mmssl as mmssl_module
import mmssl_pyg.nn.conv as conv_module
import mmssl_pyg.nn.critic as critic_module
from mmssl_pyg.data.graph import bipartite_adjacency
from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.nn import (
    BipartiteConv,
    CrossModalAttention,
    LowRankRows,
    ModalityRelationGenerator,
    RelationCritic,
    cross_modal_info_nce,
    gradient_penalty,
    knn_edge_index,
    sparse_matmul,
)
from mmssl_pyg.nn.conv import is_sparse_tensor_available
from mmssl_pyg.nn.critic_memory import (
    available_memory,
    check_critic_memory,
    critic_hidden_sizes,
    critic_memory_estimate,
)
from mmssl_pyg.nn.generator import _accumulate_dtype
from mmssl_pyg.nn.gumbel import gumbel_noise, gumbel_transform, softmax_is_sparse
from mmssl_pyg.nn.losses import projected_gradient_penalty, relation_reconstruction_loss


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
    if cosine:
        assert torch.equal(knn_edge_index(x, 3), edge_index)  # cosine by default


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
def test_gumbel_transform_defaults_and_release_formula():
    torch.manual_seed(0)
    a = (torch.rand(3, 6) < 0.4).float()
    g = torch.randn(3, 6)
    # documented defaults: scale 1e-5, temperature 0.005, the paper's formula
    want = torch.softmax((a + 1e-5 * g) / 0.005, dim=1)
    assert torch.allclose(gumbel_transform(a, g), want, atol=1e-6)
    release = torch.softmax(a + (1e-5 / 0.005) * g, dim=1)
    assert torch.allclose(gumbel_transform(a, g, formula='release'), release, atol=1e-6)


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
    gib = f'{need / 2**30:,.2f}'
    assert str(err.value) == (
        'The MMSSL critic (Eq. 4) reads rows of n_items=80 values; its first layer alone has '
        "n_items^2/4 weights, 1,901 parameters in all. With gradients, Adam's two moments and "
        f'the activations of 7 rows a critic step needs about {gib} GiB ({need:,} bytes), more '
        f'than the {gib} GiB ({need - 1:,} bytes) available (max_critic_memory). Fix: let the '
        'critic read a random subset of item columns per step (MMSSL critic_columns=4096, for '
        'example), train on a smaller item catalogue (filter rare items), use the w/o-ASL '
        "ablation (ablation='wo_asl', no critic) or the graph auto-encoder variant "
        "(ablation='rp_gae'), or raise max_critic_memory if more memory really is available.")


def test_available_memory_on_cpu_is_the_physical_memory():
    import os
    got, what = available_memory('cpu')
    assert got == os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    assert what == 'physical memory of this machine'
    assert available_memory() == (got, what)  # default device: the CPU
    with open('/proc/meminfo') as f:  # MemTotal is the physical memory less the kernel's
        total_kib = int(next(line for line in f if line.startswith('MemTotal')).split()[1])
    assert 0.8 * got <= total_kib * 1024 <= got


def test_gumbel_noise_by_hand(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    got = gumbel_noise((4, 5), generator=gen)
    u = torch.rand((4, 5), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got, -torch.log(-torch.log(u + 1e-8) + 1e-8))
    assert torch.equal(gumbel_noise((4, 5), torch.Generator().manual_seed(3), 'cpu'), got)
    # at the ends of U(0, 1), where eps = 1e-8 decides: u = 0 and u = 1 - 2^-24
    u = torch.tensor([0.0, 0.5, 1 - 2 ** -24])
    monkeypatch.setattr(torch, 'rand', lambda *a, **k: u.clone())
    g = gumbel_noise((3,))
    # by hand (float64): -log(-log(1e-8) + 1e-8) = -log(18.4207) = -2.9134;
    # -log(-log(0.5) + 1e-8) = 0.3665; -log(5.9605e-8 + 1e-8) = -log(6.9605e-8) = 16.4804
    assert torch.allclose(g, torch.tensor([-2.9134, 0.3665, 16.4804]), atol=1e-3)


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


# --------------------------------------------------------------------------- attention
def test_attention_defaults_bias_and_message():
    att = CrossModalAttention(8)
    assert att.heads == 4 and all(lin.bias is None for lin in (att.query, att.key, att.value,
                                                                att.out))
    torch.manual_seed(0)
    biased = CrossModalAttention(8, heads=2, bias=True)
    lins = (biased.query, biased.key, biased.value, biased.out)
    assert all(torch.equal(lin.bias, torch.zeros(8)) for lin in lins)  # reset to zero
    with torch.no_grad():
        for lin in lins:
            lin.bias.uniform_(-1, 1)
    x = torch.randn(3, 2, 8)
    # by hand, biases included: per head softmax(q k^T / sqrt(4)) v, concatenated, projected
    q, k, v = (lin(x).view(3, 2, 2, 4) for lin in lins[:3])
    att_w = torch.softmax(torch.einsum('nahc,nbhc->nhab', q, k) / 2.0, dim=-1)
    want = biased.out(torch.einsum('nhab,nbhc->nahc', att_w, v).reshape(3, 2, 8))
    assert torch.allclose(biased(x), want, atol=1e-6)
    biased.reset_parameters()
    assert all(torch.equal(lin.bias, torch.zeros(8)) for lin in lins)
    with pytest.raises(ValueError) as err:
        CrossModalAttention(10, heads=4)
    assert str(err.value) == 'channels (10) must be divisible by heads (4)'


# --------------------------------------------------------------------------- conv
def _small_adjacency():
    torch.manual_seed(0)
    ei = torch.stack([torch.randint(0, 5, (12,)), torch.randint(0, 7, (12,))]).unique(dim=1)
    return bipartite_adjacency(ei, 5, 7)  # ([users, items], [items, users])


def test_conv_size_mismatch_message_and_repr():
    adj_ui, _ = _small_adjacency()
    with pytest.raises(ValueError) as err:
        BipartiteConv()(torch.randn(6, 3), adj_ui)
    assert str(err.value) == 'adjacency has 7 source columns but x has 6 rows'
    with pytest.raises(ValueError) as err:
        BipartiteConv()(torch.randn(7, 3), torch.zeros(2, 0, dtype=torch.long))
    assert str(err.value) == 'BipartiteConv needs size=(num_src, num_dst) with edge_index input'
    assert repr(BipartiteConv()) == 'BipartiteConv()'


def test_sparse_matmul_takes_bfloat16_inputs_in_float32():
    adj_ui, _ = _small_adjacency()
    x = torch.randn(7, 3).bfloat16()
    out = sparse_matmul(adj_ui, x)  # outside autocast: the sum is formed in float32
    assert out.dtype == torch.float32
    assert torch.allclose(out, adj_ui.to_dense() @ x.float(), atol=1e-6)
    with torch.autocast('cpu', dtype=torch.bfloat16):  # inside: float32 too
        out = sparse_matmul(adj_ui, torch.randn(7, 3))
    assert out.dtype == torch.float32


def test_sparse_matmul_uses_the_cached_transpose_only_when_valid(monkeypatch):
    adj_ui, adj_iu = _small_adjacency()
    calls = []
    original = conv_module._TransposedSpMM.apply
    monkeypatch.setattr(conv_module._TransposedSpMM, 'apply',
                        lambda *a: (calls.append(1), original(*a))[1])
    x = torch.randn(7, 3, requires_grad=True)
    want = adj_ui.to_dense() @ x.detach()
    cases = [  # (x, adj_rev, grad enabled, fast path expected)
        (x, adj_iu, True, True),
        (x, None, True, False),
        (x.detach(), adj_iu, True, False),
        (x, adj_iu, False, False),
    ]
    for inp, rev, grad, fast in cases:
        calls.clear()
        with torch.set_grad_enabled(grad):
            out = sparse_matmul(adj_ui, inp, rev)
        assert torch.allclose(out, want, atol=1e-6)
        assert bool(calls) == fast
    # also for bfloat16 inputs (cast to float32 first) and through the layer
    for out in (sparse_matmul(adj_ui, x.bfloat16(), adj_iu),
                BipartiteConv()(x, adj_ui, adj_rev=adj_iu)):
        assert calls.pop() == 1 and torch.allclose(out, want, atol=5e-2)
    # a differentiable adjacency never takes it: its gradient would be lost
    calls.clear()
    adj = adj_ui.to_sparse_coo().coalesce()
    adj = torch.sparse_coo_tensor(adj.indices(), adj.values().clone().requires_grad_(),
                                  adj.shape)
    sparse_matmul(adj, x, adj_iu)
    assert not calls


# --------------------------------------------------------------------------- generator
def test_accumulation_dtype_and_an_ill_conditioned_row():
    assert _accumulate_dtype(torch.device('cpu')) == torch.float64
    assert _accumulate_dtype(torch.device('mps')) == torch.float32  # MPS has no float64
    # a row whose training entry holds almost all of its mass: ||row||^2 = total - train^2
    # cancels 1e10 + 1e4 against 1e10; float64 accumulation keeps the remainder (float32
    # would lose it to round-off: its spacing at 1e10 is 1024, and the row would come out
    # about 4% too long)
    user = torch.tensor([[1e5, 0.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.001, 0.0]])
    row, col = torch.tensor([0]), torch.tensor([0])
    rows = ModalityRelationGenerator.relation_rows(user, items, row, col)
    dense = (user.double() @ items.double().t())
    dense[0, 0] = 0.0
    want = dense / dense.norm(dim=1, keepdim=True)  # [0, 0, 1]
    assert torch.allclose(rows.to_dense().double(), want, atol=1e-6)


def test_relation_rows_of_a_zero_user_are_zero_with_scale_one_over_eps():
    user = torch.zeros(1, 3, requires_grad=True)
    items = torch.randn(4, 3)
    rows = ModalityRelationGenerator.relation_rows(user, items, torch.tensor([0]),
                                                   torch.tensor([1]))
    assert float(rows.scale) == pytest.approx(1e12)  # 1 / max(||row||, 1e-12)
    assert torch.equal(rows.to_dense(), torch.zeros(1, 4))
    grad, = torch.autograd.grad(rows.linear(torch.randn(2, 4)).sum(), user)
    assert torch.isfinite(grad).all()


def test_generator_defaults_message_and_repr():
    gen = ModalityRelationGenerator([5, 3], 4)
    assert gen.dropout == 0.2
    assert repr(gen) == 'ModalityRelationGenerator([5, 3], 4, dropout=0.2)'
    with pytest.raises(ValueError) as err:
        gen.project([torch.randn(2, 5)])
    assert str(err.value) == 'expected 2 modalities, got 1'
    torch.manual_seed(0)
    gen.train()
    f = gen.project([torch.randn(500, 5), torch.randn(500, 3)])[0]
    assert abs(float((f == 0).float().mean()) - 0.2) < 0.03  # the default rate


# --------------------------------------------------------------------------- LowRankRows
def test_low_rank_rows_without_parts_and_with_one_entry():
    with pytest.raises(ValueError) as err:
        LowRankRows(2, 3).to_dense()
    assert str(err.value) == 'LowRankRows has no part'
    w = torch.randn(4, 3)
    for value in (torch.tensor([2.5]), torch.tensor([2.5], requires_grad=True)):
        rows = LowRankRows(2, 3, index=torch.tensor([[1], [2]]), value=value)
        want = torch.zeros(2, 3)
        want[1, 2] = 2.5
        assert torch.allclose(rows.linear(w), want @ w.t())
        assert torch.allclose(rows.to_dense(), want)
    # rows with no entries at all: zeros (plus the bias)
    none = LowRankRows(2, 3, index=torch.zeros(2, 0, dtype=torch.long), value=torch.zeros(0))
    bias = torch.randn(4)
    assert torch.equal(none.linear(w, bias), bias.expand(2, 4))
    assert torch.equal(none.to_dense(), torch.zeros(2, 3))
    # no sparse entries at all (an empty batch part): the low-rank part alone
    left, right = torch.randn(2, 2), torch.randn(3, 2)
    empty = LowRankRows(2, 3, left, right, index=torch.zeros(2, 0, dtype=torch.long),
                        value=torch.zeros(0))
    assert torch.allclose(empty.linear(w), (left @ right.t()) @ w.t(), atol=1e-6)


# --------------------------------------------------------------------------- MMSSL model
def _tiny_graph():
    from test_mmssl_model import _graph
    return _graph()


def test_mmssl_documented_defaults(monkeypatch):
    """Every default of the Args section, as the model stores or uses it."""
    checked = []
    original = mmssl_module.check_critic_memory
    monkeypatch.setattr(mmssl_module, 'check_critic_memory',
                        lambda *a: (checked.append(a), original(*a))[1])
    graph = _tiny_graph()
    torch.manual_seed(0)
    model = MMSSL(graph)
    assert (model.embedding_dim, model.num_layers, model.num_heads) == (64, 2, 4)
    assert model.user_emb.weight.shape == (graph.num_users, 64)
    assert model.attention.heads == 4 and model.generator.dropout == 0.2
    assert (model.norm, model.feature_norm, model.adj_layout) == ('sym', 'standard', 'csr')
    assert model.topk_rate == 0.01 and model.k == 1  # max(1, floor(0.01 * 20))
    assert (model.modality_mix, model.fusion_weight) == (0.36, 0.55)
    assert (model.cl_weight, model.cl_temperature, model.cl_intra_view_negatives) == \
        (0.03, 0.5, False)
    assert (model.adv_weight, model.gumbel_scale, model.gumbel_temperature) == \
        (1e-4, 1e-5, 0.005)
    assert (model.gumbel_formula, model.aux_weight, model.gp_weight) == ('paper', 100.0, 0.3)
    assert model.critic.dropout == (0.31, 0.5) and model.critic.negative_slope == 0.2
    assert model.critic.output_scale == 1.0
    assert model.critic_columns is None and model.critic_width == graph.num_items
    assert (model.reg_weight, model.modality_reg_weight) == (1e-5, 1e-5)
    assert model.ablation is None and model.item_block_size == 4096
    # the memory check: the critic's width, modalities x 1,024 rows, no budget, the device
    assert checked == [(graph.num_items, 2 * 1024, None, torch.device('cpu'))]
    # feature_norm='standard' on a constant feature column gives zeros, not NaN
    graph.features['m0'][:, 0] = 3.0
    assert torch.equal(MMSSL(graph).feat_0[:, 0], torch.zeros(graph.num_items))


def test_mmssl_argument_errors_in_full():
    graph = _tiny_graph()
    cases = [
        ({'ablation': 'x'}, "MMSSL: option 'ablation' expects one of wo_asl, wo_cl, wo_gt, "
                            "rp_gae (or null), got 'x'"),
        ({'norm': 'x'}, "MMSSL: option 'norm' expects one of sym, row, got 'x'"),
        ({'feature_norm': 'x'}, "MMSSL: option 'feature_norm' expects one of standard, l2, "
                                "none, got 'x'"),
        ({'adj_layout': 'x'}, "MMSSL: option 'adj_layout' expects one of csr, coo, edge_index, "
                              "sparse_tensor, got 'x'"),
        ({'gumbel_formula': 'x'}, "MMSSL: option 'gumbel_formula' expects one of paper, "
                                  "release, got 'x'"),
        ({'critic_columns': 7}, "MMSSL: option 'critic_columns' expects an integer >= 8 (or "
                                "null: every item column), got 7"),
        ({'gumbel_scale': -0.001}, "MMSSL: option 'gumbel_scale' expects a number >= 0, "
                                   "got -0.001"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as err:
            MMSSL(graph, embedding_dim=8, num_heads=2, **kwargs)
        assert str(err.value) == message
    assert MMSSL(graph, embedding_dim=8, num_heads=2, critic_columns=8).critic_width == 8
    model = MMSSL(graph, embedding_dim=8, num_heads=2, ablation='wo_asl')
    from mmssl_pyg.models.base import Batch
    with pytest.raises(RuntimeError) as err:
        model.critic_loss(Batch(torch.tensor([0]), torch.tensor([0]), torch.tensor([1])))
    assert str(err.value) == "MMSSL with ablation='wo_asl' has no critic"
    state = MMSSL(graph, embedding_dim=8, num_heads=2).state_dict()
    assert state['_extra_state']['version'] == 1
    with pytest.raises(ValueError) as err:
        MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.5).load_state_dict(state)
    assert str(err.value) == ("checkpoint's modality graphs have k=1 neighbours per user but "
                              'this model has k=10; use the same topk_rate and item count as '
                              'the checkpoint')


@pytest.mark.parametrize('scale,temperature,formula', [
    (1e-5, 0.005, 'paper'), (0.001, 0.00815, 'paper'), (0.001, 0.00816, 'paper'),
    (0.0, 1 / 119.5, 'paper'), (1e-5, 0.005, 'release'), (-0.001, 0.00815, 'paper')])
def test_softmax_is_sparse_threshold_by_hand(scale, temperature, formula):
    """Documented rule: the paper's formula with (1 - |s| 21.4) / tau >= 120 (a negative
    scale is refused by MMSSL, not by the function)."""
    # by hand: 0.9786 / 0.00815 = 120.07 (sparse), 0.9786 / 0.00816 = 119.93 (dense),
    # 1 / (1 / 119.5) = 119.5 (dense)
    want = formula == 'paper' and (1 - abs(scale) * 21.4) / temperature >= 120
    assert softmax_is_sparse(scale, temperature, formula) == want
    if scale >= 0:
        model = MMSSL(_tiny_graph(), embedding_dim=8, num_heads=2, gumbel_scale=scale,
                      gumbel_temperature=temperature, gumbel_formula=formula)
        assert model._softmax_is_sparse() == want
    assert want == (formula == 'paper' and temperature in (0.005, 0.00815))


def test_moving_the_model_keeps_its_generated_graphs_and_pending_rows():
    from test_mmssl_model import _batch, _optimisers, _run_epoch
    graph = _tiny_graph()
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.15)
    _run_epoch(model, graph, _optimisers(model))
    model.critic_loss(_batch(graph, seed=5))  # rows pending for the next swap
    graphs = [model.modality_edge_index(m).clone() for m in range(2)]
    pending = model.get_extra_state()['pending']
    model.to('cpu').double().float()
    assert all(torch.equal(g, model.modality_edge_index(m)) for m, g in enumerate(graphs))
    moved = model.get_extra_state()['pending']
    assert torch.equal(moved['users'], pending['users'])
    assert all(torch.equal(a, b) for a, b in zip(moved['neighbours'], pending['neighbours']))


def test_low_rank_rows_sum_duplicate_entries_and_select_one_column():
    index = torch.tensor([[0, 0, 1], [2, 2, 0]])  # (0, 2) twice: summed
    rows = LowRankRows(2, 3, index=index, value=torch.tensor([1.0, 2.0, 4.0]))
    want = torch.tensor([[0.0, 0.0, 3.0], [4.0, 0.0, 0.0]])
    assert torch.equal(rows.to_dense(), want)
    w = torch.randn(5, 3)
    assert torch.allclose(rows.linear(w), want @ w.t(), atol=1e-6)
    for col in (0, 2):  # a single selected column, also the last one
        one = rows.select_columns(torch.tensor([col]))
        assert one.num_cols == 1 and torch.equal(one.to_dense(), want[:, [col]])
    two = rows.select_columns(torch.tensor([0, 2]))  # entries on the last of several columns
    assert torch.equal(two.to_dense(), want[:, [0, 2]])


def test_low_rank_rows_without_sparse_part_or_scale():
    torch.manual_seed(0)
    left, right = torch.randn(3, 2), torch.randn(6, 2)
    rows = LowRankRows(3, 6, left, right)  # no scale, no residual
    want = left @ right.t()
    assert torch.allclose(rows.to_dense(), want, atol=1e-6)
    cols = torch.tensor([1, 4, 5])
    sel = rows.select_columns(cols)
    assert sel.index is None and sel.value is None
    assert torch.allclose(sel.to_dense(), want[:, cols], atol=1e-6)
    w = torch.randn(2, 3)
    assert torch.allclose(sel.linear(w), want[:, cols] @ w.t(), atol=1e-5)


def test_unweighted_edge_index_sums_the_neighbours():
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 2]])  # (source, destination)
    x = torch.tensor([[1.0], [10.0], [100.0]])
    out = BipartiteConv()(x, ei, size=(3, 3))
    assert torch.equal(out, torch.tensor([[10.0], [1.0], [110.0]]))


def test_edge_index_output_has_every_destination_row():
    ei = torch.tensor([[0, 1], [0, 0]])  # destinations 1 and 2 receive nothing
    out = BipartiteConv()(torch.ones(2, 1), ei, edge_weight=torch.tensor([2.0, 3.0]),
                          size=(2, 3))
    assert torch.equal(out, torch.tensor([[5.0], [0.0], [0.0]]))


def test_row_scale_default_eps_for_a_zero_row():
    from mmssl_pyg.nn.generator import row_scale
    scale = row_scale(torch.zeros(2, 3), torch.randn(4, 3), torch.tensor([0]), torch.zeros(1))
    assert torch.allclose(scale, torch.full((2,), 1e12))


def test_mmssl_state_dict_holds_weights_and_graph_state_only():
    """Features and training-graph structures are rebuilt from the data, not checkpointed."""
    model = MMSSL(_tiny_graph(), embedding_dim=8, num_heads=2)
    params = {name for name, _ in model.named_parameters()}
    norms = {f'critic.norm{i}.{b}' for i in (1, 2)
             for b in ('running_mean', 'running_var', 'num_batches_tracked')}
    assert set(model.state_dict()) == params | norms | {'_extra_state'}


def test_interaction_rows_are_the_dense_training_rows():
    graph = _tiny_graph()
    model = MMSSL(graph, embedding_dim=8, num_heads=2)
    users = torch.tensor([3, 0, 3])
    dense = torch.zeros(graph.num_users, graph.num_items)
    dense[graph.train_edge_index[0], graph.train_edge_index[1]] = 1.0
    assert torch.equal(model.interaction_rows(users), dense[users])


def test_low_rank_rows_detach_keeps_every_part():
    torch.manual_seed(0)
    parts = dict(left=torch.randn(2, 2), right=torch.randn(3, 2), scale=torch.rand(2),
                 value=torch.randn(1), dense=torch.randn(2, 3))
    parts = {k: v.requires_grad_() for k, v in parts.items()}
    rows = LowRankRows(2, 3, index=torch.tensor([[1], [0]]), **parts)
    out = rows.detach()
    assert torch.equal(out.to_dense(), rows.to_dense().detach())
    for name in ('left', 'right', 'scale', 'value', 'dense'):
        part = getattr(out, name)
        assert torch.equal(part, parts[name]) and not part.requires_grad
    assert torch.equal(out.index, rows.index)


def test_relation_rows_pass_eps_on():
    user = torch.zeros(1, 3)
    rows = ModalityRelationGenerator.relation_rows(user, torch.randn(4, 3), torch.tensor([0]),
                                                   torch.tensor([1]), eps=1e-3)
    assert float(rows.scale) == pytest.approx(1e3)  # 1 / max(0, 1e-3)


def test_available_memory_when_the_system_cannot_tell(monkeypatch):
    import os

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(os, 'sysconf', no_sysconf)
    assert available_memory('cpu') == (2 ** 62, 'unknown (no limit checked)')


def test_critic_memory_message_converts_to_gib():
    import re
    with pytest.raises(ValueError) as err:
        check_critic_memory(50_000, 1024, max_bytes=3 * 2 ** 30)
    msg = str(err.value)
    assert 'more than the 3.00 GiB (3,221,225,472 bytes) available (max_critic_memory)' in msg
    gib, need = re.search(r'about ([\d,.]+) GiB \(([\d,]+) bytes\)', msg).groups()
    assert float(gib.replace(',', '')) == round(int(need.replace(',', '')) / 2 ** 30, 2)
    assert float(gib.replace(',', '')) > 3


def test_low_rank_rows_dense_part_alone_and_wider_values():
    torch.manual_seed(0)
    dense = torch.randn(2, 3)
    w = torch.randn(4, 3)
    assert torch.allclose(LowRankRows(2, 3, dense=dense).linear(w), dense @ w.t(), atol=1e-6)
    # float64 residual values with a float32 layer: computed in the values' dtype
    value = torch.tensor([0.5, -2.0], dtype=torch.float64)
    rows = LowRankRows(2, 3, index=torch.tensor([[0, 1], [2, 0]]), value=value)
    out = rows.linear(w)
    assert out.dtype == torch.float64
    assert torch.allclose(out, rows.to_dense() @ w.t().double())


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


@pytest.mark.parametrize('layout', ['csr', 'coo'])
def test_cached_transposes_match_the_layout_and_are_used(layout, monkeypatch):
    graph = _tiny_graph()
    model = MMSSL(graph, embedding_dim=8, num_heads=2, norm='row', adj_layout=layout)
    adj = model.generator_adj  # one-sided weights: the transposes are cached
    want = torch.sparse_csr if layout == 'csr' else torch.sparse_coo
    for a, t in ((adj.ui, adj.ui_t), (adj.iu, adj.iu_t)):
        assert a.layout == want and t.layout == want
        assert torch.equal(t.to_dense(), a.to_dense().t())
    # both directions hand the layer a cached transpose for the backward pass
    seen = []
    original = conv_module._TransposedSpMM.apply
    monkeypatch.setattr(conv_module._TransposedSpMM, 'apply',
                        lambda a, rev, x: (seen.append((a, rev)), original(a, rev, x))[1])
    for m in (model, MMSSL(graph, embedding_dim=8, num_heads=2, adj_layout=layout)):
        seen.clear()
        adj = m.generator_adj
        adj.to_users(m.conv, torch.randn(graph.num_items, 2, requires_grad=True))
        adj.to_items(m.conv, torch.randn(graph.num_users, 2, requires_grad=True))
        rev_u = adj.iu if adj.ui_t is None else adj.ui_t  # 'sym': each is the other's .T
        rev_i = adj.ui if adj.iu_t is None else adj.iu_t
        assert [(a is adj.ui, r is rev_u) for a, r in seen[:1]] == [(True, True)]
        assert [(a is adj.iu, r is rev_i) for a, r in seen[1:]] == [(True, True)]


def test_mmssl_double_converts_every_parameter():
    model = MMSSL(_tiny_graph(), embedding_dim=8, num_heads=2).double()
    assert all(p.dtype == torch.float64 for p in model.parameters())


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


def test_loading_a_state_without_graphs_restores_the_training_graph():
    from test_mmssl_model import _optimisers, _run_epoch
    graph = _tiny_graph()
    torch.manual_seed(0)
    fresh = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.15)
    state = fresh.state_dict()
    assert state['_extra_state']['has_generated'] is None
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.15)
    _run_epoch(model, graph, _optimisers(model))
    assert not torch.equal(model.modality_edge_index(0), model.train_edge_index)
    model.load_state_dict(state)
    for m in range(2):
        assert torch.equal(model.modality_edge_index(m), model.train_edge_index)
        assert model.graphs.adjs[m] is model.generator_adj


def test_a_loaded_state_is_copied_not_shared():
    from test_mmssl_model import _batch, _optimisers, _run_epoch
    graph = _tiny_graph()
    torch.manual_seed(0)
    source = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.15)
    _run_epoch(source, graph, _optimisers(source), batches=1)  # graphs for 6 of 12 users
    assert not source.graphs.has_generated.all()
    source.critic_loss(_batch(graph, seed=4))  # pending rows in the state too
    state = source.state_dict()
    saved = {k: v.clone() for k, v in (('has', state['_extra_state']['has_generated']),
                                        ('nb', state['_extra_state']['neighbours'][0]),
                                        ('users', state['_extra_state']['pending']['users']))}
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.15)
    model.load_state_dict(state)
    _run_epoch(model, graph, _optimisers(model), seed=3)  # swaps graphs, in place
    assert torch.equal(state['_extra_state']['has_generated'], saved['has'])
    assert torch.equal(state['_extra_state']['neighbours'][0], saved['nb'])
    assert torch.equal(state['_extra_state']['pending']['users'], saved['users'])


def _gather_two(first, second):
    """gather_epoch_state on two replicas with a two-process all_gather (rank order)."""
    sent = []
    second.gather_epoch_state(lambda t: (sent.append(t), [t])[1])
    it = iter(sent)
    first.gather_epoch_state(lambda t: [t, next(it)])


def test_gather_when_a_process_has_no_rows():
    graph = _tiny_graph()
    models = [MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.15) for _ in range(3)]
    users = torch.tensor([1, 4, 7])
    idx = [torch.tensor([[2, 3, 5]] * 3, dtype=torch.int32) for _ in range(2)]
    models[1].graphs.pending = [(users, idx)]
    _gather_two(models[0], models[1])  # rank 0 had no batch
    got_users, got_idx = models[0].graphs.pending[0]
    assert torch.equal(got_users, users) and got_users.dtype == torch.long
    assert all(torch.equal(a, b) for a, b in zip(got_idx, idx))
    assert all(a.dtype == torch.int32 and a.shape == (3, 3) for a in got_idx)
    # no process has rows: nothing pending, no graph built
    _gather_two(models[2], MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.15))
    assert models[2].graphs.pending == [] and models[2].update_modality_graphs() == 0
    assert models[2].graphs.has_generated is None


def test_gather_at_one_step_the_highest_rank_wins_for_many_rows():
    """Several hundred rows of one step: the order within the step must be kept exactly
    (a sort that does not keep equal keys in order would mix the ranks' rows)."""
    from test_mmssl_model import _graph
    graph = _graph(num_users=400, num_items=30, edges=800)
    models = [MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1) for _ in range(2)]
    users = torch.arange(400)
    for rank, model in enumerate(models):
        idx = torch.full((400, 3), rank, dtype=torch.int32) + torch.tensor([0, 10, 20],
                                                                            dtype=torch.int32)
        model.graphs.pending = [(users, [idx, idx + 2])]
    _gather_two(models[0], models[1])
    models[0].update_modality_graphs()
    assert torch.equal(models[0].graphs.neighbours[0][users],
                       torch.tensor([[1, 11, 21]] * 400, dtype=torch.int32))


def test_contrastive_term_with_intra_view_negatives():
    graph = _tiny_graph()
    from test_mmssl_model import _batch
    model = MMSSL(graph, embedding_dim=8, num_heads=2, cl_intra_view_negatives=True).eval()
    batch = _batch(graph)
    out = model.loss(batch)
    emb = model.encode()
    e = F.normalize(emb.user[batch.users], dim=1)
    want = 0.0
    for h in emb.user_views:  # Eq. 11 with cos(h_u, h_u') / tau, u' != u, as negatives too
        hb = F.normalize(h[batch.users], dim=1)
        cross, intra = hb @ e.t() / 0.5, hb @ hb.t() / 0.5
        intra = intra.masked_fill(torch.eye(len(batch), dtype=torch.bool), float('-inf'))
        logits = torch.cat([cross, intra], 1)
        want = want - (cross.diag() - torch.logsumexp(logits, 1)).mean()
    assert torch.allclose(out['contrastive'], want, atol=1e-5)


@pytest.mark.parametrize('layout', [torch.sparse_csr, torch.sparse_coo])
def test_sparse_aggregations_against_dense_matrices(layout):
    """`sparse_aggregations` (the baselines' propagation path): to_users is A x, to_items is
    A^T x (symmetric normalisation); gradients flow through the transposed matrix (by hand:
    d sum(A x) / dx = A^T 1)."""
    from mmssl_pyg.nn.conv import BipartiteConv
    from mmssl_pyg.nn.propagation import light_propagate, sparse_aggregations
    ei = torch.tensor([[0, 0, 1, 2, 2, 2], [0, 3, 1, 0, 1, 2]])
    adj_ui, adj_iu = bipartite_adjacency(ei, 3, 4, norm='sym', layout=layout)
    dense_ui, dense_iu = adj_ui.to_dense(), adj_iu.to_dense()
    assert torch.allclose(dense_ui, dense_iu.t())
    to_users, to_items = sparse_aggregations(BipartiteConv(), adj_ui, adj_iu)
    torch.manual_seed(0)
    items = torch.randn(4, 5, requires_grad=True)
    users = torch.randn(3, 5, requires_grad=True)
    out_u, out_i = to_users(items), to_items(users)
    assert torch.allclose(out_u, dense_ui @ items, atol=1e-6)
    assert torch.allclose(out_i, dense_iu @ users, atol=1e-6)
    (out_u.sum() + 2 * out_i.sum()).backward()
    assert torch.allclose(items.grad, dense_ui.t() @ torch.ones(3, 5), atol=1e-6)
    assert torch.allclose(users.grad, 2 * dense_iu.t() @ torch.ones(4, 5), atol=1e-6)
    u, i = light_propagate(users.detach(), items.detach(), 1, to_users, to_items)
    assert torch.allclose(u, (users.detach() + dense_ui @ items.detach()) / 2)
    assert torch.allclose(i, (items.detach() + dense_iu @ users.detach()) / 2)
