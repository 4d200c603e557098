r"""Rows kept in factored form: a low-rank product plus a sparse or dense residual.

Both kinds of rows MMSSL's critic reads are structured: a generated row (Eq. 3) is a
rank-:math:`d` inner product ``u_B @ i.T`` with the training entries zeroed, then scaled; a real
row (Eq. 5) is a sparse Gumbel-softmax plus a rank-:math:`d` auxiliary relation.
:class:`LowRankRows` keeps that structure, so the critic's first layer costs
:math:`O(n_i \cdot n_i/4 \cdot d)` instead of :math:`O(B \cdot n_i \cdot n_i/4)`; the result
equals the dense computation up to round-off.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LowRankRows:
    r"""A block of ``num_rows x num_cols`` rows stored as

    .. math::
        \mathbf{X} = \operatorname{diag}(\mathbf{s})\, \mathbf{L} \mathbf{R}^{\top}
        + \mathbf{C}

    with a low-rank part (``left`` :math:`[R, r]`, ``right`` :math:`[n, r]`, optional per-row
    ``scale`` :math:`[R]`) and a residual :math:`\mathbf{C}` given sparse (``index`` ``[2, nnz]``
    (row, column) and ``value`` ``[nnz]``, duplicates summed) and/or ``dense`` :math:`[R, n]`.
    Every part is optional. Gradients flow through all parts.
    """
    num_rows: int
    num_cols: int
    left: Tensor | None = None
    right: Tensor | None = None
    scale: Tensor | None = None
    index: Tensor | None = None
    value: Tensor | None = None
    dense: Tensor | None = None

    def _like(self) -> Tensor:
        for t in (self.left, self.value, self.dense, self.right):
            if t is not None:
                return t
        raise ValueError('LowRankRows has no part')

    def linear(self, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """``self.to_dense() @ weight.T + bias`` without forming the dense rows
        (``weight``: ``[out, num_cols]``); :func:`linear_blocks` of one block."""
        return linear_blocks([self], weight, bias)[0]

    def to_dense(self) -> Tensor:
        """The rows as a dense ``[num_rows, num_cols]`` tensor (tests and small inputs)."""
        like = self._like()
        out = like.new_zeros(self.num_rows, self.num_cols)
        if self.left is not None:
            lr = self.left @ self.right.t()
            out = out + (lr if self.scale is None else lr * self.scale.unsqueeze(1))
        if self.value is not None:
            out = out.index_put((self.index[0], self.index[1]), self.value, accumulate=True)
        if self.dense is not None:
            out = out + self.dense
        return out

    def select_columns(self, cols: Tensor) -> LowRankRows:
        """The rows restricted to the columns ``cols`` (sorted, distinct ids), as a
        ``num_rows x len(cols)`` :class:`LowRankRows` in the same factored form (the right
        factor's rows and the residual's entries of those columns). Differentiable."""
        right = None if self.right is None else self.right[cols]
        index = value = None
        if self.index is not None and self.index.numel():
            pos = torch.searchsorted(cols, self.index[1]).clamp(max=max(cols.numel() - 1, 0))
            keep = cols[pos] == self.index[1]
            index = torch.stack([self.index[0][keep], pos[keep]])
            value = None if self.value is None else self.value[keep]
        dense = None if self.dense is None else self.dense[:, cols]
        return LowRankRows(self.num_rows, int(cols.numel()), self.left, right, self.scale,
                           index, value, dense)

    def select_rows(self, rows: Tensor) -> LowRankRows:
        """The rows ``rows`` (distinct local row ids, in that order) as a ``len(rows) x
        num_cols`` :class:`LowRankRows` in the same factored form. Differentiable."""
        left = None if self.left is None else self.left[rows]
        scale = None if self.scale is None else self.scale[rows]
        index = value = None
        if self.index is not None and self.index.numel():
            pos = torch.full((self.num_rows,), -1, dtype=torch.long, device=rows.device)
            pos[rows] = torch.arange(rows.numel(), device=rows.device)
            new_row = pos[self.index[0]]
            keep = new_row >= 0
            index = torch.stack([new_row[keep], self.index[1][keep]])
            value = None if self.value is None else self.value[keep]
        dense = None if self.dense is None else self.dense[rows]
        return LowRankRows(int(rows.numel()), self.num_cols, left, self.right, scale, index,
                           value, dense)

    def detach(self) -> LowRankRows:
        def d(t):
            return None if t is None else t.detach()
        return LowRankRows(self.num_rows, self.num_cols, d(self.left), d(self.right),
                           d(self.scale), d(self.index), d(self.value), d(self.dense))


def linear_blocks(blocks: Sequence[LowRankRows], weight: Tensor,
                  bias: Tensor | None = None) -> list[Tensor]:
    r"""``[b.to_dense() @ weight.T + bias for b in blocks]`` without forming the dense rows,
    the blocks (the same ``num_cols``) sharing each product with ``weight`` ``[out, n]``.

    - Low-rank parts: :math:`(\mathbf{L}\mathbf{R}^{\top})\mathbf{W}^{\top} =
      \mathbf{L}(\mathbf{W}\mathbf{R})^{\top}`, ``n * out * r`` multiply-adds instead of
      ``R * n * out``; the blocks' right factors side by side as columns, so
      :math:`\mathbf{W}` is read by one product (and its gradient, :math:`\sum_k
      \partial\mathbf{P}_k \mathbf{R}_k^{\top}`, is one product too).
    - Sparse parts: the blocks' entries stacked (row offsets) into one sparse product.
    - Dense parts: per block.

    Each block's rows get the same sums as block by block (up to the order of float
    additions inside the matrix products).
    """
    if not blocks:
        return []
    num_cols = blocks[0].num_cols
    if any(b.num_cols != num_cols for b in blocks):
        raise ValueError('linear_blocks needs blocks of the same width, got '
                         f'{[b.num_cols for b in blocks]}')
    outs: list[Tensor | None] = [None] * len(blocks)
    low = [k for k, b in enumerate(blocks) if b.left is not None]
    if low:
        rights = [blocks[k].right for k in low]
        widths = [r.size(1) for r in rights]
        # (L R^T) W^T = L (W R)^T, every block's R in one product with W
        proj = weight @ (rights[0] if len(rights) == 1 else torch.cat(rights, 1))
        for k, p in zip(low, proj.split(widths, 1)):
            b = blocks[k]
            out = b.left @ p.t()
            outs[k] = out if b.scale is None else out * b.scale.unsqueeze(1)
    sparse = [k for k, b in enumerate(blocks) if b.value is not None and b.value.numel() > 0]
    if sparse:
        parts = _sparse_linear([blocks[k] for k in sparse], weight)
        for k, part in zip(sparse, parts):
            outs[k] = part if outs[k] is None else outs[k] + part
    for k, b in enumerate(blocks):
        if b.dense is not None:
            part = b.dense @ weight.t()
            outs[k] = part if outs[k] is None else outs[k] + part
        if outs[k] is None:
            outs[k] = b._like().new_zeros(b.num_rows, weight.size(0))
    return outs if bias is None else [o + bias for o in outs]


def _sparse_linear(blocks: Sequence[LowRankRows], weight: Tensor) -> list[Tensor]:
    """The sparse residuals of ``blocks`` times ``weight.T``, as one product over their
    entries stacked by rows; one ``[num_rows, out]`` tensor per block."""
    counts = [b.num_rows for b in blocks]
    if len(blocks) == 1:
        row, col, value = blocks[0].index[0], blocks[0].index[1], blocks[0].value
    else:
        offsets = torch.tensor([0] + counts[:-1], device=weight.device).cumsum(0)
        row = torch.cat([b.index[0] + off for b, off in zip(blocks, offsets)])
        col = torch.cat([b.index[1] for b in blocks])
        value = torch.cat([b.value for b in blocks])
    num_rows = sum(counts)
    if value.requires_grad:
        # gather / scatter: nnz * out work both ways (torch.sparse.mm's backward for the
        # sparse values forms a dense [R, n] gradient). Columns are gathered from each row
        # of W (contiguous reads) into [out, nnz] and scattered along dim 1: no transposed
        # copy of W (out * n values) per call
        cols = weight.index_select(1, col) * value
        part = cols.new_zeros(weight.size(0), num_rows).index_add_(1, row, cols).t()
    else:  # sparse x dense (and a sparse backward for the weight): faster here
        sp = torch.sparse_coo_tensor(torch.stack([row, col]), value,
                                     (num_rows, blocks[0].num_cols),
                                     check_invariants=False).coalesce().to_sparse_csr()
        # in the values' dtype, outside autocast: sparse CSR kernels have no bfloat16 CPU
        # implementation
        with torch.autocast(weight.device.type, enabled=False):
            part = torch.sparse.mm(sp, weight.t().to(value.dtype))
    return list(part.split(counts, 0)) if len(blocks) > 1 else [part]
