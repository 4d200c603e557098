"""MMSSL building blocks against dense references written here: attention (Eq. 9), critic
(Eq. 4), gradient penalty (Eqs. 6-7), InfoNCE (Eq. 11), relation rows and top-k (Eq. 3)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmssl_pyg.nn import (
    CrossModalAttention,
    LowRankRows,
    ModalityRelationGenerator,
    RelationCritic,
    check_critic_memory,
    cross_modal_info_nce,
    gradient_penalty,
    projected_gradient_penalty,
)
from mmssl_pyg.nn.critic_memory import critic_memory_estimate
from mmssl_pyg.nn.gumbel import gumbel_noise, gumbel_transform


# --------------------------------------------------------------------------- Eq. 9
def _attention_reference(att: CrossModalAttention, x: torch.Tensor) -> torch.Tensor:
    """Per node, per head: softmax(q k^T / sqrt(d/H)) v over the M tokens, written out."""
    n, m, d = x.shape
    heads, dh = att.heads, d // att.heads
    wq, wk, wv, wo = (lin.weight for lin in (att.query, att.key, att.value, att.out))
    out = torch.zeros(n, m, d)
    for node in range(n):
        h = x[node]                                   # [M, d] tokens
        cat = []
        for head in range(heads):
            rows = slice(head * dh, (head + 1) * dh)
            q, k, v = h @ wq[rows].t(), h @ wk[rows].t(), h @ wv[rows].t()
            scores = torch.empty(m, m)
            for a in range(m):
                for b in range(m):
                    scores[a, b] = (q[a] * k[b]).sum() / math.sqrt(dh)
            cat.append(torch.softmax(scores, dim=1) @ v)
        out[node] = torch.cat(cat, dim=1) @ wo.t()
    return out


def test_attention_matches_dense_reference():
    torch.manual_seed(0)
    att = CrossModalAttention(8, heads=2)
    x = torch.randn(5, 3, 8)
    assert torch.allclose(att(x), _attention_reference(att, x), atol=1e-5)
    assert att(x).shape == (5, 3, 8) and att.pool(att(x)).shape == (5, 8)
    assert str(att) == 'CrossModalAttention(8, heads=2)'


def _attention_einsum(att: CrossModalAttention, x: torch.Tensor):
    """Eq. 9 as it was written before issue 24: three projections and two einsums (batched
    M x M products); returns (output, attention weights [N, H, M, M])."""
    n, m, d = x.shape
    dh = d // att.heads
    q, k, v = (lin(x).view(n, m, att.heads, dh) for lin in (att.query, att.key, att.value))
    w = (torch.einsum('nahc,nbhc->nhab', q, k) / math.sqrt(dh)).softmax(dim=-1)
    return att.out(torch.einsum('nhab,nbhc->nahc', w, v).reshape(n, m, d)), w


@pytest.mark.parametrize('bias,m', [(False, 2), (True, 3), (False, 1)])
def test_fused_attention_matches_the_einsum_form_values_and_gradients(bias, m):
    torch.manual_seed(3)
    att = CrossModalAttention(8, heads=2, bias=bias)
    if bias:
        for lin in (att.query, att.key, att.value, att.out):
            torch.nn.init.normal_(lin.bias)
    x = torch.randn(7, m, 8, requires_grad=True)
    weight = torch.randn(7, m, 8)
    grads = []
    for fn in (lambda: att(x, return_attention_weights=True), lambda: _attention_einsum(att, x)):
        att.zero_grad()
        x.grad = None
        out, w = fn()
        (out * weight).sum().backward()
        grads.append((out.detach(), w.detach(), x.grad.clone(),
                      [p.grad.clone() for p in att.parameters()]))
    (out, w, gx, gp), (out_ref, w_ref, gx_ref, gp_ref) = grads
    assert w.shape == w_ref.shape == (7, 2, m, m)
    assert torch.allclose(out, out_ref, atol=1e-6) and torch.allclose(w, w_ref, atol=1e-6)
    assert torch.allclose(gx, gx_ref, atol=1e-5)
    assert len(gp) == (8 if bias else 4)
    for g, g_ref in zip(gp, gp_ref):
        assert torch.allclose(g, g_ref, atol=1e-5)


@pytest.mark.parametrize('name', ['key', 'value', 'query', 'out'])
def test_attention_depends_on_every_projection(name):
    torch.manual_seed(1)
    att = CrossModalAttention(8, heads=4)
    x = torch.randn(6, 3, 8)
    before = att.pool(att(x))
    with torch.no_grad():
        getattr(att, name).weight.add_(0.5 * torch.randn(8, 8))
    assert not torch.allclose(before, att.pool(att(x)), atol=1e-4)


def test_attention_is_permutation_equivariant():
    torch.manual_seed(2)
    att = CrossModalAttention(8, heads=2)
    x = torch.randn(4, 3, 8)
    perm = torch.tensor([2, 0, 1])
    out, out_perm = att(x), att(x[:, perm])
    assert torch.allclose(out[:, perm], out_perm, atol=1e-6)
    assert torch.allclose(att.pool(out), att.pool(out_perm), atol=1e-6)


def test_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match='divisible'):
        CrossModalAttention(10, heads=4)


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


def test_low_rank_rows_linear_matches_dense():
    torch.manual_seed(0)
    left, right = torch.randn(4, 3, requires_grad=True), torch.randn(9, 3, requires_grad=True)
    scale = torch.rand(4, requires_grad=True)
    index = torch.tensor([[0, 0, 2, 3], [1, 5, 5, 8]])
    value = torch.randn(4, requires_grad=True)
    dense = torch.randn(4, 9, requires_grad=True)
    rows = LowRankRows(4, 9, left, right, scale, index, value, dense)
    ref = scale[:, None] * (left @ right.t()) + dense
    ref = ref.index_put((index[0], index[1]), value, accumulate=True)
    assert torch.allclose(rows.to_dense(), ref, atol=1e-6)
    w, b = torch.randn(5, 9, requires_grad=True), torch.randn(5)
    out, out_ref = rows.linear(w, b), ref @ w.t() + b
    assert torch.allclose(out, out_ref, atol=1e-5)
    tensors = [left, right, scale, value, dense, w]
    grads = torch.autograd.grad(out.pow(2).sum(), tensors)
    grads_ref = torch.autograd.grad(out_ref.pow(2).sum(), tensors)
    for g, g_ref in zip(grads, grads_ref):
        assert torch.allclose(g, g_ref, atol=1e-4)


def test_critic_memory_check_refuses_before_allocating():
    params, need = critic_memory_estimate(2_000_000, 2048)
    assert params > 2_000_000 ** 2 / 4 and need > 16 * params
    with pytest.raises(ValueError) as err:
        check_critic_memory(2_000_000, 2048, max_bytes=1 << 30)
    msg = str(err.value)
    for part in ('n_items=2,000,000', f'{params:,} parameters', f'{need:,} bytes',
                 '1,073,741,824 bytes', 'max_critic_memory', "ablation='wo_asl'"):
        assert part in msg
    with pytest.raises(ValueError, match='physical memory'):  # no machine has 16 TB
        check_critic_memory(2_000_000, 2048)
    assert check_critic_memory(100, 2048) > 0


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


# --------------------------------------------------------------------------- Eq. 5
@pytest.mark.parametrize('formula', ['paper', 'release'])
def test_gumbel_transform_reference(formula):
    torch.manual_seed(0)
    a = (torch.rand(3, 7) < 0.3).float()
    u = torch.rand(3, 7)
    g = -torch.log(-torch.log(u + 1e-8) + 1e-8)
    logits = (a + 1e-3 * g) / 0.5 if formula == 'paper' else a + (1e-3 / 0.5) * g
    ref = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    assert torch.allclose(gumbel_transform(a, g, 1e-3, 0.5, formula), ref, atol=1e-6)
    torch.manual_seed(3)
    noise = gumbel_noise((1000,))
    assert abs(float(noise.mean()) - 0.5772) < 0.1  # Euler-Mascheroni: the Gumbel mean


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


# --------------------------------------------------------------------------- Eq. 3
def _batch_with_training_items():
    torch.manual_seed(0)
    u = torch.randn(5, 4, requires_grad=True)
    i = torch.randn(30, 4, requires_grad=True)
    row = torch.tensor([0, 0, 1, 2, 2, 2, 4])
    col = torch.tensor([3, 7, 0, 1, 2, 29, 7])
    return u, i, row, col


def test_relation_rows_match_dense_reference():
    u, i, row, col = _batch_with_training_items()
    rows = ModalityRelationGenerator.relation_rows(u, i, row, col)
    s = u @ i.t()
    s = s.index_put((row, col), torch.tensor(0.0))
    ref = s / s.norm(dim=1, keepdim=True)
    assert torch.allclose(rows.to_dense(), ref, atol=1e-6)
    assert rows.to_dense()[row, col].abs().max() < 1e-6
    w = torch.randn(3, 30)
    g = torch.autograd.grad(rows.linear(w).pow(2).sum(), [u, i])
    g_ref = torch.autograd.grad((ref @ w.t()).pow(2).sum(), [u, i])
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize('item_block_size', [7, 4096])
def test_topk_excludes_training_items(item_block_size):
    u, i, row, col = _batch_with_training_items()
    idx = ModalityRelationGenerator.topk(u, i, 4, row, col, item_block_size)
    s = (u @ i.t()).detach()
    s[row, col] = float('-inf')
    ref = s.topk(4, dim=1).indices
    assert torch.equal(idx.sort(1).values, ref.sort(1).values)
    # more neighbours asked than candidates: the missing ones are -1
    u1, i1 = u[:1], i[:3]
    out = ModalityRelationGenerator.topk(u1, i1, 3, torch.tensor([0]), torch.tensor([1]),
                                         item_block_size)
    assert sorted(out[0].tolist()) == [-1, 0, 2]


def test_generator_projection_is_dropout_linear():
    torch.manual_seed(0)
    gen = ModalityRelationGenerator([5, 3], 4, dropout=0.5)
    xs = [torch.randn(7, 5), torch.randn(7, 3)]
    gen.eval()
    for f, lin, x in zip(gen.project(xs), gen.lins, xs):
        assert torch.allclose(f, x @ lin.weight.t() + lin.bias)
    gen.train()
    f = gen.project(xs)[0]
    assert (f == 0).any()  # dropout is active in training
    with pytest.raises(ValueError, match='modalities'):
        gen.project(xs[:1])
