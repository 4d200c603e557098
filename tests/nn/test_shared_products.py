"""Issue 24: the shared products of MMSSL's critic and attention give the numbers of the
per-block / per-token computations they replaced.

- :func:`~mmssl_pyg.nn.lowrank.linear_blocks` (the critic's first layer over the real and
  every fake block at once, :math:`\\mathbf{W}_1` read by one product) against each block's
  dense rows times :math:`\\mathbf{W}_1^{\\top}`, values and the gradients of every input,
  for the sparse residual with and without gradient (the critic step's and the generator
  loss's paths), a block without a low-rank part (the w/o-GT real rows) and a dense one;
- :meth:`~mmssl_pyg.nn.attention.CrossModalAttention.pooled` (mean over the tokens before
  the output projection) against ``pool(attention(x))``, values and gradients.

The end-to-end check (every loss term, metric and final embedding of a seeded run on
tiktok-mini against numbers recorded before the rewrites) is
``tests/models/test_speed_invariance.py``.
"""
from __future__ import annotations

import pytest
import torch

from mmssl_pyg.nn.attention import CrossModalAttention
from mmssl_pyg.nn.critic import RelationCritic
from mmssl_pyg.nn.lowrank import LowRankRows, linear_blocks


def _blocks(values_grad: bool, gen: torch.Generator) -> tuple[list[LowRankRows], list]:
    """Three blocks of 9 columns: low-rank + sparse, sparse only, low-rank + dense; and the
    leaf tensors that should receive gradients."""
    def leaf(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_(True)
    index = torch.tensor([[0, 0, 2, 3, 3], [1, 4, 8, 0, 4]])
    leaves = [leaf(4, 3), leaf(9, 3), torch.rand(4, generator=gen).requires_grad_(True)]
    value = torch.randn(5, generator=gen).requires_grad_(values_grad)
    sparse_only = torch.rand(3, generator=gen).requires_grad_(values_grad)
    dense = leaf(2, 9)
    blocks = [LowRankRows(4, 9, left=leaves[0], right=leaves[1], scale=leaves[2], index=index,
                          value=value),
              LowRankRows(3, 9, index=torch.tensor([[0, 1, 2], [2, 2, 7]]), value=sparse_only),
              LowRankRows(2, 9, left=leaf(2, 3), right=leaf(9, 3), dense=dense)]
    leaves += [blocks[2].left, blocks[2].right, dense]
    if values_grad:
        leaves += [value, sparse_only]
    return blocks, leaves


@pytest.mark.parametrize('values_grad', [False, True])
def test_linear_blocks_equals_each_block_dense(values_grad):
    gen = torch.Generator().manual_seed(0)
    blocks, leaves = _blocks(values_grad, gen)
    weight = torch.randn(5, 9, generator=gen, requires_grad=True)
    bias = torch.randn(5, generator=gen, requires_grad=True)
    probe = [torch.randn(b.num_rows, 5, generator=gen) for b in blocks]

    def grads(outs):
        loss = sum((o * p).sum() for o, p in zip(outs, probe))
        return torch.autograd.grad(loss, [weight, bias, *leaves])

    got = linear_blocks(blocks, weight, bias)
    want = [b.to_dense() @ weight.t() + bias for b in blocks]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert torch.allclose(g, w, atol=1e-5)
    for g, w in zip(grads(got), grads(want)):
        assert w.abs().max() > 0
        assert torch.allclose(g, w, atol=1e-5)
    # one block: LowRankRows.linear is linear_blocks of that block
    for b, w in zip(blocks, want):
        assert torch.allclose(b.linear(weight, bias), w, atol=1e-5)


def test_linear_blocks_refuses_blocks_of_different_widths():
    a = LowRankRows(2, 4, left=torch.ones(2, 1), right=torch.ones(4, 1))
    b = LowRankRows(2, 5, left=torch.ones(2, 1), right=torch.ones(5, 1))
    with pytest.raises(ValueError, match='same width'):
        linear_blocks([a, b], torch.ones(3, 4))
    assert linear_blocks([], torch.ones(3, 4)) == []


def test_critic_project_blocks_equals_project_of_each_block():
    critic = RelationCritic(9)
    blocks, _ = _blocks(False, torch.Generator().manual_seed(1))
    for got, block in zip(critic.project_blocks(blocks), blocks):
        assert torch.allclose(got, critic.project(block.to_dense()), atol=1e-5)
    dense = [b.to_dense().detach() for b in blocks]  # dense rows: block by block
    for got, x in zip(critic.project_blocks(dense), dense):
        assert torch.equal(got, critic.project(x))


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
