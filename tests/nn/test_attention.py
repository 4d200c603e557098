r"""Tests of ``mmssl_pyg/nn/attention.py``.

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

import math

import pytest
import torch

from mmssl_pyg.nn import (
    CrossModalAttention,
)


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


def _attention_einsum(att: CrossModalAttention, x: torch.Tensor):
    """Eq. 9 as it was written before issue 24: three projections and two einsums (batched
    M x M products); returns (output, attention weights [N, H, M, M])."""
    n, m, d = x.shape
    dh = d // att.heads
    q, k, v = (lin(x).view(n, m, att.heads, dh) for lin in (att.query, att.key, att.value))
    w = (torch.einsum('nahc,nbhc->nhab', q, k) / math.sqrt(dh)).softmax(dim=-1)
    return att.out(torch.einsum('nhab,nbhc->nahc', w, v).reshape(n, m, d)), w


def test_attention_matches_dense_reference():
    torch.manual_seed(0)
    att = CrossModalAttention(8, heads=2)
    x = torch.randn(5, 3, 8)
    assert torch.allclose(att(x), _attention_reference(att, x), atol=1e-5)
    assert att(x).shape == (5, 3, 8) and att.pool(att(x)).shape == (5, 8)
    assert str(att) == 'CrossModalAttention(8, heads=2)'


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


@pytest.mark.parametrize('bias', [False, True])
def test_attention_pooled_equals_pool_of_every_token(bias):
    torch.manual_seed(3)
    att = CrossModalAttention(16, heads=4, bias=bias)
    if bias:  # non-zero biases, so the mean commutes with a real affine map
        for lin in (att.query, att.key, att.value, att.out):
            torch.nn.init.normal_(lin.bias)
    x = torch.randn(7, 3, 16, requires_grad=True)
    probe = torch.randn(7, 16)
    got, want = att.pooled(x), att.pool(att(x))
    assert torch.allclose(got, want, atol=1e-6)
    params = [x, *att.parameters()]
    g_got = torch.autograd.grad((got * probe).sum(), params)
    g_want = torch.autograd.grad((want * probe).sum(), params)
    for g, w in zip(g_got, g_want):
        assert w.abs().max() > 0
        assert torch.allclose(g, w, atol=1e-5)
