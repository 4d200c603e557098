r"""Tests of ``mmssl_pyg/nn/lowrank.py``.

MMSSL's speed options: the deferred top-k search (exact), the subsampled gradient penalty
(``gp_samples``) and the critic schedule (``critic_every``).

MMSSL's bounded critic (``critic_columns``): a random subset of item columns per batch.

MMSSL building blocks against dense references written here: attention (Eq. 9), critic
(Eq. 4), gradient penalty (Eqs. 6-7), InfoNCE (Eq. 11), relation rows and top-k (Eq. 3).

Tests written for mutants of ``make mutate`` that survived in ``mmssl_pyg/nn/lowrank.py``,
``mmssl_pyg/nn/critic_memory.py``, ``mmssl_pyg/nn/gumbel.py`` and ``mmssl_pyg/nn/features.py``:
row selection of :class:`LowRankRows` with any part missing, an empty sparse residual, the
memory budget on a (simulated) CUDA device, Eq. 5's helpers and the feature scaling, each against
a value derived here (by hand, from a dense matrix built here, or from the documented contract).
See ``benchmarks/results/mutation/report.md``.

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

from mmssl_pyg.nn import (
    LowRankRows,
)
from mmssl_pyg.nn.lowrank import linear_blocks
from mmssl_pyg.testing import _blocks


# --------------------------------------------------------------------------- LowRankRows
def _parts(seed: int = 0):
    """3 x 5 rows: low-rank factors, a per-row scale and three sparse entries."""
    gen = torch.Generator().manual_seed(seed)
    left, right = torch.randn(3, 2, generator=gen), torch.randn(5, 2, generator=gen)
    scale = torch.rand(3, generator=gen) + 0.5
    index = torch.tensor([[0, 1, 2], [0, 3, 4]])
    value = torch.tensor([1.5, -2.0, 0.25])
    return left, right, scale, index, value


def _dense_by_hand(left=None, right=None, scale=None, index=None, value=None):
    """diag(scale) L R^T plus the entries, built here entry by entry."""
    out = torch.zeros(3, 5)
    if left is not None:
        for r in range(3):
            for c in range(5):
                s = 1.0 if scale is None else float(scale[r])
                out[r, c] = s * float(left[r] @ right[c])
    if index is not None and value is not None:
        for (r, c), v in zip(index.t().tolist(), value.tolist()):
            out[r, c] += v
    return out


def test_select_rows_matches_the_dense_rows():
    from mmssl_pyg.nn.lowrank import LowRankRows
    torch.manual_seed(0)
    rows, n, r = 6, 30, 3
    index = torch.stack([torch.randint(0, rows, (25,)), torch.randint(0, n, (25,))])
    x = LowRankRows(rows, n, left=torch.randn(rows, r), right=torch.randn(n, r),
                    scale=torch.rand(rows), index=index, value=torch.randn(25),
                    dense=torch.randn(rows, n))
    pick = torch.tensor([4, 0, 2])
    sub = x.select_rows(pick)
    assert sub.num_rows == 3 and sub.num_cols == n
    assert torch.allclose(sub.to_dense(), x.to_dense()[pick], atol=1e-6)
    w = torch.randn(7, n)
    assert torch.allclose(sub.linear(w), x.to_dense()[pick] @ w.t(), atol=1e-5)


def test_select_columns_matches_the_dense_rows():
    torch.manual_seed(0)
    rows, n, r = 5, 40, 3
    index = torch.stack([torch.randint(0, rows, (30,)), torch.randint(0, n, (30,))])
    x = LowRankRows(rows, n, left=torch.randn(rows, r), right=torch.randn(n, r),
                    scale=torch.rand(rows), index=index, value=torch.randn(30),
                    dense=torch.randn(rows, n))
    cols = torch.randperm(n)[:12].sort().values
    sel = x.select_columns(cols)
    assert sel.num_cols == 12 and sel.num_rows == rows
    assert torch.allclose(sel.to_dense(), x.to_dense()[:, cols], atol=1e-5)
    w = torch.randn(7, 12)
    assert torch.allclose(sel.linear(w), x.to_dense()[:, cols] @ w.t(), atol=1e-4)


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


@pytest.mark.parametrize('parts', ['low-rank only', 'no scale', 'sparse only', 'all'])
def test_select_rows_with_any_part_missing(parts):
    """Every part of LowRankRows is optional: selecting rows (in the given order) of rows that
    lack the residual, the scale or the low-rank factors gives those rows of the dense matrix."""
    left, right, scale, index, value = _parts()
    kw = {'low-rank only': dict(left=left, right=right, scale=scale),
          'no scale': dict(left=left, right=right, index=index, value=value),
          'sparse only': dict(index=index, value=value),
          'all': dict(left=left, right=right, scale=scale, index=index, value=value)}[parts]
    rows = LowRankRows(3, 5, **kw)
    want = _dense_by_hand(**kw)
    pick = torch.tensor([2, 0])
    sel = rows.select_rows(pick)
    assert sel.num_rows == 2 and sel.num_cols == 5
    assert torch.allclose(sel.to_dense(), want[[2, 0]], atol=1e-6)
    w = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(sel.linear(w), want[[2, 0]] @ w.t(), atol=1e-5)
    if 'index' not in kw:  # no residual selected from nothing
        assert sel.index is None and sel.value is None


def test_selecting_keeps_an_index_without_values_as_no_residual():
    """The value part is optional on its own: rows holding an index but no values have no
    sparse residual (to_dense and linear skip it), and selecting rows or columns keeps that."""
    left, right, scale, index, _ = _parts()
    rows = LowRankRows(3, 5, left, right, scale, index=index)
    want = _dense_by_hand(left, right, scale)
    assert torch.allclose(rows.to_dense(), want, atol=1e-6)
    by_row = rows.select_rows(torch.tensor([1, 2]))
    assert by_row.value is None
    assert torch.allclose(by_row.to_dense(), want[[1, 2]], atol=1e-6)
    cols = torch.tensor([0, 3])
    by_col = rows.select_columns(cols)
    assert by_col.value is None
    assert torch.allclose(by_col.to_dense(), want[:, cols], atol=1e-6)


@pytest.mark.parametrize('grad', [False, True])
def test_an_empty_residual_adds_nothing_under_autocast(grad):
    """linear() is ``to_dense() @ weight.T``: a sparse residual with no entry (here: none of
    its entries lies in the selected columns) adds nothing, not even a dtype change. Under
    bfloat16 autocast the low-rank product is bfloat16, as the dense reference is."""
    left, right, _, index, value = _parts()
    value = value.clone().requires_grad_(grad)
    cols = torch.tensor([1, 2])  # the entries sit in columns 0, 3 and 4
    sel = LowRankRows(3, 5, left, right, index=index, value=value).select_columns(cols)
    assert sel.value.numel() == 0
    bare = LowRankRows(3, 2, left, right[cols])
    w = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = sel.linear(w)
        dense = (left @ right[cols].t()) @ w.t()  # the dense computation, by hand
        want = bare.linear(w)
    assert dense.dtype == torch.bfloat16
    assert got.dtype == dense.dtype
    assert torch.equal(got, want)


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
