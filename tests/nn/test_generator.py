"""Tests of ``mmssl_pyg/nn/generator.py``.

MMSSL building blocks against dense references written here: attention (Eq. 9), critic
(Eq. 4), gradient penalty (Eqs. 6-7), InfoNCE (Eq. 11), relation rows and top-k (Eq. 3).

Tests written for mutants of ``make mutate`` that survived the other tests: defaults,
random draws and options of the layers in ``mmssl_pyg/nn/`` and the MMSSL model, each against
a value derived here (by hand, from a dense computation or from the documented contract).
See ``benchmarks/results/mutation/report.md``."""
from __future__ import annotations

import pytest
import torch

from mmssl_pyg.nn import (
    ModalityRelationGenerator,
)
from mmssl_pyg.nn.generator import _accumulate_dtype


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


def test_row_scale_default_eps_for_a_zero_row():
    from mmssl_pyg.nn.generator import row_scale
    scale = row_scale(torch.zeros(2, 3), torch.randn(4, 3), torch.tensor([0]), torch.zeros(1))
    assert torch.allclose(scale, torch.full((2,), 1e12))


def test_relation_rows_pass_eps_on():
    user = torch.zeros(1, 3)
    rows = ModalityRelationGenerator.relation_rows(user, torch.randn(4, 3), torch.tensor([0]),
                                                   torch.tensor([1]), eps=1e-3)
    assert float(rows.scale) == pytest.approx(1e3)  # 1 / max(0, 1e-3)
